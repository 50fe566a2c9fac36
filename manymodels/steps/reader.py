"""Reading the user's raw input: a file, a folder of files, or a glob; CSV or Parquet.

One big table and one file per group (the accelerator's layout) are read the
same way. Reading is columnar (pyarrow), never row by row, and streamed:
``iter_file_batches`` yields a file in record batches (CSV blocks of
``CSV_BLOCK_BYTES``, Parquet batches of ``PARQUET_BATCH_ROWS``), so a table
larger than memory can be split. Group and series columns of CSV files are read
as text, so identifiers such as ``007`` keep their exact spelling. In a CSV
text column only an empty cell is missing: ``NA``, ``null`` or ``nan`` stay
the text they are (a region called ``NA`` is a group, not a hole); numeric
columns keep pyarrow's usual missing markers (``NA``, ``NaN``, ``null``...).

CSV column types are inferred from the first block. If a later block does not
fit them (a column of integers that turns to decimals after 300,000 rows),
``TypesChanged`` tells the caller to start that file again with
``streamed=False``: the whole file is then read at once, with types inferred
from all of it.
"""

from __future__ import annotations

import glob as globlib
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import InputDataError, did_you_mean, input_read_error

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 256 * 1024


class TypesChanged(Exception):
    """A later CSV block does not fit the column types inferred from the first."""


@dataclass(frozen=True)
class InputFiles:
    """The files behind ``data.path``, in a stable order."""

    spec: str  # what the user wrote, for messages
    paths: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.paths[0] if len(self.paths) == 1 else f"{self.spec} ({len(self.paths)} files)"


def find_input_files(path: str | Sequence[str], exclude: str | os.PathLike | None = None) -> InputFiles:
    """The input files; none under ``exclude`` (the datastore: a folder input that holds it
    must not read mm's own partitions and outputs back as input)."""
    specs = [path] if isinstance(path, str) else list(path)
    found: list[str] = []
    for spec in specs:
        found.extend(_expand(spec))
    if exclude is not None:
        inside = Path(exclude).resolve()
        found = [p for p in found if not Path(p).resolve().is_relative_to(inside)]
    label = ", ".join(specs)
    if not found:
        raise InputDataError(
            f"no input files found at data.path {label}",
            "point data.path at a .csv or .parquet file, a folder of them, or a glob such as data/*.csv",
        )
    return InputFiles(label, tuple(dict.fromkeys(found)))


def _expand(spec: str) -> list[str]:
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in globlib.glob(spec, recursive=True) if _is_data_file(p))
    if os.path.isdir(spec):
        out = []
        for root, dirs, files in os.walk(spec):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out.extend(os.path.join(root, f) for f in sorted(files) if _is_data_file(f) and not f.startswith("."))
        return out
    if os.path.exists(spec):
        if not _is_data_file(spec):
            raise InputDataError(f"input file {spec} is neither CSV nor Parquet", "use a .csv, .csv.gz, .tsv, .parquet or .pq file")
        return [spec]
    raise InputDataError(f"input not found: {spec}", "check data.path in the config (relative paths are relative to the config file)")


def _is_data_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(CSV_SUFFIXES) or lower.endswith(PARQUET_SUFFIXES)


def _is_csv(name: str) -> bool:
    return name.lower().endswith(CSV_SUFFIXES)


def read_input(files: InputFiles, text_columns: Sequence[str], required: Sequence[str]) -> pa.Table:
    """All rows of all input files as one table, with ``text_columns`` as strings."""
    tables = [read_file(p, text_columns, required) for p in files.paths]
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputDataError(
            f"the input files under {files.spec} do not share one schema: {exc}",
            "make every file have the same columns with the same types",
        ) from None


def iter_file_batches(path: str, text_columns: Sequence[str], required: Sequence[str], streamed: bool = True) -> Iterator[pa.Table]:
    """One input file as a sequence of tables (checked, text columns as strings).

    Raises ``TypesChanged`` (streamed CSV only) when a later block does not fit
    the types of the first; read the file again with ``streamed=False``.
    """
    if not streamed:
        yield read_file(path, text_columns, required)
        return
    tables = _open_tables(path, text_columns)
    first = True
    while True:
        try:
            table = next(tables, None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if first:
                raise input_read_error(path, exc) from None
            raise TypesChanged(str(exc).splitlines()[0]) from None
        except (OSError, EOFError, zlib.error, UnicodeError) as exc:  # gone, forbidden, cut short, not text
            raise input_read_error(path, exc) from None
        if table is None:
            return
        if first:
            _check_columns(path, table, required)
            first = False
        yield _as_text(table, text_columns, csv=_is_csv(path))


def _open_tables(path: str, text_columns: Sequence[str]) -> Iterator[pa.Table]:
    try:
        if _is_csv(path):
            return _csv_tables(path, text_columns)
        return (pa.Table.from_batches([b]) for b in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise input_read_error(path, exc) from None


def _csv_tables(path: str, text_columns: Sequence[str]) -> Iterator[pa.Table]:
    """A CSV file parsed a block of lines at a time, with the first block's column types.

    Not pyarrow's streaming reader: it reads far ahead of its consumer (measured:
    a 140 MB file held whole), so its memory grows with the file. Here one
    block is in memory at a time. Like pyarrow's default parser, values may not
    contain newlines, so blocks end at one.
    """
    header = _csv_header(path)
    parse = pacsv.ParseOptions(delimiter=_delimiter(path))
    types = dict(_convert_options(text_columns, header).column_types)
    for n, block in enumerate(_csv_blocks(path)):
        table = pacsv.read_csv(pa.py_buffer(block), parse_options=parse, convert_options=pacsv.ConvertOptions(column_types=types))
        if n == 0:
            # later blocks keep these types; a column still all empty keeps being inferred
            types.update({f.name: f.type for f in table.schema if not pa.types.is_null(f.type)})
        yield table


def _csv_blocks(path: str) -> Iterator[bytes]:
    """The header line followed by whole lines, about ``CSV_BLOCK_BYTES`` at a time."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.readline()
        rest = b""
        while block := f.read(CSV_BLOCK_BYTES):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield header + data[:cut]
            rest = data[cut:]
        if rest.strip():
            yield header + rest


def read_file(path: str, text_columns: Sequence[str], required: Sequence[str]) -> pa.Table:
    try:
        if _is_csv(path):
            table = _read_csv(path, text_columns)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, zlib.error, UnicodeError) as exc:
        raise input_read_error(path, exc) from None
    _check_columns(path, table, required)
    return _as_text(table, text_columns, csv=_is_csv(path))


def _check_columns(path: str, table: pa.Table, required: Sequence[str]) -> None:
    names = table.column_names
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise InputDataError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once in the header", "give every column its own name")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise missing_columns_error(path, missing, table.column_names)


def missing_columns_error(where: str, missing: Sequence[str], present: Sequence[str]) -> InputDataError:
    """'missing column(s)', listing what the file has and the closest name to each missing one."""
    hints = "; ".join(f"{c!r}:{did_you_mean(c, present) or ' no similar column'}" for c in missing)
    return InputDataError(
        f"{where}: missing column(s) {', '.join(repr(c) for c in missing)} (file has: {', '.join(map(str, present))}).",
        f"fix the column names in the config or the file. {hints}",
    )


def _as_text(table: pa.Table, text_columns: Sequence[str], csv: bool = False) -> pa.Table:
    for column in text_columns:
        if column in table.column_names and not pa.types.is_string(table.schema.field(column).type):
            table = table.set_column(table.schema.get_field_index(column), column, table[column].cast(pa.string()))
    if csv:  # CSV has no null: an empty cell is the missing value of a text column
        import pyarrow.compute as pc

        for i, f in enumerate(table.schema):
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                column = table.column(i)
                table = table.set_column(i, f.name, pc.if_else(pc.equal(column, ""), pa.scalar(None, f.type), column))
    return table


def estimated_rows(files: InputFiles) -> int:
    """About how many rows the input has, without reading it (sizes the split's buckets)."""
    total = 0
    for path in files.paths:
        if _is_csv(path):
            total += os.path.getsize(path) // 40  # a typical short numeric CSV row
        else:
            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, pa.ArrowInvalid):
                total += os.path.getsize(path) // 10
    return total


def _read_csv(path: str, text_columns: Sequence[str]) -> pa.Table:
    header = _csv_header(path)
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
        convert_options=_convert_options(text_columns, header),
    )


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def _convert_options(text_columns: Sequence[str], header: list[str]) -> pacsv.ConvertOptions:
    types = {c: pa.string() for c in text_columns if c in header}
    return pacsv.ConvertOptions(column_types=types)


def _csv_header(path: str) -> list[str]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    if not first.strip():
        raise InputDataError(f"input file {path} is empty", "remove it or fill it with a header row and data")
    delimiter = _delimiter(path)
    if delimiter not in first:
        for other, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'"), (",", "commas")):
            if other != delimiter and other in first:
                raise InputDataError(
                    f"input file {path} separates its columns with {name}, but a {'.tsv' if delimiter == chr(9) else '.csv'} file is read "
                    f"with {'tabs' if delimiter == chr(9) else 'commas'} (header: {first.strip()[:80]!r})",
                    "save it comma-separated as .csv (decimals with '.'), or tab-separated as .tsv, or as Parquet",
                )
    return [c.strip().strip('"') for c in first.rstrip("\r\n").split(delimiter)]


def input_state(files: InputFiles) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each input file: cheap change detection."""
    out = []
    for p in files.paths:
        st = os.stat(p)
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return out
