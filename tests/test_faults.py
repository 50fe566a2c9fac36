"""Faults: damaged datastore files, workers that die, a full disk (see docs/errors.md).

For each: the affected groups are reported failed with a reason, the others
complete, an output is only ever replaced whole, and running again recovers.
Killing mm itself (SIGKILL during train and forecast) is in test_crash_safety.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import manymodels as mm
from manymodels.cli import app
from manymodels.config import load_config
from manymodels.store.datastore import Datastore
from manymodels.store.files import TMP_PREFIX

from .conftest import run_cli, small_config, small_table

GROUPS = ("a", "b", "c", "d", "e", "f")


def _setup(tmp_path: Path, groups=GROUPS, **sections) -> tuple[Path, object]:
    small_table(groups=groups).to_csv(tmp_path / "d.csv", index=False)
    path = small_config(tmp_path, "d.csv", **sections)
    return path, load_config(path)


def _keys(store: Datastore) -> dict[str, str]:
    return dict(zip(store.read_split_groups()["label"].str.removeprefix("g="), store.read_split_groups()["key"]))


def _forecast_groups(store: Datastore) -> list[str]:
    return sorted(set(pd.read_csv(store.output_path("forecasting_output.csv"))["g"]))


def _no_temporary_files(store: Datastore) -> None:
    assert not [p for p in Path(store.root).rglob(f"{TMP_PREFIX}*")]


# -- damaged model files ------------------------------------------------------------

def test_corrupt_or_missing_model_files_fail_their_groups_and_the_next_run_refits_them(tmp_path: Path):
    _, config = _setup(tmp_path)
    assert mm.run(config).exit_code == 0
    store = Datastore(config.datastore)
    key = _keys(store)
    text = Path(store.model_text_path(key["b"], 1))
    plain = pa.input_stream(str(text), compression="zstd").read()
    Path(store.model_text_path(key["a"], 1)).write_bytes(b"garbage, not zstd")
    text.write_bytes(pa.Codec("zstd").compress(plain[: len(plain) // 2], asbytes=True))  # valid zstd, model cut short
    Path(store.model_meta_path(key["c"], 1)).write_text('{"kind": "lightgbm", "sta')  # truncated JSON
    Path(store.model_text_path(key["d"], 1)).unlink()
    Path(store.model_meta_path(key["e"], 1)).unlink()

    result = mm.forecast(config, allow_reuse=False)
    assert result.exit_code == 3 and result.forecast == 1
    reasons = {f["group"]: f["reason"] for f in result.failures}
    assert reasons == {"g=a": "model_unreadable", "g=b": "model_unreadable", "g=c": "model_unreadable", "g=d": "model_missing", "g=e": "model_missing"}
    errors = {f["group"]: f["error"] for f in result.failures}
    assert "not a zstd-compressed model" in errors["g=a"] and "truncated or not a LightGBM model" in errors["g=b"]
    assert "moved aside as v1.json.corrupt" in errors["g=c"] and "run 'mm train'" in errors["g=d"]
    assert _forecast_groups(store) == ["f"]  # the output holds every group that succeeded, whole
    for group in "abc":  # unreadable bytes are kept for inspection but are no longer a model version
        assert store.model_versions(key[group]) == [] and Path(f"{store.model_meta_path(key[group], 1)}.corrupt").exists()

    again = mm.run(config)
    assert again.exit_code == 0 and again.train.trained == 5 and again.train.reused == 1
    assert _forecast_groups(store) == list(GROUPS)
    _no_temporary_files(store)


# -- partitions deleted between steps ---------------------------------------------------

def test_a_partition_deleted_between_steps_fails_its_group_and_the_next_run_rewrites_it(tmp_path: Path):
    _, config = _setup(tmp_path)
    mm.split(config)
    store = Datastore(config.datastore)
    key = _keys(store)
    Path(store.partition_path("train", key["a"])).unlink()
    Path(store.partition_path("inference", key["b"])).unlink()

    trained = mm.train(config)
    assert trained.exit_code == 3 and trained.trained == 5
    assert trained.failures[0]["group"] == "g=a" and trained.failures[0]["reason"] == "partition_missing"
    assert "train partition of group" in trained.failures[0]["error"] and "run 'mm split'" in trained.failures[0]["error"]
    forecast = mm.forecast(config)
    assert {f["group"]: f["reason"] for f in forecast.failures} == {"g=a": "no_model", "g=b": "partition_missing"}
    assert _forecast_groups(store) == ["c", "d", "e", "f"]

    again = mm.run(config)  # the split knows it is incomplete: it writes the two partitions back
    assert not again.split.reused and again.split.reason == "split file missing" and again.split.groups_written == 2
    assert again.exit_code == 0 and again.train.trained == 1 and again.train.reused == 5
    assert _forecast_groups(store) == list(GROUPS)


# -- a worker process that dies inside a group --------------------------------------------

SITECUSTOMIZE = '''
"""Test hook, loaded by every Python process of this mm run (main, forkserver, workers)."""
import os
import signal

_poison = os.environ.get("MM_TEST_POISON")  # "<train|forecast>:<group>:<exit|kill>"
if _poison:
    step, group, how = _poison.split(":")
    import manymodels.runner.tasks as tasks

    name = "fit_group" if step == "train" else "checked_forecast"
    real = getattr(tasks, name)

    def dies_on_poison(frame, *args, **kwargs):
        if (frame["g"].astype(str) == group).any():
            if how == "exit":
                os._exit(1)  # the worker process ends at once, as on a crash in native code
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
        return real(frame, *args, **kwargs)

    setattr(tasks, name, dies_on_poison)
'''


@pytest.mark.parametrize("step,how", [("train", "exit"), ("forecast", "kill")])
def test_a_worker_that_dies_in_a_group_fails_that_group_only(tmp_path: Path, step: str, how: str):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path, config = _setup(tmp_path, engine={"kind": "local", "jobs": 2})
    mm.split(config, engine="serial")
    if step == "forecast":
        mm.train(config, engine="serial")
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]), "MM_TEST_POISON": f"{step}:c:{how}"}
    # forecast --no-allow-reuse: the forecasts the train tasks staged would be adopted, and no worker would forecast
    again_anew = ["--no-allow-reuse"] if step == "forecast" else []
    done = run_cli(step, "-c", str(path), "--json", *again_anew, env=env)  # the real process pool, whose worker dies
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert [f["group"] for f in result["failures"]] == ["g=c"] and result["failures"][0]["reason"] == "worker_died"
    assert "worker process died" in result["failures"][0]["error"]
    assert result["trained" if step == "train" else "forecast"] == 5
    store = Datastore(config.datastore)
    if step == "train":
        assert (pd.read_csv(store.output_path("training_output.csv"))["status"] == "trained").sum() == 5
    else:
        assert _forecast_groups(store) == [g for g in GROUPS if g != "c"]

    again = mm.run(config, engine="serial")  # the cause is gone (memory freed, bug fixed): every group
    assert again.exit_code == 0
    assert _forecast_groups(store) == list(GROUPS)


# -- a full disk ------------------------------------------------------------------------

class FullDisk:
    """Files mm writes under ``folder`` fail with ENOSPC once ``budget`` bytes have gone there.

    mm's datastore writes all go through ``os.fdopen`` on a file it created (datastore.py:
    a temporary file renamed into place); this wraps those file objects. The write itself fails,
    as it would on a full file system, after the file was created.
    """

    def __init__(self, folder: Path, budget: int = 0):
        self.folder = str(Path(folder).resolve())
        self.budget = budget
        self.real = os.fdopen

    def fdopen(self, fd, *args, **kwargs):
        f = self.real(fd, *args, **kwargs)
        path = os.readlink(f"/proc/self/fd/{fd}")
        return _Limited(f, self, path) if path.startswith(self.folder) else f


class _Limited:
    def __init__(self, f, disk: FullDisk, path: str):
        self._f, self._disk, self._path = f, disk, path

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self._disk.budget:
            self._disk.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        self._disk.budget -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_a_full_disk_while_writing_outputs_keeps_the_previous_ones_and_a_rerun_recovers(tmp_path: Path, monkeypatch):
    path, config = _setup(tmp_path)
    assert mm.run(config).exit_code == 0
    store = Datastore(config.datastore)
    outputs = Path(store.root) / "outputs"
    before = {name: (outputs / name).read_bytes() for name in ("training_output.csv", "forecasting_output.csv")}
    changed = small_table(groups=GROUPS)
    changed.loc[changed["y"].isna(), "price"] *= 0.5  # new planned prices: every forecast must be recomputed
    changed.to_csv(tmp_path / "d.csv", index=False)

    disk = FullDisk(outputs)
    monkeypatch.setattr(os, "fdopen", disk.fdopen)
    with pytest.raises(OSError) as err:
        mm.run(config)
    assert err.value.errno == errno.ENOSPC
    done = CliRunner().invoke(app, ["forecast", "-c", str(path)])  # the command says so, no traceback
    assert done.exit_code == 1
    assert "No space left on device" in done.output and "outputs" in done.output and "free some space" in done.output
    assert "Traceback" not in done.output and "unexpected error" not in done.output
    assert {name: (outputs / name).read_bytes() for name in before} == before  # never replaced by a partial file
    _no_temporary_files(store)

    monkeypatch.setattr(os, "fdopen", disk.real)  # space freed
    again = mm.run(config)  # group forecasts made before the disk filled are reused; the outputs are written
    assert again.exit_code == 0 and again.forecast.forecast + again.forecast.reused == 6
    after = pd.read_csv(outputs / "forecasting_output.csv")
    assert len(after) == 12 and (after["price"].to_numpy() == changed.loc[changed["y"].isna(), "price"].to_numpy()).all()
    _no_temporary_files(store)


def test_a_disk_that_fills_up_during_train_fails_the_groups_it_hits_and_a_rerun_recovers(tmp_path: Path, monkeypatch):
    _, config = _setup(tmp_path)
    mm.split(config)
    store = Datastore(config.datastore)
    disk = FullDisk(store.root, budget=30_000)  # room for about three models (~9 KB each), not for six
    monkeypatch.setattr(os, "fdopen", disk.fdopen)
    with pytest.raises(OSError) as err:
        mm.train(config)
    assert err.value.errno == errno.ENOSPC
    assert not store.output_path("training_output.csv").exists()
    written = [k for k in _keys(store).values() if store.model_versions(k)]
    assert 1 <= len(written) < 6
    journal = [json.loads(line) for p in Path(store.runs_dir).glob("*.journal.jsonl") for line in p.read_text().splitlines()]
    failed = [r for r in journal if r["status"] == "failed"]
    assert failed and all("No space left on device" in r["error"] for r in failed)
    _no_temporary_files(store)

    monkeypatch.setattr(os, "fdopen", disk.real)
    again = mm.train(config)
    assert again.exit_code == 0 and again.trained + again.reused == 6
    assert again.reused == len(written)  # models finished before the disk filled are adopted, not refit
    assert mm.forecast(config).exit_code == 0 and _forecast_groups(store) == list(GROUPS)
