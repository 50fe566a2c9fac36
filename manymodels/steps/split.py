"""mm split: raw table -> per-group train and inference partitions.

The cutoff decides which rows train a model and which are forecast:

- ``train_end: auto``: rows with a target up to the last time that has one
  train; later rows (whose target may be empty) are forecast;
- ``train_end: <date or period>``: rows up to it train, later rows are forecast;
- ``train_end: per_series``: each series' own last target is its cutoff: its
  rows up to it train, its later rows are forecast (for series that end at
  different times: competition data, late-reporting stores);
- ``holdout: N``: the last N periods of each series (up to its last target) are
  forecast with their actuals kept for evaluation; later rows are not used.

Times become integer periods (see timeindex), so gaps stay gaps.

The input is streamed, never held whole, in three passes:

1. read (here, batch by batch): check values, parse times, count the distinct
   times, and append each row to the bucket its group's key hashes to
   (``<datastore>/.mm/scratch/<run>/b<N>/``). A bucket holds whole groups.
2. scan (on the engine, a bucket per task): per-series time steps, duplicate
   rows, target spans. The time axis, the cutoff and every check that needs
   the whole input are then decided from these small summaries; nothing has
   been written yet, so bad input leaves the previous split intact.
3. partition (on the engine): each group's train and inference partitions
   (only those whose content changed) and the bucket's rows of the groups
   table, published as one ``groups.parquet`` when every bucket is done.

Memory is bounded by a read batch and a bucket, not by the table.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import Config
from ..console import Terminal
from ..core.identity import digest, group_label
from ..core.partitioning import PERIOD, BucketSpec, bucket_of, group_keys
from ..core.timeindex import (
    TimeAxis,
    TimeSummary,
    format_time,
    parse_times,
    time_values,
)
from ..errors import DamagedFile, InputDataError, MMError, examples
from ..runner.options import RunOptions
from ..runner.session import Session, open_session
from ..runner.tasks import (
    SplitContext,
    bucket_folder,
    groups_piece,
    split_crash,
    split_scan_batch,
    split_write_batch,
)
from ..store import cache
from ..store.datastore import Datastore
from ..store.memory import release_memory
from ..store.runs import Run
from .aggregate import NodeAggregator
from .reader import (
    TypesChanged,
    estimated_rows,
    find_input_files,
    iter_file_batches,
    missing_columns_error,
)

ROWS_PER_BUCKET = 100_000  # a pass-2 task holds one bucket: ~60 MB of pandas at the accelerator's width
MIN_ROWS_PER_BUCKET = 10_000  # below this, more buckets only add files

__all__ = ["PERIOD", "SplitResult", "split"]


@dataclass
class SplitResult:
    run_id: str
    reused: bool
    reason: str
    n_groups: int = 0
    n_series: int = 0
    n_train_rows: int = 0
    n_inference_rows: int = 0
    first_time: str = ""
    last_time: str = ""
    cutoff: str = ""
    frequency: str = ""
    groups_with_gaps: int = 0
    groups_without_inference: int = 0
    rows_missing_target: int = 0
    rows_not_used: int = 0
    series_without_target: int = 0
    series_without_inference: int = 0
    rows_after_series_end: int = 0
    groups_written: int = 0
    n_aggregate_nodes: int = 0  # with a hierarchy: groups that are aggregate nodes (counted in n_groups)
    inference_missing_known_future: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def split(config: Config, terminal: Terminal | None = None, *, options: RunOptions | None = None, session: Session | None = None, **option_fields) -> SplitResult:
    """Turn the raw input into per-group train/inference partitions (or reuse them).

    ``options`` (or its fields as keywords, see RunOptions) say how it runs; in ``session``, the session's.
    """
    with open_session(config, terminal, RunOptions.of(options, **option_fields), session) as s:
        return _split(s)


def _split(s: Session) -> SplitResult:
    config, store, terminal = s.config, s.store, s.terminal
    files = find_input_files(config.data.path, exclude=store.root if store.is_folder else None)
    config_fp = cache.config_fingerprint(config, cache.SPLIT)
    parts = cache.with_version({"inputs": digest(sorted(cache.input_hashes(store, files.paths).values())), "config": config_fp})
    previous = _previous_split(s)
    intact = (
        previous is not None
        and previous.get("fingerprint") == cache.fingerprint(parts)
        and store.has_split_groups()
        and not previous.get("damaged")  # train or forecast found partitions missing
    )
    decision = cache.decide(
        previous and {"fingerprint": previous.get("fingerprint"), "parts": previous.get("parts")},
        parts,
        s.allow_reuse,
        artefact_ok=intact,
        what="split",
    )
    run = Run(store, "split", config_fp).begin()
    if decision.reuse:
        terminal.detail(f"split: reused, {decision.reason}")
        result = SplitResult(run.id, True, decision.reason, **previous["summary"])
        run.finish("completed", {"reused": result.n_groups}, reused=True, reason=decision.reason, cutoff=result.cutoff)
        return result
    terminal.detail(f"split: recomputed, {decision.reason}")
    terminal.info(f"split: reading {files.label}")
    try:
        manifest = _compute(s, files, run)
    except Exception as exc:
        run.finish("failed", {}, error=str(exc))
        raise
    finally:
        store.remove_scratch(run.id)
    manifest["fingerprint"] = cache.fingerprint(parts)
    manifest["parts"] = parts
    manifest["mm_version"] = parts["version"]
    store.write_split_manifest(manifest)  # last: the manifest marks the split complete
    result = SplitResult(run.id, False, decision.reason, **manifest["summary"])
    run.finish("completed", {"groups": result.n_groups, "written": result.groups_written}, reason=decision.reason, cutoff=result.cutoff)
    return result


def _previous_split(s: Session) -> dict | None:
    """The manifest of the split in the datastore, or None: none, or damaged (warned; it is done again)."""
    try:
        manifest = s.store.read_split_manifest()
        if manifest is not None and s.store.has_split_groups():
            s.store.check_split_groups()
        return manifest
    except DamagedFile as exc:
        s.terminal.warn(f"{exc.message}: the split is done again")
        return None


def _compute(s: Session, files, run: Run) -> dict:
    config, store = s.config, s.store
    d = config.data
    scratch = store.scratch(run.id, "buckets")
    reading = _read_into_buckets(s, files, scratch, _bucket_count(files, s.workers))
    per_series = config.split.train_end == "per_series"
    spec = BucketSpec(tuple(d.group_columns), tuple(d.series_key), d.time_column, d.target_column, holdout=config.split.holdout, per_series=per_series, known_future=tuple(d.known_future_columns))
    context = SplitContext(store.location, scratch, spec, reading.schema, store.has_split_groups())
    buckets = sorted(reading.buckets)
    scans = _on_buckets(s, run, split_scan_batch, context, buckets, "split: checking")
    times, axis, cutoff_period, cutoff_text = _decide(config, reading, scans, files.label)
    columns = _column_order(config, reading.schema.names)
    spec = replace(spec, columns=tuple(columns), axis=axis.to_dict(), cutoff_period=cutoff_period)
    previous_keys = _split_keys(store)
    store.remove_split_manifest()  # partitions are about to change: the old split is no longer whole
    written = _on_buckets(s, run, split_write_batch, replace(context, spec=spec), buckets, "split: writing partitions")
    current_keys = _publish_groups(store, scratch, buckets)
    for key in _vanished(previous_keys, current_keys):
        store.remove_partition("train", key)
        store.remove_partition("inference", key)
    summary = _summary(written, times, axis, cutoff_text, per_series)
    summary["warnings"] = reading.warnings + summary["warnings"]
    summary["n_aggregate_nodes"] = reading.n_nodes
    return {
        "run_id": run.id,
        "axis": axis.to_dict(),
        "cutoff_period": cutoff_period,
        "group_columns": list(d.group_columns),
        "series_columns": d.series_key,
        "time_column": d.time_column,
        "target_column": d.target_column,
        "known_future_columns": list(d.known_future_columns),
        "columns": [str(c) for c in columns],
        "input_files": list(files.paths),
        "summary": summary,
    }


def _bucket_count(files, workers: int) -> int:
    rows = estimated_rows(files)
    return max(1, math.ceil(rows / ROWS_PER_BUCKET), min(2 * workers, math.ceil(rows / MIN_ROWS_PER_BUCKET)))


def _on_buckets(s: Session, run: Run, fn, context: SplitContext, buckets: list[int], label: str) -> list[dict]:
    """Run a pass over the buckets on the engine, a bucket per task; a bucket that fails fails the split."""
    results = []
    for done in s.execute(run, fn, split_crash, context, buckets, len(buckets), label, max_batch=1):
        for _, r in done:
            if r["status"] != "ok":
                raise MMError(f"split failed on bucket {r['bucket']}: {r['error']}", "run with --verbose, or report this bug")
            results.append(r)
    return sorted(results, key=lambda r: r["bucket"])


# -- pass 1: read the input into buckets -------------------------------------------

class _Problems:
    """Problems found in the input batch by batch, raised once it is all read.

    Counts are over the whole input; the first kind in check order is raised,
    as if the table had been checked at once.
    """

    def __init__(self, config: Config, source: str):
        d = config.data
        self.source = source
        self.target = d.target_column
        self.order = [f"empty:{c}" for c in d.series_key] + ["target_text", "target_inf"]
        self.order += [f"exog_inf:{c}" for c in d.known_future_columns] + ["time"]
        self.found: dict[str, dict] = {}
        self.text_columns: dict[str, dict] = {}  # known-future columns read as text: how many values look numeric

    def note_text_column(self, column: str, values: pd.Series) -> None:
        """A known-future column that came as text: count the values that look like numbers."""
        counts = values.dropna().astype(str).value_counts()  # categories are few: test each once
        distinct = counts.index.to_series()
        plain = pd.to_numeric(distinct, errors="coerce").notna().to_numpy()
        comma = pd.to_numeric(distinct.str.replace(",", ".", regex=False), errors="coerce").notna().to_numpy()
        entry = self.text_columns.setdefault(column, {"numeric": 0, "other": 0, "values": []})
        entry["numeric"] += int(counts[comma].sum())
        entry["other"] += int(counts[~comma].sum())
        for v in distinct[~plain][:6]:
            if v not in entry["values"] and len(entry["values"]) < 6:
                entry["values"].append(v)

    def warnings(self) -> list[str]:
        out = []
        for column, e in self.text_columns.items():
            if e["numeric"] and e["numeric"] >= e["other"]:
                out.append(
                    f"known-future column {column!r} is mostly numbers but is used as categories (text), because of value(s) "
                    f"such as {examples(e['values'])}; if it is numeric, fix those values (use '.' for decimals; leave unknown cells empty)"
                )
        return out

    def add(self, kind: str, count: int = 0, values=(), error: InputDataError | None = None) -> None:
        entry = self.found.setdefault(kind, {"count": 0, "values": [], "error": error})
        entry["count"] += count
        entry["values"].extend(v for v in values if v not in entry["values"] and len(entry["values"]) < 6)

    def __bool__(self) -> bool:
        return bool(self.found)

    def snapshot(self) -> tuple[dict, dict]:
        copy = lambda d: {k: {**v, "values": list(v["values"])} for k, v in d.items()}  # noqa: E731
        return copy(self.found), copy(self.text_columns)

    def restore(self, snapshot: tuple[dict, dict]) -> None:
        self.found, self.text_columns = snapshot

    def raise_first(self) -> None:
        for kind in self.order:
            if kind in self.found:
                raise self._error(kind, self.found[kind])

    def _error(self, kind: str, entry: dict) -> InputDataError:
        source, count = self.source, entry["count"]
        name, _, column = kind.partition(":")
        if name == "empty":
            return InputDataError(f"{source}: {count} row(s) have an empty group/series column {column!r}", "fill or remove those rows: every row must belong to a group")
        if name == "target_text":
            return InputDataError(
                f"{source}: target column {self.target!r} has {count} non-numeric value(s): {examples(entry['values'])}",
                "the target must be a number (empty for rows to forecast)",
            )
        if name == "target_inf":
            return InputDataError(
                f"{source}: target column {self.target!r} has {count} infinite value(s) (groups {', '.join(entry['values'][:3])})",
                "replace them with a real value or leave the cell empty (treated as missing)",
            )
        if name == "exog_inf":
            return InputDataError(f"{source}: known-future column {column!r} has infinite values", "replace them with real values")
        return entry["error"]


@dataclass
class _Reading:
    """What pass 1 learnt about the whole input."""

    rows: int = 0
    blank_rows: int = 0  # rows with every cell empty: skipped
    schema: pa.Schema | None = None
    times: TimeSummary | None = None
    any_target: bool = False
    target_column_seen: bool = False  # some file has the target column (a file of future rows may lack it)
    first_target: int | None = None  # int64 time values (see timeindex.time_values)
    last_target: int | None = None
    buckets: set[int] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    n_nodes: int = 0  # aggregate nodes written with the input rows (hierarchy)

    def merge(self, other: _Reading, source: str) -> None:
        self.rows += other.rows
        self.blank_rows += other.blank_rows
        self.schema = _unify(self.schema, other.schema, source)
        if other.times is not None:
            if self.times is not None and (self.times.kind, str(self.times.tz)) != (other.times.kind, str(other.times.tz)):
                raise _mixed_times(source, self.times, other.times)
            self.times = other.times if self.times is None else self.times.merge(other.times)
        self.any_target |= other.any_target
        self.target_column_seen |= other.target_column_seen
        self.first_target = _pick(min, self.first_target, other.first_target)
        self.last_target = _pick(max, self.last_target, other.last_target)
        self.buckets |= other.buckets


def _pick(fn, a, b):
    return b if a is None else a if b is None else fn(a, b)


def _read_into_buckets(s: Session, files, scratch: str, n_buckets: int) -> _Reading:
    config, store = s.config, s.store
    problems = _Problems(config, files.label)
    nodes = NodeAggregator(config, files.label) if config.hierarchy.levels is not None else None
    total = _Reading()
    for index, path in enumerate(files.paths):
        written: list[str] = []
        before = problems.snapshot(), nodes and nodes.snapshot()
        try:
            part = _read_file(store, config, path, index, True, scratch, n_buckets, problems, written, files.label, nodes)
        except TypesChanged as why:
            s.terminal.detail(f"split: {path}: column types changed after the first block ({why}); reading it whole")
            for rel in written:
                store.files.delete(rel)
            problems.restore(before[0])
            if nodes:
                nodes.restore(before[1])
            part = _read_file(store, config, path, index, False, scratch, n_buckets, problems, written, files.label, nodes)
        total.merge(part, files.label)
    if total.rows == 0:
        raise InputDataError(f"input {files.label} has a header but no rows", "check that the export wrote data")
    if not total.target_column_seen:
        present = [c for c in (total.schema.names if total.schema else []) if c != config.data.target_column]  # but the one added
        raise missing_columns_error(files.label, [config.data.target_column], present)
    problems.raise_first()
    total.warnings = problems.warnings()
    if nodes is not None:
        _nodes_to_buckets(store, config, nodes, scratch, n_buckets, total)
    if total.blank_rows:
        total.warnings.append(f"{total.blank_rows} row(s) with every cell empty were skipped")
    return total


def _read_file(store: Datastore, config: Config, path: str, index: int, streamed: bool, scratch: str, n_buckets: int, problems: _Problems, written: list[str], source: str, nodes: NodeAggregator | None = None) -> _Reading:
    d = config.data
    required = [c for c in dict.fromkeys([d.time_column, d.target_column, *d.series_key, *d.known_future_columns]) if c != d.target_column]
    part = _Reading()
    for number, table in enumerate(iter_file_batches(path, d.series_key, required, streamed)):
        table = table.drop_columns([c for c in d.drop_columns if c in table.column_names])
        if number == 0:
            check_column_names(config, table.column_names, path)
        frame = table.to_pandas()
        blank = frame.isna().all(axis=1)
        if blank.any():  # lines of nothing but separators (',,,' at the end of a spreadsheet export)
            part.blank_rows += int(blank.sum())
            frame = frame[~blank]
        if frame.empty:
            continue
        if d.target_column not in frame.columns:
            # a table of future rows only (no target yet) is allowed, if another file has the target
            frame[d.target_column] = np.nan
        else:
            part.target_column_seen = True
        part.rows += len(frame)
        if not _check_values(config, frame, problems):
            continue
        try:
            frame[d.time_column] = parse_times(frame[d.time_column], d.time_column, source, d.time_format)
        except InputDataError as exc:
            problems.add("time", error=problems.found.get("time", {}).get("error") or exc)
            continue
        if problems:
            continue  # the split will fail: only keep counting
        _summarise(part, frame, config, source)
        if nodes is not None:
            frame = nodes.add(frame)
        _to_buckets(store, frame, d.group_columns, f"{index:06d}-{number:05d}", scratch, n_buckets, part, written)
        release_memory()
    return part


def _nodes_to_buckets(store: Datastore, config: Config, nodes: NodeAggregator, scratch: str, n_buckets: int, total: _Reading) -> None:
    """The hierarchy's aggregate nodes, appended to the buckets as if they were input rows."""
    frame = nodes.rows()
    total.n_nodes = int(frame[list(config.data.group_columns)].drop_duplicates().shape[0]) if len(frame) else 0
    for start in range(0, len(frame), ROWS_PER_BUCKET):
        _to_buckets(store, frame.iloc[start : start + ROWS_PER_BUCKET], config.data.group_columns, f"nodes-{start // ROWS_PER_BUCKET:05d}", scratch, n_buckets, total, [])


def check_column_names(config: Config, columns, source: str) -> None:
    """Input columns may not take the names mm gives its own columns (in the partitions and the outputs)."""
    added = config.added_output_columns()
    clash = [str(c) for c in columns if c in added or str(c).startswith("_mm_")]
    if clash:
        raise InputDataError(
            f"{source}: column(s) {', '.join(map(repr, clash))} have the name of a column mm adds "
            f"({', '.join(added)}, and _mm_* inside the datastore)",
            "rename them in the input, list them in data.drop_columns, or choose another forecast.prediction_column",
        )


def _check_values(config: Config, frame: pd.DataFrame, problems: _Problems) -> bool:
    """Check and normalise one batch (target to float, boolean columns to 0/1); False if it has problems."""
    d = config.data
    ok = True
    for column in d.series_key:
        empty = frame[column].isna()
        if empty.any():
            problems.add(f"empty:{column}", int(empty.sum()))
            ok = False
    target = frame[d.target_column]
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        numeric = pd.to_numeric(target, errors="coerce")
        bad = numeric.isna() & target.notna()
        if bad.any():
            problems.add("target_text", int(bad.sum()), target[bad].unique().tolist())
            ok = False
        frame[d.target_column] = numeric.astype(np.float64)
    else:
        frame[d.target_column] = target.astype(np.float64)
    infinite = np.isinf(frame[d.target_column].to_numpy())
    if infinite.any():
        where = frame.loc[infinite, list(d.group_columns)].drop_duplicates().head(3)
        problems.add("target_inf", int(infinite.sum()), [group_label(d.group_columns, row) for row in where.itertuples(index=False)])
        ok = False
    for column in d.known_future_columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype(np.float64)
        elif pd.api.types.is_numeric_dtype(values):
            if np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).any():
                problems.add(f"exog_inf:{column}")
                ok = False
        else:
            problems.note_text_column(column, values)
    return ok


def _summarise(part: _Reading, frame: pd.DataFrame, config: Config, source: str) -> None:
    d = config.data
    times = TimeSummary.of(frame[d.time_column])
    if part.times is not None and (part.times.kind, str(part.times.tz)) != (times.kind, str(times.tz)):
        raise _mixed_times(source, part.times, times)
    part.times = times if part.times is None else part.times.merge(times)
    has_target = frame[d.target_column].notna().to_numpy()
    if has_target.any():
        values = time_values(frame[d.time_column])[has_target]
        part.any_target = True
        part.first_target = _pick(min, part.first_target, int(values.min()))
        part.last_target = _pick(max, part.last_target, int(values.max()))


def _to_buckets(store: Datastore, frame: pd.DataFrame, group_columns, tag: str, scratch: str, n_buckets: int, part: _Reading, written: list[str]) -> None:
    """Append the batch's rows to their groups' buckets (one scratch file per bucket and batch)."""
    codes, keys = group_keys(frame, list(group_columns))
    bucket = bucket_of(keys, n_buckets)[codes]
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    part.schema = _unify(part.schema, table.schema, tag)
    order = np.argsort(bucket, kind="stable")
    table = table.take(order)
    counts = np.bincount(bucket, minlength=n_buckets)
    start = 0
    for b in np.flatnonzero(counts):
        rel = f"{bucket_folder(scratch, int(b))}/{tag}.arrow"
        store.write_scratch(rel, table.slice(start, int(counts[b])))
        written.append(rel)
        part.buckets.add(int(b))
        start += int(counts[b])


def _unify(a: pa.Schema | None, b: pa.Schema | None, source: str) -> pa.Schema | None:
    if a is None or b is None:
        return a or b
    try:
        return pa.unify_schemas([a, b], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputDataError(
            f"the input files under {source} do not share one schema: {exc}",
            "make every file have the same columns with the same types",
        ) from None


def _mixed_times(source: str, a: TimeSummary, b: TimeSummary) -> InputDataError:
    if a.kind != b.kind:
        return InputDataError(f"{source}: the time column holds numbers in some rows and dates in others", "use one kind of time value throughout")
    return InputDataError(
        f"{source}: the time column mixes time zones ({a.tz} and {b.tz})",
        "convert the times to one time zone (or to UTC) before running mm",
    )


# -- between the passes: checks and decisions that need the whole input ------------

def _decide(config: Config, reading: _Reading, scans: list[dict], source: str) -> tuple[TimeSummary, TimeAxis, int | None, str]:
    """The time axis and the cutoff, from the summaries; the checks that need them, in the order
    a whole table would be checked (grid, duplicates, targets, something to train on)."""
    d = config.data
    times = reading.times
    for scan in scans:
        times = times.with_diffs(scan["diffs"], scan["diff_counts"])
    axis = times.axis(d.frequency, d.season_length, d.time_column, source)
    _check_duplicates(config, scans, times, axis, source)
    if not reading.any_target:
        raise InputDataError(f"{source}: no row has a value in target column {d.target_column!r}", "there is nothing to train on")
    cutoff_period, cutoff_text = _cutoff(config, axis, times, reading, scans, source)
    return times, axis, cutoff_period, cutoff_text


def _check_duplicates(config: Config, scans: list[dict], times: TimeSummary, axis: TimeAxis, source: str) -> None:
    d = config.data
    n = sum(scan["duplicate_rows"] for scan in scans)
    if not n:
        return
    shown = [e for scan in scans for e in scan["duplicate_examples"]][:3]
    stamps = times.series(np.array([e[-1] for e in shown], dtype=np.int64))
    labels = [f"{group_label(d.series_key, e[:-1])} at {format_time(t, axis)}" for e, t in zip(shown, stamps)]
    raise InputDataError(
        f"{source}: {n} rows share a (series, time) with another row: {'; '.join(labels)}",
        "remove or aggregate the duplicates (e.g. sum the target per week), or add the column that tells them apart to data.series_columns",
    )


def _cutoff(config: Config, axis: TimeAxis, times: TimeSummary, reading: _Reading, scans: list[dict], source: str) -> tuple[int | None, str]:
    """The cutoff period (None with a holdout or per_series: it is per series) and how to show it."""
    s = config.split
    if s.holdout is not None:
        text = f"last {s.holdout} period(s) of each series held out"
        key = "span_months" if axis.kind == "month" else "span"
        spans = [scan[key] for scan in scans if scan[key] is not None]
        if not spans or max(spans) // axis.step < s.holdout:
            raise _nothing_to_train(source, text)
        return None, text
    if s.train_end == "per_series":
        # every series with a target trains on at least that row: nothing more to check
        earliest = min(scan["earliest_end"] for scan in scans if scan["earliest_end"] is not None)
        return None, _per_series_text(axis, times, earliest, reading.last_target)
    if s.train_end == "auto":
        cutoff = int(axis.to_periods(times.series(np.array([reading.last_target])))[0])
    else:
        cutoff = _period_of(s.train_end, axis, times.series())
    distinct = times.series()
    at = distinct[axis.to_periods(distinct) == cutoff]
    text = format_time(at.iloc[0], axis) if len(at) else str(s.train_end)
    first = int(axis.to_periods(times.series(np.array([reading.first_target])))[0])
    if first > cutoff:
        raise _nothing_to_train(source, text)
    return cutoff, text


def _per_series_text(axis: TimeAxis, times: TimeSummary, earliest: int, latest: int) -> str:
    """'per series: each series' last target (from 1990-01-01 to 2017-05-01)', for the summary and the run record."""
    first, last = (format_time(v, axis) for v in times.series(np.array([earliest, latest], dtype=np.int64)))
    where = f"all at {first}" if first == last else f"from {first} to {last}"
    return f"per series: each series' last target ({where})"


def _nothing_to_train(source: str, cutoff_text: str) -> InputDataError:
    return InputDataError(
        f"{source}: no row is at or before the cutoff ({cutoff_text}), so there is nothing to train on",
        "move split.train_end later (or lower split.holdout)",
    )


def _period_of(value, axis: TimeAxis, times: pd.Series) -> int:
    if axis.kind == "int":
        if not isinstance(value, int):
            raise InputDataError(f"split.train_end is {value!r}, but the time column holds period numbers", "set split.train_end to a period number, e.g. 135")
        return int((value - axis.offset) // axis.step)
    if isinstance(value, int):
        raise InputDataError(f"split.train_end is the number {value}, but the time column holds dates", "set split.train_end to a date, e.g. 1992-05-28")
    stamp = pd.Series(pd.to_datetime([value]))
    if isinstance(times.dtype, pd.DatetimeTZDtype) and stamp.dt.tz is None:
        stamp = stamp.dt.tz_localize(times.dt.tz)
    return int(axis.to_periods(stamp)[0])


def _column_order(config: Config, present) -> list[str]:
    d = config.data
    first = [*d.series_key, d.time_column, d.target_column, *d.known_future_columns]
    rest = [c for c in present if c not in first and not str(c).startswith("_")]
    return [*first, *rest, PERIOD]


# -- after pass 3: the groups table and the summary -----------------------------------

def _split_keys(store: Datastore) -> pa.ChunkedArray | None:
    if not store.has_split_groups():
        return None
    try:
        return pa.chunked_array([batch.column(0).cast(pa.string()) for batch in store.iter_split_groups(columns=["key"])], pa.string())
    except DamagedFile:
        return None  # the old split's groups are unknown: partitions of groups gone from the input stay, unread


def _publish_groups(store: Datastore, scratch: str, buckets: list[int]) -> pa.ChunkedArray:
    """Concatenate the buckets' pieces into split/groups.parquet; the keys it lists."""
    keys: list[pa.Array] = []
    with ExitStack() as stack:
        writer, schema = None, None
        for b in buckets:
            piece = store.read_scratch_parquet(groups_piece(scratch, b)).replace_schema_metadata(None)
            if writer is None:
                schema = piece.schema
                writer = stack.enter_context(store.split_groups_writer(schema))
            writer.write_table(piece.cast(schema))
            keys.extend(piece["key"].cast(pa.string()).chunks)
    return pa.chunked_array(keys, pa.string())


def _vanished(previous: pa.ChunkedArray | None, current: pa.ChunkedArray) -> list[str]:
    if previous is None:
        return []
    import pyarrow.compute as pc

    return previous.filter(pc.invert(pc.is_in(previous, value_set=current))).to_pylist()


COUNTS = ("n_groups", "n_series", "n_train_rows", "n_inference_rows", "groups_with_gaps", "groups_without_inference", "rows_missing_target", "rows_not_used", "series_without_target", "series_without_inference", "rows_after_series_end", "groups_written")


def _summary(written: list[dict], times: TimeSummary, axis: TimeAxis, cutoff_text: str, per_series: bool) -> dict:
    total = {k: sum(r[k] for r in written) for k in COUNTS}
    missing_kf: dict[str, int] = {}
    for r in written:
        for column, n in r.get("inference_missing_known_future", {}).items():
            missing_kf[column] = missing_kf.get(column, 0) + n
    total["inference_missing_known_future"] = missing_kf
    warnings = _per_series_warnings(total) if per_series else []
    if total["rows_missing_target"]:
        where = "before their series' last target" if per_series else f"at or before the cutoff ({cutoff_text})"
        warnings.append(
            f"{total['rows_missing_target']} row(s) {where} have no target: they are gaps in training "
            "and are not forecast (rows to forecast come after the cutoff)" + _ended_early(total)
        )
    for column, n in missing_kf.items():
        warnings.append(
            f"{n} inference row(s) have no value in known-future column {column!r}: they are forecast as if it were unknown "
            "(LightGBM treats it as missing, the linear model uses its training mean); fill in the planned values"
        )
    if total["rows_not_used"]:
        warnings.append(f"{total['rows_not_used']} row(s) after the holdout window are not used")
    if total["n_inference_rows"] == 0:
        where = "no series has rows after its last target" if per_series else "no rows after the cutoff"
        warnings.append(f"{where}: there is nothing to forecast (add future rows, or use split.holdout to evaluate)")
    distinct = times.series()
    return {
        **total,
        "first_time": format_time(distinct.min(), axis),
        "last_time": format_time(distinct.max(), axis),
        "cutoff": cutoff_text,
        "frequency": axis.label,
        "warnings": warnings,
    }


def _ended_early(total: dict) -> str:
    """With one global cutoff, the part of the gaps that is really the future of series that ended earlier."""
    n = total["rows_after_series_end"]
    if not n:
        return ""
    return f"; {n} of them come after their series' last target: to forecast each series from its own end, set split.train_end: per_series"


def _per_series_warnings(total: dict) -> list[str]:
    """One line per kind of series a per-series cutoff leaves without history or without a forecast (counts, not names)."""
    out = []
    if total["series_without_target"]:
        out.append(
            f"{total['series_without_target']} series with no target at all: every row of theirs comes after their cutoff and is forecast "
            "as a new series (a group with no other history fails in train with no_history)"
        )
    if total["series_without_inference"] and total["n_inference_rows"]:  # when none has any, the 'nothing to forecast' warning says it
        out.append(f"no rows after their last target in {total['series_without_inference']} of {total['n_series']} series: nothing is forecast for them")
    return out
