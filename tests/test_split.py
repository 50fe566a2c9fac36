import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manymodels import split
from manymodels.config import load_config
from manymodels.core.identity import group_key
from manymodels.core.timeindex import infer_axis, parse_times
from manymodels.errors import InputDataError
from manymodels.steps.split import PERIOD
from manymodels.store.datastore import Datastore

from .conftest import write_config


def test_auto_cutoff_puts_rows_without_target_after_the_last_target_in_inference(oj_config, oj_frame):
    _, config = oj_config
    result = split(config)
    assert result.n_groups == 6
    assert result.n_inference_rows == 6 * 4
    assert result.n_train_rows == int(oj_frame["Quantity"].notna().sum())
    assert result.frequency == "W-THU"
    assert result.cutoff == "1991-08-01"  # week 60 of the sample
    store = Datastore(config.datastore)
    groups = store.read_split_groups()
    row = groups.iloc[0]
    train = store.read_partition("train", row["key"])
    inference = store.read_partition("inference", row["key"])
    assert train["Quantity"].notna().all()
    assert inference["Quantity"].isna().all()
    assert train[PERIOD].max() < inference[PERIOD].min()
    assert "Revenue" not in train.columns  # drop_columns


def test_gaps_stay_gaps_on_the_period_grid(tmp_path: Path, oj_frame):
    frame = oj_frame[(oj_frame["Store"] == 1000) & (oj_frame["Brand"] == "dominicks")].copy()
    frame = frame.drop(frame.index[[10, 11, 30]])  # three missing weeks
    frame["WeekStarting"] = frame["WeekStarting"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "gappy.csv"
    frame.to_csv(path, index=False)
    config = load_config(write_config(tmp_path, str(path)))
    result = split(config)
    assert result.groups_with_gaps == 1
    store = Datastore(config.datastore)
    key = store.read_split_groups()["key"].iloc[0]
    periods = store.read_partition("train", key)[PERIOD].to_numpy()
    assert np.diff(periods).max() == 3  # weeks 10 and 11 missing: period jumps by 3, not 1


def test_explicit_train_end_and_holdout(tmp_path: Path, oj_csv):
    config = load_config(write_config(tmp_path, str(oj_csv), split={"train_end": "1991-06-27"}))
    result = split(config)
    assert result.cutoff == "1991-06-27"
    # 5 weeks with actuals after the cutoff plus 4 future weeks, per series
    assert result.n_inference_rows == 6 * 9

    config = load_config(write_config(tmp_path, str(oj_csv), split={"holdout": 6, "train_end": "auto"}))
    result = split(config)
    assert result.n_inference_rows == 6 * 6
    assert result.rows_not_used == 6 * 4  # the future weeks after the holdout window
    store = Datastore(config.datastore)
    key = store.read_split_groups()["key"].iloc[0]
    assert store.read_partition("inference", key)["Quantity"].notna().all()  # actuals kept for evaluation


def test_integer_period_time_column(tmp_path: Path):
    rows = [{"sku": s, "week": w, "sales": float(w % 7 + len(s)), "price": 1.0} for s in ("a", "b") for w in range(40, 80) if w != 55]
    rows += [{"sku": s, "week": w, "sales": None, "price": 1.1} for s in ("a", "b") for w in range(80, 83)]
    path = tmp_path / "weeks.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    config = load_config(
        write_config(tmp_path, str(path), data={"time_column": "week", "target_column": "sales", "group_columns": ["sku"], "known_future_columns": ["price"], "drop_columns": []})
    )
    result = split(config)
    assert result.frequency == "int"
    assert result.cutoff == "79"
    assert result.n_inference_rows == 6
    assert result.groups_with_gaps == 2


def test_duplicate_rows_name_group_and_time(tmp_path: Path, oj_frame):
    frame = pd.concat([oj_frame, oj_frame.iloc[[5]]])
    path = tmp_path / "dups.parquet"
    frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    with pytest.raises(InputDataError) as err:
        split(config)
    text = str(err.value)
    assert "share a (series, time)" in text and "Store=1000,Brand=dominicks at 1990-07-19" in text and "dups.parquet" in text


def test_missing_column_suggests_close_names(tmp_path: Path, oj_frame):
    frame = oj_frame.rename(columns={"Price": "price_"})
    path = tmp_path / "renamed.parquet"
    frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    with pytest.raises(InputDataError) as err:
        split(config)
    assert "missing column(s) 'Price'" in err.value.message and "price_" in str(err.value)


def test_unparseable_times_are_listed(tmp_path: Path, oj_frame):
    frame = oj_frame.copy()
    frame["WeekStarting"] = frame["WeekStarting"].dt.strftime("%Y-%m-%d")
    frame.loc[3, "WeekStarting"] = "not a week"
    path = tmp_path / "badtime.csv"
    frame.to_csv(path, index=False)
    config = load_config(write_config(tmp_path, str(path)))
    with pytest.raises(InputDataError) as err:
        split(config)
    assert "'not a week'" in err.value.message and "WeekStarting" in err.value.message


def test_folder_of_per_group_files_and_glob(tmp_path: Path, oj_frame):
    folder = tmp_path / "per_group"
    folder.mkdir()
    for (store, brand), part in oj_frame.groupby(["Store", "Brand"]):
        part.to_parquet(folder / f"Store{store}_{brand}.parquet")
    config = load_config(write_config(tmp_path, str(folder)))
    assert split(config).n_groups == 6
    config = load_config(write_config(tmp_path, str(folder / "Store1001_*.parquet")))
    assert split(config).n_groups == 2


def test_rerun_reuses_and_a_changed_group_rewrites_only_itself(tmp_path: Path, oj_frame):
    path = tmp_path / "sales.parquet"
    oj_frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    first = split(config)
    assert not first.reused and first.groups_written == 12
    again = split(config)
    assert again.reused and "unchanged" in again.reason
    changed = oj_frame.copy()
    mask = (changed["Store"] == 1002) & (changed["Brand"] == "dominicks") & changed["Quantity"].notna()
    changed.loc[mask, "Quantity"] += 1
    changed.to_parquet(path)
    third = split(config)
    assert not third.reused and "input files changed" in third.reason
    assert third.groups_written == 1  # only that group's train partition


def test_group_values_never_become_paths(tmp_path: Path):
    nasty = ["../../etc", "/", "a/b", "CON", "", "x" * 300, "ünï😀", "Case", "case"]
    rows = [{"g": v, "t": t, "y": float(t)} for v in nasty for t in range(1, 30)]
    path = tmp_path / "nasty.parquet"
    pd.DataFrame(rows).to_parquet(path)
    config = load_config(
        write_config(tmp_path, str(path), data={"time_column": "t", "target_column": "y", "group_columns": ["g"], "known_future_columns": [], "drop_columns": []}, split={"holdout": 3})
    )
    before = set(os.listdir(tmp_path))
    result = split(config)
    assert result.n_groups == len(nasty)
    assert set(os.listdir(tmp_path)) - before == {"store"}
    store = Datastore(config.datastore)
    groups = store.read_split_groups()
    for value in nasty:
        key = group_key([value])
        assert json.loads(groups.set_index("key").loc[key, "values"]) == [value]
        part = store.read_partition("train", key)
        assert set(part["g"]) == {value}
        assert store.partition_path("train", key).resolve().is_relative_to(store.root.resolve())


def test_frequency_inference_kinds():
    monthly = pd.Series(pd.to_datetime(["2020-01-01", "2020-02-01", "2020-04-01", "2020-05-01"]))
    axis = infer_axis(parse_times(monthly, "t", "x"), np.zeros(4, dtype=int), None, None, "t", "x")
    assert axis.label == "MS" and list(axis.to_periods(monthly)) == [24240, 24241, 24243, 24244]
    daily = pd.Series(pd.date_range("2021-03-01", periods=10, freq="D"))
    axis = infer_axis(daily, np.zeros(10, dtype=int), None, None, "t", "x")
    assert axis.label == "D" and axis.season_length == 7
    irregular = pd.Series(pd.to_datetime(["2021-01-01", "2021-01-08", "2021-01-15", "2021-01-17"]))
    with pytest.raises(InputDataError) as err:
        infer_axis(irregular, np.zeros(4, dtype=int), None, None, "t", "x")
    assert "off the W-FRI grid" in err.value.message and "2021-01-17" in err.value.message
