"""Realised accuracy: stored forecasts scored against the actuals of later splits, and drift.

Cron-style rounds: each round's input file holds the history up to that night
plus the next weeks with known prices and no target, as a nightly extract does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

import manymodels as mm
from manymodels.config import load_config
from manymodels.store.datastore import Datastore

from .conftest import run_cli, small_config

START = pd.Timestamp("2021-01-07")
SEASON = 4


def full_series(groups=("a", "b", "c"), weeks: int = 60, seed: int = 0, doubles: dict | None = None) -> pd.DataFrame:
    """Weekly series with a 4-week season and noise; ``doubles[g] = w``: group g's level doubles from week w."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, g in enumerate(groups):
        for w in range(weeks):
            level = 40.0 + 10 * i + 8 * math.sin(2 * math.pi * w / SEASON)
            if doubles and g in doubles and w >= doubles[g]:
                level *= 2
            rows.append({"g": g, "t": START + pd.Timedelta(weeks=w), "y": round(level + rng.normal(0, 2), 2), "price": round(float(rng.uniform(1, 3)), 2)})
    return pd.DataFrame(rows)


def nightly_file(full: pd.DataFrame, folder: Path, known: int, future: int) -> None:
    """What the nightly extract holds: weeks < ``known`` with the target, the next ``future`` without."""
    week = ((full["t"] - START).dt.days // 7).to_numpy()
    out = full[week < known + future].copy()
    out.loc[week[week < known + future] >= known, "y"] = np.nan
    out["t"] = out["t"].dt.strftime("%Y-%m-%d")
    out.to_csv(folder / "sales.csv", index=False)


def configure(tmp_path: Path, train: dict | None = None, **sections):
    path = small_config(tmp_path, str(tmp_path / "sales.csv"), data={"season_length": SEASON}, train={"horizon": 4, **(train or {})}, **sections)
    return load_config(path)


def test_two_rounds_score_each_stored_forecast_once(tmp_path: Path):
    full = full_series()
    config = configure(tmp_path)
    nightly_file(full, tmp_path, known=30, future=4)
    first = mm.run(config)
    assert first.exit_code == 0
    assert first.accuracy.n_rows == 0  # nothing stored yet to score
    told = run_cli("accuracy", "-c", str(config.source), cwd=tmp_path)
    assert told.returncode == 0 and "accuracy: nothing scored yet" in told.stdout and "the next split brings them" in told.stdout
    shipped = pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"), parse_dates=["t"])
    nightly_file(full, tmp_path, known=33, future=4)  # three weeks later: weeks 30..32 now have actuals
    second = mm.run(config)
    assert second.exit_code == 0
    store = Datastore(config.datastore)
    rows = store.read_accuracy_history()
    runs = [r["id"] for r in mm.list_runs(config, step="forecast")]
    assert len(runs) == 2 and set(rows["forecast_run_id"]) == {runs[0]}  # round 2's forecasts have no actual yet
    # exactly one row per (group, forecast run, period with an actual)
    assert len(rows) == 3 * 3
    assert not rows.duplicated(["g", "forecast_run_id", "t"]).any()

    # the same numbers computed independently: what round 1 shipped, the actuals, seasonal naive at its cutoff
    expected = shipped[shipped["t"] < START + pd.Timedelta(weeks=33)].merge(full[["g", "t", "y"]], on=["g", "t"], suffixes=("_shipped", ""))
    expected["step"] = (expected["t"] - START).dt.days // 7 - 29
    lookup = full.set_index(["g", "t"])["y"]
    back = SEASON * np.ceil(expected["step"] / SEASON)
    expected["snaive"] = [lookup[(g, t - pd.Timedelta(weeks=int(b)))] for g, t, b in zip(expected["g"], expected["t"], back)]
    got = rows.merge(expected, on=["g", "t"])
    assert len(got) == 9
    np.testing.assert_allclose(got["prediction"], got["Prediction"], rtol=1e-9)  # the CSV keeps full precision
    np.testing.assert_allclose(got["actual"], got["y"])
    np.testing.assert_array_equal(got["horizon_step"], got["step"])
    np.testing.assert_allclose(got["error"], got["Prediction"] - got["y"], rtol=1e-9)
    np.testing.assert_allclose(got["wape"], 100 * np.abs(got["Prediction"] - got["y"]) / got["y"], rtol=1e-9)
    np.testing.assert_allclose(got["seasonal_naive"], got["snaive"])
    np.testing.assert_allclose(got["fva"], 100 * (np.abs(got["snaive"] - got["y"]) - np.abs(got["Prediction"] - got["y"])) / got["y"], rtol=1e-9, atol=1e-9)
    pooled = 100 * np.abs(got["Prediction"] - got["y"]).sum() / got["y"].sum()
    assert math.isclose(second.accuracy.overall["wape"], pooled, rel_tol=1e-9)
    assert [s["step"] for s in second.accuracy.by_step] == [1, 2, 3]

    # mm accuracy again (a real subprocess): nothing new to score, nothing scored twice
    done = run_cli("accuracy", "-c", str(config.source), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["n_new"] == 0 and again["n_rows"] == 9
    assert len(store.read_accuracy_history()) == 9
    human = run_cli("accuracy", "-c", str(config.source), cwd=tmp_path)
    assert "realised WAPE by horizon step" in human.stdout and "most degraded groups" in human.stdout


def test_a_group_whose_level_doubles_is_flagged_and_alone_retuned_on_drift(tmp_path: Path):
    full = full_series(doubles={"b": 30})
    automl = {"enabled": True, "candidates": ["lightgbm", "seasonal_naive", "naive"], "n_trials": 2, "folds": 2, "retune": "on_drift", "timeout_per_group": 30}
    config = configure(tmp_path, train={"horizon": 4, "automl": automl}, accuracy={"drift_window": 4, "drift_factor": 2.0})
    nightly_file(full, tmp_path, known=30, future=4)
    first = mm.run(config)
    assert first.exit_code == 0
    nightly_file(full, tmp_path, known=34, future=4)
    second = mm.run(config)
    assert second.exit_code == 0
    assert second.accuracy.drift == ["g=b"]
    rows = Datastore(config.datastore).read_accuracy_history()
    assert set(rows.loc[rows["drift"], "g"]) == {"b"} and not rows.loc[rows["g"] != "b", "drift"].any()
    # through the run record: only b was searched again, a and c refit their stored decision
    details = mm.show_run(config, second.train.run_id)
    tuning = dict(zip(details.groups["label"], details.groups["tuning"]))
    assert tuning["g=b"].startswith("searched"), tuning
    assert all(tuning[g].startswith("stored decision") for g in ("g=a", "g=c")), tuning
    assert details.record["drifted_groups"] == 1


def test_accuracy_without_a_split_exits_1_with_the_fix(tmp_path: Path):
    nightly_file(full_series(), tmp_path, known=30, future=4)
    config = configure(tmp_path)
    done = run_cli("accuracy", "-c", str(config.source), cwd=tmp_path)
    assert done.returncode == 1
    assert "no split in datastore" in done.stderr and "mm split" in done.stderr


def test_damaged_accuracy_files_are_named_and_the_nightly_run_goes_on(tmp_path: Path):
    full = full_series()
    config = configure(tmp_path)
    for known in (30, 32, 34):
        nightly_file(full, tmp_path, known=known, future=4)
        assert mm.run(config).exit_code == 0
    store = Datastore(config.datastore)
    before = store.read_accuracy_history()
    first, second, _ = [r["id"] for r in mm.list_runs(config, step="forecast")]
    assert set(before["forecast_run_id"]) == {first, second}
    # the scored table cut short: scored again from the stored forecasts, the same rows
    table = Path(store.output_path(store.ACCURACY_HISTORY))
    table.write_bytes(table.read_bytes()[:100])
    done = run_cli("accuracy", "-c", str(config.source), cwd=tmp_path)
    assert done.returncode == 0 and "accuracy_history.parquet is damaged" in done.stderr and "scored again" in done.stderr
    again = store.read_accuracy_history()
    pd.testing.assert_frame_equal(again.drop(columns="drift"), before.drop(columns="drift"), check_like=True)
    # one forecast run's stored history garbage: named with what to do, the other runs still scored
    (tmp_path / "store" / "history" / "forecasts" / f"{first}.parquet").write_bytes(b"not parquet")
    table.unlink()
    nightly_file(full, tmp_path, known=35, future=4)
    result = run_cli("run", "-c", str(config.source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{first}.parquet is damaged" in result.stderr and "no longer scored" in result.stderr
    assert first not in set(store.read_accuracy_history()["forecast_run_id"]) and second in set(store.read_accuracy_history()["forecast_run_id"])


def test_accuracy_and_explain_keys_are_validated_with_their_path(tmp_path: Path):
    from manymodels.errors import ConfigError

    nightly_file(full_series(), tmp_path, known=30, future=4)
    for section, why in (({"accuracy": {"drift_factor": 0.5}}, "accuracy.drift_factor"), ({"accuracy": {"drift_window": 0}}, "accuracy.drift_window"),
                         ({"forecast": {"explain": -1}}, "forecast.explain"), ({"train": {"automl": {"retune": "on_drfit"}}}, "train.automl.retune")):
        try:
            configure(tmp_path, **section)
        except ConfigError as exc:
            assert why in exc.message, exc.message
        else:
            raise AssertionError(f"{section} was accepted")
