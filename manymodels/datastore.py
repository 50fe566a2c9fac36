"""The datastore: the only module that knows the directory layout.

    <root>/.mm/datastore.json            marker: this folder is an mm datastore
    <root>/.mm/lock                      who is writing (see lock.py)
    <root>/.mm/input_state.json          size/mtime -> content hash of input files
    <root>/split/manifest.json           how the split was made (axis, cutoff, fingerprint)
    <root>/split/groups.parquet          one row per group: key, values, counts, content hashes
    <root>/split/{train,inference}/<k2>/<key>.parquet
    <root>/models/<k2>/<key>/v<N>.json   model metadata (+ v<N>.lgb.txt, LightGBM's text format)
    <root>/forecasts/<k2>/<key>/<fp>.parquet  the latest forecast of each group, named by its fingerprint
    <root>/runs/<run_id>.json            run record (+ .groups.parquet, .journal.jsonl)
    <root>/outputs/training_output.csv, forecasting_output.csv
    <root>/outputs/report.html           mm report (default location)
    <root>/exports/<format>/             mm export (default location): <key>.onnx, <key>.json, index.csv

Group values are data, never paths: a group's files are named by a hash of its
values (``key``), so ``../x``, ``CON`` or a 300-character value stay inside the
datastore. Every write is atomic (temporary file + rename), so a crash never
leaves a half-written file where a reader would take it for a finished one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import MMError, UpstreamMissing

FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"
STEP_DIRS = {
    "split": ("split",),
    "train": ("models", "outputs/training_output.csv"),
    "forecast": ("forecasts", "outputs/forecasting_output.csv"),
}


# -- group identity ----------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A group value as plain JSON (numpy scalars, dates and NaN included)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def group_key(values: Sequence[Any]) -> str:
    """Stable file-system-safe key of a group: a hash of its canonical JSON."""
    canonical = json.dumps([jsonable(v) for v in values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=10).hexdigest()


def group_label(columns: Sequence[str], values: Sequence[Any]) -> str:
    """``Store=2,Brand=tropicana``: how a group is named in messages and --groups."""
    return ",".join(f"{c}={jsonable(v)}" for c, v in zip(columns, values))


# -- atomic files ------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: Path, document: Any, durable: bool = False) -> None:
    atomic_write_text(path, json.dumps(document, indent=1, sort_keys=True, default=str), durable)


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    atomic_write_bytes(path, sink.getvalue())


class AtomicFile:
    """A file written in pieces and published by rename on success (large outputs)."""

    def __init__(self, path: Path, mode: str = "w"):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        self.file = os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {}))

    def __enter__(self):
        return self.file

    def __exit__(self, kind, value, tb) -> None:
        self.file.close()
        if kind is None:
            _apply_umask(self.tmp)
            os.replace(self.tmp, self.path)
        else:
            _unlink_quietly(self.tmp)


_UMASK: int | None = None


def _apply_umask(tmp: str) -> None:
    # mkstemp creates 0600 files; published files get the user's usual 0666 & ~umask
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    os.chmod(tmp, 0o666 & ~_UMASK)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- the datastore -----------------------------------------------------------

class Datastore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # layout ---------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.root / ".mm" / "datastore.json"

    @property
    def lock_path(self) -> Path:
        return self.root / ".mm" / "lock"

    @property
    def input_state_path(self) -> Path:
        return self.root / ".mm" / "input_state.json"

    @property
    def split_manifest_path(self) -> Path:
        return self.root / "split" / "manifest.json"

    @property
    def split_groups_path(self) -> Path:
        return self.root / "split" / "groups.parquet"

    def partition_path(self, kind: str, key: str) -> Path:
        assert kind in ("train", "inference")
        return self.root / "split" / kind / key[:2] / f"{key}.parquet"

    def model_meta_path(self, key: str, version: int) -> Path:
        return self.root / "models" / key[:2] / key / f"v{version}.json"

    def model_text_path(self, key: str, version: int) -> Path:
        return self.root / "models" / key[:2] / key / f"v{version}.lgb.txt"

    def model_dir(self, key: str) -> Path:
        return self.root / "models" / key[:2] / key

    def forecast_path(self, key: str, fingerprint: str) -> Path:
        """A group's forecast, named by the fingerprint of everything it was made from."""
        return self.root / "forecasts" / key[:2] / key / f"{fingerprint}.parquet"

    def output_path(self, name: str) -> Path:
        return self.root / "outputs" / name

    @property
    def report_path(self) -> Path:
        return self.output_path("report.html")

    def export_dir(self, fmt: str) -> Path:
        return self.root / "exports" / fmt

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_path(self, run_id: str, suffix: str = ".json") -> Path:
        return self.runs_dir / f"{run_id}{suffix}"

    def step_paths(self, step: str) -> list[Path]:
        """What ``mm clean --step`` removes, that exists (never anything else)."""
        steps = ("split", "train", "forecast") if step == "all" else (step,)
        paths = [self.root / rel for s in steps for rel in STEP_DIRS[s]]
        if self.runs_dir.is_dir():
            for name in sorted(os.listdir(self.runs_dir)):
                if any(f"-{s}-" in name for s in steps):
                    paths.append(self.runs_dir / name)
        if step == "all":
            paths += [self.input_state_path, self.report_path, self.root / "exports"]
        return [p for p in paths if p.exists() or p.is_symlink()]

    # lifecycle ------------------------------------------------------------
    def ensure(self) -> None:
        """Create the datastore (or check that an existing folder is one)."""
        if self.root.exists() and not self.root.is_dir():
            raise MMError(f"datastore {self.root} is a file, not a folder", "point 'datastore' in the config at a folder")
        if not self.marker.exists():
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.marker, {"format": FORMAT_VERSION, "created": _now()})
            except PermissionError:
                raise MMError(f"cannot create datastore {self.root}: permission denied", "choose a writable folder for 'datastore'") from None
            return
        info = json.loads(self.marker.read_text())
        if info.get("format", 0) > FORMAT_VERSION:
            raise MMError(f"datastore {self.root} was written by a newer mm (format {info.get('format')})", "upgrade manymodels")

    def is_datastore(self) -> bool:
        return self.marker.exists()

    def sweep_temporary_files(self) -> int:
        """Remove temporary files a killed process left behind (call with the lock held)."""
        removed = 0
        for top in ("split", "models", "forecasts", "outputs", "runs", ".mm"):
            base = self.root / top
            if not base.is_dir():
                continue
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        _unlink_quietly(os.path.join(dirpath, name))
                        removed += 1
        return removed

    # split ----------------------------------------------------------------
    def write_partition(self, kind: str, key: str, table: pa.Table) -> None:
        atomic_write_parquet(self.partition_path(kind, key), table)

    def read_partition(self, kind: str, key: str) -> pd.DataFrame:
        path = self.partition_path(kind, key)
        try:
            return pq.read_table(path).to_pandas()
        except FileNotFoundError:
            raise UpstreamMissing(f"{kind} partition of group {key} is missing ({path})", "run 'mm split' again") from None

    def has_partition(self, kind: str, key: str) -> bool:
        return self.partition_path(kind, key).exists()

    def remove_partition(self, kind: str, key: str) -> None:
        _unlink_quietly(self.partition_path(kind, key))

    def write_split_manifest(self, manifest: dict, groups: pd.DataFrame) -> None:
        # groups first: the manifest is what marks the split complete
        atomic_write_parquet(self.split_groups_path, pa.Table.from_pandas(groups, preserve_index=False))
        atomic_write_json(self.split_manifest_path, manifest, durable=True)

    def read_split_manifest(self) -> dict | None:
        try:
            return json.loads(self.split_manifest_path.read_text())
        except FileNotFoundError:
            return None

    def read_split_groups(self) -> pd.DataFrame:
        try:
            return pq.read_table(self.split_groups_path).to_pandas()
        except FileNotFoundError:
            raise UpstreamMissing(f"no split in datastore {self.root}", "run 'mm split -c CONFIG' first") from None

    # models ---------------------------------------------------------------
    def write_model(self, key: str, version: int, meta: dict, model_text: str | None) -> None:
        # the booster first: metadata is what makes a version visible
        if model_text is not None:
            atomic_write_text(self.model_text_path(key, version), model_text)
        atomic_write_json(self.model_meta_path(key, version), meta)

    def read_model_meta(self, key: str, version: int) -> dict:
        return json.loads(self.model_meta_path(key, version).read_text())

    def read_model_text(self, key: str, version: int) -> str:
        return self.model_text_path(key, version).read_text()

    def model_versions(self, key: str) -> list[int]:
        d = self.model_dir(key)
        if not d.is_dir():
            return []
        return sorted(int(n[1:-5]) for n in os.listdir(d) if n.startswith("v") and n.endswith(".json") and n[1:-5].isdigit())

    def remove_model(self, key: str, version: int) -> None:
        _unlink_quietly(self.model_text_path(key, version))
        _unlink_quietly(self.model_meta_path(key, version))

    # forecasts ------------------------------------------------------------
    def write_forecast(self, key: str, fingerprint: str, frame: pd.DataFrame) -> None:
        """Write the group's new forecast, then drop its older ones."""
        path = self.forecast_path(key, fingerprint)
        atomic_write_parquet(path, pa.Table.from_pandas(frame, preserve_index=False))
        for name in os.listdir(path.parent):
            if name != path.name and not name.startswith(TMP_PREFIX):
                _unlink_quietly(path.parent / name)

    def read_forecast(self, key: str, fingerprint: str) -> pa.Table:
        return pq.read_table(self.forecast_path(key, fingerprint))

    def scan_groups(self, kind: str, keys: Sequence[str], columns: Sequence[str], fingerprints: dict[str, str] | None = None) -> pa.Table:
        """``columns`` of many groups' files in one multi-threaded scan, plus a ``_mm_key`` column.

        ``kind`` is ``train`` or ``inference`` (partitions) or ``forecast`` (the
        forecast with ``fingerprints[key]``). Groups without a file are skipped; a
        column a file lacks is null.
        """
        if kind == "forecast":
            fingerprints = fingerprints or {}
            keys = [k for k in keys if k in fingerprints]
            path_of = lambda key: self.forecast_path(key, fingerprints[key])  # noqa: E731
        else:
            path_of = lambda key: self.partition_path(kind, key)  # noqa: E731
        files = {str(path_of(k)): k for k in keys}
        files = {p: k for p, k in files.items() if os.path.exists(p)}
        if not files:
            return pa.table({"_mm_key": pa.array([], pa.string())})
        wanted = list(dict.fromkeys(columns))
        try:
            schema = _scan_schema(pq.read_schema(next(iter(files))), wanted)
            dataset = pads.dataset(list(files), schema=schema, format="parquet")
            parts, names = [], []
            for tagged in dataset.scanner(columns=list(schema.names)).scan_batches():
                parts.append(tagged.record_batch)
                names.append(files[tagged.fragment.path])
            table = pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()
            lengths = [b.num_rows for b in parts]
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # files whose column types differ: read them one by one, letting pyarrow unify
            tables = [pq.read_table(p, columns=[c for c in wanted if c in pq.read_schema(p).names]) for p in files]
            table = pa.concat_tables(tables, promote_options="permissive")
            names, lengths = list(files.values()), [t.num_rows for t in tables]
        key_column = pa.array(np.repeat(np.array(names, dtype=object), lengths) if names else [], pa.string())
        return table.append_column("_mm_key", key_column)

    # runs -----------------------------------------------------------------
    def write_run(self, record: dict) -> None:
        atomic_write_json(self.run_path(record["id"]), record, durable=True)

    def read_run(self, run_id: str) -> dict:
        try:
            return json.loads(self.run_path(run_id).read_text())
        except FileNotFoundError:
            raise MMError(f"no run {run_id!r} in datastore {self.root}", "list runs with 'mm runs'") from None

    def write_run_groups(self, run_id: str, groups: pd.DataFrame) -> None:
        atomic_write_parquet(self.run_path(run_id, ".groups.parquet"), pa.Table.from_pandas(groups, preserve_index=False))

    def read_run_groups(self, run_id: str) -> pd.DataFrame:
        try:
            return pq.read_table(self.run_path(run_id, ".groups.parquet")).to_pandas()
        except FileNotFoundError:
            return pd.DataFrame()

    def list_runs(self) -> list[dict]:
        if not self.runs_dir.is_dir():
            return []
        records = []
        for name in sorted(os.listdir(self.runs_dir)):
            if name.endswith(".json") and not name.startswith(TMP_PREFIX):
                try:
                    records.append(json.loads((self.runs_dir / name).read_text()))
                except (OSError, ValueError):
                    continue
        records.sort(key=lambda r: (str(r.get("started", "")), str(r.get("id", ""))))
        return records

    def open_journal(self, run_id: str):
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        return open(self.run_path(run_id, ".journal.jsonl"), "a", encoding="utf-8")

    def read_journal(self, run_id: str) -> list[dict]:
        path = self.run_path(run_id, ".journal.jsonl")
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a line cut by a crash: everything before it is good
        return out

    # outputs --------------------------------------------------------------
    def output_file(self, name: str, binary: bool = False) -> AtomicFile:
        return AtomicFile(self.output_path(name), "wb" if binary else "w")

    # input hashing state --------------------------------------------------
    def read_input_state(self) -> dict:
        try:
            return json.loads(self.input_state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write_input_state(self, state: dict) -> None:
        atomic_write_json(self.input_state_path, state)

    # cleaning -------------------------------------------------------------
    def remove_tree(self, path: Path) -> None:
        """Delete ``path`` (inside the datastore) without following symlinks out of it."""
        self.assert_inside(path)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)  # rmtree never follows symlinks inside the tree

    def assert_inside(self, path: Path) -> None:
        root = self.root.resolve()
        parent = path.parent.resolve()  # the entry itself may be a symlink; its folder must be ours
        if parent != root and root not in parent.parents:
            raise MMError(f"refusing to touch {path}: it is outside the datastore {root}")


def _scan_schema(schema: pa.Schema, wanted: list[str]) -> pa.Schema:
    fields = [schema.field(c) for c in wanted if c in schema.names]
    # a first file whose column is all-null must not force null on the others
    return pa.schema([pa.field(f.name, pa.float64()) if pa.types.is_null(f.type) else f for f in fields])


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

