"""A train task forecasts its group with the model it has just fitted (tasks.stage_forecast);
mm forecast adopts that forecast when it is made from exactly what its own would be made from.

Each test compares the adopted forecasts with the ones mm forecast makes itself from the
stored files (``allow_reuse=False``): equal to the last bit, measures and checks included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.store.datastore import Datastore

from .conftest import write_config

ADOPTED = "forecast: made by train run"
MEASURED = ["n_actual", "metrics", "unscored", "below_quantile", "n_out_of_range", "n_capped", "checks", "n_missing_prediction"]


def staged(store: Datastore) -> list[Path]:
    return sorted(store.root.glob("forecasts/*/*/staged-*.parquet"))


def decisions_of(store: Datastore, run_id: str) -> pd.Series:
    groups = store.read_run_groups(run_id)
    return groups.set_index("label")["decision"]


def output_of(store: Datastore) -> pd.DataFrame:
    return pd.read_csv(store.output_path("forecasting_output.csv"))


def made_anew(config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """forecasting_output.csv and the groups table of a forecast that adopts nothing."""
    store = Datastore(config.datastore)
    result = mm.forecast(config, allow_reuse=False)
    assert not decisions_of(store, result.run_id).str.startswith(ADOPTED).any()
    return output_of(store), store.read_run_groups(result.run_id)


def _automl_config(tmp_path: Path, oj_csv: Path, candidates=("lightgbm", "linear", "ensemble"), **forecast) -> Path:
    automl = {"enabled": True, "candidates": list(candidates), "n_trials": 0, "folds": 2}
    return write_config(tmp_path, str(oj_csv), train={"automl": automl}, forecast={"quantiles": [0.1, 0.9], "cap_factor": 3.0, "explain": 2, **forecast})


@pytest.mark.parametrize("kind", ["lightgbm", "linear", "ensemble", "seasonal_naive", "ets"])
def test_forecast_adopts_what_train_staged_and_it_equals_a_forecast_made_from_the_files(tmp_path: Path, oj_csv: Path, kind: str):
    if kind == "ets" and not os.environ.get("MM_REQUIRE_STATS"):  # .ci/run sets it in its pandas-2 venv: a missing library fails there
        pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")
    candidates = ["lightgbm", "linear", "ensemble"] if kind == "ensemble" else [kind]
    config = load_config(_automl_config(tmp_path, oj_csv, candidates))
    store = Datastore(config.datastore)
    mm.split(config)
    trained = mm.train(config)
    models = pd.read_csv(store.output_path("training_output.csv"))
    assert trained.trained == 6 and (models["model"] == kind).all(), models["model"].value_counts()
    assert len(staged(store)) == 6  # one per group, before mm forecast runs

    adopted = mm.forecast(config)
    assert adopted.forecast == 6 and adopted.failed == 0
    decisions = decisions_of(store, adopted.run_id)
    assert decisions.str.startswith(f"{ADOPTED} {trained.run_id}").all(), decisions
    assert not staged(store)  # adopted: now the groups' forecasts
    # realised accuracy scores what this run published: the adopted forecasts are in its history
    assert store.read_forecast_history(adopted.run_id).num_rows == len(output_of(store)) == 6 * 4
    ours, our_groups = output_of(store), store.read_run_groups(adopted.run_id)
    assert {"driver_1", "Prediction_q10"} <= set(ours.columns)

    theirs, their_groups = made_anew(config)
    pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(our_groups[["label", *MEASURED]], their_groups[["label", *MEASURED]])


def test_a_forecast_config_changed_after_train_is_forecast_anew_and_the_staged_ones_go(tmp_path: Path, oj_csv: Path):
    path = _automl_config(tmp_path, oj_csv)
    config = load_config(path)
    store = Datastore(config.datastore)
    mm.split(config)
    mm.train(config)
    assert len(staged(store)) == 6
    changed = load_config(path, ["forecast.cap_factor=1.5"])  # the forecasts' fingerprint changes, not the models'
    result = mm.forecast(changed)
    assert result.forecast == 6
    assert not decisions_of(store, result.run_id).str.startswith(ADOPTED).any()
    assert not staged(store)  # each forecast written replaces the group's other files


def test_a_forecast_the_train_task_cannot_make_costs_the_group_nothing_but_that(tmp_path: Path, oj_csv: Path):
    config = load_config(_automl_config(tmp_path, oj_csv))
    store = Datastore(config.datastore)
    mm.split(config)
    groups = store.read_split_groups()
    lost = groups.iloc[0]
    store.remove_partition("inference", lost["key"])  # the train task cannot read the rows to forecast
    trained = mm.train(config)
    assert trained.trained == 6 and trained.failed == 0  # the model is trained all the same
    assert len(staged(store)) == 5
    result = mm.forecast(config)
    assert result.forecast == 5 and result.failed == 1
    assert result.failures[0]["group"] == lost["label"] and result.failures[0]["reason"] == "partition_missing"
