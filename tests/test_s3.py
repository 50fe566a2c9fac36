"""A datastore in S3: a real S3-compatible server (moto in server mode) on 127.0.0.1.

The pipeline on s3:// gives what it gives in a folder (serial engine here, the
process pool through the CLI, a Dask cluster whose workers reach the same
bucket), and the lease lock keeps one writer per datastore without OS locks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import require_module

require_module("s3fs", "dask")  # CI (MM_REQUIRE_EXTRAS) fails instead of skipping
require_module("moto", "test")

import manymodels as mm  # noqa: E402
from manymodels.config import load_config  # noqa: E402
from manymodels.errors import DatastoreLocked  # noqa: E402
from manymodels.extras.sample import generate_oj_sales  # noqa: E402
from manymodels.store.datastore import Datastore  # noqa: E402
from manymodels.store.lock import LeaseLock  # noqa: E402

from .cluster import Cluster  # noqa: E402
from .conftest import REPO, assert_same_results, run_cli, write_config  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on loopback and the environment that points boto (and mm) at it."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("mm-tests")
    yield {"env": env, "fs": fs, "bucket": "mm-tests"}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.killpg(server.pid, signal.SIGTERM)
    server.wait()


def _data(tmp_path: Path, stores: int = 3) -> Path:
    path = tmp_path / "sales.parquet"
    generate_oj_sales(stores=stores, brands=2, weeks=60, future_weeks=4, seed=9).to_parquet(path)
    return path


def _objects(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return [p[len(prefix) + 1 :] for p in fs.find(prefix)]


def test_pipeline_on_s3_matches_a_folder_and_reuses(tmp_path: Path, s3):
    data = _data(tmp_path)
    folder = load_config(write_config(tmp_path, str(data)))
    url = f"s3://{s3['bucket']}/pipeline"
    remote = folder.model_copy(update={"datastore": url})
    mm.run(folder)
    first = mm.run(remote)
    assert first.exit_code == 0 and first.train.trained == 6 and first.forecast.output == f"{url}/outputs/forecasting_output.csv"
    assert_same_results(Datastore(url), Datastore(folder.datastore))
    objects = _objects(s3["fs"], f"{s3['bucket']}/pipeline")
    assert sum(o.endswith(".lgb.txt.zst") for o in objects) == 6
    assert not any(".tmp-" in o or o.startswith(".mm/scratch") for o in objects)
    assert ".mm/lock" not in objects  # released
    second = mm.run(remote)
    assert second.split.reused and second.train.reused == 6 and second.forecast.reused == 6
    journal = [o for o in objects if ".journal." in o]
    assert journal and Datastore(url).read_journal(first.train.run_id)[0]["status"] == "trained"


def test_cli_with_a_process_pool_on_s3(tmp_path: Path, s3):
    data = _data(tmp_path)
    url = f"s3://{s3['bucket']}/cli"
    path = write_config(tmp_path, str(data), datastore=url, engine={"kind": "local", "jobs": 2})
    done = run_cli("run", "-c", str(path), "--json", env=s3["env"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forecast"]["forecast"] == 6
    listed = run_cli("runs", "-c", str(path), "--json", env=s3["env"])
    assert [r["step"] for r in json.loads(listed.stdout)] == ["split", "train", "forecast"]
    models = run_cli("models", "-c", str(path), "--json", env=s3["env"])
    assert len(json.loads(models.stdout)) == 6
    cleaned = run_cli("clean", "-c", str(path), "--step", "all", "--yes", env=s3["env"])
    assert cleaned.returncode == 0, cleaned.stderr
    assert set(_objects(s3["fs"], f"{s3['bucket']}/cli")) == {".mm/datastore.json"}


def test_split_train_forecast_on_dask_workers_sharing_an_s3_datastore(tmp_path: Path, s3):
    data = _data(tmp_path, stores=4)
    folder = load_config(write_config(tmp_path, str(data), engine={"kind": "local", "jobs": 2}))
    (tmp_path / "cluster").mkdir()
    cluster = Cluster(tmp_path / "cluster", workers=2, env=s3["env"])
    try:
        url = f"s3://{s3['bucket']}/dask"
        remote = folder.model_copy(update={"datastore": url, "engine": folder.engine.model_copy(update={"kind": "dask", "scheduler": cluster.address})})
        mm.run(folder)
        assert mm.run(remote).exit_code == 0
    finally:
        cluster.stop()
    assert_same_results(Datastore(url), Datastore(folder.datastore))


# -- the lease lock ----------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder_then_gets_the_lock(tmp_path: Path, s3):
    data = _data(tmp_path)
    url = f"s3://{s3['bucket']}/busy"
    path = write_config(tmp_path, str(data), datastore=url)
    store = Datastore(url)
    store.ensure()
    holder = store.lock().acquire()
    try:
        refused = run_cli("split", "-c", str(path), env=s3["env"])
        assert refused.returncode == 1
        assert "is in use by 'mm" in refused.stderr and f"pid {os.getpid()}" in refused.stderr
    finally:
        holder.release()
    assert run_cli("split", "-c", str(path), env=s3["env"]).returncode == 0


HOLD_AND_WAIT = """
import sys, time
from manymodels.store.datastore import Datastore
from manymodels.store.lock import LeaseLock
store = Datastore(sys.argv[1])
lock = LeaseLock(store.files, store.LOCK, lease_s=float(sys.argv[2]), command="mm train").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_blocks_only_until_its_lease_expires(tmp_path: Path, s3):
    url = f"s3://{s3['bucket']}/crashed"
    store = Datastore(url)
    store.ensure()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, url, "3"], stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **s3["env"]})
    assert holder.stdout.readline().strip() == "held"
    time.sleep(1.5)  # the holder has renewed its lease once (every lease/3 seconds)
    with pytest.raises(DatastoreLocked) as err:
        LeaseLock(store.files, store.LOCK, lease_s=3).acquire()
    assert f"pid {holder.pid}" in err.value.message
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    successor = LeaseLock(store.files, store.LOCK, lease_s=3, wait_s=30).acquire()
    waited = time.monotonic() - started
    try:
        assert successor.recovered  # it took over a dead holder's lock
        assert 0.5 < waited < 10  # after the lease ran out, not before, not much later
    finally:
        successor.release()
    assert store.files.read_versioned(store.LOCK) is None


def test_of_two_successors_only_one_takes_over_an_expired_lease(tmp_path: Path, s3):
    url = f"s3://{s3['bucket']}/race"
    store = Datastore(url)
    store.ensure()
    dead = LeaseLock(store.files, store.LOCK, lease_s=1).acquire()
    dead._stop.set()  # a holder that froze: no more renewals, no release
    dead._renewer.join()
    time.sleep(2.5)
    _, seen_by_both, age = store.files.read_versioned(store.LOCK)
    assert age > 1
    first = store.files.replace_if(store.LOCK, b'{"pid": 1}', seen_by_both)
    second = store.files.replace_if(store.LOCK, b'{"pid": 2}', seen_by_both)
    assert first is not None and second is None  # If-Match: the version the second one read is gone
    assert store.files.create_if_absent(store.LOCK, b"{}") is None  # and If-None-Match refuses a second creator
    dead.release()  # the frozen holder wakes up: it must not delete its successor's lock
    assert json.loads(store.files.read_versioned(store.LOCK)[0]) == {"pid": 1}
    store.files.delete(store.LOCK)


def test_a_holder_that_stalls_past_its_lease_learns_it_lost_the_lock(tmp_path: Path, s3):
    url = f"s3://{s3['bucket']}/stall"
    store = Datastore(url)
    store.ensure()
    slow = LeaseLock(store.files, store.LOCK, lease_s=1.5).acquire()
    slow._stop.set()
    slow._renewer.join()  # stalled: renewals stop
    time.sleep(2.5)
    other = LeaseLock(store.files, store.LOCK, lease_s=30, wait_s=5).acquire()
    slow._stop.clear()
    slow._renew_once()
    assert slow.lost
    slow.release()
    assert json.loads(store.files.read_versioned(store.LOCK)[0])["token"] == other._token
    other.release()
