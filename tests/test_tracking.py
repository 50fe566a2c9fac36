"""MLflow tracking: runs logged to a real local file store and read back with MLflow's client."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.errors import MMError
from manymodels.store.datastore import Datastore

from .conftest import require_module, run_cli, write_config


def test_train_and_forecast_runs_are_logged_and_read_back(tmp_path: Path, oj_csv: Path, monkeypatch):
    require_module("mlflow", "mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # mm must open a configured file store itself
    config = load_config(write_config(tmp_path, str(oj_csv), split={"holdout": 4}, forecast={"quantiles": [0.1, 0.9]}, tracking={"mlflow": {"uri": "mlruns", "experiment": "oj"}}))
    assert config.tracking.mlflow.uri == str(tmp_path / "mlruns")  # relative to the config file
    result = mm.run(config)
    assert result.exit_code == 0

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("oj")
    runs = {r.data.tags["mm.step"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"train", "forecast"}
    train, forecast = runs["train"], runs["forecast"]
    assert train.info.run_name == result.train.run_id and train.info.status == "FINISHED"
    assert train.data.tags["mm.run_id"] == result.train.run_id and train.data.tags["mm.status"] == "completed"
    assert train.data.params["train.horizon"] == "4" and train.data.params["data.group_columns"] == "Store,Brand"
    assert train.data.params["train.automl.enabled"] == "False"
    assert not any(k.startswith("tracking.") for k in train.data.params)
    assert train.data.metrics["trained"] == 6 and train.data.metrics["failed"] == 0
    assert train.data.metrics["models_lightgbm"] == 6
    assert train.data.metrics["backtest_median_wape"] == pytest.approx(result.train.median_backtest["wape"])
    assert forecast.data.tags["mm.train_run_id"] == result.train.run_id
    assert forecast.data.metrics["accuracy_wape"] == pytest.approx(result.forecast.accuracy["wape"])
    assert forecast.data.metrics["coverage_below_Prediction_q90"] == pytest.approx(result.forecast.coverage["Prediction_q90"])
    record = Datastore(config.datastore).read_run(result.train.run_id)
    assert train.info.start_time == int(pd.Timestamp(record["started"]).timestamp() * 1000)

    artefacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert artefacts == {"training_output.csv", "report.html", f"{result.train.run_id}.json"}
    assert {a.path for a in client.list_artifacts(forecast.info.run_id)} == {"report.html", f"{result.forecast.run_id}.json"}
    local = client.download_artifacts(train.info.run_id, "training_output.csv", str(tmp_path / "down"))
    pd.testing.assert_frame_equal(pd.read_csv(local), pd.read_csv(result.train.output))
    report = Path(client.download_artifacts(forecast.info.run_id, "report.html", str(tmp_path / "down2"))).read_text(encoding="utf-8")
    assert result.forecast.run_id in report

    # a later run is one more MLflow run per step; nothing in the models changes because of tracking
    again = mm.train(config)
    assert again.reused == 6
    assert len(client.search_runs([experiment.experiment_id], filter_string="tags.`mm.step` = 'train'")) == 2


def test_tracking_without_mlflow_refuses_to_start(tmp_path: Path, oj_csv: Path, monkeypatch):
    config = load_config(write_config(tmp_path, str(oj_csv), tracking={"mlflow": {"uri": "mlruns"}}))
    mm.split(config)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(MMError, match="MLflow is not installed") as caught:
        mm.train(config)
    assert "pip install 'manymodels[mlflow]'" in caught.value.hint
    assert [r["step"] for r in Datastore(config.datastore).list_runs()] == ["split"]  # nothing was trained


def test_unreachable_tracking_server_warns_and_keeps_the_run(tmp_path: Path, oj_csv: Path):
    require_module("mlflow", "mlflow")
    config = write_config(tmp_path, str(oj_csv), tracking={"mlflow": {"uri": "http://127.0.0.1:9", "log_report": False}})
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    done = run_cli("run", "-c", str(config), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"]["trained"] == 6  # stdout stays one JSON document
    assert "tracking: could not log train run" in done.stderr and "Traceback" not in done.stderr
