"""The per-bucket work of mm split: pure functions on one bucket of rows.

``mm split`` streams the input into buckets: every row of a group goes to the
bucket its group key hashes to, so a bucket holds whole groups, and with them
whole series. Two passes then run over the buckets through the engine, in
parallel: ``scan`` validates and summarises a bucket without writing anything
(time steps for frequency inference, duplicate rows, the longest span of
targets), and ``partition`` cuts it into each group's train and inference
tables and its rows of the groups table. Everything per series (time steps,
duplicates, holdout windows, per-series cutoffs, gaps) is computed inside one
bucket; what needs the whole input (the time axis, the cutoff) is reduced from
the summaries between the passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .identity import (
    group_key,
    group_label,
    jsonable,
    row_hashes,
    schema_signature,
    slice_hash,
)
from .timeindex import TimeAxis, format_time, month_numbers, series_diffs, time_values

PERIOD = "_mm_period"  # integer period of each row, stored in the partitions


@dataclass(frozen=True)
class BucketSpec:
    """What the per-bucket functions need to know about the columns and the cutoff."""

    group_columns: tuple[str, ...]
    series_key: tuple[str, ...]
    time_column: str
    target_column: str
    columns: tuple[str, ...] = ()  # partition columns, in order (PERIOD last)
    axis: dict | None = None
    cutoff_period: int | None = None  # train_end / auto; None with holdout or per_series
    holdout: int | None = None
    per_series: bool = False  # train_end: per_series: each series' own last target is its cutoff
    known_future: tuple[str, ...] = ()

    @property
    def time_axis(self) -> TimeAxis:
        return TimeAxis.from_dict(self.axis)


def bucket_of(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """The bucket of each group key (keys are hex hashes: their first digits are uniform)."""
    return np.array([int(k[:8], 16) % n_buckets for k in keys], dtype=np.int64)


def group_keys(frame: pd.DataFrame, group_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row's group, key of each code): one hash per group, not per row."""
    # sort=False numbers groups by first appearance, the order drop_duplicates keeps
    codes = frame.groupby(group_columns, sort=False, observed=True, dropna=False).ngroup().to_numpy()
    firsts = frame[group_columns].drop_duplicates()
    keys = np.array([group_key(list(values)) for values in firsts.itertuples(index=False)], dtype=object)
    return codes, keys


# -- pass 1: scan (validate, summarise; writes nothing) -------------------------

def scan(frame: pd.DataFrame, spec: BucketSpec) -> dict:
    """Per-series time steps, duplicate (series, time) rows, and the longest span of targets."""
    series = frame.groupby(list(spec.series_key), sort=True, observed=True).ngroup().to_numpy()
    times = frame[spec.time_column]
    values = time_values(times)
    diffs, counts = np.unique(series_diffs(values, series), return_counts=True)
    dup = pd.DataFrame({"s": series, "t": values}).duplicated(keep=False).to_numpy()
    examples = []
    if dup.any():
        shown = pd.DataFrame({**{c: frame[c].to_numpy()[dup] for c in spec.series_key}, "_t": values[dup]}).drop_duplicates().head(3)
        examples = [[*(jsonable(v) for v in r[:-1]), int(r[-1])] for r in shown.itertuples(index=False)]
    return {
        "diffs": diffs.tolist(),
        "diff_counts": counts.tolist(),
        "duplicate_rows": int(dup.sum()),
        "duplicate_examples": examples,
        **_target_spans(frame, spec, series, values),
    }


def _target_spans(frame: pd.DataFrame, spec: BucketSpec, series: np.ndarray, values: np.ndarray) -> dict:
    """The longest first-to-last target span of any series, in time units and in months, and the
    earliest last target of any series (where the first per-series cutoff is, to show it).

    With a holdout, a series trains on something only if its targets span more
    than the holdout window; the axis (hence periods) is not known yet, so both
    units are kept and the caller picks the one its axis counts in.
    """
    has_target = frame[spec.target_column].notna().to_numpy()
    if not has_target.any():
        return {"span": None, "span_months": None, "earliest_end": None}
    s, v = series[has_target], values[has_target]
    first = pd.Series(v).groupby(s).min()
    last = pd.Series(v).groupby(s).max()
    span = int((last - first).max())
    months = None
    if not pd.api.types.is_integer_dtype(frame[spec.time_column]):
        times = frame[spec.time_column][has_target]
        m = pd.Series(month_numbers(times)).groupby(s).agg(["min", "max"])
        months = int((m["max"] - m["min"]).max())
    return {"span": span, "span_months": months, "earliest_end": int(last.min())}


# -- pass 2: partition -----------------------------------------------------------

@dataclass
class BucketPlan:
    train: pd.DataFrame
    inference: pd.DataFrame
    groups: pd.DataFrame
    summary: dict


def plan(frame: pd.DataFrame, spec: BucketSpec) -> BucketPlan:
    """Each group's train and inference rows, and the bucket's rows of the groups table."""
    axis = spec.time_axis
    frame = frame.copy()
    frame[PERIOD] = axis.to_periods(frame[spec.time_column])
    frame["_s"] = frame.groupby(list(spec.series_key), sort=True, observed=True).ngroup().to_numpy()
    frame["_g"] = frame.groupby(list(spec.group_columns), sort=True, observed=True).ngroup().to_numpy()
    target = frame[spec.target_column].to_numpy()
    has_target = ~np.isnan(target)
    period = frame[PERIOD].to_numpy()
    series = frame["_s"].to_numpy()
    last = _series_last_target(series, period, has_target)
    if spec.holdout is not None or spec.per_series:
        in_train_window, inference_mask = _series_windows(spec, last, period)
    else:
        in_train_window = period <= spec.cutoff_period
        inference_mask = ~in_train_window
    train_mask = in_train_window & has_target
    train = frame.loc[train_mask].sort_values(["_g", "_s", PERIOD], kind="stable")
    inference = frame.loc[inference_mask].sort_values(["_g", "_s", PERIOD], kind="stable")
    groups = _group_table(spec, frame, train, inference, axis)
    summary = {
        "n_groups": len(groups),
        "n_series": int(frame["_s"].nunique()),
        "n_train_rows": len(train),
        "n_inference_rows": len(inference),
        "groups_with_gaps": int(groups["has_gaps"].sum()),
        "groups_without_inference": int((groups["n_inference"] == 0).sum()),
        "rows_missing_target": int((in_train_window & ~has_target).sum()),
        "rows_not_used": int((~in_train_window & ~inference_mask).sum()),
        "series_without_target": int(frame["_s"].nunique() - pd.unique(series[has_target]).size),
        "series_without_inference": int(frame["_s"].nunique() - inference["_s"].nunique()),
        # rows a global cutoff calls gaps although their series has ended: its future, which per_series would forecast
        "rows_after_series_end": int((in_train_window & (period > last)).sum()),
        # inference rows without a value in a known-future column (forecast as if it were unknown)
        "inference_missing_known_future": {c: int(inference[c].isna().sum()) for c in spec.known_future if c in inference and inference[c].isna().any()},
    }
    return BucketPlan(train, inference, groups, summary)


def _series_last_target(series: np.ndarray, period: np.ndarray, has_target: np.ndarray) -> np.ndarray:
    """Each row's series' last period with a target (NaN for a series without any)."""
    return pd.Series(np.where(has_target, period, np.nan)).groupby(series).transform("max").to_numpy()


def _series_windows(spec: BucketSpec, last: np.ndarray, period: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train window, inference rows) when each series has its own cutoff: its last period with a target."""
    if spec.holdout is not None:
        # everything up to (its last target - holdout) trains, the holdout window is forecast, later rows are not used
        return period <= last - spec.holdout, (period > last - spec.holdout) & (period <= last)
    # per_series: a series without any target has no history, so all its rows come after its cutoff
    # (forecast as a new series, as after a global cutoff; a group of nothing else fails no_history in train)
    last = np.where(np.isnan(last), -np.inf, last)
    return period <= last, period > last


def group_slices(part: pd.DataFrame, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) row of each group code in a part sorted by group."""
    codes = part["_g"].to_numpy()
    index = np.arange(n_groups)
    return np.searchsorted(codes, index, side="left"), np.searchsorted(codes, index, side="right")


def _group_table(spec: BucketSpec, frame: pd.DataFrame, train: pd.DataFrame, inference: pd.DataFrame, axis: TimeAxis) -> pd.DataFrame:
    firsts = frame.groupby("_g", sort=True).first()
    n = len(firsts)
    values = [[jsonable(v) for v in row] for row in firsts[list(spec.group_columns)].itertuples(index=False)]
    keys = [group_key(v) for v in values]
    if len(set(keys)) != n:
        raise ValueError("two groups hash to the same key; please report this bug with your group values")
    table = pd.DataFrame(
        {
            "key": keys,
            "label": [group_label(spec.group_columns, v) for v in values],
            "values": [json.dumps(v, ensure_ascii=False) for v in values],
        }
    )
    index = np.arange(n)
    table["n_train"] = train.groupby("_g").size().reindex(index, fill_value=0).to_numpy()
    table["n_inference"] = inference.groupby("_g").size().reindex(index, fill_value=0).to_numpy()
    table["n_series"] = frame.groupby("_g")["_s"].nunique().reindex(index, fill_value=0).to_numpy()
    table["n_train_periods"] = train.groupby("_g")[PERIOD].nunique().reindex(index, fill_value=0).to_numpy()
    tt = train.groupby("_g")[spec.time_column]
    table["train_start"] = _fmt_times(tt.min().reindex(index), axis)
    table["train_end"] = _fmt_times(tt.max().reindex(index), axis)
    it = inference.groupby("_g")[spec.time_column]
    table["inference_start"] = _fmt_times(it.min().reindex(index), axis)
    table["inference_end"] = _fmt_times(it.max().reindex(index), axis)
    per_series = train.groupby("_s")[PERIOD].agg(["min", "max", "size"])
    gap_series = per_series.index[(per_series["max"] - per_series["min"] + 1) > per_series["size"]]
    gap_groups = set(train.loc[train["_s"].isin(gap_series), "_g"].unique())
    table["has_gaps"] = [i in gap_groups for i in index]
    table["train_hash"] = _hashes(train, list(spec.columns), n)
    table["inference_hash"] = _hashes(inference, list(spec.columns), n)
    return table


def _fmt_times(values: pd.Series, axis: TimeAxis) -> list[str]:
    return ["" if pd.isna(v) else format_time(v, axis) for v in values]


def _hashes(part: pd.DataFrame, columns: list[str], n: int) -> list[str]:
    out = [""] * n
    if part.empty:
        return out
    body = part[columns]
    rows = row_hashes(body)
    schema = schema_signature(body)
    codes = part["_g"].to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    for start, end in zip(starts, ends):
        out[codes[start]] = slice_hash(schema, rows[start:end])
    return out
