"""mm export into MLflow's model registry: each group's ONNX model with the onnx flavor, and a
pyfunc router over all of them (mm serve's code path), loaded back with MLflow's own API."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.store.datastore import Datastore

from .conftest import require_module, small_config, small_table

mlflow = require_module("mlflow", "mlflow")
onnxruntime = require_module("onnxruntime", "onnx")
require_module("fastapi", "serve")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Three groups trained, forecast and exported into a file store's registry."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    small_table(groups=("a", "b", "c"), weeks=30, future=2, seed=3).to_csv(tmp_path / "in.csv", index=False)
    path = small_config(tmp_path, str(tmp_path / "in.csv"), forecast={"quantiles": [0.1, 0.9]}, tracking={"mlflow": {"uri": "mlruns", "experiment": "sales", "registered_model": "sales"}})
    config = load_config(path)
    assert mm.run(config).exit_code == 0
    result = mm.export(config)
    assert result.onnx == 3 and result.mlflow["groups"] == 3, result.mlflow
    return tmp_path, config, result


def test_export_registers_onnx_models_and_a_router(exported):
    tmp_path, config, exported = exported
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


def test_mlflow_models_serve_answers_with_the_router(exported):
    """``mlflow models serve --env-manager local`` on the registered router, as its own process
    on a free port of 127.0.0.1: /invocations answers mm forecast's numbers, with params too.
    MLflow's scoring server is FastAPI on uvicorn (mlflow-skinny has it): the serve extra's."""
    tmp_path, config, exported = exported
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
        # MLflow starts `uvicorn` by its name: the one of this environment
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", exported.mlflow["router"], "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    # its own session: MLflow runs uvicorn as a child, and the whole group is stopped at the end
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(server, port)
        want = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))
        status, answer = _invoke(port, {"dataframe_split": {"columns": ["g"], "data": [["c"], ["a"]]}})
        assert status == 200, answer
        got = pd.DataFrame(answer["predictions"])
        want = pd.concat([want[want["g"] == "c"], want[want["g"] == "a"]])
        assert got["Prediction"].tolist() == want["Prediction"].tolist() and got["Prediction_q10"].tolist() == want["Prediction_q10"].tolist()
        assert (got["run_id"] == exported.train_run_id).all()
        status, answer = _invoke(port, {"dataframe_split": {"columns": ["g"], "data": [["b"]]}, "params": {"horizon": 1}})
        assert status == 200 and [r["step"] for r in answer["predictions"]] == [1], answer
        status, answer = _invoke(port, {"dataframe_split": {"columns": ["g"], "data": [["zz"]]}})
        assert status >= 400 and "unknown group" in json.dumps(answer), answer  # named, not a crash
        status, answer = _invoke(port, {"dataframe_split": {"columns": ["g"], "data": [["a"]]}})
        assert status == 200  # still serving
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _wait_for(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"mlflow models serve did not start: {server.stderr.read().decode()[-3000:]}")
        time.sleep(0.3)


def _invoke(port: int, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/invocations", body=json.dumps(body), headers={"content-type": "application/json"})
    response = conn.getresponse()
    text = response.read().decode()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text
