"""Hospital product demand (767 monthly count series) through ``mm run``, scored as published.

Data: ``../shared/data/hospital/hospital.csv`` (read its README): 84 months per
series, the last 12 are the hold-out. They are fed as a user would: dates, the
count as target, the hold-out rows as future rows with the count empty, and
``split.train_end: auto`` (every series ends in December 2006). The config is
mm's default (AutoML on, ``candidates: auto``) with only the columns and the
horizon (12) set, plus any ``--set``; the season length (12) comes from the
monthly frequency.

Prints MASE (m = 12, h = 12, per series then the mean, as the README's published
numbers), WAPE and sMAPE, the wall time of ``mm run``, the winners, the demand
classes, the share of hold-out values inside the 80% interval, and the
published MASE (statsforecast models, fev benchmark).

    python bench/hospital.py
    python bench/hospital.py --limit 100 --set "train.automl.candidates=[ets,theta,ensemble]"
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import manymodels as mm  # noqa: E402
from manymodels.config import apply_overrides  # noqa: E402
from manymodels.console import Terminal  # noqa: E402

HORIZON, SEASON = 12, 12
PUBLISHED_MASE = {"seasonal naive": 0.921, "AutoTheta": 0.764, "AutoETS": 0.770, "AutoARIMA": 0.784}


def load(data: Path, limit: int | None) -> pd.DataFrame:
    frame = pd.read_csv(data / "hospital.csv", usecols=["series_id", "date", "count", "split"])
    if limit:
        frame = frame[frame["series_id"].isin(frame["series_id"].drop_duplicates().head(limit))]
    return frame


def run(frame: pd.DataFrame, out: Path, overrides: list[str], jobs: int | None):
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    frame.assign(count=frame["count"].where(frame["split"] == "train"))[["series_id", "date", "count"]].to_csv(out / "input.csv", index=False)
    raw = {
        "datastore": str(out / "store"),
        "data": {"path": str(out / "input.csv"), "time_column": "date", "target_column": "count", "group_columns": ["series_id"]},
        "train": {"horizon": HORIZON},
        "forecast": {"quantiles": [0.1, 0.9]},
    }
    config = mm.config_from_dict(apply_overrides(raw, overrides), base_dir=out)
    started = time.perf_counter()
    result = mm.run(config, Terminal(quiet=True), jobs=jobs)
    wall = time.perf_counter() - started
    column = config.forecast.prediction_column
    forecast = pd.read_csv(result.forecast.output, usecols=["series_id", "date", column, f"{column}_q10", f"{column}_q90"])
    training = pd.read_csv(Path(config.datastore) / "outputs" / "training_output.csv", usecols=["series_id", "model", "demand_class"])
    return result, wall, forecast.rename(columns={column: "forecast", f"{column}_q10": "q10", f"{column}_q90": "q90"}), training


def score(frame: pd.DataFrame, forecast: pd.DataFrame) -> pd.DataFrame:
    """Per series: MASE (in-sample seasonal naive scale, m = 12), sMAPE, absolute errors and coverage."""
    truth = frame[frame["split"] == "test"].merge(forecast, on=["series_id", "date"], how="left")
    rows = []
    for sid, test in truth.groupby("series_id"):
        train = frame.loc[(frame["series_id"] == sid) & (frame["split"] == "train"), "count"].to_numpy(dtype=float)
        y, f = test["count"].to_numpy(dtype=float), test["forecast"].to_numpy(dtype=float)
        scale = np.mean(np.abs(train[SEASON:] - train[:-SEASON]))
        denom = np.abs(y) + np.abs(f)
        smape = np.mean(np.where(denom > 0, 200 * np.abs(y - f) / np.where(denom > 0, denom, 1), 0.0))
        inside = np.mean((y >= test["q10"].to_numpy()) & (y <= test["q90"].to_numpy()))
        rows.append({"series_id": sid, "mase": np.mean(np.abs(y - f)) / scale if scale > 0 else np.nan, "smape": smape,
                     "abs_error": np.sum(np.abs(y - f)), "actual": np.sum(np.abs(y)), "inside80": inside, "forecast_missing": int(np.isnan(f).sum())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hospital")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "hospital")
    parser.add_argument("--limit", type=int, default=None, help="only the first N series")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    from manymodels.core import statistical

    if not statistical.available():
        print("statsforecast is not installed: candidates auto falls back to LightGBM, linear and the baselines (pip install 'manymodels[stats]')", flush=True)
    frame = load(args.data, args.limit)
    result, wall, forecast, training = run(frame, args.out, args.set, args.jobs)
    scores = score(frame, forecast)
    print(f"hospital  {scores['series_id'].nunique()} series  MASE {scores['mase'].mean():.3f}  WAPE {100 * scores['abs_error'].sum() / scores['actual'].sum():.2f}%  "
          f"sMAPE {scores['smape'].mean():.2f}  wall {wall:.1f}s  failed {result.train.failed + result.forecast.failed + result.forecast.no_model}  "
          f"missing forecasts {int(scores['forecast_missing'].sum())}")
    print(f"          80% interval holds {100 * scores['inside80'].mean():.1f}% of hold-out values")
    print(f"          winners {training['model'].value_counts().to_dict()}")
    print(f"          demand classes {training['demand_class'].value_counts().to_dict()}")
    for name, value in PUBLISHED_MASE.items():
        print(f"          published MASE {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
