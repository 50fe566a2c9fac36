"""The dask engine against a real `dask scheduler` and real `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import require_module

require_module("distributed", "dask")  # CI (MM_REQUIRE_EXTRAS) fails instead of skipping
import cloudpickle  # noqa: E402  (comes with dask)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import manymodels as mm  # noqa: E402
from manymodels.config import load_config  # noqa: E402
from manymodels.errors import MMError  # noqa: E402
from manymodels.extras.sample import generate_oj_sales  # noqa: E402
from manymodels.runner.dask_engine import DaskEngine  # noqa: E402
from manymodels.runner.engine import WORKER_DIED, Batch  # noqa: E402
from manymodels.runner.scheduling import run_batches  # noqa: E402
from manymodels.store.datastore import Datastore  # noqa: E402

from .cluster import Cluster  # noqa: E402
from .conftest import assert_same_results, run_cli, write_config  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    yield c
    c.stop()


def _data(tmp_path: Path, stores: int) -> Path:
    path = tmp_path / "sales.parquet"
    generate_oj_sales(stores=stores, brands=3, weeks=60, future_weeks=4, seed=5).to_parquet(path)
    return path


def _configs(tmp_path: Path, data: Path, address: str, **sections):
    """The same pipeline on the local engine and on the cluster, in two datastores."""
    local_dir, dask_dir = tmp_path / "local", tmp_path / "dask"
    local_dir.mkdir(), dask_dir.mkdir()
    local = load_config(write_config(local_dir, str(data), engine={"kind": "local", "jobs": 2}, **sections))
    remote_path = write_config(dask_dir, str(data), engine={"kind": "dask", "scheduler": address}, **sections)
    return local, remote_path, load_config(remote_path)


def test_split_train_forecast_on_the_cluster_match_the_local_engine(tmp_path: Path, cluster: Cluster):
    data = _data(tmp_path, stores=6)
    local, _, remote = _configs(tmp_path, data, cluster.address, split={"holdout": 4, "train_end": "auto"})
    mm.run(local)
    result = mm.run(remote)
    assert result.exit_code == 0
    assert result.train.trained == 18 and result.forecast.forecast == 18
    assert_same_results(Datastore(remote.datastore), Datastore(local.datastore))
    again = mm.run(remote)  # reuse works the same through the cluster
    assert again.split.reused and again.train.reused == 18 and again.forecast.reused == 18


def test_engine_options_on_the_command_line(tmp_path: Path, cluster: Cluster):
    data = _data(tmp_path, stores=2)
    path = write_config(tmp_path, str(data))
    done = run_cli("run", "-c", str(path), "--engine", "dask", "--scheduler", cluster.address, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"]["trained"] == 6
    resplit = run_cli("split", "-c", str(path), "--engine", "dask", "--scheduler", cluster.address, "--no-allow-reuse", "--json")
    assert resplit.returncode == 0 and json.loads(resplit.stdout)["n_groups"] == 6, resplit.stderr
    missing = run_cli("train", "-c", str(path), "--engine", "dask")
    assert missing.returncode == 1 and "--scheduler" in missing.stderr
    # nobody listens there: the run gives up after engine.connect_timeout, naming the address
    impatient = write_config(tmp_path, str(data), engine={"kind": "serial", "connect_timeout": 1.5})
    started = time.monotonic()
    nobody = run_cli("train", "-c", str(impatient), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--no-allow-reuse")
    assert nobody.returncode == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in nobody.stderr
    assert time.monotonic() - started < 15  # the default waits 20 s


def test_a_worker_killed_mid_run_loses_no_group(tmp_path: Path):
    """Dask reruns the dead worker's tasks on the other; every group is trained once, as locally."""
    (tmp_path / "cluster-kill").mkdir()
    c = Cluster(tmp_path / "cluster-kill", workers=2)
    try:
        data = _data(tmp_path, stores=16)
        settings = {"train": {"num_boost_round": 150}}
        local, remote_path, remote = _configs(tmp_path, data, c.address, **settings)
        mm.run(local)
        mm.split(remote)
        store = Datastore(remote.datastore)
        proc = subprocess.Popen([sys.executable, "-m", "manymodels", "train", "-c", str(remote_path), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            journals = list(store.runs_dir.glob("*.journal.jsonl"))
            if journals and journals[0].read_text().count("\n") >= 3:
                break
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "too slow"
            time.sleep(0.05)
        assert proc.poll() is None  # mid-run
        c.kill(c.workers[0])
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = json.loads(out)
        assert result["trained"] == 48 and result["failed"] == 0
        mm.forecast(remote)
        assert_same_results(store, Datastore(local.datastore))
    finally:
        c.stop()


# -- the engine contract with a function that kills its worker ------------------

def _crash_on_poison(batch: Batch) -> list[str]:
    if "poison" in batch.items:
        os._exit(1)  # the worker process dies, as on a segfault or the OOM killer
    return [f"done {item}" for item in batch.items]


def _dead(item: str, reason: str) -> str:
    return f"failed {item}: {reason}"


def test_a_group_that_kills_its_worker_every_time_is_reported_failed(tmp_path: Path, monkeypatch):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests
    folder = tmp_path / "cluster-poison"
    folder.mkdir()
    c = Cluster(folder, workers=2, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"})
    try:
        engine = DaskEngine(c.address)
        batches = [Batch(None, ["a", "b"]), Batch(None, ["c", "poison", "d"]), Batch(None, ["e"])]
        results = {item: r for batch, out in run_batches(engine, _crash_on_poison, batches, _dead) for item, r in zip(batch.items, out)}
        engine.close()
    finally:
        c.stop()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert results["poison"] == f"failed poison: {WORKER_DIED}"
    assert {k: v for k, v in results.items() if k != "poison"} == {k: f"done {k}" for k in "abcde"}


def test_workers_with_another_manymodels_are_refused(cluster: Cluster, monkeypatch):
    import manymodels.runner.dask_engine as dask_engine

    monkeypatch.setattr(dask_engine, "__version__", "9.9.9")
    with pytest.raises(MMError) as err:
        DaskEngine(cluster.address)
    assert f"has manymodels {mm.__version__}; this mm is 9.9.9" in err.value.message and "same manymodels" in err.value.hint


def test_a_batch_the_cluster_cannot_be_sent_fails_once_before_any_task(cluster: Cluster):
    import threading

    from manymodels.runner.tasks import split_scan_batch

    engine = DaskEngine(cluster.address)
    try:
        batches = [Batch(lambda: "cloudpickle sends this", ["a"])] * 3
        assert engine.check_sendable(split_scan_batch, batches[0]) is None  # a lambda goes by value
        locked = [Batch(threading.Lock(), [f"g{i}"]) for i in range(10)]
        with pytest.raises(MMError) as err:
            list(run_batches(engine, split_scan_batch, locked, _dead))
        assert "cannot send split_scan_batch and its batch (lock) to the dask engine's workers" in err.value.message
        assert not [key for key in engine.client.who_has() if str(key).startswith("mm-split_scan_batch-")]  # nothing was submitted
    finally:
        engine.close()


def test_pooled_candidates_on_the_cluster_match_the_local_engine(tmp_path: Path, cluster: Cluster):
    from .test_pooling import pooled_config, shared_price_response

    frame = shared_price_response()
    (tmp_path / "local").mkdir(), (tmp_path / "dask").mkdir()
    local = load_config(pooled_config(tmp_path / "local", frame))
    remote = load_config(pooled_config(tmp_path / "dask", frame)).with_overrides(["engine.kind=dask", f"engine.scheduler={cluster.address}"])
    mm.run(local.with_overrides(["engine.kind=local", "engine.jobs=2"]))
    result = mm.run(remote)
    assert result.exit_code == 0 and result.train.pooling["fitted"] == 4  # each pool one task on a worker
    ours, theirs = (pd.read_csv(Datastore(c.datastore).output_path(name)) for c in (remote, local) for name in ("training_output.csv",))
    assert ours["model"].tolist() == theirs["model"].tolist() and ours["model"].str.startswith("pooled_").sum() >= 30
    f_ours, f_theirs = (pd.read_csv(Datastore(c.datastore).output_path("forecasting_output.csv")) for c in (remote, local))
    np.testing.assert_allclose(f_ours["Prediction"], f_theirs["Prediction"], rtol=1e-9)
