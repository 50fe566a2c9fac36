"""Forecast accuracy metrics (percentages for mape, smape and wape), and the rows each cannot score.

Intermittent demand (spare parts, slow items: mostly zeros) is where metrics
break, so each one's rule at zero is part of its definition:

- ``mape``: mean |f - a| / |a|. Undefined where the actual is 0: those rows are
  not scored (``unscored`` counts them).
- ``smape``: mean 2 |f - a| / (|a| + |f|). A row whose actual and forecast are
  both 0 is an exact forecast and counts as 0 error (the usual convention;
  leaving it out would punish a series for its best forecasts). It is still
  200% whenever the actual is 0 and the forecast is not, so on intermittent
  data it says little: prefer wape or mase.
- ``wape``: sum |f - a| / sum |a|. Undefined when every actual is 0: then it
  scores none of the rows.
- ``rmse``: always defined.
- ``mase``: mean |f - a| / scale, the scale being the in-sample MAE of the
  seasonal naive forecast. Undefined without a scale, or with a scale of 0 (a
  constant history, such as an item that never sold): then it scores none.

``wape`` and ``mase`` are the zero-safe ones: they are what mm leads with.
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("mape", "smape", "wape", "rmse", "mase")
HEADLINE = ("wape", "mase", "smape", "mape")  # the order mm prints them in: zero-safe first

def _pairs(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows where both values exist."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(p))
    return a[ok], p[ok]


def has_scale(mase_scale: float | None) -> bool:
    return mase_scale is not None and mase_scale > 0


def scores(actual: np.ndarray, predicted: np.ndarray, mase_scale: float | None = None) -> dict[str, float]:
    """Every metric over the rows where both values exist (NaN where it scores none, see the module)."""
    a, p = _pairs(actual, predicted)
    if len(a) == 0:
        return {name: float("nan") for name in METRIC_NAMES}
    err = np.abs(p - a)
    nonzero = a != 0
    denom = np.abs(a) + np.abs(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mape = 100.0 * float(np.mean(err[nonzero] / np.abs(a[nonzero]))) if nonzero.any() else float("nan")
        smape = 100.0 * float(np.mean(np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0)))
        total = float(np.sum(np.abs(a)))
        wape = 100.0 * float(np.sum(err)) / total if total > 0 else float("nan")
    rmse = float(np.sqrt(np.mean((p - a) ** 2)))
    mase = float(np.mean(err)) / mase_scale if has_scale(mase_scale) else float("nan")
    return {"mape": mape, "smape": smape, "wape": wape, "rmse": rmse, "mase": mase}


def unscored(actual: np.ndarray, predicted: np.ndarray | None = None, mase_scale: float | None = None) -> dict[str, int]:
    """Per metric, how many of the rows with both values it could not score.

    ``predicted`` None: every row with an actual counts (which rows a metric can
    score depends on the actuals and the scale only, never on the forecast).
    """
    a, _ = _pairs(actual, actual if predicted is None else predicted)
    n = len(a)
    zeros = int(np.sum(a == 0))
    return {"mape": zeros, "smape": 0, "wape": n if zeros == n else 0, "rmse": 0, "mase": 0 if has_scale(mase_scale) else n}


def both_zero(actual: np.ndarray, predicted: np.ndarray) -> int:
    """Rows whose actual and forecast are both 0: sMAPE counts them as exact (0 error)."""
    a, p = _pairs(actual, predicted)
    return int(np.sum((a == 0) & (p == 0)))


def mase_scale(grid: np.ndarray, season_length: int | None) -> float | None:
    """Mean absolute seasonal difference of the history (per series, pooled)."""
    m = season_length if season_length and grid.shape[1] > season_length else 1
    if grid.shape[1] <= m:
        return None
    diffs = np.abs(grid[:, m:] - grid[:, :-m])
    diffs = diffs[~np.isnan(diffs)]
    return float(np.mean(diffs)) if len(diffs) else None


def history_scale(series: np.ndarray, period: np.ndarray, values: np.ndarray, season_length: int | None) -> float | None:
    """``mase_scale`` of a history given as rows (series code 0..n-1, period, value), as a
    forecast reads it: the same scale the group's backtest was measured with."""
    if not len(values):
        return None
    first = int(period.min())
    grid = np.full((int(series.max()) + 1, int(period.max()) - first + 1), np.nan)
    ok = ~np.isnan(values)
    grid[series[ok], period[ok] - first] = values[ok]
    return mase_scale(grid, season_length)
