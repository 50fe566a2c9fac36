"""Metrics that survive zeros (intermittent demand): what each metric cannot score is counted
and said, the selection falls back to a metric that can score a group, and `mm run` says it all."""

import math

import numpy as np
import pytest

from manymodels.core.metrics import (
    both_zero,
    history_scale,
    mase_scale,
    scores,
    unscored,
)

# -- the metrics at zero -----------------------------------------------------------------


def test_all_zero_actuals_leave_mape_and_wape_undefined_and_counted():
    actual, forecast = np.zeros(6), np.array([0.0, 1.0, 2.0, 0.0, 3.0, 0.5])
    s = scores(actual, forecast, mase_scale=2.0)
    assert math.isnan(s["mape"]) and math.isnan(s["wape"])  # nothing to divide by
    assert s["smape"] == pytest.approx(100.0 * 4 / 6 * 2)  # 200% on each of the 4 rows with a forecast, 0 on the 2 exact ones
    assert s["mase"] == pytest.approx(np.mean(forecast) / 2.0) and s["rmse"] > 0  # zero-safe: MAE over the scale
    assert unscored(actual, forecast, 2.0) == {"mape": 6, "smape": 0, "wape": 6, "rmse": 0, "mase": 0}
    assert both_zero(actual, forecast) == 2


def test_all_zero_actual_and_forecast_is_an_exact_forecast_for_smape():
    zeros = np.zeros(5)
    s = scores(zeros, zeros, mase_scale=1.0)
    assert s["smape"] == 0.0 and s["rmse"] == 0.0 and s["mase"] == 0.0  # 0/0 rows count as 0 error
    assert math.isnan(s["mape"]) and math.isnan(s["wape"])
    assert unscored(zeros, zeros, 1.0) == {"mape": 5, "smape": 0, "wape": 5, "rmse": 0, "mase": 0}
    assert both_zero(zeros, zeros) == 5


def test_a_constant_history_has_no_mase_scale():
    constant = np.full((2, 30), 4.0)
    assert mase_scale(constant, 52) == 0.0  # every seasonal (here lag-1) difference is 0
    s = scores(np.array([4.0, 5.0]), np.array([4.0, 4.0]), mase_scale(constant, 52))
    assert math.isnan(s["mase"]) and s["wape"] == pytest.approx(100 / 9)
    assert unscored(np.array([4.0, 5.0]), np.array([4.0, 4.0]), 0.0)["mase"] == 2
    assert unscored(np.array([4.0, 5.0]), np.array([4.0, 4.0]), None)["mase"] == 2  # no scale at all (one period)
    assert mase_scale(np.full((1, 1), 4.0), 52) is None


def test_partly_zero_actuals_score_mape_on_the_nonzero_rows_only():
    actual, forecast = np.array([0.0, 0.0, 10.0, np.nan]), np.array([5.0, 0.0, 8.0, 1.0])
    s = scores(actual, forecast)
    assert s["mape"] == pytest.approx(20.0) and s["wape"] == pytest.approx(70.0)  # (5 + 0 + 2) / 10
    assert unscored(actual, forecast) == {"mape": 2, "smape": 0, "wape": 0, "rmse": 0, "mase": 3}  # the NaN row is no row


def test_the_forecast_reads_the_same_scale_as_the_backtest():
    """history_scale (rows, as mm forecast has them) equals mase_scale of the fit's grid."""
    rng = np.random.default_rng(0)
    grid = rng.poisson(1.0, size=(3, 60)).astype(float)
    grid[1, 10:14] = np.nan  # a gap
    series, period = np.nonzero(~np.isnan(grid))
    values = grid[series, period]
    for season in (None, 4, 52):
        assert history_scale(series, period + 100, values, season) == pytest.approx(mase_scale(grid, season))
    assert history_scale(np.empty(0, int), np.empty(0, int), np.empty(0), 52) is None
