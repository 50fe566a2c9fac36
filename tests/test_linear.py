"""The ridge on known-future columns with per-series intercepts (models.fit_linear): its prediction
without the one-hot design, and the fixed-effects form that pools of thousands of series need."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from manymodels.core import kernels, models

from .test_kernels import spec_for, weekly_group


def _group(n_series: int, n_weeks: int = 60):
    history, _ = weekly_group(n_weeks=n_weeks, future=0, seed=3, series=tuple(f"s{i}" for i in range(n_series)))
    spec = spec_for(series_columns=("item",))
    info = kernels.describe_group(history, spec)
    return kernels.group_data(history, spec, info, history["y"].to_numpy(dtype=float))


def _one_hot_prediction(fitted, data, rows):
    """The prediction as the stored state defines it: the full design (one-hot included) times the coefficients."""
    state = fitted.state
    X = models.linear_features(data, rows, state)
    z = (X - np.asarray(state["mean_x"])) / np.asarray(state["scale_x"])
    return models.finish(models.inverse(state["intercept"] + z @ np.asarray(state["coef"]), state["transform"]), data)


def test_a_linear_prediction_equals_its_one_hot_design_without_building_it():
    data = _group(5)
    rows = np.arange(len(data.panel.y))
    fitted = models.fit_linear(data, np.ones(len(rows), dtype=bool), {"transform": "log1p"})
    assert len(fitted.state["coef"]) > 5  # price (and the seasonal terms) before the five series' columns
    np.testing.assert_allclose(models.predict_linear(fitted, data, rows), _one_hot_prediction(fitted, data, rows), rtol=1e-10)
    codes = data.panel.series.copy()
    try:  # rows of a series the model never saw: the average intercept, both ways
        data.panel.series[:7] = 5
        np.testing.assert_allclose(models.predict_linear(fitted, data, rows), _one_hot_prediction(fitted, data, rows), rtol=1e-10)
    finally:
        data.panel.series[:] = codes


def test_past_the_limit_the_series_intercepts_are_fixed_effects_in_the_same_state_form(monkeypatch):
    data = _group(8)
    rows = np.arange(len(data.panel.y))
    train = np.ones(len(rows), dtype=bool)
    penalised = models.fit_linear(data, train, {"transform": "log1p"})
    monkeypatch.setattr(models, "DENSE_SERIES_LIMIT", 3)
    fixed = models.fit_linear(data, train, {"transform": "log1p"})
    n_dense = len(fixed.state["coef"]) - 8
    assert n_dense >= 1 and fixed.state["scale_x"][n_dense:] == [1.0] * 8 and fixed.state["mean_x"][n_dense:] == [0.0] * 8
    # the stored state means what the one-hot form means: export and drivers read it the same way
    np.testing.assert_allclose(models.predict_linear(fixed, data, rows), _one_hot_prediction(fixed, data, rows), rtol=1e-10)
    # series i's level is 100 (1 + i): the intercepts (log space) come out in that order, log-spaced
    effects = np.asarray(fixed.state["coef"][n_dense:])
    assert np.all(np.diff(effects) > 0)
    np.testing.assert_allclose(effects[1:] - effects[0], np.log(np.arange(2, 9)), atol=0.03)
    # and it forecasts as the penalised form does, on series this long
    y = data.panel.y
    wape = {name: np.abs(models.predict_linear(f, data, rows) - y).sum() / y.sum() for name, f in (("penalised", penalised), ("fixed", fixed))}
    assert abs(wape["fixed"] - wape["penalised"]) < 0.01, wape


@pytest.mark.parametrize("n_series", [1500])
def test_a_pool_of_many_series_fits_its_ridge_without_a_rows_by_series_design(n_series):
    """1,500 series x 40 weeks: the one-hot design alone would be 60,000 x 1,500 doubles (720 MB)."""
    data = _group(n_series, n_weeks=40)
    rows = np.arange(len(data.panel.y))
    tracemalloc.start()
    try:
        fitted = models.fit_linear(data, np.ones(len(rows), dtype=bool), {"transform": "log1p"})
        predicted = models.predict_linear(fitted, data, rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"
    assert np.isfinite(predicted).all() and len(fitted.state["coef"]) == len(fitted.state["mean_x"]) > n_series
    y = data.panel.y
    assert np.abs(predicted - y).sum() / y.sum() < 0.2  # price and level; 40 weeks are too few for the ±20% yearly season
