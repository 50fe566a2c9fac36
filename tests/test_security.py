"""Nothing in the input escapes the datastore, and nothing in a datastore runs code (see docs/errors.md)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import manymodels as mm
from manymodels.config import load_config
from manymodels.core.identity import group_key
from manymodels.store.datastore import Datastore
from manymodels.store.registry import list_models

from .conftest import REPO, run_cli, small_config, small_table

NASTY = ["../../etc", "/", "a/b", "..", ".", "CON", "nul", "", "x" * 300, "ünï😀", "Case", "case", "NA", "a\\b", "new\nline", " padded "]


def _nasty_table() -> pd.DataFrame:
    frame = small_table(groups=["g"], weeks=12, future=2)
    return pd.concat([frame.assign(g=value) for value in NASTY], ignore_index=True)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_group_values_are_data_never_paths_from_split_to_forecast(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    _nasty_table().to_parquet(work / "d.parquet")  # Parquet keeps '' and 'NA' as the strings they are
    config = load_config(small_config(work, "d.parquet", train={"min_history": 5}))
    before = _listing(tmp_path)
    result = mm.run(config)
    assert result.exit_code == 0 and result.train.trained == len(NASTY) and result.forecast.forecast == len(NASTY)
    # nothing was created or touched outside the datastore
    assert {p for p in _listing(tmp_path) - before if not p.startswith("work/store")} == set()
    store = Datastore(config.datastore)
    for path in Path(store.root).rglob("*"):  # every name in the datastore is mm's own, never a group value
        assert re.fullmatch(r"[0-9a-zA-Z_.\-]+", path.name), path
        assert path.resolve().is_relative_to(Path(store.root).resolve())
    # every value round-trips to its own partition, model and forecast rows
    groups = store.read_split_groups().set_index("key")
    models = {json.dumps(m["group"]["g"]): m for m in list_models(store)}
    for value in NASTY:
        key = group_key([value])
        assert re.fullmatch(r"[0-9a-f]{20}", key)  # lower-case hex: no two keys differ only by case
        assert json.loads(groups.loc[key, "values"]) == [value]
        assert set(store.read_partition("train", key)["g"]) == {value}
        assert set(store.read_partition("inference", key)["g"]) == {value}
        assert models[json.dumps(value)]["key"] == key
    assert len({group_key([v]) for v in NASTY}) == len(NASTY)
    training = pd.read_csv(store.output_path("training_output.csv"), keep_default_na=False, dtype={"g": str})
    assert sorted(training["g"]) == sorted(NASTY) and (training["status"] == "trained").all()
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"), keep_default_na=False, dtype={"g": str})
    assert forecast.groupby("g").size().to_dict() == {v: 2 for v in NASTY}
    assert np.isfinite(forecast["Prediction"].astype(float)).all()


def test_group_values_select_exactly_their_group_on_the_command_line(tmp_path: Path):
    frame = _nasty_table()
    frame = frame[frame["g"].isin(["../../etc", "a/b", "Case", "case", "NA"])]  # in a CSV: 'NA' is a group, not a hole
    frame.to_csv(tmp_path / "d.csv", index=False)
    path = small_config(tmp_path, "d.csv", train={"min_history": 5})
    assert mm.run(load_config(path)).exit_code == 0
    done = run_cli("models", "-c", str(path), "--groups", "g=../../etc", "--json")
    assert done.returncode == 0 and [m["group"]["g"] for m in json.loads(done.stdout)] == ["../../etc"]
    done = run_cli("train", "-c", str(path), "--groups", "g=case", "--no-allow-reuse", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trained"] == 1  # 'case' only, not 'Case'
    training = pd.read_csv(tmp_path / "store" / "outputs" / "training_output.csv", keep_default_na=False)
    assert training.set_index("g")["model_version"].to_dict() == {"../../etc": 1, "Case": 1, "NA": 1, "a/b": 1, "case": 2}


def test_clean_never_deletes_outside_the_datastore_even_through_symlinks(tmp_path: Path):
    small_table().to_csv(tmp_path / "d.csv", index=False)
    path = small_config(tmp_path, "d.csv")
    assert mm.run(load_config(path)).exit_code == 0
    store = tmp_path / "store"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store / "models").rename(elsewhere / "models")  # the user keeps the models on another disk...
    (store / "models").symlink_to(elsewhere / "models")  # ...and links them in
    precious = elsewhere / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep me")
    next((store / "forecasts").iterdir()).joinpath("link-to-dir").symlink_to(precious, target_is_directory=True)

    done = run_cli("clean", "-c", str(path), "--step", "all", "--yes")
    assert done.returncode == 0, done.stderr
    assert not (store / "models").exists() and not (store / "forecasts").exists() and not (store / "split").exists()
    assert (precious / "keep.txt").read_text() == "keep me"  # what the links pointed to is untouched
    assert len(list((elsewhere / "models").rglob("v1.json"))) == 2
    assert (tmp_path / "d.csv").exists()

    # an output folder that leads outside: refused before anything is removed
    assert mm.run(load_config(path)).exit_code == 0
    (store / "outputs").rename(elsewhere / "outputs")
    (store / "outputs").symlink_to(elsewhere / "outputs")
    done = run_cli("clean", "-c", str(path), "--step", "forecast", "--yes")
    assert done.returncode == 1 and "refusing to touch" in done.stderr and "outside the datastore" in done.stderr
    assert "Traceback" not in done.stderr
    assert (store / "forecasts").exists() and (elsewhere / "outputs" / "forecasting_output.csv").exists()


def test_clean_refuses_a_folder_that_is_not_a_datastore(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    (home / "models").mkdir()
    (home / "models" / "mine.txt").write_text("not mm's")
    path = small_config(tmp_path, "d.csv")
    path.write_text(path.read_text().replace("datastore: store", f"datastore: {home}"))
    done = run_cli("clean", "-c", str(path), "--step", "all", "--yes")
    assert done.returncode == 1 and "is not an mm datastore" in done.stderr and "refusing to delete" in done.stderr
    assert (home / "thesis.tex").exists() and (home / "models" / "mine.txt").exists()


def test_outputs_are_created_with_the_users_umask(tmp_path: Path):
    small_table().to_csv(tmp_path / "d.csv", index=False)
    path = small_config(tmp_path, "d.csv", engine={"kind": "local", "jobs": 2})
    done = subprocess.run(  # the process pool's workers write the models and forecasts: they inherit the umask too
        [sys.executable, "-m", "manymodels", "run", "-c", str(path), "-q"],
        capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o027),
    )
    assert done.returncode == 0, done.stderr
    store = tmp_path / "store"
    modes = {str(p.relative_to(store)): stat.S_IMODE(p.lstat().st_mode) for p in store.rglob("*")}
    assert len(modes) > 20 and {"models", "forecasts", "outputs/forecasting_output.csv", ".mm/lock"} <= set(modes)
    for name, mode in modes.items():  # 0666 / 0777 minus the umask: no looser, no tighter
        if (store / name).is_dir():
            assert mode == 0o750, (name, oct(mode))
        else:
            assert mode == 0o640, (name, oct(mode))


def test_no_pickle_in_stored_artefacts_or_in_the_code_that_reads_them(tmp_path: Path):
    small_table().to_csv(tmp_path / "d.csv", index=False)
    automl = {"enabled": True, "n_trials": 2, "folds": 2, "timeout_per_group": None}  # every kind of model state
    config = load_config(small_config(tmp_path, "d.csv", train={"automl": automl}))
    assert mm.run(config).exit_code == 0
    for path in Path(config.datastore).rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert not (len(head) == 2 and head[0] == 0x80 and head[1] <= 5), f"{path} looks like a pickle"
            assert path.suffix not in (".pkl", ".pickle", ".joblib", ".npy", ".npz")
    unsafe = re.compile(r"\bpickle\.loads?\b|cloudpickle\.loads?\b|\bjoblib\b|read_pickle|allow_pickle\s*=\s*True|yaml\.(unsafe_load|full_load)|Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)|\beval\(|\bexec\(")
    for source in sorted((REPO / "manymodels").glob("*.py")):
        found = unsafe.findall(source.read_text())
        assert not found, f"{source.name}: {found}"
    assert "yaml.safe_load" in (REPO / "manymodels" / "config.py").read_text() or "yaml.SafeLoader" in (REPO / "manymodels" / "config.py").read_text()
