"""Calibration to the metric, the evidence rule, the ensemble, and 'tune rarely, train often'."""

import numpy as np
import pytest

from manymodels.core import calibration, pooling
from manymodels.core.automl import Evaluation, pick_winner
from manymodels.core.kernels import fit_group, forecast_group

from .test_kernels import spec_for, weekly_group


@pytest.mark.parametrize("metric", ["mape", "wape", "rmse", "smape"])
def test_calibration_factor_minimises_the_metric(metric, monkeypatch):
    monkeypatch.setattr(calibration, "SHRINK_POINTS", 0.0)  # the raw optimum
    rng = np.random.default_rng(0)
    actual = np.exp(rng.normal(5, 0.6, 400))
    predicted = np.exp(5 + rng.normal(0, 0.1, 400))  # the median, roughly
    f = calibration.factor(actual, predicted, metric)
    from manymodels.core.metrics import scores

    grid = np.linspace(0.5, 1.5, 1001)
    best = grid[np.argmin([scores(actual, g * predicted)[metric] for g in grid])]
    assert abs(f - best) < 0.01
    if metric == "mape":
        assert f < 0.9  # MAPE wants a forecast below the median
    if metric == "rmse":
        assert f > 1.05  # RMSE wants the mean, above the median of a skewed distribution


def test_calibration_shrinks_with_few_points_and_stays_bounded():
    actual = np.array([10.0, 12.0, 11.0])
    predicted = np.array([30.0, 33.0, 31.0])
    assert calibration.BOUNDS[0] <= calibration.factor(actual, predicted, "wape") < 1.0
    few = calibration.factor(actual, predicted, "wape")
    many = calibration.factor(np.tile(actual, 30), np.tile(predicted, 30), "wape")
    assert many < few  # more evidence, less shrinkage
    assert calibration.factor(actual[:1], predicted[:1], "wape") == 1.0


def test_a_few_points_shrink_towards_the_prior_a_pool_gives_and_many_points_speak_for_themselves():
    actual = np.array([10.0, 12.0, 11.0])
    predicted = 1.5 * actual  # the raw optimum is 1/1.5
    alone = calibration.factor(actual, predicted, "mape")
    with_pool = calibration.factor(actual, predicted, "mape", prior=0.7)  # the pool's members over-forecast too
    assert abs(with_pool - 1 / 1.5) < abs(alone - 1 / 1.5)
    assert min(0.7, 1 / 1.5) <= with_pool <= max(0.7, 1 / 1.5)
    assert calibration.factor(actual[:1], predicted[:1], "mape", prior=0.7) == 0.7  # no evidence: the pool's
    many = np.tile(actual, 300), np.tile(predicted, 300)
    assert abs(calibration.factor(*many, "mape", prior=1.3) - calibration.factor(*many, "mape")) < 0.01


def test_a_members_folds_take_the_pools_factor_fitted_without_their_origin():
    prior = {"metric": "mape", "all": 0.8, "excluding": {"90": 0.75, "86": 0.85}}
    assert pooling.member_priors(prior, "mape", [90, 86]) == ([0.75, 0.85], 0.8)
    assert pooling.member_priors(prior, "mape", [90, 82]) == ([0.75, 0.8], 0.8)  # an origin the pool lacks
    assert pooling.member_priors(prior, "wape", [90, 86]) == (None, 1.0)  # fitted for another metric
    assert pooling.member_priors(None, "mape", [90]) == (None, 1.0)


def _evaluation(kind, errors, folds=4):
    e = Evaluation(kind, {})
    for chunk in np.array_split(np.asarray(errors, dtype=float), folds):
        e.add(np.full(len(chunk), 100.0), 100.0 + chunk)
    return e


def test_reference_is_kept_unless_another_candidate_is_clearly_better():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 10, 40)
    reference = _evaluation("ensemble", 20 + noise)
    slightly = _evaluation("naive", 19 + noise + rng.normal(0, 8, 40))  # 1 point better: noise
    clearly = _evaluation("linear", 5 + noise * 0.2)  # much better, consistently
    order = ["ensemble", "naive", "linear"]
    assert pick_winner({"ensemble": reference, "naive": slightly}, "wape", order, "ensemble", 2.0) == "ensemble"
    assert pick_winner({"ensemble": reference, "naive": slightly}, "wape", order, "ensemble", 0.0) == "naive"
    assert pick_winner({"ensemble": reference, "naive": slightly, "linear": clearly}, "mape", order, "ensemble", 2.0) == "linear"


def test_ensemble_forecast_is_the_members_average_and_calibration_moves_only_the_point():
    history, future = weekly_group(n_weeks=90, future=6)
    automl = {"enabled": True, "candidates": ["ensemble", "lightgbm", "linear"], "n_trials": 2, "folds": 3, "metric": "mape",
              "timeout_per_group": None, "reference": "ensemble", "evidence": 1e9, "calibrate": True}
    spec = spec_for(automl=automl)
    result = fit_group(history, spec)
    assert result["model"] == "ensemble"  # evidence 1e9: the reference, whatever the scores
    meta = result["meta"]
    assert [m["kind"] for m in meta["state"]["members"]] == ["lightgbm", "linear"]
    factor = meta["calibration"]["factor"]
    assert meta["calibration"]["metric"] == "mape" and 0.5 <= factor <= 1.5 and factor != 1.0
    calibrated = forecast_group(history, future, meta, result["model_text"], spec)
    uncalibrated = forecast_group(history, future, {**meta, "calibration": {"factor": 1.0}}, result["model_text"], spec)
    np.testing.assert_allclose(calibrated[:, 0], uncalibrated[:, 0] * factor)
    np.testing.assert_array_equal(calibrated[:, 1:], uncalibrated[:, 1:])  # quantiles are not scaled


def test_one_series_one_fold_is_no_evidence_however_large_the_gap():
    reference, other = Evaluation("ensemble", {}), Evaluation("theta", {})
    actual = np.arange(1.0, 7.0) * 10
    reference.add(actual, actual * 1.5)
    other.add(actual, actual * 1.01)  # far better on all six points of the one fold
    assert pick_winner({"ensemble": reference, "theta": other}, "wape", ["ensemble", "theta"], "ensemble", 2.0) == "ensemble"
    assert pick_winner({"ensemble": reference, "theta": other}, "wape", ["ensemble", "theta"], "ensemble", 0.0) == "theta"


def test_a_stored_decision_is_refit_without_searching_again():
    history, future = weekly_group(n_weeks=90)
    automl = {"enabled": True, "candidates": ["ensemble", "lightgbm", "linear", "naive"], "n_trials": 4, "folds": 2,
              "metric": "wape", "timeout_per_group": None, "reference": "ensemble", "evidence": 2.0, "calibrate": True}
    spec = spec_for(automl=automl)
    first = fit_group(history, spec)
    assert first["n_trials"] == 4 and first["meta"]["tuning"]["source"].startswith("searched")
    more = weekly_group(n_weeks=94, seed=0)[0]  # four more weeks of data
    again = fit_group(more, spec, stored=first["meta"]["tuning"], tune=False)
    assert again["status"] == "trained" and again["n_trials"] == 0
    assert again["model"] == first["model"]
    assert again["meta"]["tuning"]["source"].startswith("stored decision")
    assert again["meta"]["calibration"] == first["meta"]["calibration"]
    assert again["model_text"] != first["model_text"]  # refit on the new data
    retuned = fit_group(more, spec, stored=first["meta"]["tuning"], tune=True)
    assert retuned["n_trials"] == 4


def test_the_search_stops_after_patience_trials_without_a_better_one():
    import optuna

    from manymodels.core.automl import _stop_when_stale

    values = [3.0, 2.0, 5.0, 5.0, 1.0, 4.0, 4.0, 4.0, 0.5, 0.1]
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: values[trial.number], n_trials=len(values), callbacks=[_stop_when_stale(3)])
    # the best (1.0) is trial 4; trials 5, 6 and 7 do not beat it: the study stops there
    assert len(study.trials) == 8 and study.best_value == 1.0


@pytest.mark.parametrize("patience", [None, 2])
def test_patience_cuts_a_groups_search_short_and_none_runs_every_trial(patience):
    history, _ = weekly_group(n_weeks=90)
    automl = {"enabled": True, "candidates": ["lightgbm", "naive"], "n_trials": 12, "patience": patience, "folds": 2, "timeout_per_group": None}
    result = fit_group(history, spec_for(automl=automl))
    assert result["status"] == "trained"
    if patience is None:
        assert result["n_trials"] == 12
    else:
        assert 3 <= result["n_trials"] < 12  # stopped two trials after its best


def test_the_winners_backtest_from_the_searchs_own_fold_fits_equals_fitting_it_again():
    """evaluate_lightgbm predicts a fold from the search's booster cut at the fixed rounds:
    the same numbers as a fresh fit of those rounds, or the shortcut would change choices."""
    from manymodels.core import automl, kernels

    history, _ = weekly_group(n_weeks=100, series=("a", "b"))
    automl_settings = {"enabled": True, "candidates": ["lightgbm", "naive"], "n_trials": 6, "patience": None, "folds": 3, "timeout_per_group": None}
    spec = spec_for(series_columns=("item",), automl=automl_settings)
    y = history[spec.target_column].to_numpy(dtype=float)
    data = kernels.group_data(history, spec, kernels.describe_group(history, spec), y)
    folds = kernels.backtest_folds(data, spec.horizon, 3)
    transform = kernels.target_transform(spec, data)
    params, info = kernels._lightgbm_params(spec, data, folds, transform, None, True, None)
    trained = info["fold_models"]
    assert len(trained) == len(folds)
    assert all(m.booster.current_iteration() >= params["_num_boost_round"] for m in trained)  # each fold is cut, none refit
    shortcut = automl.evaluate_lightgbm(data, folds, params, transform, spec, trained)
    fresh = automl.evaluate_lightgbm(data, folds, params, transform, spec)
    for a, b in zip(shortcut.predicted, fresh.predicted):
        assert np.array_equal(a, b)
    too_few = [automl.Fitted("lightgbm", m.state, m.booster) for m in trained]
    params_more = {**params, "_num_boost_round": max(m.booster.current_iteration() for m in trained) + 5}
    again = automl.evaluate_lightgbm(data, folds, params_more, transform, spec, too_few)  # more rounds than grown: fitted anew
    assert all(np.array_equal(a, b) for a, b in zip(again.predicted, automl.evaluate_lightgbm(data, folds, params_more, transform, spec).predicted))
