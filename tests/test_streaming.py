"""Streaming: split in small batches and many buckets gives what one batch and one bucket give."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manymodels as mm
import manymodels.steps.reader as reader
from manymodels.config import load_config
from manymodels.core.timeindex import TimeSummary, infer_axis
from manymodels.errors import InputDataError
from manymodels.extras.sample import generate_oj_sales
from manymodels.store.datastore import Datastore
from manymodels.store.spool import Spool

from .conftest import write_config

split_module = importlib.import_module("manymodels.steps.split")  # the package's `split` is the function


def _csv(path: Path, frame: pd.DataFrame) -> Path:
    out = frame.copy()
    out["WeekStarting"] = out["WeekStarting"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False)
    return path


def _split_contents(config) -> tuple[pd.DataFrame, dict]:
    """The groups table (in key order) and every partition, by (kind, key)."""
    store = Datastore(config.datastore)
    groups = store.read_split_groups().sort_values("key").reset_index(drop=True)
    parts = {}
    for key in groups["key"]:
        for kind in ("train", "inference"):
            if store.has_partition(kind, key):
                parts[(kind, key)] = store.read_partition(kind, key)
    return groups, parts


def test_small_batches_and_many_buckets_make_the_same_split(tmp_path: Path, monkeypatch):
    frame = generate_oj_sales(stores=12, brands=3, weeks=70, future_weeks=5, seed=4)
    data = _csv(tmp_path / "sales.csv", frame)
    whole_dir, streamed_dir = tmp_path / "whole", tmp_path / "streamed"
    whole_dir.mkdir(), streamed_dir.mkdir()
    whole = load_config(write_config(whole_dir, str(data)))
    streamed = load_config(write_config(streamed_dir, str(data)))
    first = mm.split(whole)
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 4096)  # ~80 rows a batch
    monkeypatch.setattr(split_module, "ROWS_PER_BUCKET", 300)  # ~9 buckets
    second = mm.split(streamed)
    skip = ("run_id", "reused", "reason")
    assert {k: v for k, v in first.to_dict().items() if k not in skip} == {k: v for k, v in second.to_dict().items() if k not in skip}
    groups_a, parts_a = _split_contents(whole)
    groups_b, parts_b = _split_contents(streamed)
    pd.testing.assert_frame_equal(groups_a, groups_b)
    assert parts_a.keys() == parts_b.keys() and len(parts_a) == 72
    for where, part in parts_a.items():
        pd.testing.assert_frame_equal(part, parts_b[where])
    assert Datastore(streamed.datastore).scratch_names(".mm/scratch") == []  # buckets removed


def test_a_csv_whose_types_change_after_the_first_block_is_read_again_whole(tmp_path: Path, monkeypatch):
    frame = generate_oj_sales(stores=4, brands=2, weeks=60, future_weeks=0, seed=1)
    frame = frame.sort_values(["Store", "Brand", "WeekStarting"]).reset_index(drop=True)
    frame["Advert"] = frame["Advert"].astype(object)
    frame.loc[frame.index[-5:], "Advert"] = 0.5  # integers in the file for 470 rows, then decimals
    data = _csv(tmp_path / "sales.csv", frame)
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 2048)
    config = load_config(write_config(tmp_path, str(data)))
    result = mm.split(config)
    assert result.n_groups == 8 and result.n_train_rows == len(frame)
    store = Datastore(config.datastore)
    adverts = pd.concat([store.read_partition("train", k) for k in store.read_split_groups()["key"]])["Advert"]
    assert adverts.dtype == np.float64 and (adverts == 0.5).sum() == 5


def test_problems_are_counted_over_every_batch(tmp_path: Path, monkeypatch):
    frame = generate_oj_sales(stores=4, brands=2, weeks=60, future_weeks=0, seed=1).sort_values(["Store", "WeekStarting"])
    frame["Store"] = frame["Store"].astype("Int64")
    frame.loc[frame.index[[3, 200, 470]], "Store"] = pd.NA  # in the first, a middle and the last batch
    data = _csv(tmp_path / "sales.csv", frame)
    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 2048)
    config = load_config(write_config(tmp_path, str(data)))
    with pytest.raises(InputDataError) as err:
        mm.split(config)
    assert "3 row(s) have an empty group/series column 'Store'" in err.value.message


def test_bad_input_leaves_the_previous_split_usable(tmp_path: Path, oj_frame: pd.DataFrame):
    data = tmp_path / "sales.parquet"
    oj_frame.to_parquet(data)
    config = load_config(write_config(tmp_path, str(data)))
    mm.split(config)
    before = _split_contents(config)
    pd.concat([oj_frame, oj_frame.iloc[[7]]]).to_parquet(data)  # a duplicate row
    with pytest.raises(InputDataError) as err:
        mm.split(config)
    assert "share a (series, time)" in err.value.message
    after = _split_contents(config)
    pd.testing.assert_frame_equal(before[0], after[0])
    assert Datastore(config.datastore).read_split_manifest() is not None  # nothing was written: still whole
    assert mm.train(config).trained == 6


def test_groups_that_vanish_lose_their_partitions(tmp_path: Path, oj_frame: pd.DataFrame):
    data = tmp_path / "sales.parquet"
    oj_frame.to_parquet(data)
    config = load_config(write_config(tmp_path, str(data)))
    mm.split(config)
    store = Datastore(config.datastore)
    gone = store.read_split_groups().set_index("label").loc["Store=1002,Brand=minute.maid", "key"]
    oj_frame[~((oj_frame["Store"] == 1002) & (oj_frame["Brand"] == "minute.maid"))].to_parquet(data)
    result = mm.split(config)
    assert result.n_groups == 5 and result.groups_written == 0
    assert not store.has_partition("train", gone) and not store.has_partition("inference", gone)


def test_outputs_are_sorted_by_group_whatever_order_groups_finish_in(tmp_path: Path):
    data = tmp_path / "sales.parquet"
    generate_oj_sales(stores=11, brands=2, weeks=50, future_weeks=3, seed=2).to_parquet(data)
    config = load_config(write_config(tmp_path, str(data), engine={"kind": "local", "jobs": 2}, train={"num_boost_round": 10}))
    result = mm.run(config)
    training = pd.read_csv(result.train.output)
    labels = [f"Store={s},Brand={b}" for s, b in zip(training["Store"], training["Brand"])]
    assert labels == sorted(labels) and len(labels) == 22
    forecast = pd.read_csv(result.forecast.output)
    order = [f"Store={s},Brand={b}" for s, b in zip(forecast["Store"], forecast["Brand"])]
    assert order == sorted(order, key=lambda label: label) and len(forecast) == 66
    groups = Datastore(config.datastore).read_run_groups(result.train.run_id)
    assert list(groups["label"]) == labels and json.loads(groups["metrics"].iloc[0])["wape"] > 0


def test_models_written_uncompressed_by_an_older_mm_are_still_read(tmp_path: Path, oj_config):
    _, config = oj_config
    mm.run(config)
    store = Datastore(config.datastore)
    key = store.read_split_groups()["key"].iloc[0]
    text = store.read_model_text(key, 1)
    packed = store.files.location(store._model_text(key, 1))
    packed.unlink()
    store.files.location(store._model_text_plain(key, 1)).write_text(text)
    assert store.read_model_text(key, 1) == text
    assert mm.forecast(config, allow_reuse=False).failed == 0


def test_spool_looks_rows_up_by_key_and_returns_them_sorted(tmp_path: Path):
    with Spool(str(tmp_path)) as spool:
        for i in range(5000):
            spool.add("rows", {"i": i, "x": np.float64(i) / 3}, sort=f"g{(i * 7919) % 5000:05d}")
            spool.put("by_key", f"k{i}", {"i": i})
        spool.put("by_key", "k7", {"i": "replaced"})
        rows = list(spool.rows("rows"))
        assert [r["i"] for r in rows] == sorted(range(5000), key=lambda i: (i * 7919) % 5000)
        assert spool.get("by_key", "k7") == {"i": "replaced"} and spool.get("by_key", "nope") is None
        assert spool.count("by_key") == 5000 and spool.get("missing-table", "k1") is None
    assert list(tmp_path.iterdir()) == []  # the file is gone with the spool


@settings(max_examples=40, deadline=None)
@given(
    step=st.sampled_from(["D", "7D", "h"]),
    n_series=st.integers(1, 6),
    length=st.integers(2, 40),
    cut=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_time_axis_from_chunk_summaries_equals_the_whole(step, n_series, length, cut, seed):
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-03-01")
    times, series = [], []
    for s in range(n_series):
        offsets = np.sort(rng.choice(np.arange(length * 2), size=length, replace=False))
        times += list(start + pd.to_timedelta(offsets, unit=step if step != "7D" else "D") * (7 if step == "7D" else 1))
        series += [s] * length
    times = pd.Series(pd.to_datetime(times))
    series = np.array(series)
    try:
        whole = infer_axis(times, series, None, None, "t", "x")
    except InputDataError as refused:  # irregular data: the merged summaries must refuse it alike
        whole = refused.message
    # chunks of rows (distinct times) and buckets of whole series (time steps), merged
    order = rng.permutation(len(times))
    chunks = np.array_split(order, cut)
    merged = TimeSummary.of(times.iloc[chunks[0]].reset_index(drop=True))
    for chunk in chunks[1:]:
        merged = merged.merge(TimeSummary.of(times.iloc[chunk].reset_index(drop=True)))
    for s in range(n_series):
        mask = series == s
        per_series = TimeSummary.of(times[mask].reset_index(drop=True), series[mask])
        merged = merged.with_diffs(per_series.diffs, per_series.diff_counts)
    try:
        assert merged.axis(None, None, "t", "x") == whole
    except InputDataError as refused:
        assert refused.message == whole
