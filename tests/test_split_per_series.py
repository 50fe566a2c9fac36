"""split.train_end: per_series: each series' own last target is its cutoff.

Ragged panels (series that start and end at different times, as M3/M4 or
late-reporting stores have them), written to real files and split, trained and
forecast for real; at least one run is the `mm` command in a subprocess.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
import manymodels.steps.reader as reader
from manymodels.config import load_config
from manymodels.core.kernels import backtest_folds, group_data
from manymodels.errors import ConfigError
from manymodels.steps.split import PERIOD
from manymodels.steps.train import group_spec
from manymodels.store.datastore import Datastore

from .conftest import run_cli, small_config, write_config

split_module = importlib.import_module("manymodels.steps.split")  # the package's `split` is the function
START = pd.Timestamp("2020-01-02")  # a Thursday: weekly W-THU
# series -> (first week, first week without a target, future weeks after it)
RAGGED = {"a": (0, 40, 4), "b": (6, 28, 3), "c": (10, 44, 4), "d": (0, 32, 0)}


def ragged(spans: dict = RAGGED, seed: int = 0, gaps: dict | None = None, dates: bool = True) -> pd.DataFrame:
    """Series g over weeks (dates as text, or integer periods), target y empty in each one's own future, known-future price."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, (first, end, future) in spans.items():
        for w in range(first, end + future):
            y = float(rng.integers(10, 60)) if w < end else np.nan
            rows.append({"g": g, "t": (START + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d") if dates else 100 + w, "y": y, "price": round(float(rng.uniform(1, 3)), 2)})
    frame = pd.DataFrame(rows)
    for g, weeks in (gaps or {}).items():  # a missing target inside a series' history
        t = [(START + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d") if dates else 100 + w for w in weeks]
        frame.loc[(frame["g"] == g) & frame["t"].isin(t), "y"] = np.nan
    return frame


def _per_series(tmp_path: Path, frame: pd.DataFrame, **sections) -> Path:
    frame.to_csv(tmp_path / "d.csv", index=False)
    return small_config(tmp_path, "d.csv", split={"train_end": "per_series"}, **sections)


def _partitions(config) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """group label -> (train, inference) partition, as the split wrote them."""
    store = Datastore(config.datastore)
    out = {}
    for _, g in store.read_split_groups().iterrows():
        read = lambda kind: store.read_partition(kind, g["key"]) if g[f"n_{kind}"] else pd.DataFrame(columns=["g", "t", "y", "price", PERIOD])  # noqa: E731
        out[g["label"]] = (read("train"), read("inference"))
    return out


def _times(frame: pd.DataFrame) -> list[str]:
    return [str(t)[:10] for t in frame["t"]]


def test_each_series_trains_up_to_its_own_last_target_and_forecasts_only_what_comes_after(tmp_path: Path):
    frame = ragged(gaps={"b": [12, 13]})  # b misses two weeks of sales in its history
    config = load_config(_per_series(tmp_path, frame))
    result = mm.split(config)
    assert result.cutoff == "per series: each series' last target (from 2020-07-09 to 2020-10-29)"  # b's week 27, c's week 43
    parts = _partitions(config)
    for g, (first, end, future) in RAGGED.items():
        rows = frame[frame["g"] == g]
        last = rows.loc[rows["y"].notna(), "t"].max()
        train, inference = parts[f"g={g}"]
        # train: exactly its rows with a target; inference: exactly its rows after its own last target
        assert _times(train) == rows.loc[rows["y"].notna(), "t"].tolist()
        assert _times(inference) == rows.loc[rows["t"] > last, "t"].tolist()
        assert len(inference) == future and inference["y"].isna().all()
        assert inference["price"].tolist() == rows.loc[rows["t"] > last, "price"].tolist()  # the known-future values go along
    # b's two empty weeks stay gaps in its training (a gap is not a cutoff): its later weeks train, the gap is not forecast
    train_b, inference_b = parts["g=b"]
    assert np.diff(train_b[PERIOD].to_numpy()).max() == 3 and _times(train_b)[-1] > "2020-04-02"
    assert not set(_times(inference_b)) & {"2020-03-26", "2020-04-02"}
    assert result.rows_missing_target == 2 and result.groups_with_gaps == 1
    assert result.n_inference_rows == 4 + 3 + 4 and result.n_train_rows == int(frame["y"].notna().sum())
    assert result.n_train_rows + result.n_inference_rows + result.rows_missing_target == len(frame) and result.rows_not_used == 0
    # d ends with the others' data still coming and has no row after it: no forecast for it, counted once
    assert result.series_without_inference == 1 and result.groups_without_inference == 1
    assert "no rows after their last target in 1 of 4 series: nothing is forecast for them" in result.warnings
    assert "2 row(s) before their series' last target have no target: they are gaps in training" in " ".join(result.warnings)


def test_with_one_global_cutoff_the_early_series_get_no_forecast_and_per_series_gives_each_its_own(tmp_path: Path):
    frame = ragged(gaps={"a": [5]})
    auto = load_config(_per_series(tmp_path, frame)).with_overrides(["split.train_end=auto"])
    result = mm.split(auto)
    assert result.cutoff == "2020-10-29" and result.n_inference_rows == 4  # only c's future: a's and b's are gaps
    assert result.rows_missing_target == 1 + 4 + 3 and result.rows_after_series_end == 4 + 3  # a's own gap is not its future
    assert any(
        w.startswith("8 row(s) at or before the cutoff (2020-10-29) have no target")
        and w.endswith("; 7 of them come after their series' last target: to forecast each series from its own end, set split.train_end: per_series")
        for w in result.warnings
    )
    result = mm.split(auto.with_overrides(["split.train_end=per_series"]))
    assert not result.reused and result.n_inference_rows == 11 and result.rows_missing_target == 1 and result.rows_after_series_end == 0
    assert not any("set split.train_end: per_series" in w for w in result.warnings)


def test_integer_periods_and_several_series_per_group_each_end_on_their_own(tmp_path: Path):
    spans = {"a": (0, 30, 3), "b": (4, 22, 2), "c": (2, 26, 0)}
    frame = ragged(spans, dates=False)
    frame["store"] = "s1"
    frame.to_csv(tmp_path / "d.csv", index=False)
    config = load_config(small_config(tmp_path, "d.csv", split={"train_end": "per_series"}, data={"group_columns": ["store"], "series_columns": ["g"]}))
    result = mm.split(config)
    assert result.frequency == "int" and result.cutoff == "per series: each series' last target (from 121 to 129)"
    assert (result.n_groups, result.n_series, result.series_without_inference, result.groups_without_inference) == (1, 3, 1, 0)
    train, inference = _partitions(config)["store=s1"]
    for g, (first, end, future) in spans.items():
        assert train.loc[train["g"] == g, "t"].tolist() == list(range(100 + first, 100 + end))
        assert inference.loc[inference["g"] == g, "t"].tolist() == list(range(100 + end, 100 + end + future))


def test_small_batches_and_many_buckets_cut_each_series_where_one_bucket_does(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(3)
    spans = {f"s{i:02d}": (int(rng.integers(0, 20)), int(rng.integers(30, 70)), int(rng.integers(0, 5))) for i in range(40)}
    frame = ragged(spans, gaps={"s03": [40, 41], "s07": [35]})
    contents = {}
    for name, streamed in (("whole", False), ("streamed", True)):
        folder = tmp_path / name
        folder.mkdir()
        if streamed:
            monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 4096)  # ~100 rows a batch
            monkeypatch.setattr(split_module, "ROWS_PER_BUCKET", 300)  # 4 buckets
        config = load_config(_per_series(folder, frame))
        result = mm.split(config).to_dict()
        contents[name] = ({k: v for k, v in result.items() if k not in ("run_id", "reused", "reason")}, _partitions(config))
    (summary, parts), (streamed_summary, streamed_parts) = contents["whole"], contents["streamed"]
    assert summary == streamed_summary and summary["n_inference_rows"] == sum(f for _, _, f in spans.values())
    earliest, latest = (START + pd.Timedelta(weeks=fn([e for _, e, _ in spans.values()]) - 1) for fn in (min, max))
    assert summary["cutoff"] == f"per series: each series' last target (from {earliest:%Y-%m-%d} to {latest:%Y-%m-%d})"
    assert parts.keys() == streamed_parts.keys() and len(parts) == 40
    for label, (train, inference) in parts.items():
        pd.testing.assert_frame_equal(train, streamed_parts[label][0])
        pd.testing.assert_frame_equal(inference, streamed_parts[label][1])


def test_a_series_without_any_target_is_forecast_as_new_and_reported(tmp_path: Path):
    frame = ragged()
    new = pd.DataFrame({"g": "new", "t": ["2020-11-12", "2020-11-19"], "y": np.nan, "price": [2.0, 2.1]})
    config = load_config(_per_series(tmp_path, pd.concat([frame, new], ignore_index=True)))
    result = mm.run(config)
    assert result.split.series_without_target == 1 and result.split.n_inference_rows == 11 + 2
    assert any(w.startswith("1 series with no target at all: every row of theirs comes after their cutoff") for w in result.split.warnings)
    # a group of that series alone has no history: train says so (exit 3), the others are forecast
    assert result.exit_code == 3 and result.train.failed == 1
    trained = pd.read_csv(Datastore(config.datastore).output_path("training_output.csv"))
    assert trained.set_index("g").loc["new", "status"] == "failed" and trained.set_index("g").loc["new", "error"].startswith("no training rows")


def test_mm_run_forecasts_every_series_own_future_rows_and_says_the_cutoff_is_per_series(tmp_path: Path):
    frame = ragged()
    config_path = _per_series(tmp_path, frame, train={"horizon": 3, "min_history": 10, "automl": {"enabled": True, "n_trials": 0, "folds": 2, "timeout_per_group": None}})
    cli = run_cli("run", "-c", str(config_path), "--json")
    assert cli.returncode == 0, cli.stderr
    out = json.loads(cli.stdout)
    assert out["split"]["cutoff"] == "per series: each series' last target (from 2020-07-09 to 2020-10-29)"
    assert "no rows after their last target in 1 of 4 series: nothing is forecast for them" in out["split"]["warnings"]
    config = load_config(config_path)
    store = Datastore(config.datastore)
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    expected = pd.concat([rows[rows["t"] > rows.loc[rows["y"].notna(), "t"].max()] for _, rows in frame.groupby("g")])
    assert sorted(zip(forecast["g"], forecast["t"])) == sorted(zip(expected["g"], expected["t"]))
    assert np.isfinite(forecast["Prediction"]).all() and forecast["y"].isna().all()
    # each group trained up to its own end, and its backtest folds end there too (the group's last target, not the latest one anywhere)
    trained = pd.read_csv(store.output_path("training_output.csv")).set_index("g")
    manifest = store.read_split_manifest()
    spec = group_spec(config, manifest)
    for _, g in store.read_split_groups().iterrows():
        name = json.loads(g["values"])[0]
        own_end = frame.loc[(frame["g"] == name) & frame["y"].notna(), "t"].max()
        assert trained.loc[name, "train_end"] == own_end and np.isfinite(trained.loc[name, "wape"])
        history = store.read_partition("train", g["key"])
        meta = store.read_model_meta(g["key"], 1)
        data = group_data(history, spec, meta["info"], history["y"].to_numpy(dtype=np.float64))
        newest_train, newest_test = backtest_folds(data, config.train.horizon, config.train.automl.folds)[0]
        last = int(history[PERIOD].max())
        assert data.panel.period[newest_test].max() == last and data.panel.period[newest_train].max() == last - config.train.horizon
    # the split's run record and the console say it too
    record = store.read_run(out["split"]["run_id"])
    assert record["cutoff"] == out["split"]["cutoff"]
    shown = run_cli("split", "-c", str(config_path))
    assert shown.returncode == 0 and "per series: each series' last target" in shown.stdout
    shown = run_cli("runs", "-c", str(config_path), "show", out["split"]["run_id"], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["cutoff"] == out["split"]["cutoff"]
    shown = run_cli("runs", "-c", str(config_path), "show", out["split"]["run_id"])
    assert "cutoff" in shown.stdout and "per series" in shown.stdout


def test_per_series_is_validated_like_the_other_cutoffs(tmp_path: Path):
    for bad, near in (("per-series", "Did you mean 'per_series'?"), ("latest", "")):
        with pytest.raises(ConfigError) as err:
            load_config(write_config(tmp_path, "x.csv", split={"train_end": bad}))
        message = err.value.message
        assert f"split.train_end: not a date: '{bad}' (use auto, per_series, an ISO date like 1992-05-28, or a period number)" in message
        assert near in message
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "x.csv", split={"train_end": True}))
    assert "split.train_end: not a date or period: True (use auto, per_series, an ISO date" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "x.csv", split={"train_end": "per_series", "holdout": 4}))
    assert "split: set either train_end or holdout, not both" in err.value.message
    assert load_config(write_config(tmp_path, "x.csv", split={"train_end": "per_series"})).split.train_end == "per_series"
    # from the command line as well
    cli = run_cli("split", "-c", str(write_config(tmp_path, "x.csv")), "--set", "split.train_end=per_series", "--set", "split.holdout=3")
    assert cli.returncode == 1 and "set either train_end or holdout, not both" in cli.stderr and "Traceback" not in cli.stderr
