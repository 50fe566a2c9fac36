"""candidates: auto (the default) and ensembles of any two or more candidates.

End to end through mm.run on a mixed set of monthly series, and through the kernels.
The statistical models need the stats extra (.ci/run's pandas-2 venv runs these with
MM_REQUIRE_STATS=1); the tests of the fallback and of the config run everywhere.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import CANDIDATES, load_config
from manymodels.core import kernels, statistical
from manymodels.core.identity import group_key
from manymodels.core.kernels import fit_group, forecast_group
from manymodels.errors import ConfigError
from manymodels.store.datastore import Datastore

from .conftest import write_config
from .test_kernels import spec_for, weekly_group

MONTHS = 48
HOLDOUT = 6


def needs_stats():
    if not os.environ.get("MM_REQUIRE_STATS"):  # .ci/run sets it in its pandas-2 venv: a missing library fails there
        pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")


def mixed_table(seed: int = 11) -> pd.DataFrame:
    """Five monthly SKUs, one of each kind a distributor has: seasonal, spare part, flat, new, and
    one whose demand follows its price."""
    rng = np.random.default_rng(seed)
    rows = []
    for sku in ("seasonal", "spare_part", "flat", "new", "priced"):
        n = 8 + HOLDOUT if sku == "new" else MONTHS
        for i in range(n):
            month = MONTHS - n + i
            price = 10.0 * (0.8 if rng.random() < 0.25 else 1.0)
            if sku == "seasonal":
                y = 200 + 60 * math.sin(2 * math.pi * month / 12) + 1.5 * month + rng.normal(0, 8)
            elif sku == "spare_part":
                y = float(rng.integers(1, 9)) if rng.random() < 0.2 else 0.0
            elif sku == "flat":
                y = 5.0
            elif sku == "new":
                y = 30 + rng.normal(0, 3)
            else:
                y = 400 * (price / 10.0) ** -3 * math.exp(rng.normal(0, 0.05))
            rows.append({"sku": sku, "month": f"{2019 + month // 12}-{month % 12 + 1:02d}-01", "price": price, "units": round(max(y, 0.0), 1)})
    return pd.DataFrame(rows)


def mixed_config(folder: Path, known_future: list[str]):
    folder.mkdir(parents=True, exist_ok=True)
    mixed_table().to_csv(folder / "sales.csv", index=False)
    raw = write_config(
        folder,
        "sales.csv",
        data={"time_column": "month", "target_column": "units", "group_columns": ["sku"], "known_future_columns": known_future, "drop_columns": [] if known_future else ["price"]},
        split={"train_end": "auto", "holdout": HOLDOUT},
        train={"horizon": HOLDOUT, "min_history": 4, "automl": {"enabled": True, "n_trials": 0}},  # candidates: auto, the default
        forecast={"quantiles": [0.1, 0.5, 0.9]},
    )
    return load_config(raw)


def outputs(config):
    store = Datastore(config.datastore)
    read = lambda name: pd.read_csv(store.output_path(name), keep_default_na=False, na_values=[""])  # noqa: E731
    return read("training_output.csv").set_index("sku"), read("forecasting_output.csv")


def scored(row) -> set[str]:
    return {c.removeprefix("score_") for c in row.index if c.startswith("score_") and np.isfinite(row[c])}


@pytest.fixture(scope="module")
def univariate(tmp_path_factory):
    needs_stats()
    config = mixed_config(tmp_path_factory.mktemp("auto"), [])
    result = mm.run(config)
    return config, result, *outputs(config)


def test_auto_is_the_default_and_each_class_gets_its_documented_candidates(univariate):
    config, result, training, _ = univariate
    assert config.train.automl.candidates == "auto" and result.exit_code == 0 and result.train.failed == 0
    classes = training["demand_class"].to_dict()
    assert classes.pop("spare_part") in ("intermittent", "lumpy")
    assert classes == {"seasonal": "smooth", "flat": "constant", "new": "short", "priced": "smooth"}
    assert scored(training.loc["seasonal"]) == {"ets", "theta", "ensemble", "naive", "seasonal_naive", "mean", "moving_average"}
    assert scored(training.loc["spare_part"]) == {"croston", "tsb", "adida", "imapa", "ensemble", "naive", "mean", "moving_average"}
    assert scored(training.loc["flat"]) == {"naive"} and training.loc["flat", "model"] == "naive"
    assert scored(training.loc["new"]) <= {"naive", "seasonal_naive", "mean", "moving_average"} and training.loc["new", "model"] in ("naive", "mean", "moving_average")
    assert "lightgbm" not in scored(training.loc["seasonal"])  # no known-future column: LightGBM on lags is not proposed


def test_the_ensemble_without_known_future_columns_averages_the_statistical_models(univariate):
    config, _, training, _ = univariate
    store = Datastore(config.datastore)
    for sku, members in (("seasonal", ["ets", "theta"]), ("spare_part", ["croston", "tsb", "adida", "imapa"])):
        key = group_key([sku])
        meta = store.read_model_meta(key, int(training.loc[sku, "model_version"]))
        assert meta["tuning"]["members"] == members or meta["kind"] != "ensemble"
        if meta["kind"] == "ensemble":
            assert [m["kind"] for m in meta["state"]["members"]] == members and meta["state"]["transform"] == "none"
        json.dumps(meta, allow_nan=False)  # JSON all the way down, no pickle


def test_every_forecast_and_quantile_is_finite_and_non_negative(univariate):
    _, _, _, forecast = univariate
    assert len(forecast) == 5 * HOLDOUT
    values = forecast[["Prediction", "Prediction_q10", "Prediction_q50", "Prediction_q90"]].to_numpy()
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    spare = forecast[forecast["sku"] == "spare_part"]
    assert (spare["Prediction_q10"] <= spare["Prediction_q90"]).all()


def test_with_a_known_future_column_the_priced_series_also_gets_lightgbm_linear_and_their_ensemble(tmp_path):
    needs_stats()
    config = mixed_config(tmp_path / "priced", ["price"])
    result = mm.run(config)
    assert result.exit_code == 0
    training, _ = outputs(config)
    assert {"lightgbm", "linear", "ensemble"} <= scored(training.loc["priced"])
    for kind in ("ets", "theta"):  # backtested; or, far behind the price-reading models on the newest window, pruned
        assert kind in scored(training.loc["priced"]) or f"{kind}: pruned: after the newest backtest window" in training.loc["priced", "dropped_candidates"]
    store = Datastore(config.datastore)
    meta = store.read_model_meta(group_key(["priced"]), int(training.loc["priced", "model_version"]))
    assert meta["tuning"]["members"] in (["lightgbm", "linear"], [meta["kind"]])
    # a price-driven series: a model that reads the price beats those that cannot (or they were pruned)
    theta = training.loc["priced", "score_theta"]
    assert training.loc["priced", "score_linear"] < theta if np.isfinite(theta) else "theta: pruned" in training.loc["priced", "dropped_candidates"]


def test_an_ensemble_may_average_lightgbm_linear_and_a_statistical_model():
    needs_stats()
    history, future = weekly_group(n_weeks=90, future=4)
    automl = {"enabled": True, "candidates": ["ensemble", "lightgbm", "linear", "ets"], "ensemble": ["lightgbm", "linear", "ets"],
              "n_trials": 0, "folds": 2, "reference": "ensemble", "evidence": 1e9}
    spec = spec_for(automl=automl)
    result = fit_group(history, spec)
    assert result["status"] == "trained" and result["model"] == "ensemble", result
    meta = json.loads(json.dumps(result["meta"], allow_nan=False))
    assert [m["kind"] for m in meta["state"]["members"]] == ["lightgbm", "linear", "ets"]
    assert meta["calibration"]["factor"] == 1.0  # evidence 1e9: never clearly better
    point = forecast_group(history, future, meta, result["model_text"], spec)[:, 0]
    alone = []
    for member in meta["state"]["members"]:
        single = {**meta, "kind": member["kind"], "state": member["state"], "calibration": {"factor": 1.0}}
        alone.append(forecast_group(history, future, single, result["model_text"] if member["kind"] == "lightgbm" else None, spec)[:, 0])
    np.testing.assert_allclose(point, np.mean(alone, axis=0), rtol=1e-9)  # the raw-space mean of its members


def test_without_statsforecast_auto_uses_the_candidates_of_before_and_says_why(monkeypatch):
    monkeypatch.setattr(kernels.statistical, "available", lambda: False)
    history, _ = weekly_group(n_weeks=60)
    result = fit_group(history, spec_for(automl={"enabled": True, "n_trials": 0}))
    assert result["status"] == "trained", result
    assert set(result["scores"]) == set(kernels.AUTO_WITHOUT_STATS)
    assert kernels.AUTO_WITHOUT_STATS == CANDIDATES  # the twin list core may not import
    assert "candidates auto without the statistical models: statsforecast is not installed" in result["note"]


def test_auto_candidates_of_a_group_of_several_series_is_the_union_of_theirs():
    profiles = [kernels.SeriesProfile("smooth", 40), kernels.SeriesProfile("intermittent", 40), kernels.SeriesProfile("constant", 40)]
    history, _ = weekly_group(n_weeks=40)
    data = kernels.group_data(history, spec_for(), kernels.describe_group(history, spec_for()), history["y"].to_numpy(dtype=float))
    chosen = kernels.auto_candidates(profiles, data, has_known_future=False)
    assert chosen == statistical.union_candidates([
        statistical.auto_candidates("smooth", 40, 52, False), statistical.auto_candidates("intermittent", 40, 52, False), ["naive"]
    ])
    assert chosen.index("ets") < chosen.index("croston") < chosen.index("ensemble")


@pytest.mark.parametrize(
    "automl, message",
    [
        ({"ensemble": ["lightgbm"]}, "ensemble averages at least two candidates"),
        ({"candidates": ["ensemble", "naive", "mean"]}, "candidate ensemble averages two or more of lightgbm, linear and the statistical candidates"),
        ({"candidates": ["ensemble", "lightgbm", "linear"], "ensemble": ["lightgbm", "ets"]}, "add ets to candidates"),
        ({"candidates": "everything"}, "train.automl.candidates"),
    ],
)
def test_bad_candidate_and_ensemble_settings_name_the_key(tmp_path, automl, message):
    raw = write_config(tmp_path, "sales.csv", train={"horizon": 4, "automl": {"enabled": True, **automl}})
    with pytest.raises(ConfigError) as caught:
        load_config(raw)
    assert message in str(caught.value) and "train.automl" in str(caught.value)


def test_statistical_ensembles_are_valid_configs(tmp_path):
    raw = write_config(tmp_path, "sales.csv", train={"horizon": 4, "automl": {"enabled": True, "candidates": ["ets", "theta", "ensemble"]}})
    assert load_config(raw).train.automl.candidate_names() == ["ets", "theta", "ensemble"]
    assert kernels.ensemble_members(spec_for(automl={"enabled": True, "candidates": ["ets", "theta", "ensemble"]}), ["ets", "theta", "ensemble"]) == ["ets", "theta"]


def test_raw_space_models_are_not_calibrated_log_space_ones_are():
    needs_stats()
    history, _ = weekly_group(n_weeks=90)
    for candidates, winner in ((["ets"], "ets"), (["ets", "theta", "ensemble"], "ensemble"), (["linear"], "linear")):
        spec = spec_for(automl={"enabled": True, "candidates": candidates, "metric": "mape", "n_trials": 0, "folds": 3, "evidence": 1e9})
        result = fit_group(history, spec)
        assert result["model"] == winner, result
        factor = result["meta"]["calibration"]["factor"]
        if winner == "linear":  # log-log ridge scored on MAPE: its median-like forecast is scaled
            assert factor != 1.0
        else:  # the statistical models forecast the raw target: no factor fitted on three folds
            assert factor == 1.0


def test_train_warns_once_when_auto_has_no_statsforecast(tmp_path, monkeypatch):
    monkeypatch.setattr(statistical, "available", lambda: False)
    from manymodels.console import Terminal

    config = mixed_config(tmp_path / "nostats", [])
    warnings: list[str] = []
    terminal = Terminal(quiet=True)
    monkeypatch.setattr(terminal, "warn", warnings.append)
    result = mm.run(config, terminal, engine="serial")
    assert result.train.failed == 0
    assert sum("statsforecast is not installed" in w for w in warnings) == 1, warnings
    training, _ = outputs(config)
    assert training["tuning"].str.contains("candidates auto without the statistical models").all()


def test_a_hopeless_statistical_model_is_pruned_after_the_newest_window_unless_it_is_an_ensemble_member_of_few_series():
    needs_stats()
    automl = {"enabled": True, "candidates": ["linear", "ets", "theta", "naive"], "n_trials": 0, "folds": 3, "reference": None}
    # twelve price-driven series: the log-log ridge reads the price, ETS and Theta cannot
    history, _ = weekly_group(n_weeks=80, series=tuple(f"s{i}" for i in range(12)))
    many = fit_group(history, spec_for(series_columns=("item",), automl=automl))
    assert many["status"] == "trained" and many["model"] == "linear", many
    assert many["candidate_errors"]["ets"].startswith("pruned: after the newest backtest window: wape ")
    assert "for linear" in many["candidate_errors"]["ets"] and "ets" not in many["scores"]
    # one series whose price alternates every week: a model outside the ensemble is still pruned
    # (alone it would need evidence to win)...
    one, _ = weekly_group(n_weeks=80)
    one["price"] = np.where(np.arange(len(one)) % 2 == 0, 2.0, 1.0)
    one["y"] = np.round(1000 * one["price"] ** -3.0)
    single = fit_group(one, spec_for(automl=automl))
    assert single["candidate_errors"]["ets"].startswith("pruned: ")
    # ...but a member of the ensemble sees every window: one window of one series is no evidence
    members = {**automl, "candidates": ["linear", "ets", "theta", "ensemble", "naive"], "ensemble": ["ets", "theta"]}
    single = fit_group(one, spec_for(automl=members))
    assert {"ets", "theta", "ensemble"} <= set(single["scores"]) and not single["candidate_errors"]
