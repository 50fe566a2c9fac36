"""The per-group kernels, with real LightGBM fits on small generated data."""

import math

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from manymodels.config import AutoMLConfig
from manymodels.core.features import FeatureSpec, design_matrix, lag_features
from manymodels.core.kernels import (
    AutoMLSpec,
    GroupSpec,
    SeriesCodes,
    describe_group,
    fit_group,
    forecast_group,
    group_data,
    horizon_steps,
)
from manymodels.core.models import (
    default_lightgbm_params,
    fit_lightgbm,
    forward,
    predict_lightgbm,
)
from manymodels.core.timeindex import TimeAxis, calendar_features, calendar_names
from manymodels.steps.split import PERIOD

WEEK_NS = 7 * 86_400 * 10**9


def weekly_group(n_weeks=80, future=6, seed=0, series=("a",), gaps=()):
    """A group of weekly series with price-driven demand; future rows have no target."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2020-01-02")
    for s_i, s in enumerate(series):
        for w in range(n_weeks + future):
            if w in gaps:
                continue
            price = 2.0 * (0.8 if rng.random() < 0.2 else 1.0)
            level = 100 * (1 + s_i) * (1 + 0.2 * np.sin(2 * np.pi * w / 52))
            y = level * (price / 2.0) ** -2.5 * np.exp(rng.normal(0, 0.05))
            rows.append({"item": s, "week": start + pd.Timedelta(weeks=w), "y": round(y) if w < n_weeks else np.nan, "price": price})
    frame = pd.DataFrame(rows)
    frame[PERIOD] = ((frame["week"] - pd.Timestamp("1970-01-01")).dt.days // 7).astype(np.int64)
    history = frame[frame["y"].notna()].reset_index(drop=True)
    future_rows = frame[frame["y"].isna()].reset_index(drop=True)
    return history, future_rows


def spec_for(series_columns=(), automl=None, **overrides):
    """A spec as train.group_spec builds it; ``automl``: train.automl keys, the others from the config's defaults."""
    axis = TimeAxis("fixed", WEEK_NS, 0, "W-THU", 52).to_dict()
    base = dict(
        group_columns=("store",),
        series_columns=series_columns,
        time_column="week",
        target_column="y",
        period_column=PERIOD,
        known_future_columns=("price",),
        axis=axis,
        horizon=4,
        min_history=20,
        lags="auto",
        windows="auto",
        calendar=True,
        target_transform="auto",
        params={},
        num_boost_round=60,
        automl=AutoMLSpec.of(AutoMLConfig(**(automl or {"enabled": False})).model_dump(mode="json"), space="test"),
        quantiles=(0.1, 0.5, 0.9),
        seed=1,
    )
    base.update(overrides)
    return GroupSpec(**base)


def test_lag_features_read_the_grid_so_gaps_do_not_shift_lags():
    grid = np.array([[1.0, 2.0, np.nan, 4.0, 5.0]])  # period 2 is a gap
    spec = FeatureSpec((1, 2), (2,), False, (), (), None)
    out = lag_features(grid, 0, np.array([0, 0]), np.array([3, 4]), spec)
    # period 3: lag1 = period 2 (gap -> NaN), lag2 = period 1; rolling mean of periods 1..2 ignores the gap
    assert math.isnan(out[0, 0]) and out[0, 1] == 2.0 and out[0, 2] == 2.0
    # period 4: lag1 = 4, lag2 = NaN (the gap), window (2, 3) -> mean of known 4
    assert out[1, 0] == 4.0 and math.isnan(out[1, 1]) and out[1, 2] == 4.0


def test_lags_never_cross_series():
    grid = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    spec = FeatureSpec((1,), (), False, (), (), None)
    out = lag_features(grid, 0, np.array([1, 0]), np.array([0, 0]), spec)
    assert np.isnan(out).all()  # period 0 has no previous value in either series


def test_fit_group_lightgbm_and_forecast():
    history, future = weekly_group()
    spec = spec_for()
    result = fit_group(history, spec)
    assert result["status"] == "trained", result
    assert result["model"] == "lightgbm"
    booster = lgb.Booster(model_str=result["model_text"])
    assert booster.num_trees() > 0
    assert set(result["metrics"]) >= {"mape", "smape", "wape", "rmse", "mase"}
    assert result["metrics"]["wape"] < 30
    pred = forecast_group(history, future, result["meta"], result["model_text"], spec)
    assert pred.shape == (len(future), 4)
    assert np.all(pred[:, 0] > 0)
    assert np.all(np.diff(pred[:, 1:], axis=1) >= 0)  # q10 <= q50 <= q90


def test_changing_values_after_the_cutoff_never_changes_predictions():
    """The forecast may only read targets known at the cutoff, for every horizon step."""
    history, future = weekly_group(n_weeks=70, future=8)
    spec = spec_for(horizon=8)
    result = fit_group(history, spec)
    base = forecast_group(history, future, result["meta"], result["model_text"], spec)
    leaked = future.copy()
    leaked["y"] = 1e9  # actuals present (and absurd) in the inference rows
    assert np.array_equal(base, forecast_group(history, leaked, result["meta"], result["model_text"], spec))
    # and the multi-step forecast of week t+8 is the same whether or not weeks t+1..t+7 had actuals
    only_last = future.iloc[[-1]]
    first_steps = future.iloc[:-1]
    alone = forecast_group(history, pd.concat([first_steps, only_last]), result["meta"], result["model_text"], spec)
    assert np.array_equal(alone, base)
    # but changing a known value before the cutoff does change it: the check can fail
    moved = history.copy()
    moved.loc[moved.index[-1], "y"] *= 3
    assert not np.array_equal(base, forecast_group(moved, future, result["meta"], result["model_text"], spec))


def test_too_short_groups_fail_with_a_reason():
    history, _ = weekly_group(n_weeks=10)
    result = fit_group(history, spec_for())
    assert result["status"] == "failed" and result["reason"] == "too_short"
    assert "10 periods" in result["error"]


def test_many_series_in_one_group_use_the_series_feature():
    history, future = weekly_group(series=("a", "b", "c"), gaps=(30, 31))
    spec = spec_for(series_columns=("item",))
    result = fit_group(history, spec)
    assert result["status"] == "trained"
    assert result["meta"]["info"]["series"] == [["a"], ["b"], ["c"]]
    pred = forecast_group(history, future, result["meta"], result["model_text"], spec)[:, 0]
    by_series = pd.Series(pred).groupby(future["item"].to_numpy()).mean()
    assert by_series["a"] < by_series["b"] < by_series["c"]  # levels 100, 200, 300


def test_automl_picks_by_backtest_and_records_every_candidate():
    history, future = weekly_group(n_weeks=90)
    automl = {"enabled": True, "candidates": ["lightgbm", "naive", "mean", "linear"], "n_trials": 4, "folds": 2, "metric": "wape", "timeout_per_group": 20}
    spec = spec_for(automl=automl)
    result = fit_group(history, spec)
    assert result["status"] == "trained"
    scores = result["scores"]
    assert set(scores) == {"lightgbm", "naive", "mean", "linear"}
    assert result["model"] == min(scores, key=scores.get)
    assert result["n_trials"] == 4
    # the price elasticity is exactly what the linear model can express: it should beat the naive forecast
    assert scores["linear"] < scores["naive"]
    pred = forecast_group(history, future, result["meta"], result["model_text"], spec)
    assert np.isfinite(pred[:, 0]).all()


def test_same_seed_same_model():
    history, _ = weekly_group(n_weeks=70)
    automl = {"enabled": True, "candidates": ["lightgbm"], "n_trials": 3, "folds": 2, "metric": "wape", "timeout_per_group": 30}
    a = fit_group(history, spec_for(automl=automl))
    b = fit_group(history, spec_for(automl=automl))
    assert a["model_text"] == b["model_text"]
    assert a["meta"]["tuning"]["params"] == b["meta"]["tuning"]["params"]


GEOMETRIC = math.sqrt(11 * 51) - 1  # mean of log1p(10) and log1p(50), back-transformed


@pytest.mark.parametrize(
    "kind,transform,expected",
    [("naive", "auto", 50.0), ("mean", "none", 30.0), ("mean", "auto", GEOMETRIC), ("mean", "log1p", GEOMETRIC)],
)
def test_baselines_forecast_what_they_say(kind, transform, expected):
    weeks = pd.date_range("2020-01-02", periods=30, freq="7D")
    values = np.array([10.0, 50.0] * 15)  # mean 30, last value 50
    history = pd.DataFrame({"week": weeks, "y": values, "price": 1.0})
    history[PERIOD] = ((history["week"] - pd.Timestamp("1970-01-01")).dt.days // 7).astype(np.int64)
    future = pd.DataFrame({"week": weeks[-1] + pd.to_timedelta([7, 14], unit="D"), "y": np.nan, "price": 1.0})
    future[PERIOD] = ((future["week"] - pd.Timestamp("1970-01-01")).dt.days // 7).astype(np.int64)
    spec = spec_for(automl={"enabled": True, "candidates": [kind], "n_trials": 0, "folds": 1, "metric": "wape"}, quantiles=(), target_transform=transform)
    result = fit_group(history, spec)
    pred = forecast_group(history, future, result["meta"], result["model_text"], spec)
    assert np.allclose(pred[:, 0], expected)


def test_mase_can_select_the_winner():
    history, _ = weekly_group(n_weeks=80)
    automl = {"enabled": True, "candidates": ["naive", "mean", "linear"], "n_trials": 0, "folds": 2, "metric": "mase"}
    result = fit_group(history, spec_for(automl=automl))
    scores = result["scores"]
    assert all(math.isfinite(v) for v in scores.values())
    assert result["model"] == min(scores, key=scores.get)
    assert result["meta"]["metrics"]["mase"] == scores[result["model"]]


@pytest.mark.parametrize("objective", ["l2", "l1", "mape", "poisson", "huber"])
def test_mms_early_stopping_stops_where_lightgbms_own_does(objective):
    from manymodels.core.models import EarlyStopping

    rng = np.random.default_rng(len(objective))
    X, Xv = rng.normal(size=(90, 6)), rng.normal(size=(15, 6))
    y, yv = np.exp(X[:, 0] + rng.normal(0, 0.5, 90)), np.exp(Xv[:, 0] + rng.normal(0, 0.5, 15))
    for lr, stop, rounds in ((0.3, 5, 400), (0.05, 30, 400), (0.01, 10, 400), (0.01, 30, 25)):  # the last never stops early
        params = {"objective": objective, "learning_rate": lr, "num_leaves": 7, "min_data_in_leaf": 3, "verbose": -1, "seed": 0, "num_threads": 1, "deterministic": True}
        boosters = []
        for callback in (lgb.early_stopping(stop, verbose=False), EarlyStopping(stop)):
            train = lgb.Dataset(X, y, params=params)
            boosters.append(lgb.train(params, train, num_boost_round=rounds, valid_sets=[train.create_valid(Xv, yv)], callbacks=[callback]))
        theirs, ours = boosters
        assert (ours.best_iteration, ours.current_iteration()) == (theirs.best_iteration, theirs.current_iteration())
        assert ours.best_score == theirs.best_score


@pytest.mark.parametrize("series", [("a",), ("a", "b", "c")])
@pytest.mark.parametrize("early_stopped", [False, True])
def test_recursive_prediction_equals_booster_predict_step_by_step(series, early_stopped):
    """predict_lightgbm's single-row predictor (a one-series group's steps) gives the numbers
    Booster.predict gives, step by step, at the fit's own number of trees; a group of several
    series (a step of several rows) too."""
    history, _ = weekly_group(n_weeks=90, series=series)
    spec = spec_for(series_columns=("item",) if len(series) > 1 else ())
    y = history["y"].to_numpy(dtype=np.float64)
    data = group_data(history, spec, describe_group(history, spec), y)
    period = data.panel.period
    train, test = period <= period.max() - 12, period > period.max() - 12
    params = default_lightgbm_params(len(y), 0)
    valid = (period > period.max() - 12) & (period <= period.max() - 6) if early_stopped else None
    fitted = fit_lightgbm(data, train, params, 400 if early_stopped else 60, "log1p", valid=valid, early_stopping_rounds=10 if early_stopped else None)
    if early_stopped:
        assert 0 < fitted.state["num_boost_round"] < fitted.booster.current_iteration()  # fewer trees than grown
    rows = np.flatnonzero(test)
    got = predict_lightgbm(fitted, data, train, rows)

    grid = data.grid(train, forward(data.panel.y, "log1p"))
    want = np.empty(len(rows))
    for p in np.unique(period[rows]):
        at = np.flatnonzero(period[rows] == p)
        X = design_matrix(data.panel, rows[at], grid, data.first, data.spec, data.with_series)
        want[at] = fitted.booster.predict(X, num_iteration=fitted.state["num_boost_round"], num_threads=1)
        grid[data.panel.series[rows[at]], p - data.first] = want[at]
    np.testing.assert_array_equal(got, np.maximum(np.expm1(want), 0.0))


def test_horizon_steps_count_from_each_series_last_period():
    """Each future row's step is its period minus its own series' last history period, with or
    without the series codes the caller has; a series without history (NaN) and uneven ends included."""
    history, future = weekly_group(series=("a", "b", "c"), gaps=(30, 31))
    history = history[~((history["item"] == "b") & (history.index % 7 == 0) & (history.index > len(history) - 40))]
    history = history[~((history["item"] == "c") & (history[PERIOD] >= history[PERIOD].max() - 2))].reset_index(drop=True)
    extra = future.head(2).assign(item="new")  # a series with no history at all
    future = pd.concat([future, extra], ignore_index=True)
    spec = spec_for(series_columns=("item",))
    last = {item: rows[PERIOD].max() for item, rows in history.groupby("item")}
    expected = np.array([p - last[i] if i in last else np.nan for i, p in zip(future["item"], future[PERIOD])])
    codes = SeriesCodes.of(history, future, spec)
    np.testing.assert_array_equal(horizon_steps(history, future, spec, codes), expected)
    np.testing.assert_array_equal(horizon_steps(history, future, spec), expected)
    assert np.isnan(expected[-2:]).all() and len(set(last.values())) == 2  # c ends 3 periods early
    single = spec_for()  # no series columns: one series, the group's last period
    np.testing.assert_array_equal(horizon_steps(history, future, single), future[PERIOD].to_numpy() - history[PERIOD].max())


@pytest.mark.parametrize("axis", [
    TimeAxis("fixed", WEEK_NS, 0, "W-THU", 52),
    TimeAxis("fixed", 86_400 * 10**9, 0, "D", 7),
    TimeAxis("fixed", 3_600 * 10**9, 0, "h", 24),
    TimeAxis("month", 1, 0, "MS", 12),
    TimeAxis("month", 3, 0, "QS", 4),
    TimeAxis("int", 1, 0, "int", 12),
    TimeAxis("int", 1, 0, "int", None),
])
def test_calendar_names_are_the_calendar_features_columns(axis):
    times = pd.Series(np.arange(5, dtype=np.int64)) if axis.kind == "int" else pd.Series(pd.date_range("2022-03-01", periods=5, freq="7D"))
    assert calendar_names(axis) == tuple(sorted(calendar_features(times, axis)))
