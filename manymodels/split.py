"""mm split: raw table -> per-group train and inference partitions.

The cutoff decides which rows train a model and which are forecast:

- ``train_end: auto``: rows with a target up to the last time that has one
  train; later rows (whose target may be empty) are forecast;
- ``train_end: <date or period>``: rows up to it train, later rows are forecast;
- ``holdout: N``: the last N periods of each series (up to its last target) are
  forecast with their actuals kept for evaluation; later rows are not used.

Times become integer periods (see timeindex), so gaps stay gaps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from . import cache
from .config import Config
from .console import Terminal
from .datastore import Datastore, group_key, group_label, jsonable
from .errors import InputDataError, examples
from .reader import find_input_files, read_input
from .runs import Run
from .session import Session, open_session
from .timeindex import TimeAxis, format_time, infer_axis, parse_times

PERIOD = "_mm_period"  # integer period of each row, stored in the partitions


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
    groups_written: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def split(
    config: Config,
    terminal: Terminal | None = None,
    *,
    allow_reuse: bool | None = None,
    wait: float = 0.0,
    session: Session | None = None,
) -> SplitResult:
    """Turn the raw input into per-group train/inference partitions (or reuse them)."""
    with open_session(config, terminal, allow_reuse, wait=wait, session=session) as s:
        return _split(s)


def _split(s: Session) -> SplitResult:
    config, store, terminal = s.config, s.store, s.terminal
    files = find_input_files(config.data.path)
    config_fp = config.section_fingerprint(*cache.SPLIT_SECTIONS)
    parts = cache.with_version({"inputs": cache.digest(sorted(cache.input_hashes(store, files.paths).values())), "config": config_fp})
    previous = store.read_split_manifest()
    intact = previous is not None and previous.get("fingerprint") == cache.fingerprint(parts) and store.split_groups_path.exists()
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
        run.finish("completed", {"reused": result.n_groups}, reused=True, reason=decision.reason)
        return result
    terminal.detail(f"split: recomputed, {decision.reason}")
    terminal.info(f"split: reading {files.label}")
    try:
        frame = _read(config, files)
        axis, frame = _add_periods(config, frame, files.label)
        plan = _plan(config, frame, axis, files.label)
        written = _write(store, config, plan, terminal)
    except Exception as exc:
        run.finish("failed", {}, error=str(exc))
        raise
    summary = plan.summary
    summary.groups_written = written
    manifest = {
        "fingerprint": cache.fingerprint(parts),
        "parts": parts,
        "mm_version": parts["version"],
        "run_id": run.id,
        "axis": axis.to_dict(),
        "cutoff_period": plan.cutoff_period,
        "group_columns": list(config.data.group_columns),
        "series_columns": config.data.series_key,
        "time_column": config.data.time_column,
        "target_column": config.data.target_column,
        "known_future_columns": list(config.data.known_future_columns),
        "columns": [str(c) for c in plan.columns],
        "input_files": list(files.paths),
        "summary": {k: v for k, v in summary.to_dict().items() if k not in ("run_id", "reused", "reason")},
    }
    store.write_split_manifest(manifest, plan.groups)
    result = SplitResult(run.id, False, decision.reason, **manifest["summary"])
    run.finish("completed", {"groups": result.n_groups, "written": written}, reason=decision.reason)
    return result


# -- reading -----------------------------------------------------------------

def _read(config: Config, files) -> pd.DataFrame:
    d = config.data
    required = list(dict.fromkeys([d.time_column, d.target_column, *d.series_key, *d.known_future_columns]))
    table = read_input(files, text_columns=d.series_key, required=[c for c in required if c != d.target_column])
    drop = [c for c in d.drop_columns if c in table.column_names]
    table = table.drop_columns(drop)
    frame = table.to_pandas()
    if d.target_column not in frame.columns:
        # a table of future rows only (no target yet) is allowed; one with no rows at all is not
        frame[d.target_column] = np.nan
    if frame.empty:
        raise InputDataError(f"input {files.label} has a header but no rows", "check that the export wrote data")
    _check_values(config, frame, files.label)
    return frame


def _check_values(config: Config, frame: pd.DataFrame, source: str) -> None:
    d = config.data
    for column in d.series_key:
        empty = frame[column].isna()
        if empty.any():
            raise InputDataError(
                f"{source}: {int(empty.sum())} row(s) have an empty group/series column {column!r}",
                "fill or remove those rows: every row must belong to a group",
            )
    target = frame[d.target_column]
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        numeric = pd.to_numeric(target, errors="coerce")
        bad = numeric.isna() & target.notna()
        if bad.any():
            raise InputDataError(
                f"{source}: target column {d.target_column!r} has {int(bad.sum())} non-numeric value(s): {examples(target[bad].unique())}",
                "the target must be a number (empty for rows to forecast)",
            )
        frame[d.target_column] = numeric.astype(np.float64)
    else:
        frame[d.target_column] = target.astype(np.float64)
    infinite = np.isinf(frame[d.target_column].to_numpy())
    if infinite.any():
        where = frame.loc[infinite, list(d.group_columns)].drop_duplicates().head(3)
        labels = [group_label(d.group_columns, row) for row in where.itertuples(index=False)]
        raise InputDataError(
            f"{source}: target column {d.target_column!r} has {int(infinite.sum())} infinite value(s) (groups {', '.join(labels)})",
            "replace them with a real value or leave the cell empty (treated as missing)",
        )
    for column in d.known_future_columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype(np.float64)
        elif pd.api.types.is_numeric_dtype(values):
            if np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).any():
                raise InputDataError(f"{source}: known-future column {column!r} has infinite values", "replace them with real values")


def _add_periods(config: Config, frame: pd.DataFrame, source: str) -> tuple[TimeAxis, pd.DataFrame]:
    d = config.data
    frame[d.time_column] = parse_times(frame[d.time_column], d.time_column, source, d.time_format)
    series_ids = frame.groupby(d.series_key, sort=True, observed=True).ngroup().to_numpy()
    axis = infer_axis(frame[d.time_column], series_ids, d.frequency, d.season_length, d.time_column, source)
    frame[PERIOD] = axis.to_periods(frame[d.time_column])
    frame["_s"] = series_ids
    dup = frame.duplicated(subset=["_s", PERIOD], keep=False)
    if dup.any():
        rows = frame.loc[dup, [*d.series_key, d.time_column]].drop_duplicates().head(3)
        shown = [f"{group_label(d.series_key, r[:-1])} at {format_time(r[-1], axis)}" for r in rows.itertuples(index=False)]
        raise InputDataError(
            f"{source}: {int(dup.sum())} rows share a (series, time) with another row: {'; '.join(shown)}",
            "remove or aggregate the duplicates (e.g. sum the target per week), or add the column that tells them apart to data.series_columns",
        )
    return axis, frame


# -- planning ----------------------------------------------------------------

@dataclass
class _Plan:
    train: pd.DataFrame
    inference: pd.DataFrame
    groups: pd.DataFrame
    columns: list[str]
    cutoff_period: int | None
    summary: SplitResult


def _plan(config: Config, frame: pd.DataFrame, axis: TimeAxis, source: str) -> _Plan:
    d, s = config.data, config.split
    target = frame[d.target_column].to_numpy()
    has_target = ~np.isnan(target)
    period = frame[PERIOD].to_numpy()
    if not has_target.any():
        raise InputDataError(f"{source}: no row has a value in target column {d.target_column!r}", "there is nothing to train on")
    warnings: list[str] = []
    cutoff_period: int | None
    if s.holdout is not None:
        # per series: everything up to (its last target - holdout) trains, the holdout window is forecast
        last = pd.Series(np.where(has_target, period, np.nan)).groupby(frame["_s"].to_numpy()).transform("max").to_numpy()
        in_train_window = period <= last - s.holdout
        inference_mask = (period > last - s.holdout) & (period <= last)
        cutoff_period = None
        cutoff_text = f"last {s.holdout} period(s) of each series held out"
    else:
        if s.train_end == "auto":
            cutoff_period = int(period[has_target].max())
        else:
            cutoff_period = _period_of(s.train_end, axis, frame[d.time_column])
        in_train_window = period <= cutoff_period
        inference_mask = ~in_train_window
        cutoff_text = _time_of_period(frame, d.time_column, period, cutoff_period, axis, s.train_end)
    train_mask = in_train_window & has_target
    if not train_mask.any():
        raise InputDataError(
            f"{source}: no row is at or before the cutoff ({cutoff_text}), so there is nothing to train on",
            "move split.train_end later (or lower split.holdout)",
        )
    missing_target = int((in_train_window & ~has_target).sum())
    not_used = int((~in_train_window & ~inference_mask).sum())
    if missing_target:
        warnings.append(f"{missing_target} row(s) at or before the cutoff have no target; they are gaps in training")
    if not_used:
        warnings.append(f"{not_used} row(s) after the holdout window are not used")

    frame["_g"] = frame.groupby(list(d.group_columns), sort=True, observed=True).ngroup().to_numpy()
    columns = [c for c in _column_order(config, frame.columns)]

    train = frame.loc[train_mask].sort_values(["_g", "_s", PERIOD], kind="stable")
    inference = frame.loc[inference_mask].sort_values(["_g", "_s", PERIOD], kind="stable")
    groups = _group_table(config, frame, train, inference, axis, columns)
    if inference.empty:
        warnings.append("no rows after the cutoff: there is nothing to forecast (add future rows, or use split.holdout to evaluate)")
    summary = SplitResult(
        run_id="",
        reused=False,
        reason="",
        n_groups=len(groups),
        n_series=int(frame["_s"].nunique()),
        n_train_rows=len(train),
        n_inference_rows=len(inference),
        first_time=format_time(frame[d.time_column].min(), axis),
        last_time=format_time(frame[d.time_column].max(), axis),
        cutoff=cutoff_text,
        frequency=axis.label,
        groups_with_gaps=int(groups["has_gaps"].sum()),
        groups_without_inference=int((groups["n_inference"] == 0).sum()),
        rows_missing_target=missing_target,
        rows_not_used=not_used,
        warnings=warnings,
    )
    return _Plan(train, inference, groups, columns, cutoff_period, summary)


def _column_order(config: Config, present) -> list[str]:
    d = config.data
    first = [*d.series_key, d.time_column, d.target_column, *d.known_future_columns]
    rest = [c for c in present if c not in first and not str(c).startswith("_")]
    return [*first, *rest, PERIOD]


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


def _time_of_period(frame, time_column, period, cutoff_period, axis, configured) -> str:
    at = frame[time_column].to_numpy()[period == cutoff_period]
    if len(at):
        return format_time(at[0], axis)
    return str(configured)


def _group_table(config: Config, frame: pd.DataFrame, train: pd.DataFrame, inference: pd.DataFrame, axis: TimeAxis, columns: list[str]) -> pd.DataFrame:
    d = config.data
    firsts = frame.groupby("_g", sort=True).first()
    n = len(firsts)
    values = [[jsonable(v) for v in row] for row in firsts[list(d.group_columns)].itertuples(index=False)]
    keys = [group_key(v) for v in values]
    if len(set(keys)) != n:
        raise InputDataError("two groups hash to the same key; please report this bug with your group values")
    table = pd.DataFrame(
        {
            "key": keys,
            "label": [group_label(d.group_columns, v) for v in values],
            "values": [json.dumps(v, ensure_ascii=False) for v in values],
        }
    )
    index = np.arange(n)
    table["n_train"] = train.groupby("_g").size().reindex(index, fill_value=0).to_numpy()
    table["n_inference"] = inference.groupby("_g").size().reindex(index, fill_value=0).to_numpy()
    table["n_series"] = frame.groupby("_g")["_s"].nunique().reindex(index, fill_value=0).to_numpy()
    table["n_train_periods"] = train.groupby("_g")[PERIOD].nunique().reindex(index, fill_value=0).to_numpy()
    tt = train.groupby("_g")[d.time_column]
    table["train_start"] = _fmt_times(tt.min().reindex(index), axis)
    table["train_end"] = _fmt_times(tt.max().reindex(index), axis)
    it = inference.groupby("_g")[d.time_column]
    table["inference_start"] = _fmt_times(it.min().reindex(index), axis)
    table["inference_end"] = _fmt_times(it.max().reindex(index), axis)
    per_series = train.groupby("_s")[PERIOD].agg(["min", "max", "size"])
    gap_series = per_series.index[(per_series["max"] - per_series["min"] + 1) > per_series["size"]]
    gap_groups = set(train.loc[train["_s"].isin(gap_series), "_g"].unique())
    table["has_gaps"] = [i in gap_groups for i in index]
    table["train_hash"] = _hashes(train, columns, n)
    table["inference_hash"] = _hashes(inference, columns, n)
    return table


def _fmt_times(values: pd.Series, axis: TimeAxis) -> list[str]:
    return ["" if pd.isna(v) else format_time(v, axis) for v in values]


def _hashes(part: pd.DataFrame, columns: list[str], n: int) -> list[str]:
    out = [""] * n
    if part.empty:
        return out
    body = part[columns]
    rows = cache.row_hashes(body)
    schema = cache.schema_signature(body)
    codes = part["_g"].to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    for start, end in zip(starts, ends):
        out[codes[start]] = cache.slice_hash(schema, rows[start:end])
    return out


# -- writing -----------------------------------------------------------------

def _write(store: Datastore, config: Config, plan: _Plan, terminal: Terminal) -> int:
    """Write partitions whose content changed; remove those of vanished groups."""
    old = _previous_hashes(store)
    groups = plan.groups
    written = 0
    with terminal.progress("split: writing partitions", total=2 * len(groups)) as bar:
        for kind, part, hash_column, count_column in (
            ("train", plan.train, "train_hash", "n_train"),
            ("inference", plan.inference, "inference_hash", "n_inference"),
        ):
            table = pa.Table.from_pandas(part[plan.columns], preserve_index=False) if len(part) else None
            codes = part["_g"].to_numpy()
            starts = np.searchsorted(codes, np.arange(len(groups)), side="left")
            ends = np.searchsorted(codes, np.arange(len(groups)), side="right")
            for i, (key, digest, count) in enumerate(zip(groups["key"], groups[hash_column], groups[count_column])):
                bar.advance()
                if count == 0:
                    if (kind, key) in old:
                        store.remove_partition(kind, key)
                    continue
                if old.get((kind, key)) == digest and store.has_partition(kind, key):
                    continue
                store.write_partition(kind, key, table.slice(int(starts[i]), int(ends[i] - starts[i])))
                written += 1
    current = set(groups["key"])
    for kind, key in old:
        if key not in current:
            store.remove_partition(kind, key)
    return written


def _previous_hashes(store: Datastore) -> dict[tuple[str, str], str]:
    if not store.split_groups_path.exists():
        return {}
    try:
        previous = store.read_split_groups()
    except Exception:
        return {}
    out = {}
    for key, th, ih in zip(previous["key"], previous["train_hash"], previous["inference_hash"]):
        if th:
            out[("train", key)] = th
        if ih:
            out[("inference", key)] = ih
    return out
