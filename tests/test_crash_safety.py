"""kill -9 in the middle of a step, and two mm processes on one datastore."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.extras.sample import generate_oj_sales
from manymodels.store.datastore import Datastore
from manymodels.store.files import TMP_PREFIX

from .conftest import run_cli, write_config

AUTOML = {"enabled": True, "candidates": ["lightgbm", "naive", "linear"], "n_trials": 6, "folds": 2, "metric": "wape", "timeout_per_group": None}


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "manymodels", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the step finished before it could be killed: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("the step never reached the point where it should be killed")


def _written_since(folder: Path, started: float) -> int:
    """Finished Parquet files written after `started`; a .tmp- file may be renamed while we look."""
    count = 0
    for path in folder.rglob("*.parquet"):
        if path.name.startswith(TMP_PREFIX):
            continue
        try:
            count += path.stat().st_mtime > started
        except FileNotFoundError:  # replaced by a newer write between listing and stat
            continue
    return count


def _assert_no_half_written_files(root: Path) -> None:
    """Every file a reader would pick up is complete; only .tmp- files may be partial."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if name.startswith(TMP_PREFIX) or name in ("lock",) or name.endswith(".jsonl"):
                continue
            if name.endswith(".json"):
                json.loads(path.read_text())
            elif name.endswith(".parquet"):
                pq.read_table(path)
            elif name.endswith(".lgb.txt.zst"):
                text = pa.input_stream(str(path), compression="zstd").read().decode()
                lgb.Booster(model_str=text)
            elif name.endswith(".csv"):
                pd.read_csv(path)


def _data(tmp_path: Path, stores: int, future: int = 4) -> Path:
    path = tmp_path / "sales.parquet"
    generate_oj_sales(stores=stores, brands=3, weeks=60, future_weeks=future, seed=3).to_parquet(path)
    return path


def test_sigkill_during_train_then_rerun_finishes_with_each_group_trained_once(tmp_path: Path):
    data = _data(tmp_path, stores=8)
    reference_dir, crash_dir = tmp_path / "reference", tmp_path / "crash"
    reference_dir.mkdir(), crash_dir.mkdir()
    settings = dict(train={"automl": AUTOML}, engine={"kind": "local", "jobs": 2})
    reference = load_config(write_config(reference_dir, str(data), **settings))
    crash_path = write_config(crash_dir, str(data), **settings)
    crashed = load_config(crash_path)
    mm.run(reference)

    mm.split(crashed)
    store = Datastore(crashed.datastore)
    proc = _start("train", "-c", str(crash_path))

    def some_groups_done() -> bool:
        journals = list(store.runs_dir.glob("*.journal.jsonl"))
        return bool(journals) and journals[0].read_text().count("\n") >= 6

    _kill_when(proc, some_groups_done)
    _assert_no_half_written_files(store.root)
    assert not store.output_path("training_output.csv").exists()  # never a partial output
    done_before = {p.parent.name for p in (store.root / "models").rglob("v1.json")}
    assert 6 <= len(done_before) < 24

    rerun = run_cli("train", "-c", str(crash_path), "--json")
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["trained"] + result["reused"] == 24 and result["reused"] >= len(done_before)
    # every group was fitted exactly once over the two runs
    for group_dir in (store.root / "models").glob("*/*"):
        assert sorted(p.name for p in group_dir.glob("*.json")) == ["v1.json"], group_dir
    # and the result is the one an uninterrupted run gives
    ref_store = Datastore(reference.datastore)
    for meta in (store.root / "models").rglob("v1.json"):
        key = meta.parent.name
        ours = json.loads(meta.read_text())
        theirs = ref_store.read_model_meta(key, 1)
        assert ours["kind"] == theirs["kind"] and ours["metrics"] == theirs["metrics"]
        if ours["kind"] == "lightgbm":
            assert store.read_model_text(key, 1) == ref_store.read_model_text(key, 1)
    assert run_cli("forecast", "-c", str(crash_path), "-q").returncode == 0
    ours = pd.read_csv(store.output_path("forecasting_output.csv"))
    theirs = pd.read_csv(ref_store.output_path("forecasting_output.csv"))
    pd.testing.assert_series_equal(ours["Prediction"], theirs["Prediction"])


def test_sigkill_during_forecast_keeps_the_previous_output_and_rerun_completes(tmp_path: Path):
    data = _data(tmp_path, stores=40, future=52)
    path = write_config(tmp_path, str(data), train={"horizon": 52, "num_boost_round": 30}, engine={"kind": "serial"})
    config = load_config(path)
    mm.split(config)
    mm.train(config)
    first = mm.forecast(config)
    expected = pd.read_csv(first.output)
    store = Datastore(config.datastore)
    started = time.time()
    proc = _start("forecast", "-c", str(path), "--no-allow-reuse")
    forecasts = store.root / "forecasts"
    _kill_when(proc, lambda: _written_since(forecasts, started) >= 30)
    _assert_no_half_written_files(store.root)
    pd.testing.assert_frame_equal(pd.read_csv(store.output_path("forecasting_output.csv")), expected)
    rerun = run_cli("forecast", "-c", str(path), "--json")
    assert rerun.returncode == 0, rerun.stderr
    document = json.loads(rerun.stdout)
    assert document["forecast"] + document["reused"] == 120
    pd.testing.assert_frame_equal(pd.read_csv(store.output_path("forecasting_output.csv")), expected)


def test_a_second_writer_waits_or_exits_naming_the_holder(tmp_path: Path):
    data = _data(tmp_path, stores=6)
    path = write_config(tmp_path, str(data), train={"automl": AUTOML}, engine={"kind": "local", "jobs": 2})
    config = load_config(path)
    mm.split(config)
    store = Datastore(config.datastore)
    first = _start("train", "-c", str(path))
    deadline = time.monotonic() + 60
    while not (store.lock_path.exists() and store.lock_path.read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    refused = run_cli("train", "-c", str(path))
    assert refused.returncode == 1
    assert "is in use by 'mm train'" in refused.stderr and f"pid {first.pid}" in refused.stderr
    waited = run_cli("train", "-c", str(path), "--wait", "120", "--json")
    assert first.wait(timeout=120) == 0
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["reused"] == 18  # it ran after the first one, reusing its work
    _assert_no_half_written_files(store.root)
    assert len(pd.read_csv(store.output_path("training_output.csv"))) == 18


def _children(pid: int) -> set[int]:
    """Every live process below ``pid`` (mm's fork server and its workers), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _busy_train(tmp_path: Path) -> tuple[Path, Datastore]:
    """120 groups on two workers, 15 to a batch: each batch fits for many seconds."""
    data = _data(tmp_path, stores=40)
    automl = {**AUTOML, "n_trials": 12, "patience": None}
    path = write_config(tmp_path, str(data), train={"automl": automl}, engine={"kind": "local", "jobs": 2})
    config = load_config(path)
    mm.split(config)
    return path, Datastore(config.datastore)


def _workers_started(proc: subprocess.Popen) -> set[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = _children(proc.pid)
        if len(workers) >= 3:  # the fork server and two workers
            time.sleep(2)  # well into their first batches
            return _children(proc.pid)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("mm never started its workers")


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_mm_stopped_alone_stops_its_workers_mid_batch(tmp_path: Path, how: str):
    """cron's timeout or an OOM kill hits the mm process only, not its workers: they must
    not go on fitting for nobody (a batch here takes far longer than the bound)."""
    path, store = _busy_train(tmp_path)
    proc = _start("train", "-c", str(path))
    workers = _workers_started(proc)
    os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    proc.wait(timeout=60)
    assert not _gone_within(workers, 5), "workers still fitting after mm was stopped"
    if how == "sigterm":
        assert proc.returncode == 143, proc.stderr.read()
        assert "terminated (SIGTERM); finished groups are kept" in proc.stderr.read()
        runs = [json.loads(p.read_text()) for p in store.runs_dir.glob("*.json")]
        assert [r["status"] for r in runs if r.get("step") == "train"] == ["interrupted"]
        store.lock(0).acquire().release()  # released on the way out: the next run need not wait
