"""mm export into MLflow's model registry: each group's ONNX model with the onnx flavor, and a
pyfunc router over all of them (mm serve's code path), loaded back with MLflow's own API."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

import manymodels as mm
from manymodels.config import load_config
from manymodels.store.datastore import Datastore

from .conftest import require_module, small_config, small_table

mlflow = require_module("mlflow", "mlflow")
onnxruntime = require_module("onnxruntime", "onnx")
require_module("fastapi", "serve")


def test_export_registers_onnx_models_and_a_router(tmp_path: Path):
    small_table(groups=("a", "b", "c"), weeks=30, future=2, seed=3).to_csv(tmp_path / "in.csv", index=False)
    path = small_config(tmp_path, str(tmp_path / "in.csv"), forecast={"quantiles": [0.1, 0.9]}, tracking={"mlflow": {"uri": "mlruns", "experiment": "sales", "registered_model": "sales"}})
    config = load_config(path)
    assert mm.run(config).exit_code == 0
    exported = mm.export(config)
    assert exported.onnx == 3 and exported.mlflow["groups"] == 3, exported.mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.tracking.MlflowClient()
    index = pd.read_csv(Path(exported.output) / "index.csv", dtype={"key": str})
    for row in index.itertuples():
        version = client.get_model_version(f"sales-{row.key}", "1")
        assert version.tags["group.g"] == row.g and version.tags["mm.train_run_id"] == exported.train_run_id and version.tags["mm.model_version"] == "1"
        loaded = mlflow.pyfunc.load_model(f"models:/sales-{row.key}/1")
        inputs = loaded.metadata.get_input_schema().inputs
        assert inputs[0].name == "features"
        width = inputs[0].shape[1]
        features = np.random.default_rng(0).uniform(0, 40, size=(5, width))
        got = loaded.predict({"features": features})
        session = onnxruntime.InferenceSession(str(Path(exported.output) / row.file), providers=["CPUExecutionProvider"])
        want = session.run(None, {"features": features})
        assert np.array_equal(np.asarray(got["prediction"]).ravel(), np.asarray(want[1]).ravel())
    # the group's description travels with it
    run = client.search_runs([client.get_experiment_by_name("sales").experiment_id], "tags.`mm.step` = 'export'")[0]
    assert any(a.path.endswith("-description") for a in client.list_artifacts(run.info.run_id))

    router = mlflow.pyfunc.load_model("models:/sales/1")
    answer = router.predict(pd.DataFrame({"g": ["c", "a"]}))
    want = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
    want = pd.concat([want[want["g"] == "c"], want[want["g"] == "a"]])
    assert answer["Prediction"].tolist() == want["Prediction"].tolist() and answer["Prediction_q90"].tolist() == want["Prediction_q90"].tolist()
    assert (answer["run_id"] == exported.train_run_id).all()
    assert router.predict(pd.DataFrame({"g": ["a"]}), params={"horizon": 1})["step"].tolist() == [1]
