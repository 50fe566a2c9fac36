"""Real data's awkward cases (issue 17): candidates and trials that fail, and known-future
values a model never saw, must never cost a group its forecast nor give absurd numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import AutoMLConfig, load_config
from manymodels.core import automl, kernels, models
from manymodels.core.kernels import (
    AutoMLSpec,
    GroupSpec,
    cap_forecast,
    known_future_out_of_range,
)
from manymodels.steps.split import PERIOD
from manymodels.store.datastore import Datastore

from .conftest import run_cli, write_config

# The default AutoML, as a new user gets it, with a small search so the suite stays quick.
# the candidates of mm before 'auto', by name: these tests are about the LightGBM/linear family failing
# (auto would give mostly-zero series the Croston family; tests/test_auto_candidates.py covers auto)
LEGACY = ["ensemble", "lightgbm", "linear", "naive", "seasonal_naive", "mean", "moving_average"]
DEFAULT_AUTOML = {"enabled": True, "n_trials": 8, "timeout_per_group": None, "candidates": LEGACY}


def distributor_table(seed: int = 3, months: int = 54, future: int = 6) -> pd.DataFrame:
    """Monthly agency x SKU sales driven by price, like a distributor's export.

    SKU_zero sells nothing for its first 40 months (a late listing: backtest folds whose
    training targets are all zero). SKU_delisted has a future price of 0 in one month
    (not listed), while every training price is positive (about 1,497..1,623).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for sku in ("SKU_plain", "SKU_zero", "SKU_delisted"):
        for m in range(months + future):
            price = float(rng.uniform(1497, 1623))
            if sku == "SKU_delisted" and m == months + 2:
                price = 0.0
            level = 40 * (price / 1560) ** -6 if price else 40.0
            y = float(rng.poisson(level))
            if sku == "SKU_zero" and m < 40:
                y = 0.0
            rows.append({"agency": "Agency_19", "sku": sku, "month": (pd.Timestamp("2013-01-01") + pd.DateOffset(months=m)).strftime("%Y-%m-%d"), "volume": y if m < months else np.nan, "price": round(price, 2), "promo": int(rng.random() < 0.2)})
    return pd.DataFrame(rows)


def _config(tmp: Path, frame: pd.DataFrame, **sections):
    frame.to_csv(tmp / "sales.csv", index=False)
    data = {"time_column": "month", "target_column": "volume", "group_columns": ["agency", "sku"], "known_future_columns": ["price", "promo"], "drop_columns": []}
    train = {"horizon": 6, "min_history": 12, "automl": DEFAULT_AUTOML}
    sections = {**sections, "data": {**data, **sections.get("data", {})}, "train": {**train, **sections.get("train", {})}}
    return load_config(write_config(tmp, "sales.csv", **sections))


def _outputs(config):
    store = Datastore(config.datastore)
    read = lambda name: pd.read_csv(store.output_path(name), keep_default_na=False, na_values=[""])  # noqa: E731
    return read("training_output.csv"), read("forecasting_output.csv")


def test_a_series_whose_early_folds_are_all_zero_trains_and_every_candidate_is_scored(tmp_path: Path):
    config = _config(tmp_path, distributor_table())
    result = mm.run(config)
    assert result.train.failed == 0 and result.exit_code == 0
    training, forecast = _outputs(config)
    zero = training.set_index("sku").loc["SKU_zero"]
    for kind in LEGACY:
        assert np.isfinite(zero[f"score_{kind}"]), kind
    assert pd.isna(zero["dropped_candidates"])  # an empty cell: nothing dropped
    assert len(forecast[forecast["sku"] == "SKU_zero"]) == 6 and forecast["Prediction"].notna().all()


def test_poisson_and_tweedie_are_not_proposed_for_folds_whose_targets_sum_to_zero(monkeypatch):
    assert "poisson" in automl._objectives(nonnegative=True, positive=True)
    assert not {"poisson", "tweedie"} & set(automl._objectives(nonnegative=True, positive=False))
    # the search on such a group: no trial proposes them, none fails
    tried = []
    real = automl.fit_lightgbm

    def spy(data, train, params, *args, **kwargs):
        tried.append(params.get("objective"))
        return real(data, train, params, *args, **kwargs)

    monkeypatch.setattr(automl, "fit_lightgbm", spy)
    history, spec = _zero_start_group(automl_config={**DEFAULT_AUTOML, "n_trials": 12, "patience": None, "candidates": ["lightgbm", "naive"]})
    result = kernels.fit_group(history, spec)
    assert result["status"] == "trained" and "failed" not in result["note"] and np.isfinite(result["scores"]["lightgbm"])
    assert len(tried) >= 12 and not {"poisson", "tweedie"} & set(tried)


def _zero_start_group(automl_config: dict, months: int = 54):
    frame = distributor_table(months=months, future=0)
    frame = frame[frame["sku"] == "SKU_zero"].reset_index(drop=True)
    frame["month"] = pd.to_datetime(frame["month"])
    frame[PERIOD] = (frame["month"].dt.year * 12 + frame["month"].dt.month).astype(np.int64)
    axis = {"kind": "month", "step": 1, "offset": 0, "label": "MS", "season_length": 12}
    spec = GroupSpec(
        group_columns=("agency", "sku"), series_columns=(), time_column="month", target_column="volume", period_column=PERIOD,
        known_future_columns=("price", "promo"), axis=axis, horizon=6, min_history=12, lags="auto", windows="auto", calendar=True,
        target_transform="auto", params={}, num_boost_round=100, automl=_automl(automl_config), quantiles=(0.1, 0.9), seed=0,
    )
    return frame, spec


def _automl(settings: dict) -> AutoMLSpec:
    """train.automl as the train step resolves it: ``settings`` over the config's defaults."""
    return AutoMLSpec.of(AutoMLConfig(**settings).model_dump(mode="json"), space="test")


def test_a_trial_that_raises_is_pruned_and_noted_not_a_group_failure(tmp_path: Path, monkeypatch):
    real = automl.fit_lightgbm

    def flaky(data, train, params, *args, **kwargs):
        if params.get("objective") == "l1" or params.get("num_leaves", 0) > 20:
            raise RuntimeError("simulated LightGBM refusal")
        return real(data, train, params, *args, **kwargs)

    monkeypatch.setattr(automl, "fit_lightgbm", flaky)
    history, spec = _zero_start_group(automl_config={**DEFAULT_AUTOML, "n_trials": 12})
    result = kernels.fit_group(history, spec)
    assert result["status"] == "trained"
    assert "LightGBM trials failed and were pruned (first: RuntimeError: simulated LightGBM refusal)" in result["note"]
    assert np.isfinite(result["scores"]["lightgbm"])


def test_a_candidate_that_cannot_fit_is_dropped_with_its_reason(tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("simulated singular matrix")

    monkeypatch.setattr(models, "fit_linear", broken)
    config = _config(tmp_path, distributor_table())
    result = mm.run(config)
    assert result.exit_code == 0 and result.train.failed == 0
    training, forecast = _outputs(config)
    for _, row in training.iterrows():
        assert np.isnan(row["score_linear"]) and np.isnan(row["score_ensemble"]) and np.isfinite(row["score_naive"])
        assert "linear: LinAlgError: simulated singular matrix" in row["dropped_candidates"]
        assert "ensemble: its member linear could not fit" in row["dropped_candidates"]
        assert row["model"] not in ("linear", "ensemble")
    assert forecast["Prediction"].notna().all() and len(forecast) == 18


def test_the_group_fails_only_when_no_candidate_can_fit_and_then_says_why(tmp_path: Path, monkeypatch):
    def broken(kind, *args, **kwargs):
        raise ValueError(f"simulated {kind} failure")

    monkeypatch.setattr(automl, "fit_baseline", broken)
    monkeypatch.setattr(kernels, "fit_baseline", broken)
    config = _config(tmp_path, distributor_table(), train={"automl": {**DEFAULT_AUTOML, "candidates": ["naive", "mean"]}})
    result = mm.run(config)
    assert result.exit_code == 3 and result.train.failed == 3
    failure = result.train.failures[0]
    assert failure["reason"] == "no_candidate"
    assert "naive: ValueError: simulated naive failure" in failure["error"] and "mean: ValueError: simulated mean failure" in failure["error"]


def test_a_final_fit_that_fails_falls_back_to_the_next_candidate(monkeypatch):
    history, spec = _zero_start_group(automl_config={**DEFAULT_AUTOML, "candidates": ["naive", "mean", "moving_average"], "evidence": 0.0, "reference": None})
    chosen = kernels.fit_group(history, spec)["model"]
    real = kernels.fit_baseline  # the final fit on all rows; backtests fit through automl's own import

    def refuse(kind, *args, **kwargs):
        if kind == chosen:
            raise RuntimeError("simulated final-fit failure")
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(kernels, "fit_baseline", refuse)
    result = kernels.fit_group(history, spec)
    assert result["status"] == "trained" and result["model"] not in (chosen, "")
    assert result["candidate_errors"] == {chosen: "fit on all rows: RuntimeError: simulated final-fit failure"}
    assert np.isnan(result["scores"].get(chosen, np.nan))


def test_a_future_price_never_seen_gives_a_finite_forecast_and_a_named_warning(tmp_path: Path):
    # the guard off: the linear model itself must not extrapolate a price of 0 into billions
    config = _config(tmp_path, distributor_table(), forecast={"cap_factor": None, "quantiles": [0.1, 0.9]})
    result = mm.run(config)
    assert result.exit_code == 0
    training, forecast = _outputs(config)
    history = distributor_table()
    for sku, rows in forecast.groupby("sku"):
        most = history.loc[(history["sku"] == sku) & history["volume"].notna(), "volume"].max()
        assert np.isfinite(rows[["Prediction", "Prediction_q10", "Prediction_q90"]].to_numpy()).all()
        assert rows["Prediction"].max() <= 3 * most, (sku, rows["Prediction"].max(), most)
    found = result.forecast.out_of_range
    assert found["n"] >= 1 and found["groups"] >= 1
    example = next(e for e in found["examples"] if e.startswith("agency=Agency_19,sku=SKU_delisted: price 0 in 2017-09-01"))
    assert "is outside its training range 1,497" in example and "..1,62" in example
    record = Datastore(config.datastore).read_run(result.forecast.run_id)
    assert record["out_of_range"]["examples"] == found["examples"]
    # the command line says it too, for a reused forecast as well (what cron mails with --quiet)
    cli = run_cli("forecast", "-c", str(tmp_path / "mm.yaml"), "--quiet")
    assert cli.returncode == 0, cli.stderr
    assert "lie outside their series' training range" in cli.stderr and "sku=SKU_delisted: price 0 in 2017-09-01" in cli.stderr


def test_the_linear_model_clamps_known_future_values_to_its_training_range():
    history, spec = _zero_start_group(automl_config={"enabled": False})
    info = kernels.describe_group(history, spec)
    data = kernels.group_data(history, spec, info, history["volume"].to_numpy(dtype=float))
    fitted = models.fit_linear(data, np.ones(len(history), dtype=bool), {"transform": "log1p"})
    j = info["features"]["numeric_exog"].index("price")
    assert fitted.state["exog_min"][j] == history["price"].min() and fitted.state["exog_max"][j] == history["price"].max()
    at_min = data.panel.exog.copy()
    rows = np.arange(len(history))
    data.panel.exog[:, j] = history["price"].min()
    lowest = models.predict_linear(fitted, data, rows)
    data.panel.exog[:, j] = 0.0  # never seen: treated as the lowest price seen
    assert np.array_equal(models.predict_linear(fitted, data, rows), lowest)
    data.panel.exog[:] = at_min


def test_cap_forecast_rules():
    spec = replace(_zero_start_group(automl_config={"enabled": False})[1], group_columns=("agency",), series_columns=("sku",))  # a group of SKUs
    history = pd.DataFrame({"agency": "A", "sku": ["s"] * 3 + ["t"] * 3 + ["z"] * 3, "month": pd.Timestamp("2020-01-01"), "volume": [1.0, 5.1, 3.0, -2.0, 4.0, 1.0, 0.0, 0.0, 0.0]})
    future = pd.DataFrame({"agency": "A", "sku": ["s", "s", "t", "t", "z", "new"], "month": pd.Timestamp("2020-06-01")})
    point = np.array([3.0e10, 40.0, 70.0, -60.0, 7.0, 9.0])
    matrix = np.column_stack([point, point * 0.5, point * 2])
    capped, n, examples = cap_forecast(matrix, history, future, spec, 10.0)
    assert capped[0].tolist() == [51.0, 51.0, 51.0]  # 10 x the largest training value 5.1
    assert capped[1].tolist() == [40.0, 20.0, 51.0]  # the point is fine, its upper quantile is capped
    assert capped[2, 0] == 4.0 + 9 * 6.0 and capped[3, 0] == -2.0 - 9 * 6.0  # signed: the range widened 9 ranges each side
    assert capped[4].tolist() == [0.0, 0.0, 0.0]  # never sold: 10 x 0
    assert capped[5].tolist() == [9.0, 4.5, 18.0]  # no history: left alone
    assert n == 5 and examples[0] == "agency=A,sku=s: forecast 3e+10 in 2020-06-01 capped at 51 (10 x its training maximum 5.1)"


def test_out_of_range_names_numbers_and_unseen_categories():
    spec = GroupSpec(
        group_columns=("g",), series_columns=("item",), time_column="t", target_column="y", period_column=PERIOD,
        known_future_columns=("price", "promo"), axis={}, horizon=2, min_history=2, lags=(), windows=(), calendar=False, target_transform="none",
        params={}, num_boost_round=10, automl=_automl({"enabled": False}), quantiles=(), seed=0,
    )
    info = {"features": {"numeric_exog": ["price"], "categorical_exog": ["promo"]}, "categories": {"promo": ["none", "tv"]}}
    history = pd.DataFrame({"g": "a", "item": ["x", "x", "y", "y"], "t": [1, 2, 1, 2], "y": 1.0, "price": [2.0, 3.0, 10.0, 12.0], "promo": ["tv", "none", "none", "none"]})
    future = pd.DataFrame({"g": "a", "item": ["x", "y", "y"], "t": [3, 3, 4], "y": np.nan, "price": [2.5, 9.0, np.nan], "promo": ["tv", "radio", None]})
    n, examples = known_future_out_of_range(history, future, info, spec)
    assert n == 2
    assert examples == ["g=a,item=y: price 9 in 3 is outside its training range 10..12", "g=a,item=y: promo 'radio' in 3 was never seen in training"]


def test_absurd_forecasts_are_capped_and_reported(tmp_path: Path, monkeypatch):
    real = kernels.forecast_fitted

    def gone_wrong(history, future, *args, **kwargs):
        out = real(history, future, *args, **kwargs)
        out[0] = 1e12  # a model gone wrong on its first future row
        return out

    monkeypatch.setattr("manymodels.core.kernels.forecast_fitted", gone_wrong)  # what mm forecast's checked_forecast calls
    config = _config(tmp_path, distributor_table(), train={"automl": {"enabled": False}})
    result = mm.run(config)
    assert result.exit_code == 0
    _, forecast = _outputs(config)
    history = distributor_table()
    most = history.groupby("sku")["volume"].max()
    assert (forecast.groupby("sku")["Prediction"].max() <= 10 * most.loc[forecast["sku"].unique()].sort_index() + 1e-9).all()
    assert result.forecast.capped["n"] == 3 and result.forecast.capped["groups"] == 3
    assert all("capped at" in e and "10 x its training maximum" in e for e in result.forecast.capped["examples"])
    # a rerun reuses the forecasts and reports the same findings
    again = mm.forecast(config)
    assert again.reused == 3 and again.capped == result.forecast.capped


@pytest.mark.parametrize("factor", [0.5, 1.0])
def test_cap_factor_must_be_above_one(tmp_path: Path, factor):
    from manymodels.errors import ConfigError

    with pytest.raises(ConfigError, match="forecast.cap_factor"):
        _config(tmp_path, distributor_table(), forecast={"cap_factor": factor})
