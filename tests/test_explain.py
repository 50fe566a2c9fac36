"""forecast.explain: drivers of each forecast row, with a known truth, and importance per model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core.explain import explain_forecast, friendly_names, importance
from manymodels.core.kernels import forecast_fitted, load_fitted
from manymodels.runner.tasks import read_model
from manymodels.steps.common import group_spec
from manymodels.store.datastore import Datastore

from .conftest import small_config

START = pd.Timestamp("2021-01-07")
HIGH, LOW = 4.8, 1.2  # the future prices: far above and below the training mean (about 3)


def price_only(tmp_path: Path, weeks: int = 80) -> Path:
    """One group whose demand is driven by its price alone (plus a little noise), 4 future weeks."""
    rng = np.random.default_rng(3)
    price = np.round(rng.uniform(1, 5, weeks), 2)
    y = np.round(50 + 30 * (3 - price) + rng.normal(0, 1, weeks), 2)
    future = np.array([HIGH, LOW, HIGH, LOW])
    frame = pd.DataFrame({
        "g": "p",
        "t": [(START + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d") for w in range(weeks + 4)],
        "y": np.concatenate([y, np.full(4, np.nan)]),
        "Price": np.concatenate([price, future]),
    })
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("model", ["lightgbm", "linear", "ensemble"])
def test_the_only_signal_is_the_first_driver_with_its_sign(tmp_path: Path, model: str):
    data = price_only(tmp_path)
    candidates = ["lightgbm", "linear", "ensemble"] if model == "ensemble" else [model]  # ensemble: of lightgbm and linear
    automl = {"enabled": True, "candidates": candidates, "reference": model, "evidence": 1000.0, "n_trials": 0, "calibrate": False}
    path = small_config(tmp_path, str(data), data={"known_future_columns": ["Price"]}, train={"horizon": 4, "num_boost_round": 60, "automl": automl}, forecast={"explain": 3})
    config = load_config(path)
    assert mm.run(config).exit_code == 0
    store = Datastore(config.datastore)
    out = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert out["driver_1"].tolist() == ["Price"] * 4, out[["Price", "driver_1", "driver_2"]]
    # a price above the training mean lowers the forecast, one below raises it
    assert (np.sign(out["driver_1_effect"]) == np.where(out["Price"] > 3, -1, 1)).all(), out[["Price", "driver_1_effect"]]
    assert (out["driver_1_effect"].abs() > 20).all()  # about 30 x 1.8 units of demand
    for k in (2, 3):  # what the model has besides price is small against it
        assert (out[f"driver_{k}_effect"].abs().fillna(0) < out["driver_1_effect"].abs()).all()

    # exact in the model's space, and in target units the drivers plus the base are the forecast
    key = mm.list_models(config)[0]["key"]
    meta, text = read_model(store, key, 1)
    spec = group_spec(config, store.read_split_manifest())
    history, future = store.read_partition("train", key), store.read_partition("inference", key)
    fitted = load_fitted(meta, text)
    shipped = forecast_fitted(history, future, meta, fitted, spec)[:, 0]
    explained = explain_forecast(history, future, meta, fitted, spec, shipped)
    transform = meta["state"]["transform"]
    raw = np.log1p(shipped) if transform == "log1p" else shipped
    np.testing.assert_allclose(explained.contrib.sum(axis=1) + explained.base_raw, raw, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(explained.effects.sum(axis=1) + explained.base, shipped, rtol=1e-9)
    np.testing.assert_allclose(out["Prediction"], shipped, rtol=1e-9)
    np.testing.assert_allclose(out["driver_base"], explained.base, rtol=1e-9)
    assert meta["kind"] == model
    # importance per group, with the model's metadata
    assert next(iter(meta["importance"])) == "Price" and abs(sum(meta["importance"].values()) - 1) < 1e-4
    # the train step took the gains from its live booster: the same shares as the stored model text's
    if model != "linear":
        assert meta["importance"] == importance(meta, text, history, spec)


def test_baseline_drivers_are_the_rule_and_names_are_readable(tmp_path: Path):
    data = price_only(tmp_path)
    automl = {"enabled": True, "candidates": ["naive"], "n_trials": 0}
    config = load_config(small_config(tmp_path, str(data), data={"known_future_columns": ["Price"]}, train={"horizon": 4, "automl": automl}, forecast={"explain": 2}))
    assert mm.run(config).exit_code == 0
    out = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
    assert out["driver_1"].tolist() == ["naive: last value"] * 4
    np.testing.assert_allclose(out["driver_1_effect"] + out["driver_base"], out["Prediction"])
    assert out["driver_2"].isna().all()  # a rule has one driver
    assert friendly_names(["lag_52", "lag_1", "lag_3", "rmean_4", "week_of_year", "Price"], 52) == [
        "lag_52 (same week last year)", "lag_1 (last period)", "lag_3 (3 periods ago)", "rolling mean of 4", "week_of_year", "Price",
    ]


def test_statistical_and_ensemble_drivers_add_up_to_the_forecast(tmp_path: Path):
    if not os.environ.get("MM_REQUIRE_STATS"):  # .ci/run sets it in its pandas-2 venv: a missing library fails there
        pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")
    data = price_only(tmp_path)
    automl = {"enabled": True, "candidates": ["ets", "theta", "ensemble"], "ensemble": ["ets", "theta"], "reference": "ensemble", "n_trials": 0}
    config = load_config(small_config(tmp_path, str(data), data={"known_future_columns": ["Price"]}, train={"horizon": 4, "automl": automl}, forecast={"explain": 2}))
    assert mm.run(config).exit_code == 0
    out = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
    assert set(out["driver_1"]) | set(out["driver_2"]) <= {"level", "trend", "season", "trend and season"}  # an ensemble's: its members', merged
    np.testing.assert_allclose(out["driver_1_effect"] + out["driver_2_effect"] + out["driver_base"], out["Prediction"], rtol=1e-9)


def test_drivers_that_cannot_be_computed_never_cost_the_forecast(tmp_path: Path, monkeypatch):
    import manymodels.runner.tasks as tasks

    data = price_only(tmp_path)
    config = load_config(small_config(tmp_path, str(data), data={"known_future_columns": ["Price"]}, train={"horizon": 4}, forecast={"explain": 2}))

    def broken(*args, **kwargs):
        raise FloatingPointError("injected by the test")

    monkeypatch.setattr(tasks, "explain_forecast", broken)  # the serial engine runs the groups in this process
    result = mm.run(config)
    assert result.exit_code == 0 and result.forecast.forecast == 1
    out = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
    assert out["Prediction"].notna().all() and out["driver_1"].isna().all() and out["driver_base"].isna().all()


def test_ets_drivers_are_its_own_level_trend_and_season(tmp_path: Path):
    if not os.environ.get("MM_REQUIRE_STATS"):
        pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")
    rng = np.random.default_rng(2)
    weeks = 96
    w = np.arange(weeks + 8)
    y = 200 + 1.5 * w + 40 * np.sin(2 * np.pi * w / 12) + rng.normal(0, 2, len(w))
    frame = pd.DataFrame({"g": "s", "t": [(START + pd.Timedelta(weeks=int(k))).strftime("%Y-%m-%d") for k in w], "y": np.where(w < weeks, np.round(y, 2), np.nan)})
    frame.to_csv(tmp_path / "sales.csv", index=False)
    automl = {"enabled": True, "candidates": ["ets"], "reference": "ets", "n_trials": 0, "calibrate": False}
    config = load_config(small_config(tmp_path, str(tmp_path / "sales.csv"), data={"known_future_columns": [], "season_length": 12}, train={"horizon": 8, "automl": automl}, forecast={"explain": 3}))
    assert mm.run(config).exit_code == 0
    out = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
    effect = {n: sum(out[f"driver_{k}_effect"].where(out[f"driver_{k}"] == n, 0) for k in (1, 2, 3)) for n in ("level", "trend", "season")}
    assert set(out["driver_1"]) | set(out["driver_2"]) | set(out["driver_3"]) == {"level", "trend", "season"}  # the model's own
    np.testing.assert_allclose(effect["level"] + effect["trend"] + effect["season"] + out["driver_base"], out["Prediction"], rtol=1e-9)
    assert (effect["level"] > 250).all() and np.ptp(effect["level"]) < 1e-9  # one level at the cutoff (about 200 + 1.5 x 96)
    assert (np.diff(effect["trend"]) > 0).all()  # a rising trend adds more each week ahead
    assert effect["season"].abs().max() > 20  # the 40-unit season
