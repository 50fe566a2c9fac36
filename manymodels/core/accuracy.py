"""Realised accuracy: stored forecasts scored against the actuals a later split brings.

Pure functions on arrays (no files): the seasonal naive forecast a forecast is
compared with, made at the same cutoff from the same history; each scored
row's error under a metric; and the drift rule.
"""

from __future__ import annotations

import math

import numpy as np


def seasonal_naive_at_cutoff(
    hist_series: np.ndarray, hist_period: np.ndarray, hist_values: np.ndarray,
    series: np.ndarray, period: np.ndarray, steps: np.ndarray, season_length: int | None,
) -> np.ndarray:
    """Per forecast row (series code, target period, periods after the series' last known
    value): the value of the same series ``m * ceil(step / m)`` periods earlier, the latest
    full season before the cutoff (m = 1: the last value, the naive forecast). NaN where
    that period has no value: the row's forecast value added is then not scored."""
    m = int(season_length) if season_length and season_length > 1 else 1
    out = np.full(len(period), np.nan)
    ok_steps = np.isfinite(steps) & (steps >= 1)
    if not len(hist_values) or not ok_steps.any():
        return out
    first = int(hist_period.min())
    width = int(hist_period.max()) - first + 1
    grid = np.full((int(max(hist_series.max(), series.max(initial=0))) + 1, width), np.nan)
    grid[hist_series, hist_period - first] = hist_values
    back = np.where(ok_steps, m * np.ceil(np.where(ok_steps, steps, 1) / m), 0).astype(np.int64)
    source = period.astype(np.int64) - back - first
    valid = ok_steps & (source >= 0) & (source < width)
    out[valid] = grid[series[valid], source[valid]]
    return out


# One row's error under each metric, in the metric's units; NaN where the metric
# cannot score that row (core/metrics.py: MAPE and WAPE at actual 0, MASE without a scale).
def row_errors(metric: str, actual: np.ndarray, pred: np.ndarray, scale: np.ndarray) -> np.ndarray:
    err = np.abs(pred - actual)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric in ("mape", "wape"):  # one row: |e| / |a| either way
            return np.where(actual != 0, 100.0 * err / np.abs(actual), np.nan)
        if metric == "smape":
            denom = np.abs(actual) + np.abs(pred)
            return np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1), 0.0)
        if metric == "rmse":
            return err
        if metric == "mase":
            return np.where(scale > 0, err / np.where(scale > 0, scale, 1), np.nan)
    raise ValueError(f"unknown metric {metric!r}")


def pooled_error(metric: str, actual: np.ndarray, pred: np.ndarray, scale: np.ndarray) -> float:
    """``metric`` over several scored rows pooled the way mm pools it (WAPE: sum |e| / sum |a|;
    RMSE: root of the mean squared error; the others: the mean of the rows' errors)."""
    if not len(actual):
        return math.nan
    err = np.abs(pred - actual)
    if metric == "wape":
        total = float(np.sum(np.abs(actual)))
        return 100.0 * float(np.sum(err)) / total if total > 0 else math.nan
    if metric == "rmse":
        return float(np.sqrt(np.mean(err**2)))
    rows = row_errors(metric, actual, pred, scale)
    rows = rows[~np.isnan(rows)]
    return float(np.mean(rows)) if len(rows) else math.nan


def drifted(realised: float, backtest: float | None, n_periods: int, window: int, factor: float) -> bool:
    """The drift rule: the group's realised error over its last ``window`` scored periods
    exceeds ``factor`` times the error its model showed in backtest. Needs ``window``
    scored periods and a finite backtest error (no flag on thinner evidence)."""
    if n_periods < window or backtest is None or not math.isfinite(backtest) or not math.isfinite(realised):
        return False
    return realised > factor * backtest

