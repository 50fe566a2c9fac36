"""Property: whatever small table and config a user brings, ``mm run`` either succeeds or exits 1/3
with a clean message (never a traceback), loses no row, writes nothing outside the datastore, and
every inference row of every group it reports forecast gets exactly one finite prediction.

The CLI runs in-process (typer's runner: the same command code, exit-code mapping and messages as
``mm``, without a new interpreter per example), the serial engine, tiny LightGBM fits, AutoML off or
a trial or two. See docs/errors.md, "Any input".
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from manymodels.cli import app
from manymodels.store.datastore import Datastore

GROUP_VALUES = ["a", "b", "007", "../x", "a/b", "CON", "NA", "ünï", "Case", "case", " ", "x" * 120]
PERTURBATIONS = ["duplicate_row", "off_grid_time", "text_target", "infinite_target", "empty_group", "no_target", "text_in_known_future"]


def _time(kind: str, i: int):
    if kind == "int":
        return 100 + i
    if kind == "weekly":
        return (pd.Timestamp("2021-01-07") + pd.Timedelta(weeks=i)).strftime("%Y-%m-%d")
    if kind == "daily":
        return (pd.Timestamp("2021-03-01") + pd.Timedelta(days=i)).strftime("%Y-%m-%d")
    if kind == "weekly_berlin":  # zone-aware local midnights, across the switch to summer time
        return pd.Timestamp("2021-02-04") + pd.Timedelta(weeks=i)
    return (pd.Timestamp("2019-01-01") + pd.DateOffset(months=i)).strftime("%Y-%m-%d")


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["int", "weekly", "daily", "monthly", "weekly_berlin"]))
    groups = draw(st.lists(st.sampled_from(GROUP_VALUES), min_size=1, max_size=3, unique=True))
    target = draw(st.sampled_from(["counts", "signed", "constant", "zeros", "holes", "huge"]))
    exog = draw(st.sampled_from(["none", "numeric", "categorical"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rows = []
    for g in groups:
        start = draw(st.integers(0, 3))
        n = draw(st.integers(1, 24))
        future = draw(st.integers(0, 3))
        gaps = set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=3)))  # the first row stays
        for i in range(n + future):
            if i in gaps and i < n:
                continue
            y = {
                "counts": float(rng.integers(0, 40)),
                "signed": float(rng.normal(0, 10)),
                "constant": 5.0,
                "zeros": 0.0,
                "holes": float(rng.integers(1, 9)) if rng.random() > 0.3 else np.nan,
                "huge": float(rng.integers(1, 9)) * 1e12,
            }[target]
            row = {"g": g, "t": _time(kind, start + i), "y": y if i < n else np.nan}
            if exog == "numeric":
                row["price"] = round(float(rng.uniform(1, 3)), 2) if rng.random() > 0.1 else np.nan
            elif exog == "categorical":
                row["promo"] = str(rng.choice(["none", "tv", "radio"]))
            rows.append(row)
    frame = pd.DataFrame(rows)
    if kind == "weekly_berlin":
        frame["t"] = pd.to_datetime(frame["t"]).dt.tz_localize("Europe/Berlin")
    perturbation = draw(st.sampled_from([None] * 6 + PERTURBATIONS))
    if perturbation == "duplicate_row":
        frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    elif perturbation == "off_grid_time" and kind == "weekly_berlin":
        frame.loc[0, "t"] = frame.loc[0, "t"] + pd.Timedelta(hours=5)
    elif perturbation == "off_grid_time" and kind != "int":
        frame.loc[0, "t"] = (pd.Timestamp(frame.loc[0, "t"]) + pd.Timedelta(hours=5)).isoformat()
    elif perturbation == "text_target":
        frame["y"] = frame["y"].astype(object)
        frame.loc[0, "y"] = "n/a!"
    elif perturbation == "infinite_target":
        frame.loc[0, "y"] = np.inf
    elif perturbation == "empty_group":
        frame.loc[0, "g"] = None
    elif perturbation == "no_target":
        frame["y"] = np.nan
    elif perturbation == "text_in_known_future" and exog == "numeric":
        frame["price"] = frame["price"].astype(object)
        frame.loc[0, "price"] = "cheap"

    automl = draw(st.sampled_from(["off", "tiny"]))
    train = {"horizon": draw(st.integers(1, 3)), "min_history": draw(st.integers(1, 8)), "num_boost_round": 10}
    train["features"] = {"target_transform": draw(st.sampled_from(["auto", "none", "log1p"]))}
    if automl == "tiny":
        candidates = draw(st.sampled_from([["naive", "mean"], ["lightgbm", "naive"], ["ensemble", "lightgbm", "linear"], ["seasonal_naive", "moving_average", "linear"]]))
        train["automl"] = {"enabled": True, "candidates": candidates, "reference": None, "n_trials": draw(st.integers(0, 1)), "folds": draw(st.integers(1, 2)), "timeout_per_group": None}
    else:
        train["automl"] = {"enabled": False}
    split = draw(st.sampled_from([{}, {"holdout": 1}, {"holdout": 2}, {"train_end": "middle"}, {"train_end": "per_series"}]))
    data = {
        "time_column": "t",
        "target_column": "y",
        "group_columns": ["g"],
        "known_future_columns": {"none": [], "numeric": ["price"], "categorical": ["promo"]}[exog],
    }
    config = {
        "datastore": "store",
        "data": data,
        "split": split,
        "train": train,
        "forecast": {"quantiles": draw(st.sampled_from([[], [0.1, 0.9]]))},
        "engine": {"kind": "serial"},
    }
    return frame, config, draw(st.sampled_from(["csv", "parquet"]))


def _write(folder: Path, frame: pd.DataFrame, config: dict, fmt: str) -> Path:
    data = folder / f"d.{fmt}"
    if fmt == "csv":
        frame.to_csv(data, index=False)
    else:
        frame = frame.copy()
        for column in frame.columns[frame.dtypes == object]:  # mixed text and numbers: text, as an export would
            frame[column] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in frame[column]]
        frame.to_parquet(data)
    config = json.loads(json.dumps(config))
    config["data"]["path"] = data.name
    if config["split"].get("train_end") == "middle":
        times = sorted(frame["t"].dropna().unique())
        middle = times[len(times) // 2]
        config["split"]["train_end"] = int(middle) if isinstance(middle, (int, np.integer)) else str(middle)[:10]
    path = folder / "mm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@settings(max_examples=int(os.environ.get("MM_PROPERTY_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_any_small_table_and_config_succeeds_or_fails_cleanly_and_loses_no_row(case):
    frame, config, fmt = case
    with tempfile.TemporaryDirectory(prefix="mm-prop-") as folder:
        root = Path(folder)
        work = root / "work"
        work.mkdir()
        path = _write(work, frame, config, fmt)
        before = set(os.listdir(root)), set(os.listdir(work))
        done = CliRunner().invoke(app, ["run", "-c", str(path), "--json"])
        assert done.exit_code in (0, 1, 3), (done.exit_code, done.output, done.exception)
        assert "Traceback" not in done.output and "unexpected error" not in done.output, done.output
        assert not isinstance(done.exception, Exception) or isinstance(done.exception, SystemExit), done.exception
        # nothing outside the datastore
        assert set(os.listdir(root)) == before[0] and set(os.listdir(work)) - before[1] <= {"store"}
        document = json.loads(done.stdout)
        if done.exit_code == 1:
            assert document["error"] and "error:" in done.stderr
            return
        _check_outputs(Datastore(work / "store"), document, len(frame))


def _check_outputs(store: Datastore, document: dict, n_input_rows: int) -> None:
    split = document["split"]
    # every input row is accounted for: trains, is forecast, is a gap before the cutoff, or is after a holdout
    assert split["n_train_rows"] + split["n_inference_rows"] + split["rows_missing_target"] + split["rows_not_used"] == n_input_rows
    groups = store.read_split_groups().set_index("key")
    outcome = store.read_run_groups(document["forecast"]["run_id"])
    output = pd.read_csv(store.output_path("forecasting_output.csv"), keep_default_na=False, na_values=[""], dtype={"g": str})
    done = outcome[outcome["status"].isin(["forecast", "reused"])] if len(outcome) else outcome
    for _, row in done.iterrows():
        value = json.loads(groups.loc[row["key"], "values"])[0]
        rows = output[output["g"].fillna("") == str(value)]
        assert len(rows) == groups.loc[row["key"], "n_inference"] == row["n_rows"]
        assert np.isfinite(rows["Prediction"].astype(float)).all()
        assert not rows.duplicated(["t"]).any()
    unforecast = int(outcome.loc[~outcome["status"].isin(["forecast", "reused"]), "n_rows"].sum()) if len(outcome) else 0
    assert len(output) + unforecast == split["n_inference_rows"]  # every other inference row is in a listed failure
    assert (document["forecast"]["failed"] + document["forecast"]["no_model"] > 0) == (unforecast > 0)
    exit_code = document["exit_code"]
    assert exit_code == (3 if document["train"]["failed"] or unforecast else 0)
