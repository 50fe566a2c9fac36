"""The one scheduling loop (scheduling.run_batches) on the real serial and local executors.

The Dask executor under the same loop is in test_dask; whole steps whose
workers die are in test_faults and test_crash_safety.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from manymodels.cli import app
from manymodels.errors import MMError
from manymodels.runner.engine import (
    FORKSERVER_PRELOAD,
    WORKER_DIED,
    Batch,
    LocalEngine,
    SerialEngine,
)
from manymodels.runner.scheduling import IN_FLIGHT_PER_WORKER, run_batches
from manymodels.store.datastore import Datastore
from manymodels.store.runs import effective_status

from .conftest import small_config, small_table

train_module = importlib.import_module("manymodels.steps.train")  # the package's `train` is the function


def _work(batch: Batch) -> list[str]:
    """Doubles each item; 'boom' raises, 'poison' kills the worker process."""
    if "poison" in batch.items:
        os._exit(1)
    if "boom" in batch.items:
        raise ValueError("boom is not a number")
    return [f"done {item} in {os.getpid()}" for item in batch.items]


def _crash(item: str, reason: str) -> str:
    return f"failed {item}: {reason}"


def _results(engine, batches) -> dict[str, str]:
    return {item: r for batch, out in run_batches(engine, _work, batches, _crash) for item, r in zip(batch.items, out)}


def test_serial_reruns_a_failing_batch_group_by_group_in_this_process():
    engine = SerialEngine()
    results = _results(engine, [Batch(None, ["a", "b"]), Batch(None, ["c", "boom", "d"]), Batch(None, ["boom"])])
    assert results["boom"] == "failed boom: ValueError: boom is not a number"
    assert {k: v.split(" in ")[0] for k, v in results.items() if k != "boom"} == {k: f"done {k}" for k in "abcd"}
    assert {v.split(" in ")[1] for k, v in results.items() if k != "boom"} == {str(os.getpid())}


def test_the_loop_pulls_batches_lazily_within_the_in_flight_limit():
    pulled = []

    def batches():
        for i in range(50):
            pulled.append(i)
            yield Batch(None, [f"g{i}"])

    engine = LocalEngine(2)
    try:
        loop = run_batches(engine, _work, batches(), _crash)
        next(loop)
        assert len(pulled) <= 2 * IN_FLIGHT_PER_WORKER + 1  # not the 50: memory stays flat however many there are
        assert len(list(loop)) == 49
    finally:
        engine.close()
    assert pulled == list(range(50))


def test_local_pool_a_worker_that_dies_fails_only_its_group_and_the_pool_goes_on():
    engine = LocalEngine(2)
    try:
        batches = [Batch(None, [f"a{i}", f"b{i}"]) for i in range(6)] + [Batch(None, ["c", "poison", "d"]), Batch(None, ["boom", "e"])]
        results = _results(engine, batches)
        after = _results(engine, [Batch(None, ["f"])])  # the pool was started again
    finally:
        engine.close()
    assert results.pop("poison") == f"failed poison: {WORKER_DIED}"
    assert results.pop("boom") == "failed boom: ValueError: boom is not a number"
    assert {k: v.split(" in ")[0] for k, v in results.items()} == {k: f"done {k}" for k in results}
    assert len(results) == 15 and all(str(os.getpid()) not in v for v in results.values())
    assert after["f"].startswith("done f")


class _Counting(LocalEngine):
    submitted = 0

    def submit(self, fn, batch):
        self.submitted += 1
        return super().submit(fn, batch)


def test_a_batch_that_cannot_be_sent_fails_once_before_anything_is_submitted():
    engine = _Counting(2)
    try:
        batches = [Batch(lambda: "a local function pickle cannot send", [f"g{i}"]) for i in range(20)]
        with pytest.raises(MMError) as err:
            list(run_batches(engine, _work, batches, _crash))
    finally:
        engine.close()
    assert engine.submitted == 0
    assert "cannot send _work and its batch (function) to the local engine's workers" in err.value.message
    assert "bug in mm" in err.value.hint
    # the serial engine sends nothing, so it runs the same batches
    assert len(_results(SerialEngine(), batches)) == 20


def test_a_step_whose_work_cannot_be_sent_exits_1_with_one_message(tmp_path: Path, monkeypatch):
    small_table(groups=("a", "b", "c", "d")).to_csv(tmp_path / "d.csv", index=False)
    path = small_config(tmp_path, "d.csv", engine={"kind": "local", "jobs": 2})
    runner = CliRunner()
    assert runner.invoke(app, ["split", "-c", str(path), "--engine", "serial"]).exit_code == 0
    lock = threading.Lock()
    real = train_module.train_batch
    monkeypatch.setattr(train_module, "train_batch", lambda batch: (lock, real(batch))[1])  # holds a lock: cannot be pickled
    done = runner.invoke(app, ["train", "-c", str(path)])
    assert done.exit_code == 1, done.output
    assert done.output.count("cannot send") == 1 and "local engine's workers" in done.output
    assert "unexpected error" not in done.output
    store = Datastore(tmp_path / "store")
    assert not store.output_path("training_output.csv").exists()
    train_runs = [r for r in store.list_runs() if r["step"] == "train"]
    assert [effective_status(r) for r in train_runs] == ["interrupted"]
    assert store.model_keys() == [] or all(not store.model_versions(k) for k in store.model_keys())


def test_the_fork_server_preloads_modules_that_exist():
    # the fork server skips a preload it cannot import without a word: a renamed module
    # (manymodels.tasks became manymodels.runner.tasks) made every worker import it again
    for name in FORKSERVER_PRELOAD:
        assert importlib.import_module(name).__name__ == name
