"""The statistical kinds (core/statistical.py) as AutoML candidates, end to end through mm.run."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core import kernels
from manymodels.core.kernels import fit_group, forecast_group
from manymodels.store.datastore import Datastore

from .conftest import require_module, write_config

if not os.environ.get("MM_REQUIRE_STATS"):  # .ci/run sets it in its pandas-2 venv: a missing library fails there
    pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")

CANDIDATES = ["ets", "theta", "croston", "naive"]
WEEKS = 60
HOLDOUT = 4


def sales_table(seed: int = 3) -> pd.DataFrame:
    """Four weekly items: two smooth (one seasonal), one intermittent, one too short for ets's folds."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-07")
    rows = []
    for item, n in (("smooth", WEEKS), ("seasonal", WEEKS), ("sparse", WEEKS), ("young", 14)):
        for w in range(n):
            if item == "smooth":
                y = 50 + 0.3 * w + rng.normal(0, 3)
            elif item == "seasonal":
                y = 80 + 20 * math.sin(2 * math.pi * w / 13) + rng.normal(0, 2)
            elif item == "sparse":
                y = float(rng.integers(1, 6)) if rng.random() < 0.25 else 0.0
            else:
                y = 20 + rng.normal(0, 2)
            rows.append({"Item": item, "Week": (start + pd.Timedelta(weeks=WEEKS - n + w)).strftime("%Y-%m-%d"), "Sales": round(max(y, 0.0), 2)})
    return pd.DataFrame(rows)


def config_for(folder: Path, table: pd.DataFrame, **train):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sales.csv"
    table.to_csv(path, index=False)
    raw = write_config(
        folder,
        str(path),
        data={"time_column": "Week", "target_column": "Sales", "group_columns": ["Item"], "known_future_columns": [], "drop_columns": []},
        split={"train_end": "auto", "holdout": HOLDOUT},
        train={"horizon": HOLDOUT, "min_history": 8, "automl": {"enabled": True, "candidates": CANDIDATES, "n_trials": 0, "reference": None}, **train},
        forecast={"quantiles": [0.1, 0.5, 0.9]},
    )
    return load_config(raw)


def forecast_values(result) -> pd.DataFrame:
    out = pd.read_csv((result.forecast if hasattr(result, "train") else result).output)
    return out.sort_values(["Item", "Week"]).reset_index(drop=True)[["Item", "Week", "Prediction", "Prediction_q10", "Prediction_q50", "Prediction_q90"]]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    config = config_for(tmp_path_factory.mktemp("stat"), sales_table())
    result = mm.run(config)
    return config, result


def test_every_group_trains_and_forecasts_with_finite_scores(first_run):
    config, result = first_run
    assert result.exit_code == 0, result.train.failures
    training = pd.read_csv(result.train.output).set_index("Item")
    assert (training["status"] == "trained").all()
    assert set(training["model"]) <= set(CANDIDATES)
    for item in ("smooth", "seasonal", "sparse"):
        for kind in CANDIDATES:
            assert math.isfinite(training.loc[item, f"score_{kind}"]), (item, kind, training.loc[item, "dropped_candidates"])
    assert training.loc["sparse", "demand_class"] in ("intermittent", "lumpy")
    assert training.loc["smooth", "demand_class"] == "smooth"
    forecast = forecast_values(result)
    assert len(forecast) == 4 * HOLDOUT
    values = forecast[["Prediction", "Prediction_q10", "Prediction_q50", "Prediction_q90"]].to_numpy()
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.all(forecast["Prediction_q10"] <= forecast["Prediction_q90"])


def test_the_chosen_model_is_json_state_and_forecasts_identically_after_reload(first_run):
    config, result = first_run
    store = Datastore(config.datastore)
    training = pd.read_csv(result.train.output)
    keys = {store.read_model_meta(k, 1)["group"]["Item"]: k for k in store.model_keys()}
    statistical_winners = 0
    for row in training.itertuples():
        meta = json.loads(json.dumps(store.read_model_meta(keys[row.Item], int(row.model_version)), allow_nan=False))
        assert meta["kind"] == row.model
        assert meta["demand_class"] == row.demand_class
        if meta["kind"] != "naive":
            statistical_winners += 1
            assert meta["state"]["kind"] == meta["kind"]
            assert [s["kind"] for s in meta["state"]["series"]] == [meta["kind"]]
            assert not kernels.has_booster(meta)
    assert statistical_winners >= 1
    before = forecast_values(result)
    again = mm.forecast(config, allow_reuse=False)  # the models read back from the store
    assert again.exit_code == 0 and again.run_id != result.forecast.run_id
    pd.testing.assert_frame_equal(before, forecast_values(again))


def test_targets_after_the_cutoff_change_nothing(first_run, tmp_path):
    config, result = first_run
    table = sales_table()
    last = table.groupby("Item")["Week"].transform(lambda w: w.rank(ascending=False) <= HOLDOUT)
    table.loc[last, "Sales"] = table.loc[last, "Sales"] * 50 + 1000
    moved = mm.run(config_for(tmp_path / "moved", table))
    assert moved.exit_code == 0
    a, b = pd.read_csv(result.train.output), pd.read_csv(moved.train.output)
    assert list(a["model"]) == list(b["model"])
    pd.testing.assert_frame_equal(forecast_values(result), forecast_values(moved))


def test_an_intermittent_series_gets_croston_scored(first_run):
    _, result = first_run
    training = pd.read_csv(result.train.output).set_index("Item")
    assert math.isfinite(training.loc["sparse", "score_croston"])
    assert "croston" not in str(training.loc["sparse", "dropped_candidates"])


def test_a_series_too_short_for_ets_drops_ets_with_its_reason(first_run):
    _, result = first_run
    training = pd.read_csv(result.train.output).set_index("Item")
    young = training.loc["young"]
    assert young["status"] == "trained" and young["model"] != "ets"
    assert "ets: too_short: ets needs at least 7 observations" in young["dropped_candidates"]
    assert pd.isna(young["score_ets"])
    assert math.isfinite(young["score_theta"])


def test_export_writes_statistical_models_metadata_only_with_their_state(first_run, tmp_path):
    require_module("onnx", "onnx")
    config, run = first_run
    result = mm.export(config, output=tmp_path / "onnx")
    assert result.failed == 0 and result.onnx == 0 and result.metadata_only == 4
    out = tmp_path / "onnx"
    index = pd.read_csv(out / "index.csv")
    training = pd.read_csv(run.train.output).set_index("Item")
    for row in index.itertuples():
        document = json.loads((out / row.metadata_file).read_text())
        kind = document["model"]["kind"]
        assert kind == training.loc[row.label.split("=")[1], "model"]
        assert document["inputs"] == [] and document["rule"]
        if kind != "naive":
            assert document["model"]["state"]["series"][0]["kind"] == kind
            assert document["quantiles"] == []  # the model's own intervals, not residual shifts


# -- the kernels directly ---------------------------------------------------------

sys.path.insert(0, str(Path(__file__).parent))
from test_kernels import spec_for, weekly_group  # noqa: E402


def automl_spec(candidates, **overrides):
    return spec_for(automl={"enabled": True, "candidates": candidates, "n_trials": 0, "reference": None}, **overrides)


def test_a_group_of_several_series_stores_one_state_per_series_and_forecasts_each():
    history, future = weekly_group(series=("a", "b", "c"))
    spec = automl_spec(["theta"], series_columns=("item",))
    result = fit_group(history, spec)
    assert result["status"] == "trained", result
    assert result["model"] == "theta" and result["model_text"] is None
    assert len(result["meta"]["state"]["series"]) == 3
    meta = json.loads(json.dumps(result["meta"], allow_nan=False))
    pred = forecast_group(history, future, meta, None, spec)
    assert pred.shape == (len(future), 4) and np.all(np.isfinite(pred))
    level = {s: pred[future["item"].to_numpy() == s, 0].mean() for s in ("a", "b", "c")}
    assert level["a"] < level["b"] < level["c"]  # each series forecast from its own history
    assert np.array_equal(pred, forecast_group(history, future, result["meta"], None, spec))


def test_without_statsforecast_a_statistical_candidate_is_dropped_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(kernels.statistical, "available", lambda: False)
    history, _ = weekly_group()
    result = fit_group(history, automl_spec(["ets", "naive"]))
    assert result["status"] == "trained" and result["model"] == "naive"
    assert result["candidate_errors"] == {"ets": "statsforecast is not installed: pip install 'manymodels[stats]'"}


def test_a_stored_statistical_decision_is_refit_on_new_data_without_a_search():
    history, future = weekly_group(n_weeks=70, future=4)
    spec = automl_spec(["ets", "theta", "naive"])
    first = fit_group(history.iloc[:60], spec)
    assert first["status"] == "trained" and first["model"] in ("ets", "theta"), first
    again = fit_group(history, spec, stored=first["meta"]["tuning"], tune=False)
    assert again["status"] == "trained" and again["model"] == first["model"]
    assert again["meta"]["tuning"]["source"].startswith("stored decision")
    assert again["meta"]["state"]["series"][0]["n_obs"] == 70
    assert np.all(np.isfinite(forecast_group(history, future, again["meta"], None, spec)))


def test_negative_values_drop_the_croston_family_not_the_group():
    history, _ = weekly_group()
    history = history.assign(y=history["y"] - history["y"].mean())
    result = fit_group(history, automl_spec(["croston", "theta"]))
    assert result["status"] == "trained" and result["model"] == "theta"
    assert result["candidate_errors"]["croston"].startswith("negative: croston models non-negative demand")
