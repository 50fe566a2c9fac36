"""Damaged metadata files (cut short, not JSON or Parquet any more): a miss or a clean exit 1, never a bug.

Each test cuts one kind of file mm wrote in half in a copy of a finished
datastore, then runs what cron runs, ``mm run``, as a real subprocess. Where
the step can do again what the file records, it warns (naming the file) and
does it; where it cannot, it exits 1 naming the file and the command that
writes it again (see docs/errors.md, 'Faults').
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.errors import DamagedFile, MMError
from manymodels.store.datastore import Datastore

from .conftest import run_cli, small_config, small_table

GROUPS = ("a", "b", "c")
BUG = "this is a bug in mm"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A datastore after one 'mm run' (its input outside it, at a path every copy shares)."""
    base = tmp_path_factory.mktemp("finished")
    small_table(groups=GROUPS).to_csv(base / "d.csv", index=False)
    config = load_config(small_config(base, str(base / "d.csv")))
    assert mm.run(config).exit_code == 0
    return base


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Datastore]:
    shutil.copytree(finished / "store", tmp_path / "store", symlinks=True)
    return small_config(tmp_path, str(finished / "d.csv")), Datastore(tmp_path / "store")


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _run_file(store: Datastore, step: str, suffix: str = ".json") -> Path:
    return sorted(Path(store.root, "runs").glob(f"*-{step}-*{suffix}"))[-1]


def _mm_run(config: Path, *extra: str) -> tuple[int, dict, str]:
    done = run_cli("run", "-c", str(config), "--json", *extra)
    assert BUG not in done.stderr and "unexpected error" not in done.stderr, done.stderr
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {}), done.stderr


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the terminal wraps long lines


def _forecast_groups(store: Datastore) -> list[str]:
    return sorted(set(pd.read_csv(store.output_path("forecasting_output.csv"))["g"]))


def test_a_damaged_split_manifest_is_a_split_to_do_again(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    manifest = _cut(Path(store.split_manifest_path))
    with pytest.raises(DamagedFile) as err:  # train alone cannot do the split again: it says what can
        mm.train(load_config(config))
    assert err.value.path == str(manifest) and "mm split" in err.value.hint
    with pytest.raises(DamagedFile):
        mm.forecast(load_config(config))

    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert f"{manifest} is damaged" in _one_line(stderr) and "the split is done again" in _one_line(stderr)
    assert not result["split"]["reused"] and result["split"]["reason"] == "no previous split"
    assert result["train"]["reused"] == len(GROUPS) and result["train"]["trained"] == 0  # same rows: same models
    assert json.loads(manifest.read_text())["summary"]["n_groups"] == len(GROUPS)
    assert _forecast_groups(store) == list(GROUPS)


def test_a_damaged_split_groups_table_is_a_split_to_do_again(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    table = _cut(Path(store.split_groups_path))
    with pytest.raises(DamagedFile) as err:
        mm.train(load_config(config))
    assert err.value.path == str(table) and "mm split --no-allow-reuse" in err.value.hint

    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert f"{table} is damaged" in _one_line(stderr) and not result["split"]["reused"]
    assert result["train"]["reused"] == len(GROUPS) and _forecast_groups(store) == list(GROUPS)


def test_a_damaged_train_run_record_is_no_previous_run_and_forecast_alone_says_so(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    record = _cut(_run_file(store, "train"))
    with pytest.raises(MMError) as err:  # not the models of an older run, silently
        mm.forecast(load_config(config))
    assert str(record) in err.value.message and "latest train run" in err.value.message and "--run-id" in err.value.hint
    listed = run_cli("runs", "-c", str(config), "--json")
    assert listed.returncode == 0 and BUG not in listed.stderr
    assert {r["id"]: r["status"] for r in json.loads(listed.stdout)}[record.name.removesuffix(".json")] == "damaged"
    shown = run_cli("runs", "show", record.name.removesuffix(".json"), "-c", str(config))
    assert shown.returncode == 1 and BUG not in shown.stderr and "is damaged" in _one_line(shown.stderr)

    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert f"{record} is damaged" in _one_line(stderr) and "that train run is ignored" in _one_line(stderr)
    # decided as if it had not happened, and its models adopted rather than fitted again
    assert result["train"]["trained"] == 0 and result["train"]["reused"] == len(GROUPS)
    assert _forecast_groups(store) == list(GROUPS)


def test_a_damaged_train_groups_table_is_no_previous_run_and_forecast_alone_says_so(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    table = _cut(_run_file(store, "train", ".groups.parquet"))
    with pytest.raises(DamagedFile) as err:
        mm.forecast(load_config(config))
    assert err.value.path == str(table) and "mm train" in err.value.hint
    report = run_cli("report", "-c", str(config))
    assert report.returncode == 1 and BUG not in report.stderr and f"{table} is damaged" in _one_line(report.stderr)

    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert f"{table} is damaged" in _one_line(stderr)
    assert result["train"]["trained"] == 0 and result["train"]["reused"] == len(GROUPS)
    assert _forecast_groups(store) == list(GROUPS)
    assert run_cli("report", "-c", str(config)).returncode == 0  # the new train run's table replaces it


@pytest.mark.parametrize("suffix", [".json", ".groups.parquet"])
def test_a_damaged_forecast_run_record_or_groups_table_only_loses_the_explanations(finished: Path, tmp_path: Path, suffix: str):
    config, store = _copy(finished, tmp_path)
    damaged = _cut(_run_file(store, "forecast", suffix))
    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert result["forecast"]["reused"] == len(GROUPS) and _forecast_groups(store) == list(GROUPS)
    if suffix == ".groups.parquet":
        assert f"{damaged} is damaged" in _one_line(stderr)


def test_a_damaged_input_state_means_hashing_the_inputs_again(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    state = _cut(Path(store.input_state_path))
    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert result["split"]["reused"]  # the same content hashes
    assert json.loads(state.read_text())  # written again, whole


def test_a_damaged_datastore_marker_exits_1_naming_it_and_deleting_it_recovers(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    marker = _cut(Path(store.marker))
    code, _, stderr = _mm_run(config)
    assert code == 1 and f"{marker} is damaged" in _one_line(stderr) and "delete that file" in _one_line(stderr)
    marker.unlink()
    code, result, stderr = _mm_run(config)
    assert code == 0 and result["split"]["reused"] and result["train"]["reused"] == len(GROUPS), stderr


def test_a_damaged_model_metadata_fails_its_group_once_and_the_next_run_refits_it(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    key = store.read_split_groups().set_index("label")["key"]["g=b"]
    meta = _cut(Path(store.model_meta_path(key, 1)))
    done = run_cli("forecast", "-c", str(config), "--no-allow-reuse")  # every group reads its model
    assert done.returncode == 3 and BUG not in done.stderr and "model_unreadable" in done.stdout + done.stderr
    assert Path(f"{meta}.corrupt").exists()
    code, result, stderr = _mm_run(config)
    assert code == 0, stderr
    assert result["train"]["trained"] == 1 and result["train"]["reused"] == len(GROUPS) - 1
    assert _forecast_groups(store) == list(GROUPS)


def test_a_damaged_forecast_file_exits_1_naming_it_and_deleting_it_recovers(finished: Path, tmp_path: Path):
    config, store = _copy(finished, tmp_path)
    forecast = _cut(sorted(Path(store.root, "forecasts").rglob("*.parquet"))[0])
    before = Path(store.output_path("forecasting_output.csv")).read_bytes()
    code, _, stderr = _mm_run(config)
    assert code == 1 and f"{forecast} is damaged" in _one_line(stderr) and "delete that file" in _one_line(stderr)
    assert Path(store.output_path("forecasting_output.csv")).read_bytes() == before  # the previous output, whole
    forecast.unlink()
    code, result, stderr = _mm_run(config)
    assert code == 0 and result["forecast"]["forecast"] == 1 and result["forecast"]["reused"] == len(GROUPS) - 1, stderr
