"""Point forecasts calibrated to the metric they are judged by.

A model fitted on log sales forecasts roughly the median, but the metrics ask
for different points of the predictive distribution: MAE/WAPE/MASE for the
median, RMSE for the mean, and MAPE for a point *below* the median (it punishes
over-forecasts of small actuals hardest; Gneiting 2011, "Making and Evaluating
Point Forecasts"). For retail sales the MAPE-optimal forecast is often 15-25%
under the median.

``factor`` finds the multiplicative correction ``f`` that minimises a metric over
backtest (actual, prediction) pairs, in closed form where one exists:

- mape: min sum |f p - a| / a  -> weighted median of a/p, weights p/a
- wape, mase (MAE): min sum |f p - a| -> weighted median of a/p, weights p
- rmse: min sum (f p - a)^2 -> sum(p a) / sum(p^2)
- smape: no closed form -> the best of a grid of factors

The factor is shrunk towards a prior by the number of backtest points behind it
(``n / (n + SHRINK_POINTS)`` on the log scale), so a handful of points cannot
move a forecast far. The prior is 1 for a group's own models; for a pooled model
it is the factor fitted over all the pool's members' backtests (partial pooling:
a series with few points takes mostly what its pool's series show together).
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import scores

SHRINK_POINTS = 10.0
BOUNDS = (0.5, 1.5)  # a calibration never more than halves or adds half
_SMAPE_GRID = np.exp(np.linspace(math.log(BOUNDS[0]), math.log(BOUNDS[1]), 61))


def factor(actual: np.ndarray, predicted: np.ndarray, metric: str, prior: float = 1.0) -> float:
    """The multiplicative factor that minimises ``metric`` on these pairs, shrunk towards ``prior``
    (``prior`` when undefined)."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(p)) & (p > 0)
    if metric == "mape":
        ok &= a > 0
    a, p = a[ok], p[ok]
    n = len(a)
    if n < 2:
        return prior
    if metric == "mape":
        raw = _weighted_median(a / p, p / a)
    elif metric in ("wape", "mase"):
        raw = _weighted_median(a / p, p)
    elif metric == "rmse":
        raw = float(np.sum(p * a) / np.sum(p * p))
    elif metric == "smape":
        raw = float(_SMAPE_GRID[np.argmin([scores(a, g * p)["smape"] for g in _SMAPE_GRID])])
    else:
        return prior
    if not math.isfinite(raw) or raw <= 0:
        return prior
    raw = min(max(raw, BOUNDS[0]), BOUNDS[1])
    weight = n / (n + SHRINK_POINTS)
    return float(math.exp(weight * math.log(raw) + (1.0 - weight) * math.log(prior)))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    return float(v[np.searchsorted(cumulative, 0.5 * cumulative[-1])])
