"""split -> train -> forecast through the library API, on real files, with a real process pool."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.errors import UpstreamMissing
from manymodels.store.datastore import Datastore
from manymodels.store.registry import list_models

from .conftest import write_config

# DESIGN.md's binding columns, in its order; extras (decision, scores...) come after
TRAIN_COLUMNS = ["Store", "Brand", "status", "model", "model_version", "run_id", "n_train_rows", "train_start", "train_end", "mape", "smape", "wape", "rmse", "mase", "duration_s", "error"]


def test_run_writes_both_outputs_with_one_prediction_per_inference_row(tmp_path: Path, oj_csv: Path):
    config = load_config(write_config(tmp_path, str(oj_csv), engine={"kind": "local", "jobs": 2}, forecast={"quantiles": [0.1, 0.9]}))
    result = mm.run(config)
    assert result.exit_code == 0
    training = pd.read_csv(result.train.output)
    assert list(training.columns[: len(TRAIN_COLUMNS)]) == TRAIN_COLUMNS
    assert (training["status"] == "trained").all() and len(training) == 6
    forecast = pd.read_csv(result.forecast.output)
    inference_rows = 6 * 4
    assert len(forecast) == inference_rows
    assert not forecast.duplicated(["Store", "Brand", "WeekStarting"]).any()
    for column in ["Store", "Brand", "WeekStarting", "Quantity", "Price", "Advert", "Prediction", "Prediction_q10", "Prediction_q90", "model_version", "run_id"]:
        assert column in forecast.columns
    assert forecast["Prediction"].notna().all()
    assert (forecast["Prediction_q10"] <= forecast["Prediction_q90"]).all()
    assert set(forecast["run_id"]) == {result.train.run_id}


def test_holdout_reports_accuracy(tmp_path: Path, oj_csv: Path):
    config = load_config(write_config(tmp_path, str(oj_csv), split={"holdout": 4}))
    result = mm.run(config)
    assert result.forecast.accuracy["n_rows"] == 24
    assert 0 < result.forecast.accuracy["wape"] < 60
    assert len(result.forecast.worst_groups) == 5


def test_failing_group_is_recorded_and_the_others_go_on(tmp_path: Path, oj_frame: pd.DataFrame):
    short = oj_frame[~((oj_frame["Store"] == 1001) & (oj_frame["Brand"] == "dominicks") & (oj_frame["WeekStarting"] < "1991-06-01"))]
    path = tmp_path / "short.parquet"
    short.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path), train={"min_history": 20}))
    result = mm.run(config)
    assert result.exit_code == 3
    assert result.train.failed == 1 and result.train.trained == 5
    assert result.train.failures[0]["group"] == "Store=1001,Brand=dominicks"
    assert result.train.failures[0]["reason"] == "too_short"
    training = pd.read_csv(result.train.output)
    failed = training[training["status"] == "failed"]
    assert list(failed["Brand"]) == ["dominicks"] and "min_history" in failed["error"].iloc[0]
    # the forecast says which group had no model instead of dropping it silently
    assert result.forecast.no_model == 1
    assert "Store=1001,Brand=dominicks" in result.forecast.failures[0]["group"]
    forecast = pd.read_csv(result.forecast.output)
    assert len(forecast) == 5 * 4


def test_second_train_reuses_every_unchanged_group_and_changed_data_retrains_only_that_group(tmp_path: Path, oj_frame: pd.DataFrame):
    path = tmp_path / "sales.parquet"
    oj_frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    first = mm.run(config)
    assert first.train.trained == 6
    second = mm.run(config)
    assert second.train.reused == 6 and second.train.trained == 0
    assert second.forecast.reused == 6
    changed = oj_frame.copy()
    mask = (changed["Store"] == 1002) & (changed["Brand"] == "minute.maid") & changed["Quantity"].notna()
    changed.loc[mask, "Quantity"] *= 1.1
    changed.to_parquet(path)
    third = mm.run(config)
    assert third.train.trained == 1 and third.train.reused == 5
    training = pd.read_csv(third.train.output)
    retrained = training[training["status"] == "trained"]
    assert list(zip(retrained["Store"], retrained["Brand"])) == [(1002, "minute.maid")]
    assert retrained["model_version"].iloc[0] == 2
    assert "train partition changed" in retrained["decision"].iloc[0]
    assert third.forecast.forecast == 1 and third.forecast.reused == 5


def test_new_inference_data_always_gives_new_forecasts(tmp_path: Path, oj_frame: pd.DataFrame):
    path = tmp_path / "sales.parquet"
    oj_frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    first = mm.run(config)
    before = pd.read_csv(first.forecast.output)
    future = oj_frame["Quantity"].isna()
    changed = oj_frame.copy()
    changed.loc[future, "Price"] = changed.loc[future, "Price"] * 0.7  # a deep promotion is planned
    changed.to_parquet(path)
    second = mm.run(config)
    assert second.train.reused == 6  # history unchanged: models reused
    assert second.forecast.forecast == 6  # but every forecast recomputed
    after = pd.read_csv(second.forecast.output)
    assert not np.allclose(before["Prediction"], after["Prediction"])


def test_no_allow_reuse_recomputes_everything(tmp_path: Path, oj_config):
    _, config = oj_config
    mm.run(config)
    again = mm.run(config, allow_reuse=False)
    assert again.train.trained == 6 and again.forecast.forecast == 6 and not again.split.reused


def test_groups_subset_and_registry_versions(tmp_path: Path, oj_config):
    _, config = oj_config
    mm.split(config)
    first = mm.train(config, groups=["Store=1000"])
    assert first.n_groups == 2 and first.trained == 2
    everything = mm.train(config)
    assert everything.trained == 4 and everything.reused == 2
    forced = mm.train(config, groups=["Store=1000,Brand=dominicks"], allow_reuse=False)
    assert forced.trained == 1
    training = pd.read_csv(forced.output)
    assert len(training) == 6  # the other groups' current models stay in the run's registry
    versions = [m for m in list_models(Datastore(config.datastore)) if m["group"] == {"Store": "1000", "Brand": "dominicks"}]
    assert [m["version"] for m in versions] == [2, 1]


def test_forecast_by_run_id_uses_that_runs_models(tmp_path: Path, oj_config):
    _, config = oj_config
    mm.split(config)
    old = mm.train(config)
    mm.train(config, allow_reuse=False)
    result = mm.forecast(config, run_id=old.run_id)
    forecast = pd.read_csv(result.output)
    assert set(forecast["run_id"]) == {old.run_id} and set(forecast["model_version"]) == {1}


def test_steps_need_their_upstream(tmp_path: Path, oj_config):
    _, config = oj_config
    with pytest.raises(UpstreamMissing) as err:
        mm.train(config)
    assert "mm split" in str(err.value)
    mm.split(config)
    with pytest.raises(UpstreamMissing) as err:
        mm.forecast(config)
    assert "mm train" in str(err.value)


def test_clean_is_a_dry_run_unless_yes_and_stays_in_the_datastore(tmp_path: Path, oj_config, oj_csv: Path):
    _, config = oj_config
    mm.run(config)
    store = Datastore(config.datastore)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (store.root / "models" / "link-out").symlink_to(outside)
    dry = mm.clean(config, step="train")
    assert dry.dry_run and dry.total_bytes > 0
    assert (store.root / "models").exists()
    done = mm.clean(config, step="train", yes=True)
    assert not done.dry_run
    assert not (store.root / "models").exists()
    assert not store.output_path("training_output.csv").exists()
    assert store.output_path("forecasting_output.csv").exists()
    assert outside.read_text() == "keep me" and oj_csv.exists()
    mm.clean(config, step="all", yes=True)
    assert oj_csv.exists() and outside.exists()
    assert not (store.root / "split").exists()


def test_retune_policy_and_time_budgets_do_not_invalidate_models(tmp_path: Path, oj_config):
    _, config = oj_config
    mm.run(config)
    weekly = config.with_overrides(["train.automl.retune=always", "train.automl.timeout_per_group=99"])
    assert mm.train(weekly).reused == 6
    changed = config.with_overrides(["train.automl.n_trials=3"])
    assert mm.train(changed).trained == 6


def test_train_counts_the_groups_it_tuned_and_refits_stored_decisions(tmp_path: Path, oj_config):
    _, config = oj_config
    tuned = config.with_overrides(["train.automl.enabled=true", "train.automl.n_trials=2", "train.automl.folds=2", "train.num_boost_round=20"])
    mm.split(tuned)
    first = mm.train(tuned)
    assert first.trained == 6 and first.tuned == 6
    # another seed refits every group, but with the decisions stored (retune: if_changed)
    nightly = mm.train(tuned.with_overrides(["train.seed=1"]))
    assert nightly.trained == 6 and nightly.tuned == 0
    weekly = mm.train(tuned.with_overrides(["train.seed=2", "train.automl.retune=always"]))
    assert weekly.trained == 6 and weekly.tuned == 6
