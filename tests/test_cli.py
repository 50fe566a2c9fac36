"""The ``mm`` command in real subprocesses: exit codes, messages, JSON."""

import json
from pathlib import Path

import pandas as pd

from .conftest import run_cli, write_config


def test_run_on_a_small_table_exits_0_and_reports(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv), engine={"kind": "local", "jobs": 2})
    done = run_cli("run", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert "split: done" in done.stdout and "train: completed" in done.stdout and "forecast: completed" in done.stdout
    assert (tmp_path / "store" / "outputs" / "forecasting_output.csv").exists()
    again = run_cli("run", "-c", str(config), "--json")
    assert again.returncode == 0
    document = json.loads(again.stdout)
    assert document["train"]["reused"] == 6 and document["exit_code"] == 0


def test_bad_config_exits_1_with_one_paragraph_and_no_traceback(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv), train={"horizon": 0, "automl": {"metric": "mse"}})
    done = run_cli("split", "-c", str(config))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "train.horizon" in done.stderr and "train.automl.metric" in done.stderr
    assert "hint:" in done.stderr


def test_unknown_set_key_and_missing_config(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv))
    done = run_cli("train", "-c", str(config), "--set", "train.horizn=3")
    assert done.returncode == 1 and "Did you mean 'horizon'" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("train", "-c", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1 and "config file not found" in done.stderr


def test_bad_input_exits_1_naming_file_and_column(tmp_path: Path, oj_frame: pd.DataFrame):
    path = tmp_path / "sales.csv"
    oj_frame.drop(columns=["Advert"]).to_csv(path, index=False)
    config = write_config(tmp_path, str(path))
    done = run_cli("split", "-c", str(config))
    assert done.returncode == 1
    assert "sales.csv" in done.stderr and "'Advert'" in done.stderr and "Traceback" not in done.stderr


def test_partial_failure_exits_3_and_writes_the_rest(tmp_path: Path, oj_frame: pd.DataFrame):
    frame = oj_frame[~((oj_frame["Store"] == 1000) & (oj_frame["Brand"] == "dominicks") & (oj_frame["WeekStarting"] < "1991-07-01"))]
    path = tmp_path / "sales.parquet"
    frame.to_parquet(path)
    config = write_config(tmp_path, str(path), train={"min_history": 20})
    done = run_cli("run", "-c", str(config))
    assert done.returncode == 3, done.stderr
    assert "too_short" in done.stdout
    forecast = pd.read_csv(tmp_path / "store" / "outputs" / "forecasting_output.csv")
    assert len(forecast) == 5 * 4
    retry = run_cli("train", "-c", str(config), "--retry-failed", "--set", "train.min_history=5", "--json")
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout)["trained"] == 1


def test_runs_and_models_listing(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv))
    assert run_cli("run", "-c", str(config), "-q").returncode == 0
    listed = run_cli("runs", "-c", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [r["step"] for r in records] == ["split", "train", "forecast"]
    train_id = records[1]["id"]
    shown = run_cli("runs", "-c", str(config), "show", train_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["counts"]["trained"] == 6 and len(detail["groups"]) == 6
    models = run_cli("models", "-c", str(config), "--groups", "Store=1001", "--json")
    assert models.returncode == 0
    assert {m["group"]["Brand"] for m in json.loads(models.stdout)} == {"dominicks", "minute.maid"}
    missing = run_cli("runs", "-c", str(config), "show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_clean_dry_run_then_yes(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv))
    assert run_cli("run", "-c", str(config), "-q").returncode == 0
    dry = run_cli("clean", "-c", str(config), "--step", "forecast")
    assert dry.returncode == 0 and "would remove" in dry.stdout and "--yes" in dry.stderr
    assert (tmp_path / "store" / "forecasts").exists()
    done = run_cli("clean", "-c", str(config), "--step", "forecast", "--yes")
    assert done.returncode == 0 and not (tmp_path / "store" / "forecasts").exists()
    bad = run_cli("clean", "-c", str(config), "--step", "models")
    assert bad.returncode == 1 and "not a step" in bad.stderr


def test_sample_generates_the_accelerator_shape(tmp_path: Path):
    out = tmp_path / "oj.csv"
    done = run_cli("sample", "--stores", "4", "--output", str(out), "--future-weeks", "0")
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["WeekStarting", "Store", "Brand", "Quantity", "Advert", "Price", "Revenue"]
    assert frame.groupby(["Store", "Brand"]).ngroups == 12
    assert frame.groupby(["Store", "Brand"]).size().max() == 121
    per_group = run_cli("sample", "--stores", "2", "--output", str(tmp_path / "files"), "--per-group-files", "--format", "parquet")
    assert per_group.returncode == 0
    assert len(list((tmp_path / "files").glob("*.parquet"))) == 6


def test_log_file_and_quiet(tmp_path: Path, oj_csv: Path):
    config = write_config(tmp_path, str(oj_csv))
    log = tmp_path / "mm.log"
    done = run_cli("run", "-c", str(config), "--quiet", "--log-file", str(log))
    assert done.returncode == 0
    assert done.stdout == ""
    text = log.read_text()
    assert "train: completed" in text and "forecast: completed" in text
