"""The M3 competition through ``mm run``: one model per series, scored as published.

Data: ``../shared/data/m3/`` (3,003 series; read its README). Each series keeps
its own competition hold-out (yearly 6, quarterly 8, monthly 18, other 8
periods). M3 is fed as a user would feed it: each series indexed by its own
period ``t`` (1, 2, ... from its own start), its hold-out rows as future rows
with the target empty, and ``split.train_end: per_series``, so each series is
cut at its own last target whatever its length; the hold-out values are read
back only to score the forecasts. mm gets no calendar (M3's dates are partly
synthetic): an integer period index with the season length of the period
(12, 4, 1, 1).

The config is mm's default (AutoML on, ``candidates: auto``) with only the
columns, the horizon, the season length and the per-series cutoff set, plus
any ``--set``. The statistical candidates need the ``stats`` extra; without it
``candidates: auto`` falls back to LightGBM, linear and the baselines (the script
says so).

Prints, per period and overall: sMAPE and MASE (per series, then the mean over
series, as the README's published table), the wall time of ``mm run``, how many
forecast rows ``forecast.cap_factor`` capped, and the published numbers.

    python bench/m3.py                          # all 3,003 series
    python bench/m3.py --periods yearly --limit 200 --set train.automl.n_trials=0
"""

from __future__ import annotations

import argparse
import json
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

PERIODS = {"yearly": (6, 1), "quarterly": (8, 4), "monthly": (18, 12), "other": (8, 1)}  # horizon, season
PUBLISHED = {"Theta": (12.76, 1.39), "ForecastPro": (13.06, 1.47), "ets": (13.07, 1.43), "auto.arima": (13.57, 1.45), "Naive2": (14.74, 1.67)}
PUBLISHED_MASE = {"monthly": {"AutoTheta": 0.855, "AutoETS": 0.863}, "quarterly": {"AutoTheta": 1.119, "AutoETS": 1.144}, "yearly": {"AutoTheta": 2.610, "AutoETS": 2.695}}


def load(data: Path, period: str, limit: int | None) -> pd.DataFrame:
    frame = pd.read_csv(data / f"m3_{period}.csv", usecols=["series_id", "t", "value", "split"])
    if limit:
        frame = frame[frame["series_id"].isin(frame["series_id"].drop_duplicates().head(limit))]
    return frame


def mm_input(frame: pd.DataFrame) -> pd.DataFrame:
    """What mm is given: the hold-out rows are future rows, their values left empty (scored afterwards)."""
    return frame.assign(value=frame["value"].where(frame["split"] == "train"))[["series_id", "t", "value"]]


def run_period(frame: pd.DataFrame, period: str, out: Path, overrides: list[str], jobs: int | None) -> dict:
    horizon, season = PERIODS[period]
    folder = out / period
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    mm_input(frame).to_csv(folder / "input.csv", index=False)
    raw = {
        "datastore": str(folder / "store"),
        "data": {"path": str(folder / "input.csv"), "time_column": "t", "target_column": "value", "group_columns": ["series_id"], "season_length": season},
        "split": {"train_end": "per_series"},
        "train": {"horizon": horizon},
    }
    config = mm.config_from_dict(apply_overrides(raw, overrides), base_dir=folder)
    started = time.perf_counter()
    result = mm.run(config, Terminal(quiet=True), jobs=jobs)
    wall = time.perf_counter() - started
    forecast = pd.read_csv(result.forecast.output, usecols=["series_id", "t", config.forecast.prediction_column])
    scores = score(frame, forecast.rename(columns={config.forecast.prediction_column: "forecast"}), season)
    return {
        "period": period,
        "series": int(frame["series_id"].nunique()),
        "forecast_series": int(scores["series_id"].nunique()),
        "smape": float(scores["smape"].mean()),
        "mase": float(scores["mase"].mean()),  # over the series with a scale
        "mase_series": int(scores["mase"].notna().sum()),
        "wall_s": wall,
        "failed": result.train.failed + result.forecast.failed + result.forecast.no_model,
        "capped": (result.forecast.capped or {}).get("n", 0),
        "capped_examples": (result.forecast.capped or {}).get("examples", [])[:5],
        "winners": result.train.winners,
    }


def score(frame: pd.DataFrame, forecast: pd.DataFrame, season: int) -> pd.DataFrame:
    """Per series: sMAPE (percent) and MASE over its hold-out, as the published table."""
    rows = []
    truth = frame[frame["split"] == "test"].merge(forecast[["series_id", "t", "forecast"]], on=["series_id", "t"], how="left")
    for sid, test in truth.groupby("series_id"):
        train = frame.loc[(frame["series_id"] == sid) & (frame["split"] == "train"), "value"].to_numpy(dtype=float)
        y, f = test["value"].to_numpy(dtype=float), test["forecast"].to_numpy(dtype=float)
        m = season if len(train) > season else 1
        scale = np.mean(np.abs(train[m:] - train[:-m])) if len(train) > m else np.nan
        denom = np.abs(y) + np.abs(f)
        # zero-safe, as mm scores: 0/0 is an exact forecast; a constant history has no MASE (NaN, counted)
        smape = float(np.mean(np.where(denom > 0, 200 * np.abs(y - f) / np.where(denom > 0, denom, 1), 0.0)))
        rows.append({"series_id": sid, "smape": smape, "mase": float(np.mean(np.abs(y - f)) / scale) if scale > 0 else np.nan})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "m3")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "m3")
    parser.add_argument("--periods", default="yearly,quarterly,monthly,other")
    parser.add_argument("--limit", type=int, default=None, help="only the first N series of each period")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    from manymodels.core import statistical

    if not statistical.available():
        print("statsforecast is not installed: candidates auto falls back to LightGBM, linear and the baselines (pip install 'manymodels[stats]')", flush=True)
    results = []
    for period in args.periods.split(","):
        frame = load(args.data, period, args.limit)
        res = run_period(frame, period, args.out, args.set, args.jobs)
        results.append(res)
        unscaled = f" (over {res['mase_series']}: {res['series'] - res['mase_series']} have a constant history)" if res["mase_series"] < res["series"] else ""
        print(f"{period:<10} {res['series']:5d} series  sMAPE {res['smape']:6.2f}  MASE {res['mase']:6.3f}{unscaled}  wall {res['wall_s']:7.1f}s  failed {res['failed']}  capped {res['capped']}  winners {res['winners']}", flush=True)
        for e in res["capped_examples"]:
            print(f"{'':10} capped: {e}")
        for name, value in PUBLISHED_MASE.get(period, {}).items():
            print(f"{'':10} published MASE {name}: {value}")
    n = sum(r["series"] for r in results)
    overall_smape = sum(r["smape"] * r["series"] for r in results) / n
    overall_mase = sum(r["mase"] * r["mase_series"] for r in results if r["mase_series"]) / max(1, sum(r["mase_series"] for r in results))
    print(f"{'overall':<10} {n:5d} series  sMAPE {overall_smape:6.2f}  MASE {overall_mase:6.3f}  wall {sum(r['wall_s'] for r in results):7.1f}s  capped {sum(r['capped'] for r in results)}")
    for name, (smape, mase) in PUBLISHED.items():
        print(f"{'':10} published {name}: sMAPE {smape}, MASE {mase} (all 3,003 series)")
    (args.out / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
