"""Forecast accuracy metrics (percentages for mape, smape and wape)."""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("mape", "smape", "wape", "rmse", "mase")


def scores(actual: np.ndarray, predicted: np.ndarray, mase_scale: float | None = None) -> dict[str, float]:
    """Every metric over the rows where both values exist.

    MAPE skips rows whose actual is 0 (it is undefined there); MASE divides the
    MAE by ``mase_scale``, the in-sample MAE of the seasonal naive forecast.
    """
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(p))
    a, p = a[ok], p[ok]
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
    mase = float(np.mean(err)) / mase_scale if mase_scale and mase_scale > 0 else float("nan")
    return {"mape": mape, "smape": smape, "wape": wape, "rmse": rmse, "mase": mase}


def mase_scale(grid: np.ndarray, season_length: int | None) -> float | None:
    """Mean absolute seasonal difference of the history (per series, pooled)."""
    m = season_length if season_length and grid.shape[1] > season_length else 1
    if grid.shape[1] <= m:
        return None
    diffs = np.abs(grid[:, m:] - grid[:, :-m])
    diffs = diffs[~np.isnan(diffs)]
    return float(np.mean(diffs)) if len(diffs) else None
