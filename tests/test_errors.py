"""Bad inputs, one by one, as a new user would meet them: what mm answers (see docs/errors.md).

Inputs that stop a command run the real ``mm`` in a subprocess: exit code 1,
a message naming the file, column or key and the fix, and never a traceback.
Inputs that mm handles (with a warning, or by failing single groups) run the
library API on real files with real LightGBM fits, and check what is kept.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import manymodels as mm
from manymodels.config import _StrictLoader, load_config
from manymodels.store.datastore import Datastore

from .conftest import run_cli, small_config, small_table


def _csv(folder: Path, frame: pd.DataFrame, name: str = "d.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def _raw_config(folder: Path, text: str) -> Path:
    path = folder / "mm.yaml"
    path.write_text(text)
    return path


GOOD_DATA = "data: {path: d.csv, time_column: t, target_column: y, group_columns: [g]}\n"


# -- inputs that stop the command: exit 1, a message, no traceback -----------------
# name -> (build(tmp) -> config path, command, fragments the message must contain)

def _missing_input(tmp: Path) -> Path:
    return small_config(tmp, "nope.csv")


def _empty_file(tmp: Path) -> Path:
    (tmp / "d.csv").write_bytes(b"")
    return small_config(tmp, "d.csv")


def _header_only(tmp: Path) -> Path:
    (tmp / "d.csv").write_text("g,t,y,price\n")
    return small_config(tmp, "d.csv")


def _empty_folder(tmp: Path) -> Path:
    (tmp / "in").mkdir()
    return small_config(tmp, "in")


def _corrupt_parquet(tmp: Path) -> Path:
    (tmp / "d.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return small_config(tmp, "d.parquet")


def _corrupt_gzip(tmp: Path) -> Path:
    good = gzip.compress(small_table().to_csv(index=False).encode())
    (tmp / "d.csv.gz").write_bytes(good[: len(good) // 2])  # cut short, as by a failed copy
    return small_config(tmp, "d.csv.gz")


def _not_a_data_file(tmp: Path) -> Path:
    (tmp / "d.xlsx").write_bytes(b"PK\x03\x04")
    return small_config(tmp, "d.xlsx")


def _missing_column(tmp: Path) -> Path:
    _csv(tmp, small_table().rename(columns={"price": "Price_"}))
    return small_config(tmp, "d.csv")


def _missing_target_column(tmp: Path) -> Path:
    _csv(tmp, small_table().rename(columns={"y": "y_"}))
    return small_config(tmp, "d.csv")


def _schemas_differ(tmp: Path) -> Path:
    frame = small_table()
    frame.iloc[:20].to_parquet(tmp / "a.parquet")
    other = frame.iloc[20:].copy()
    other["price"] = other["price"].astype(str) + " EUR"
    other.to_parquet(tmp / "b.parquet")
    return small_config(tmp, "*.parquet")


def _unparseable_time(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[5, "t"] = "next tuesday"
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _empty_time(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[5, "t"] = None
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _mixed_offsets(tmp: Path) -> Path:
    frame = small_table()
    frame["t"] = frame["t"] + np.where(frame.index % 2 == 0, "T00:00:00+01:00", "T00:00:00+02:00")
    frame.to_parquet(tmp / "d.parquet")  # text, parsed by mm (not by the CSV reader)
    return small_config(tmp, "d.parquet")


def _zone_and_naive(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[0, "t"] = frame.loc[0, "t"] + "T00:00:00+01:00"
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _daylight_saving(tmp: Path) -> Path:
    # daily local midnights written with their offset: +01:00 in winter, +02:00 from the end of March
    days = pd.date_range("2021-03-20", periods=20, freq="D", tz="Europe/Berlin")
    frame = pd.DataFrame({"g": "a", "t": [d.isoformat() for d in days], "y": np.arange(20.0), "price": 1.0})
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _irregular(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[7, "t"] = "2021-02-27"  # a Saturday in Thursday weeks
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _one_time_only(tmp: Path) -> Path:
    _csv(tmp, pd.DataFrame({"g": ["a", "b"], "t": ["2021-01-07"] * 2, "y": [1.0, 2.0], "price": [1.0, 1.0]}))
    return small_config(tmp, "d.csv")


def _latin1_input(tmp: Path) -> Path:
    (tmp / "d.csv").write_bytes(small_table(groups=("Müller", "Öl")).to_csv(index=False).encode("latin-1"))
    return small_config(tmp, "d.csv")


def _latin1_config(tmp: Path) -> Path:
    path = tmp / "mm.yaml"
    path.write_bytes(("# Prognose für Märkte\ndatastore: s\n" + GOOD_DATA).encode("latin-1"))
    return path


def _header_twice(tmp: Path) -> Path:
    text = small_table().to_csv(index=False).splitlines()
    (tmp / "d.csv").write_text("\n".join([text[0] + ",price"] + [line + ",9" for line in text[1:]]) + "\n")
    return small_config(tmp, "d.csv")


def _reserved_names(tmp: Path) -> Path:
    _csv(tmp, small_table().assign(Prediction=1.0, run_id="erp-7"))  # last year's export, fed back in
    return small_config(tmp, "d.csv")


def _semicolons(tmp: Path) -> Path:
    (tmp / "d.csv").write_text(small_table().to_csv(index=False, sep=";", decimal=","))  # a European spreadsheet export
    return small_config(tmp, "d.csv")


def _day_month_swapped(tmp: Path) -> Path:
    frame = small_table()
    frame["t"] = pd.to_datetime(frame["t"]).dt.strftime("%d/%m/%Y")  # 07/01/2021 reads as July 1st
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _duplicates(tmp: Path) -> Path:
    frame = small_table()
    _csv(tmp, pd.concat([frame, frame.iloc[[3]]]))
    return small_config(tmp, "d.csv")


def _empty_group(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[4, "g"] = None
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _text_target(tmp: Path) -> Path:
    frame = small_table()
    frame["y"] = frame["y"].astype(object)
    frame.loc[4, "y"] = "twelve"
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _infinite_target(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[4, "y"] = np.inf
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _infinite_known_future(tmp: Path) -> Path:
    frame = small_table()
    frame.loc[31, "price"] = -np.inf
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _no_target_at_all(tmp: Path) -> Path:
    frame = small_table()
    frame["y"] = np.nan
    _csv(tmp, frame)
    return small_config(tmp, "d.csv")


def _cutoff_before_data(tmp: Path) -> Path:
    _csv(tmp, small_table())
    return small_config(tmp, "d.csv", split={"train_end": "2020-01-01"})


def _future_file_lacks_known_future(tmp: Path) -> Path:
    frame = small_table()
    _csv(tmp, frame[frame["y"].notna()], "history.csv")
    _csv(tmp, frame[frame["y"].isna()].drop(columns=["price", "y"]), "future.csv")
    return small_config(tmp, ["history.csv", "future.csv"])


def _all_groups_too_short(tmp: Path) -> Path:
    _csv(tmp, small_table(weeks=4))
    return small_config(tmp, "d.csv", train={"min_history": 10})


def _yaml_syntax(tmp: Path) -> Path:
    return _raw_config(tmp, "datastore: s\ndata:\n  path: [d.csv\n  time_column: t\n")


def _yaml_key_twice(tmp: Path) -> Path:
    return _raw_config(tmp, "datastore: s\n" + GOOD_DATA + "train: {horizon: 8}\ntrain: {min_history: 3}\n")


def _wrong_types(tmp: Path) -> Path:
    return _raw_config(tmp, "datastore: s\n" + GOOD_DATA.replace("[g]", "g") + "train: {horizon: 2.5, min_history: many}\n")


def _not_a_mapping(tmp: Path) -> Path:
    return _raw_config(tmp, "- datastore\n- data\n")


STOPS = {
    "missing_input": (_missing_input, "split", ["input not found", "nope.csv", "data.path"]),
    "empty_file": (_empty_file, "split", ["d.csv is empty"]),
    "header_only": (_header_only, "split", ["has a header but no rows"]),
    "empty_folder": (_empty_folder, "split", ["no input files found", "in"]),
    "corrupt_parquet": (_corrupt_parquet, "split", ["cannot read input file", "d.parquet"]),
    "corrupt_gzip": (_corrupt_gzip, "split", ["cannot read input file", "d.csv.gz"]),
    "not_a_data_file": (_not_a_data_file, "split", ["neither CSV nor Parquet"]),
    "missing_target_column": (_missing_target_column, "split", ["missing column(s) 'y'", "Did you mean 'y_'?"]),
    "schemas_differ": (_schemas_differ, "split", ["do not share one schema"]),
    "unparseable_time": (_unparseable_time, "split", ["'next tuesday'", "time column 't'", "data.time_format"]),
    "empty_time": (_empty_time, "split", ["1 row(s) have an empty time column 't'"]),
    "mixed_offsets": (_mixed_offsets, "split", ["mixes time zones", "+01:00"]),
    "zone_and_naive": (_zone_and_naive, "split", ["mixes times with a time zone or UTC offset", "and times without one"]),
    "daylight_saving": (_daylight_saving, "split", ["off the", "irregular frequency", "daylight saving"]),
    "irregular": (_irregular, "split", ["off the W-THU grid", "2021-02-27", "data.frequency"]),
    "one_time_only": (_one_time_only, "split", ["cannot infer the frequency", "data.frequency"]),
    "latin1_input": (_latin1_input, "split", ["it is not UTF-8 text", "save it as UTF-8"]),
    "latin1_config": (_latin1_config, "split", ["is not UTF-8 text (line 1)"]),
    "header_twice": (_header_twice, "split", ["column(s) 'price' appear more than once in the header"]),
    "reserved_names": (_reserved_names, "split", ["column(s) 'Prediction', 'run_id' have the name of a column mm adds", "data.drop_columns"]),
    "semicolons": (_semicolons, "split", ["separates its columns with semicolons", "header: 'g;t;y;price'"]),
    "day_month_swapped": (_day_month_swapped, "split", ["day/month/year dates such as '14/01/2021'", "data.time_format: '%d/%m/%Y'"]),
    "duplicates": (_duplicates, "split", ["2 rows share a (series, time)", "g=a at 2021-01-28", "aggregate"]),
    "empty_group": (_empty_group, "split", ["1 row(s) have an empty group/series column 'g'"]),
    "text_target": (_text_target, "split", ["target column 'y' has 1 non-numeric value(s): 'twelve'"]),
    "infinite_target": (_infinite_target, "split", ["target column 'y' has 1 infinite value(s) (groups g=a)"]),
    "infinite_known_future": (_infinite_known_future, "split", ["known-future column 'price' has infinite values"]),
    "no_target_at_all": (_no_target_at_all, "split", ["no row has a value in target column 'y'"]),
    "cutoff_before_data": (_cutoff_before_data, "split", ["no row is at or before the cutoff", "split.train_end"]),
    "future_file_lacks_known_future": (_future_file_lacks_known_future, "split", ["future.csv: missing column(s) 'price'"]),
    "all_groups_too_short": (_all_groups_too_short, "run", ["no group has train.min_history = 10 periods", "the longest of the 2 groups has 4"]),
    "yaml_syntax": (_yaml_syntax, "split", ["YAML syntax error at line 4"]),
    "yaml_key_twice": (_yaml_key_twice, "split", ["key 'train' appears twice", "first at line 3", "keep one of the two"]),
    "wrong_types": (_wrong_types, "split", ["data.group_columns: Input should be a valid list", "train.horizon", "train.min_history"]),
    "not_a_mapping": (_not_a_mapping, "split", ["the config must be a mapping"]),
}


@pytest.mark.parametrize("case", list(STOPS))
def test_bad_input_stops_with_exit_1_and_a_clear_message(tmp_path: Path, case: str):
    build, command, fragments = STOPS[case]
    config = build(tmp_path)
    done = run_cli(command, "-c", str(config), timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "unexpected error" not in done.stderr, done.stderr
    message = " ".join(done.stderr.split())  # rich may wrap long lines
    for fragment in fragments:
        assert fragment in message, (fragment, done.stderr)
    assert "hint:" in done.stderr
    store = tmp_path / "store"
    assert not (store / "outputs").exists() or case == "all_groups_too_short"  # nothing half-made to mistake for output


def test_unreadable_input_file(tmp_path: Path):
    """Permission denied on the input file. Root reads anything, so as root mm runs without the
    capabilities that bypass file permissions (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)."""
    import shutil
    import subprocess
    import sys

    _csv(tmp_path, small_table())
    (tmp_path / "d.csv").chmod(0o000)
    config = small_config(tmp_path, "d.csv")
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "manymodels", "split", "-c", str(config)], capture_output=True, text=True, timeout=120)
    finally:
        (tmp_path / "d.csv").chmod(0o644)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot read input file" in done.stderr and "permission denied" in done.stderr and "d.csv" in done.stderr


# -- inputs mm handles: what happens, and what is kept ----------------------------

def _run(tmp: Path, frame: pd.DataFrame | None = None, **sections):
    if frame is not None:
        _csv(tmp, frame)
    config = load_config(small_config(tmp, "d.csv", **sections))
    return config, mm.run(config)


def _outputs(config) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = Datastore(config.datastore)
    read = lambda name: pd.read_csv(store.output_path(name), keep_default_na=False, na_values=[""])  # noqa: E731
    return read("training_output.csv"), read("forecasting_output.csv")


def test_missing_targets_in_history_are_gaps_and_later_rows_are_forecast(tmp_path: Path):
    frame = small_table()
    frame.loc[[3, 4, 5], "y"] = np.nan  # three weeks without sales figures in group a's history
    config, result = _run(tmp_path, frame)
    assert result.exit_code == 0
    assert result.split.rows_missing_target == 3 and result.split.groups_with_gaps == 1
    assert any("3 row(s) at or before the cutoff (2021-07-29) have no target" in w and "not forecast" in w for w in result.split.warnings)
    _, forecast = _outputs(config)
    assert len(forecast) == 4 and forecast["Prediction"].notna().all()


def test_negative_targets_never_go_through_a_log_or_poisson(tmp_path: Path):
    frame = small_table()
    frame.loc[frame["g"] == "a", "y"] -= 40  # group a: profits, mostly negative
    (tmp_path / "auto").mkdir()
    config, result = _run(tmp_path / "auto", frame, train={"automl": {"enabled": True, "n_trials": 2, "folds": 2, "timeout_per_group": None}})
    assert result.exit_code == 0  # auto: no log for a group with negative targets, no poisson/tweedie in the search
    training, forecast = _outputs(config)
    assert (forecast.loc[forecast["g"] == "a", "Prediction"] < 0).any()  # not clipped at zero
    store = Datastore(config.datastore)
    key = store.read_split_groups().set_index("label").loc["g=a", "key"]
    meta = store.read_model_meta(key, 1)
    assert meta["info"]["nonnegative"] is False
    assert all(p.get("objective") not in ("poisson", "tweedie", "gamma") for p in meta["tuning"]["params"].values() if isinstance(p, dict))
    for name, train in {"log1p": {"features": {"target_transform": "log1p"}}, "poisson": {"params": {"objective": "poisson"}}}.items():
        (tmp_path / name).mkdir()
        config, result = _run(tmp_path / name, frame, train=train)
        assert result.exit_code == 3
        assert [f["group"] for f in result.train.failures] == ["g=a"] and result.train.failures[0]["reason"] == "negative_target"
        assert name in result.train.failures[0]["error"] and ">= 0" in result.train.failures[0]["error"]
        training, forecast = _outputs(config)
        assert set(forecast["g"]) == {"b"} and result.forecast.failures[0]["reason"] == "no_model"


def test_a_mostly_numeric_known_future_column_with_text_is_used_as_categories_with_a_warning(tmp_path: Path):
    frame = small_table()
    frame["price"] = frame["price"].astype(object)
    frame.loc[[2, 40], "price"] = "cheap"
    config, result = _run(tmp_path, frame)
    assert result.exit_code == 0
    warning = next(w for w in result.split.warnings if "known-future column 'price'" in w)
    assert "mostly numbers" in warning and "'cheap'" in warning and "categories" in warning
    _, forecast = _outputs(config)
    assert len(forecast) == 4 and forecast["Prediction"].notna().all()


def test_categorical_known_future_columns_with_unseen_and_missing_values(tmp_path: Path):
    frame = small_table()
    frame["promo"] = np.where(np.arange(len(frame)) % 3 == 0, "tv", "none")
    frame.loc[frame.index[-1], "promo"] = "radio"  # a category never seen in history
    frame.loc[frame.index[-2], "promo"] = None
    automl = {"enabled": True, "candidates": ["ensemble", "lightgbm", "linear", "naive"], "n_trials": 2, "folds": 2, "timeout_per_group": None}
    config, result = _run(tmp_path, frame, data={"known_future_columns": ["price", "promo"]}, train={"automl": automl})
    assert result.exit_code == 0
    assert not any("mostly numbers" in w for w in result.split.warnings)  # text through and through: categories
    assert any("1 inference row(s) have no value in known-future column 'promo'" in w for w in result.split.warnings)
    _, forecast = _outputs(config)
    assert len(forecast) == 4 and np.isfinite(forecast["Prediction"]).all()
    assert list(forecast["promo"].fillna("")) == list(frame[frame["y"].isna()]["promo"].fillna(""))  # carried as given
    store = Datastore(config.datastore)
    meta = store.read_model_meta(store.read_split_groups()["key"].iloc[0], 1)
    assert meta["info"]["features"]["categorical_exog"] == ["promo"] and meta["info"]["categories"]["promo"] == ["none", "tv"]


def test_a_group_with_one_row_fails_too_short_and_the_others_go_on(tmp_path: Path):
    frame = pd.concat([small_table(), pd.DataFrame([{"g": "one", "t": "2021-03-04", "y": 5.0, "price": 1.0}])])
    config, result = _run(tmp_path, frame)
    assert result.exit_code == 3
    assert result.train.failures == [{"group": "g=one", "reason": "too_short", "error": "too_short: 1 periods with a target, train.min_history is 5"}]
    training, forecast = _outputs(config)
    assert list(training["status"]) == ["trained", "trained", "failed"]
    assert len(forecast) == 4 and set(forecast["g"]) == {"a", "b"}
    assert result.forecast.exit_code == 0  # 'one' has no row to forecast: nothing is missing from the forecast


def test_all_groups_too_short_keeps_the_previous_training_output(tmp_path: Path):
    _csv(tmp_path, small_table())
    path = small_config(tmp_path, "d.csv")
    assert mm.run(load_config(path)).exit_code == 0
    store = tmp_path / "store"
    before = (store / "outputs" / "training_output.csv").read_bytes()
    models = sorted(p.name for p in (store / "models").rglob("*"))
    done = run_cli("train", "-c", str(path), "--set", "train.min_history=40")
    assert done.returncode == 1 and "no group has train.min_history = 40 periods" in done.stderr and "Traceback" not in done.stderr
    assert (store / "outputs" / "training_output.csv").read_bytes() == before
    assert sorted(p.name for p in (store / "models").rglob("*")) == models


def test_rows_after_an_explicit_cutoff_are_forecast_and_scored_and_no_future_rows_warn(tmp_path: Path):
    frame = small_table(future=0)
    config, result = _run(tmp_path, frame, split={"train_end": "2021-07-15"})  # the last 2 weeks have actuals
    assert result.exit_code == 0 and result.split.n_inference_rows == 4
    _, forecast = _outputs(config)
    assert forecast["y"].notna().all() and result.forecast.accuracy["n_rows"] == 4  # actuals kept, used only to score
    (tmp_path / "none").mkdir()
    _csv(tmp_path / "none", frame)
    config = load_config(small_config(tmp_path / "none", "d.csv"))
    split = mm.split(config)
    assert split.n_inference_rows == 0 and any("there is nothing to forecast" in w for w in split.warnings)


def test_inference_rows_without_known_future_values_are_forecast_with_a_warning(tmp_path: Path):
    frame = small_table()
    frame.loc[frame["y"].isna() & (frame["g"] == "b"), "price"] = np.nan  # planned prices not filled in for b
    config, result = _run(tmp_path, frame, train={"automl": {"enabled": True, "candidates": ["ensemble", "lightgbm", "linear"], "n_trials": 0, "folds": 2}})
    assert result.exit_code == 0
    assert result.split.inference_missing_known_future == {"price": 2}
    assert any("2 inference row(s) have no value in known-future column 'price'" in w for w in result.split.warnings)
    _, forecast = _outputs(config)
    assert len(forecast) == 4 and np.isfinite(forecast["Prediction"]).all()


def test_a_group_with_only_future_rows_is_reported_not_dropped(tmp_path: Path):
    frame = small_table()
    new = frame[frame["y"].isna() & (frame["g"] == "a")].assign(g="new")  # a new product: planned weeks, no sales yet
    config, result = _run(tmp_path, pd.concat([frame, new]))
    assert result.exit_code == 3
    assert result.train.failures[0]["group"] == "g=new" and result.train.failures[0]["reason"] == "no_history"
    assert result.forecast.no_model == 1 and result.forecast.failures[0]["group"] == "g=new"
    assert "no training rows" in result.forecast.failures[0]["error"]
    _, forecast = _outputs(config)
    assert len(forecast) == 4  # a and b: every row they have


def test_a_series_a_baseline_cannot_forecast_fails_its_group_instead_of_writing_nan(tmp_path: Path):
    frame = small_table().assign(item="x")
    newcomer = frame[frame["y"].isna()].assign(item="new")  # a series with no history inside groups a and b
    frame = pd.concat([frame, newcomer])
    automl = {"enabled": True, "candidates": ["naive", "mean"], "n_trials": 0, "folds": 2}
    config, result = _run(tmp_path, frame, data={"series_columns": ["g", "item"]}, train={"automl": automl})
    assert result.exit_code == 3 and result.train.failed == 0
    assert sorted(f["group"] for f in result.forecast.failures) == ["g=a", "g=b"]
    failure = result.forecast.failures[0]
    assert failure["reason"] == "no_prediction" and "2 of 4 inference rows" in failure["error"] and "item=new" in failure["error"]
    store = Datastore(config.datastore)
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(forecast) == 0  # never a row without a prediction
    (tmp_path / "gbm").mkdir()
    _csv(tmp_path / "gbm", frame)
    config = load_config(small_config(tmp_path / "gbm", "d.csv", data={"series_columns": ["g", "item"]}))
    result = mm.run(config)  # LightGBM forecasts a new series from its known-future columns and calendar
    assert result.exit_code == 0
    assert np.isfinite(pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))["Prediction"]).all()


def test_constant_and_all_zero_series_forecast_their_value(tmp_path: Path):
    frame = small_table()
    history = frame["y"].notna()
    frame.loc[history & (frame["g"] == "a"), "y"] = 7.0
    frame.loc[history & (frame["g"] == "b"), "y"] = 0.0
    automl = {"enabled": True, "n_trials": 2, "folds": 2, "timeout_per_group": None}
    config, result = _run(tmp_path, frame, train={"automl": automl})
    assert result.exit_code == 0
    _, forecast = _outputs(config)
    assert np.allclose(forecast.loc[forecast["g"] == "a", "Prediction"], 7.0, rtol=0.05)
    assert np.allclose(forecast.loc[forecast["g"] == "b", "Prediction"], 0.0, atol=1e-6)


def test_huge_values_give_finite_forecasts_without_numpy_noise(tmp_path: Path):
    frame = small_table()
    frame.loc[frame["y"].notna() & (frame["g"] == "a"), "y"] *= 1e300  # near the float limit: squares overflow
    frame.loc[frame["y"].notna() & (frame["g"] == "b"), "y"] *= 1e12
    _csv(tmp_path, frame)
    path = small_config(tmp_path, "d.csv", train={"automl": {"enabled": True, "n_trials": 2, "folds": 2, "timeout_per_group": None}})
    done = run_cli("run", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr and "Traceback" not in done.stderr
    config = load_config(path)
    _, forecast = _outputs(config)
    assert len(forecast) == 4 and np.isfinite(forecast["Prediction"]).all()
    assert (forecast.loc[forecast["g"] == "a", "Prediction"] > 1e300).all()
    assert (forecast.loc[forecast["g"] == "b", "Prediction"] > 1e12).all()


def test_yaml_cannot_run_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = _raw_config(tmp_path, "datastore: s\n" + GOOD_DATA + f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    done = run_cli("split", "-c", str(path))
    assert done.returncode == 1 and "YAML syntax error" in done.stderr and "python/object" in done.stderr
    assert not marker.exists()
    # the loader is a SafeLoader (which still accepts anchors and merge keys)
    path = _raw_config(tmp_path, "datastore: s\ndefaults: &d {horizon: 3}\n" + GOOD_DATA + "train: {<<: *d, min_history: 4}\n")
    raw = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506
    assert raw["train"] == {"horizon": 3, "min_history": 4}
    assert issubclass(_StrictLoader, yaml.SafeLoader)


def test_json_mode_reports_errors_as_json(tmp_path: Path):
    config = _missing_column(tmp_path)
    done = run_cli("split", "-c", str(config), "--json")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["exit_code"] == 1 and "missing column(s) 'price'" in document["error"] and "Price_" in document["hint"]


def test_blank_rows_are_skipped_with_a_warning(tmp_path: Path):
    _csv(tmp_path, small_table())
    with open(tmp_path / "d.csv", "a") as f:
        f.write(",,,\n,,,\n")  # what a spreadsheet leaves after the data
    config, result = _run(tmp_path)
    assert result.exit_code == 0 and result.split.n_train_rows == 60
    assert "2 row(s) with every cell empty were skipped" in result.split.warnings


def test_an_input_folder_that_holds_the_datastore_never_reads_mm_s_own_files(tmp_path: Path):
    (tmp_path / "data").mkdir()
    _csv(tmp_path / "data", small_table(), "sales.csv")
    path = small_config(tmp_path, "data", datastore="data/store")  # data.path: the folder the datastore is in
    config = load_config(path)
    first = mm.run(config)
    assert first.exit_code == 0
    again = mm.run(config, allow_reuse=False)  # data/store now holds CSV and Parquet outputs
    assert again.exit_code == 0 and again.split.n_train_rows == first.split.n_train_rows == 60


def test_future_rows_may_come_in_their_own_file_without_the_target_column(tmp_path: Path):
    frame = small_table()
    _csv(tmp_path, frame[frame["y"].notna()], "history.csv")
    _csv(tmp_path, frame[frame["y"].isna()].drop(columns=["y"]), "future.csv")  # planned prices, no sales column yet
    config = load_config(small_config(tmp_path, ["history.csv", "future.csv"]))
    result = mm.run(config)
    assert result.exit_code == 0 and result.split.n_inference_rows == 4
    assert len(_outputs(config)[1]) == 4


def test_zone_aware_weekly_times_across_daylight_saving_are_one_weekly_series(tmp_path: Path):
    frame = small_table(weeks=40)  # January to October: the offset goes from +01:00 to +02:00 in March
    frame["t"] = pd.to_datetime(frame["t"]).dt.tz_localize("Europe/Berlin")
    frame.to_parquet(tmp_path / "d.parquet")
    config = load_config(small_config(tmp_path, "d.parquet"))
    result = mm.run(config)
    assert result.exit_code == 0 and result.split.frequency == "W-THU" and result.split.groups_with_gaps == 0
    assert len(_outputs(config)[1]) == 4
