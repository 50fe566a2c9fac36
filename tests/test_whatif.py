"""mm serve's what-if path (extras/whatif.py) against the batch path, number for number.

Real fits on small generated data; each group's model forecast through
``kernels.checked_forecast`` (what ``mm forecast`` runs) and through
``Prepared.forecast`` on the same history and the same future rows, with prices
moved about (inside and outside the training range, so the checks name cases
and the cap bites), compared to the last bit. Needs no web framework: it runs
on pandas 2 as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core import features
from manymodels.core.features import step_features
from manymodels.core.kernels import checked_forecast, horizon_steps, load_fitted
from manymodels.core.results import TrainRow
from manymodels.extras.sample import generate_oj_sales
from manymodels.extras.whatif import Prepared
from manymodels.runner.tasks import read_model
from manymodels.steps.common import group_spec
from manymodels.store import registry
from manymodels.store.datastore import Datastore

from .conftest import small_config, small_table, write_config

LIGHTGBM_ONLY = {"automl": {"enabled": False}}


def test_step_features_are_lag_features_bit_for_bit():
    """Random grids with gaps, one row and several rows a step, windows shorter and longer
    than numpy's 8-way summation blocks: the same floats as features.lag_features."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n_series, width = int(rng.integers(1, 4)), int(rng.integers(1, 70))
        grid = rng.normal(size=(n_series, width)) * rng.choice([1e-3, 1.0, 1e6]) + rng.choice([0.0, 100.0])
        grid[rng.random(grid.shape) < rng.uniform(0, 0.8)] = np.nan
        spec = features.FeatureSpec(tuple(sorted({int(k) for k in rng.integers(1, 20, size=3)})), tuple(sorted({int(w) for w in rng.integers(1, 30, size=2)})), False, (), (), None)
        rows = int(rng.integers(1, n_series + 1))
        series = rng.choice(n_series, size=rows, replace=False)
        period = np.full(rows, int(rng.integers(0, width + 1)))
        want = features.lag_features(grid, 0, series, period, spec)
        back = max([*spec.lags, *spec.windows, 1])
        padded = np.concatenate([np.full((n_series, back), np.nan), grid, np.full((n_series, 2), np.nan)], axis=1)
        got = step_features(padded, series, period + back, spec, np.asarray(spec.lags), [np.arange(1, w + 1) for w in spec.windows])
        assert np.array_equal(np.isnan(want), np.isnan(got))
        assert np.array_equal(np.nan_to_num(want), np.nan_to_num(got))


def _groups(config: mm.Config):
    """Per group with a model: its history, stored inference rows, model and the spec."""
    store = Datastore(config.datastore)
    spec = group_spec(config, store.read_split_manifest())
    train = max((r for r in mm.list_runs(config) if r["step"] == "train"), key=lambda r: r["started"])
    for row in registry.run_rows(store, train["id"], TrainRow):
        if not row.has_model:
            continue
        meta, text = read_model(store, row.key, row.model_version)
        yield store.read_partition("train", row.key), store.read_partition("inference", row.key), meta, load_fitted(meta, text), spec


def _assert_same(config: mm.Config, moved_columns: list[str], expect_fast: bool = True) -> tuple[int, set]:
    """How many forecasts were compared, and what they went through (checks that bit, transforms)."""
    rng = np.random.default_rng(1)
    compared, seen = 0, set()
    for history, future, meta, fitted, spec in _groups(config):
        prepared = Prepared.of(history, meta, fitted, spec)
        assert (prepared is not None) == (expect_fast and meta["kind"] == "lightgbm")
        if prepared is None:
            continue
        assert np.array_equal(prepared.steps(future), horizon_steps(history, future, spec).astype(float), equal_nan=True)
        for factor in (1.0, 0.3, 3.0, None):
            rows = future.copy()
            for column in moved_columns:
                rows[column] = rows[column] * (factor if factor is not None else rng.uniform(0.5, 2.0, len(rows)))
            want = checked_forecast(history, rows, meta, fitted, spec, config.forecast.cap_factor)
            got = prepared.forecast(rows, config.forecast.cap_factor)
            assert got.matrix.tobytes() == want.matrix.tobytes()
            assert got.checks == want.checks and np.array_equal(got.missing, want.missing)
            compared += 1
            seen |= {"capped"} if want.checks.n_capped else set()
            seen |= {"out_of_range"} if want.checks.n_out_of_range else set()
            seen.add(fitted.state["transform"])
    return compared, seen


def test_one_series_per_group(tmp_path: Path):
    small_table(groups=("a", "b", "c"), weeks=40, future=3, seed=4).to_csv(tmp_path / "in.csv", index=False)
    config = load_config(small_config(tmp_path, str(tmp_path / "in.csv"), train={**LIGHTGBM_ONLY, "horizon": 3}, forecast={"quantiles": [0.1, 0.5, 0.99], "cap_factor": 1.01}))
    assert mm.run(config).exit_code == 0
    compared, seen = _assert_same(config, ["price"])
    assert compared == 12 and {"capped", "out_of_range"} <= seen, seen


@pytest.mark.parametrize("transform", ["none", "log1p"])
def test_series_inside_groups_with_a_categorical_driver(tmp_path: Path, transform: str):
    """Stores as series of a brand group (several rows a step), Advert as a category, both transforms."""
    frame = generate_oj_sales(stores=3, brands=2, weeks=60, future_weeks=4, seed=7)
    frame["WeekStarting"] = frame["WeekStarting"].dt.strftime("%Y-%m-%d")
    frame["Advert"] = frame["Advert"].map({0: "none", 1: "flyer"})
    frame.to_csv(tmp_path / "sales.csv", index=False)
    config = load_config(write_config(
        tmp_path, str(tmp_path / "sales.csv"),
        data={"group_columns": ["Brand"], "series_columns": ["Store", "Brand"]},
        train={**LIGHTGBM_ONLY, "features": {"target_transform": transform}},
        forecast={"quantiles": [0.5, 0.95]},
    ))
    assert mm.run(config).exit_code == 0
    compared, seen = _assert_same(config, ["Price"])
    assert compared == 8 and transform in seen and "out_of_range" in seen, seen


def test_other_models_take_the_batch_path(tmp_path: Path):
    small_table(groups=("a", "b"), weeks=30, future=2, seed=2).to_csv(tmp_path / "in.csv", index=False)
    config = load_config(small_config(tmp_path, str(tmp_path / "in.csv"), train={"automl": {"enabled": True, "candidates": ["linear"], "n_trials": 0, "folds": 2, "reference": "linear"}}))
    assert mm.run(config).exit_code == 0
    assert _assert_same(config, ["price"], expect_fast=False)[0] == 0
    assert set(pd.read_csv(Datastore(config.datastore).output_path("training_output.csv"))["model"]) == {"linear"}
