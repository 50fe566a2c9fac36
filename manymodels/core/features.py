"""Per-series features, computed on a dense period grid with numpy.

A group's target values are laid out on a grid ``Y[series, period]`` with NaN
for every period whose value is unknown: a gap in the data, or a period after
the cutoff. Lags and rolling statistics read that grid at ``period - k``, so a
missing week stays missing instead of shifting the series, and lags never cross
from one series into another.

The same ``lag_features`` builds the training matrix and, one forecast period
at a time, the rows of a recursive forecast after predictions have been written
into the grid. Values after the cutoff enter the grid only as predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .timeindex import TimeAxis, calendar_features

# Default lags and rolling windows per season length (periods per season).
_AUTO_LAGS = {
    52: (1, 2, 3, 4, 8, 13, 26, 52),
    7: (1, 2, 3, 4, 5, 6, 7, 14, 28),
    12: (1, 2, 3, 6, 12),
    4: (1, 2, 3, 4, 8),
    24: (1, 2, 3, 24, 48, 168),
}
_AUTO_WINDOWS = {52: (4, 13), 7: (7, 28), 12: (3, 12), 4: (4,), 24: (24, 168)}


@dataclass(frozen=True)
class FeatureSpec:
    lags: tuple[int, ...]
    windows: tuple[int, ...]
    calendar: bool
    numeric_exog: tuple[str, ...]
    categorical_exog: tuple[str, ...]
    season_length: int | None

    @classmethod
    def resolve(cls, lags, windows, calendar: bool, numeric_exog, categorical_exog, season_length: int | None) -> FeatureSpec:
        season = season_length or 0
        if lags == "auto":
            lags = _AUTO_LAGS.get(season, (1, 2, 3, 4) if not season else tuple(sorted({1, 2, 3, season})))
        if windows == "auto":
            windows = _AUTO_WINDOWS.get(season, (4,) if not season else (season,))
        return cls(tuple(sorted(set(lags))), tuple(sorted(set(windows))), calendar, tuple(numeric_exog), tuple(categorical_exog), season_length)

    @property
    def n_history_columns(self) -> int:
        """The design matrix's first columns, read from the target's history: one per lag, a mean
        and a std per window (``names``' order); a recursive forecast fills them step by step."""
        return len(self.lags) + 2 * len(self.windows)

    def names(self, calendar_names: list[str], with_series: bool) -> list[str]:
        names = [f"lag_{k}" for k in self.lags]
        for w in self.windows:
            names += [f"rmean_{w}", f"rstd_{w}"]
        names += list(self.numeric_exog) + list(self.categorical_exog)
        if self.calendar:
            names += calendar_names
        if with_series:
            names.append("series")
        return names


@dataclass
class Panel:
    """One group's rows as arrays, and the grid their target values live on."""

    series: np.ndarray  # int code of each row's series (index into series_labels)
    period: np.ndarray  # int64 period of each row
    y: np.ndarray  # target of each row (transformed; NaN where unknown)
    exog: np.ndarray  # (rows, numeric + categorical exog) float matrix
    calendar: np.ndarray  # (rows, calendar features)
    calendar_names: list[str]
    n_series: int

    def grid(self, known: np.ndarray, first: int, last: int) -> np.ndarray:
        """``Y[series, period - first]`` with the values of rows marked ``known``."""
        grid = np.full((self.n_series, last - first + 1), np.nan)
        rows = known & ~np.isnan(self.y)
        grid[self.series[rows], self.period[rows] - first] = self.y[rows]
        return grid


def padded_grid(grid: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, int]:
    """``grid`` with NaN (unknown) columns on its left, so every look-back index of its first
    period is valid; and their number, the longest lag or window (a period's column in the
    padded grid: ``period - first + max_back``)."""
    max_back = max([*spec.lags, *spec.windows, 1])
    return np.concatenate([np.full((grid.shape[0], max_back), np.nan), grid], axis=1), max_back


def lag_features(grid: np.ndarray, first: int, series: np.ndarray, period: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Lags, rolling means and stds of each (series, period) row, read from ``grid``."""
    n = len(series)
    padded, max_back = padded_grid(grid, spec)
    pos = period - first + max_back  # column of each row's own period in `padded`
    # every look-back value of every row in one gather (column k-1: k periods back): a
    # recursive forecast calls this once per step, a search thousands of times
    back = padded[series[:, None], pos[:, None] - np.arange(1, max_back + 1)[None, :]]
    out = np.empty((n, spec.n_history_columns))
    out[:, : len(spec.lags)] = back[:, np.asarray(spec.lags, dtype=np.int64) - 1]
    col = len(spec.lags)
    for w in spec.windows:
        window = back[:, :w]
        # the sums of np.nansum over the same zero-filled values (bit for bit), without its copies
        missing = np.isnan(window)
        count = w - missing.sum(axis=1)
        total = np.where(missing, 0.0, window).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            sq = np.square(np.where(missing, 0.0, window - mean[:, None])).sum(axis=1)
            std = np.where(count > 1, np.sqrt(sq / np.maximum(count - 1, 1)), np.nan)
        out[:, col], out[:, col + 1] = mean, std
        col += 2
    return out


def step_features(padded: np.ndarray, series: np.ndarray, pos: np.ndarray, spec: FeatureSpec, lags: np.ndarray, backs: list[np.ndarray]) -> np.ndarray:
    """``features.lag_features`` of rows on an already padded grid (``pos``: each row's column
    in it), with its reductions (``nansum`` over the same window arrays, in the same order)."""
    if len(series) == 1:
        return one_row_features(padded[int(series[0])], int(pos[0]), lags, [len(b) for b in backs])[None, :]
    out = np.empty((len(series), len(lags) + 2 * len(backs)))
    out[:, : len(lags)] = padded[series[:, None], pos[:, None] - lags[None, :]]
    col = len(lags)
    for back in backs:
        window = padded[series[:, None], pos[:, None] - back[None, :]]
        count = np.sum(~np.isnan(window), axis=1)
        total = np.nansum(window, axis=1)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        sq = np.nansum((window - mean[:, None]) ** 2, axis=1)
        out[:, col] = mean
        out[:, col + 1] = np.where(count > 1, np.sqrt(sq / np.maximum(count - 1, 1)), np.nan)
        col += 2
    return out


def one_row_features(row: np.ndarray, pos: int, lags: np.ndarray, windows: list[int]) -> np.ndarray:
    """``step_features`` of one row (a series of one group steps alone): the same arrays
    reduced the same way, without the broadcasting that pays off for many rows only.
    ``window`` is laid out as lag_features lays it out (lag 1 first), contiguous, so its sums
    add the same numbers in the same order."""
    out = np.empty(len(lags) + 2 * len(windows))
    out[: len(lags)] = row[pos - lags]
    col = len(lags)
    for w in windows:
        window = row[pos - w : pos][::-1].copy()
        unknown = np.isnan(window)
        count = w - int(np.count_nonzero(unknown))
        known = window.copy()
        known[unknown] = 0.0
        if count > 0:
            mean = known.sum() / count
            sq = (window - mean) ** 2
            sq[unknown] = 0.0
            out[col] = mean
            out[col + 1] = np.sqrt(sq.sum() / (count - 1)) if count > 1 else np.nan
        else:
            out[col] = out[col + 1] = np.nan
        col += 2
    return out


def design_matrix(panel: Panel, rows: np.ndarray, grid: np.ndarray, first: int, spec: FeatureSpec, with_series: bool) -> np.ndarray:
    """The full feature matrix of ``rows`` (indices into the panel)."""
    return np.hstack([lag_features(grid, first, panel.series[rows], panel.period[rows], spec), static_columns(panel, rows, spec, with_series)])


def static_columns(panel: Panel, rows: np.ndarray, spec: FeatureSpec, with_series: bool, calendar: np.ndarray | None = None) -> np.ndarray:
    """The columns of the design matrix after the lags and windows: known-future values, calendar
    features and the series code (none of them changes while a forecast steps forward).
    ``calendar``: the panel rows' calendar features when the panel was built without them (the
    what-if path keeps them per period)."""
    parts = [panel.exog[rows]]
    calendar = panel.calendar if calendar is None else calendar
    if spec.calendar and calendar.shape[1]:
        parts.append(calendar[rows])
    if with_series:
        parts.append(panel.series[rows, None].astype(np.float64))
    return np.hstack(parts)


# -- building panels from partition frames -----------------------------------

def build_panel(
    frame: pd.DataFrame,
    series_columns: list[str],
    series_labels: list[tuple],
    target: np.ndarray,
    numeric_exog: tuple[str, ...],
    categorical_exog: tuple[str, ...],
    category_levels: dict[str, list[str]],
    time_column: str,
    period_column: str,
    axis: TimeAxis,
    calendar: bool,
) -> Panel:
    """Arrays of one group's rows; series and categories coded by the model's own lists."""
    codes = series_codes(frame, series_columns, series_labels)
    exog = [frame[c].to_numpy(dtype=np.float64, na_value=np.nan) if c in frame else np.full(len(frame), np.nan) for c in numeric_exog]
    for c in categorical_exog:
        levels = {v: i for i, v in enumerate(category_levels.get(c, []))}
        values = frame[c].astype("string") if c in frame else pd.Series([pd.NA] * len(frame), dtype="string")
        exog.append(np.array([levels.get(v, np.nan) if v is not pd.NA else np.nan for v in values], dtype=np.float64))
    exog_matrix = np.column_stack(exog) if exog else np.empty((len(frame), 0))
    cal = calendar_features(frame[time_column], axis) if calendar else {}
    cal_names = sorted(cal)
    cal_matrix = np.column_stack([cal[n] for n in cal_names]) if cal_names else np.empty((len(frame), 0))
    return Panel(
        series=codes,
        period=frame[period_column].to_numpy(dtype=np.int64),
        y=target,
        exog=exog_matrix,
        calendar=cal_matrix,
        calendar_names=cal_names,
        n_series=max(len(series_labels), int(codes.max()) + 1 if len(codes) else 0),
    )


def series_labels_of(frame: pd.DataFrame, series_columns: list[str]) -> list[tuple]:
    if not series_columns:
        return [()]
    unique = frame[series_columns].drop_duplicates()
    return sorted((tuple(_plain(v) for v in row) for row in unique.itertuples(index=False)), key=repr)


def series_codes(frame: pd.DataFrame, series_columns: list[str], labels: list[tuple]) -> np.ndarray:
    """Code of each row's series; series the model has not seen get new codes after the known ones."""
    if not series_columns:
        return np.zeros(len(frame), dtype=np.int64)
    index = {label: i for i, label in enumerate(labels)}
    keys = [tuple(_plain(v) for v in row) for row in frame[series_columns].itertuples(index=False)]
    out = np.empty(len(keys), dtype=np.int64)
    extra: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        code = index.get(key)
        if code is None:
            code = extra.setdefault(key, len(labels) + len(extra))
        out[i] = code
    return out


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
