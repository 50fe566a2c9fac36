"""Shared fixtures: small real datasets, configs in temporary folders, the CLI as a subprocess."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from manymodels.config import load_config
from manymodels.extras.sample import generate_oj_sales
from manymodels.store.datastore import Datastore

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "dominicks_oj"
ARTIFACTS = REPO / "test-artifacts"  # screenshots and the like; gitignored
CHROMIUM = os.environ.get("MM_CHROMIUM", "/usr/bin/chromium")
# Chromium on a closed network: without these it hangs on background connections.
# Playwright adds --headless and a fresh, empty --user-data-dir itself.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def extras_required() -> bool:
    """CI (.ci/run) sets MM_REQUIRE_EXTRAS: a missing optional tool is then a failure, not a skip."""
    return bool(os.environ.get("MM_REQUIRE_EXTRAS"))


def require_module(name: str, extra: str):
    """Import an optional dependency, or skip (locally) / fail (CI) with the extra to install."""
    if extras_required():
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[{extra}]' (CI sets MM_REQUIRE_EXTRAS and requires it)")


@contextmanager
def chromium_page():
    """A page in real headless Debian Chromium driven by Playwright (no browser download)."""
    sync_api = require_module("playwright.sync_api", "e2e")
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found: apt-get install chromium (or set MM_CHROMIUM)"
        if extras_required():
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def write_config(folder: Path, data_path: str | list, **sections) -> Path:
    """A config file in ``folder`` (datastore ``folder/store``), sections merged over small defaults."""
    raw = {
        "datastore": "store",
        "data": {
            "path": data_path,
            "time_column": "WeekStarting",
            "target_column": "Quantity",
            "group_columns": ["Store", "Brand"],
            "known_future_columns": ["Price", "Advert"],
            "drop_columns": ["Revenue"],
        },
        "split": {"train_end": "auto"},
        "train": {
            "horizon": 4,
            "min_history": 12,
            "num_boost_round": 40,
            "automl": {"enabled": False},
        },
        "engine": {"kind": "serial"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = _merge(raw[name], value)
        else:
            raw[name] = value
    path = folder / "mm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The README's sample run (configs/oj_sales.yaml on sample_data/), last 20 weeks held out.

    Shared by the report and export tests, which only read it.
    """
    import manymodels as mm

    store = tmp_path_factory.mktemp("sample") / "datastore"
    config = load_config(REPO / "configs" / "oj_sales.yaml", [f"datastore={store}", "split.holdout=20", "engine.jobs=2"])
    result = mm.run(config)
    assert result.exit_code == 0
    return config, result


@pytest.fixture
def oj_frame() -> pd.DataFrame:
    """3 stores x 2 brands, 60 weeks of history and 4 future weeks (no Quantity)."""
    return generate_oj_sales(stores=3, brands=2, weeks=60, future_weeks=4, seed=7)


@pytest.fixture
def oj_csv(tmp_path: Path, oj_frame: pd.DataFrame) -> Path:
    path = tmp_path / "sales.csv"
    out = oj_frame.copy()
    out["WeekStarting"] = out["WeekStarting"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False)
    return path


@pytest.fixture
def oj_config(tmp_path: Path, oj_csv: Path):
    """(config path, loaded config) for the small sales table, serial engine, AutoML off."""
    path = write_config(tmp_path, str(oj_csv))
    return path, load_config(path)


VOLATILE = ["run_id", "duration_s", "trained_in_run"]  # differ between two runs of the same work


def assert_same_results(ours: Datastore, theirs: Datastore) -> None:
    """training_output (but run ids and times), every model text, and forecasting_output agree."""
    a = pd.read_csv(ours.output_path("training_output.csv")).drop(columns=VOLATILE)
    b = pd.read_csv(theirs.output_path("training_output.csv")).drop(columns=VOLATILE)
    pd.testing.assert_frame_equal(a, b)
    keys = [k for k in ours.model_keys()]
    assert keys == list(theirs.model_keys()) and keys
    for key in keys:
        assert ours.model_versions(key) == theirs.model_versions(key) == [1]
        assert ours.read_model_text(key, 1) == theirs.read_model_text(key, 1)
    a = pd.read_csv(ours.output_path("forecasting_output.csv")).drop(columns=["run_id"])
    b = pd.read_csv(theirs.output_path("forecasting_output.csv")).drop(columns=["run_id"])
    pd.testing.assert_frame_equal(a, b)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``mm ARGS`` in a real subprocess (same interpreter and environment)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "manymodels", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def small_table(groups=("a", "b"), weeks: int = 30, future: int = 2, seed: int = 0, price: bool = True) -> pd.DataFrame:
    """Weekly series g x t (dates as text, as a CSV has them), target y, known-future price; future rows have no y."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2021-01-07")
    rows = []
    for g in groups:
        for w in range(weeks + future):
            row = {"g": g, "t": (start + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d"), "y": float(rng.integers(5, 50)) if w < weeks else np.nan}
            if price:
                row["price"] = round(float(rng.uniform(1, 3)), 2)
            rows.append(row)
    return pd.DataFrame(rows)


def small_config(folder: Path, data_path: str | list, **sections) -> Path:
    """write_config for ``small_table``: columns g, t, y, price; horizon 2, min_history 5, 20 rounds, serial."""
    data = {"time_column": "t", "target_column": "y", "group_columns": ["g"], "known_future_columns": ["price"], "drop_columns": []}
    train = {"horizon": 2, "min_history": 5, "num_boost_round": 20}
    return write_config(folder, data_path, **{**sections, "data": {**data, **sections.get("data", {})}, "train": {**train, **sections.get("train", {})}})
