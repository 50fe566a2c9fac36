"""Realised accuracy on Dominick's orange juice: the 12-round protocol run as twelve nightly
rounds into ONE datastore, as cron would (bench/dominicks_oj.py runs each round apart).

Round r's input file (the same path every night) holds weeks 40..E_r with sales and
E_r+1..E_r+3 with prices only (E_r = 135, 137, ..., 157), and `mm run` is called on it.
Each night's run scores the forecasts stored by earlier nights against the sales that
arrived since (outputs/accuracy_history.parquet). After round 12, the realised accuracy of
rounds 1..11 is checked against an independent computation here, from the forecasts each
night shipped (forecasting_output.csv, copied after each round) and the original data:
the same rows, predictions, actuals, errors, MAPE and seasonal-naive value added. It also
quotes what scoring costs: its seconds per round against the round's wall time, and the
bytes each forecast run's stored history takes.

    python bench/realised_accuracy.py                          # configs/dominicks_oj.yaml (per brand)
    python bench/realised_accuracy.py --granularity store_brand --set train.automl.n_trials=0
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from dominicks_oj import FIRST_WEEK, GRANULARITIES, ROUND_ENDS, base_config, prepare  # noqa: E402

import manymodels as mm  # noqa: E402
from manymodels.config import apply_overrides  # noqa: E402
from manymodels.console import Terminal  # noqa: E402
from manymodels.store.datastore import Datastore  # noqa: E402

KEY = ["store", "brand", "week"]


def nightly_input(prepared: pd.DataFrame, end: int, path: Path) -> None:
    """The night's extract: sales up to week ``end``, the next 3 weeks' prices without sales."""
    part = prepared[(prepared["week"] >= FIRST_WEEK) & (prepared["week"] <= end + 3)].copy()
    part.loc[part["week"] > end, "units"] = np.nan
    part.to_csv(path, index=False)


def independent(prepared: pd.DataFrame, shipped: dict[int, pd.DataFrame], last_end: int, season: int) -> pd.DataFrame:
    """Every row a night shipped whose week has sales by the last night, scored here from scratch."""
    units = prepared.set_index(KEY)["units"]
    out = []
    for r, frame in shipped.items():
        end = ROUND_ENDS[r - 1]
        f = frame[frame["week"] <= last_end].merge(prepared[KEY + ["units"]], on=KEY, how="inner")
        known = prepared[prepared["week"] <= end].groupby(["store", "brand"])["week"].max().rename("last_known")
        f = f.merge(known, left_on=["store", "brand"], right_index=True, how="left")
        step = f["week"] - f["last_known"]
        back = season * np.ceil(step / season)
        source = f["week"] - back
        f["snaive"] = [units.get((s, b, int(w)), np.nan) if w >= FIRST_WEEK and w <= end else np.nan for s, b, w in zip(f["store"], f["brand"], source)]
        f["round"] = r
        f["step"] = step
        out.append(f)
    return pd.concat(out, ignore_index=True)


def mape(actual: np.ndarray, pred: np.ndarray) -> float:
    ok = actual != 0
    return float(100 * np.mean(np.abs(pred[ok] - actual[ok]) / actual[ok]))


def run_rounds(config, prepared: pd.DataFrame, nightly: Path, out: Path, jobs: int | None) -> list[dict]:
    """The twelve nights: each night's extract, ``mm run``, and a copy of what it shipped."""
    rounds = []
    prediction = config.forecast.prediction_column
    for r, end in enumerate(ROUND_ENDS, start=1):
        nightly_input(prepared, end, nightly)
        started = time.perf_counter()
        result = mm.run(config, Terminal(quiet=True), jobs=jobs)
        wall = time.perf_counter() - started
        assert result.exit_code == 0, result.to_dict()
        shipped = pd.read_csv(result.forecast.output, usecols=[*KEY, prediction]).rename(columns={prediction: "shipped"})
        shipped.to_csv(out / f"shipped_{r:02d}.csv", index=False)  # the folder is per granularity
        stored = Datastore(config.datastore).read_run(result.forecast.run_id).get("history_bytes", 0)
        a = result.accuracy
        rounds.append({"round": r, "end": end, "wall_s": wall, "scoring_s": a.duration_s, "new_rows": a.n_new, "history_bytes": stored, "history_rows": len(shipped), "drift": len(a.drift)})
        print(f"round {r:2d} (sales to week {end}): {wall:6.1f}s, scoring {a.duration_s:5.2f}s ({100 * a.duration_s / wall:4.1f}%), {a.n_new:5d} rows scored, drift {len(a.drift)}, history {stored:,} B", flush=True)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dominicks_oj")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "realised")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dominicks_oj.yaml")
    parser.add_argument("--granularity", default="brand", choices=sorted(GRANULARITIES))
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--check-only", action="store_true", help="check the datastore of the last run again (no rounds run)")
    args = parser.parse_args(argv)

    prepared = pd.read_csv(prepare(args.data, args.out))
    raw = apply_overrides(base_config(args.config), args.set)
    raw["data"].update(GRANULARITIES[args.granularity])
    store_dir = args.out / f"store_{args.granularity}"
    if store_dir.exists() and not args.check_only:
        shutil.rmtree(store_dir)
    out = args.out / args.granularity
    out.mkdir(parents=True, exist_ok=True)
    nightly = out / "nightly.csv"
    raw["datastore"] = str(store_dir)
    raw["data"]["path"] = str(nightly)
    raw["split"] = {"train_end": "auto"}  # as cron: the last week with sales is the cutoff
    config = mm.config_from_dict(raw, base_dir=REPO)
    metric = config.train.automl.metric

    rounds_file = out / "rounds.json"
    if not args.check_only:
        rounds_file.write_text(json.dumps(run_rounds(config, prepared, nightly, out, args.jobs), indent=1))
    rounds = json.loads(rounds_file.read_text())
    shipped = {r: pd.read_csv(out / f"shipped_{r:02d}.csv") for r in range(1, 13)}

    store = Datastore(store_dir)
    history = store.read_accuracy_history()
    runs = [rec["id"] for rec in mm.list_runs(config, step="forecast")]
    round_of = {run: r for r, run in enumerate(runs, start=1)}
    history["round"] = history["forecast_run_id"].map(round_of)
    key = history["key"].iloc[0]
    meta = store.read_model_meta(key, store.model_versions(key)[-1])  # the season every model of this config uses
    season = (meta["info"]["features"] or {}).get("season_length") or 1
    truth = independent(prepared, {r: f for r, f in shipped.items() if r <= 11}, ROUND_ENDS[-1], season)

    mine = history[history["round"] <= 11].astype({"store": "int64", "brand": "int64"})  # group values are stored as text
    assert (history["round"] == 12).sum() == 0, "round 12's forecasts have no sales yet"
    joined = mine.merge(truth, on=["round", *KEY], how="outer", indicator=True)
    assert (joined["_merge"] == "both").all(), joined["_merge"].value_counts()
    np.testing.assert_allclose(joined["prediction"], joined["shipped"], rtol=1e-12)
    np.testing.assert_allclose(joined["actual"], joined["units"], rtol=0)
    np.testing.assert_array_equal(joined["horizon_step"], joined["step"])
    np.testing.assert_allclose(joined["error"], joined["shipped"] - joined["units"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(joined["seasonal_naive"], joined["snaive"], rtol=0, equal_nan=True)

    print(f"\n{'round':>5} {'rows':>6} {'realised ' + metric.upper():>14} {'independent':>12} {'seasonal naive':>15} {'value added':>12}")
    worst = 0.0
    for r, g in joined.groupby("round"):
        a, p, sn = (g[c].to_numpy(dtype=np.float64) for c in ("units", "shipped", "snaive"))
        theirs = mape(a, p)
        ours = float(np.nanmean(g[metric])) if metric == "mape" else math.nan
        both = ~np.isnan(sn)
        fva = mape(a[both], sn[both]) - mape(a[both], p[both])
        worst = max(worst, abs(ours - theirs))
        print(f"{r:5d} {len(g):6d} {ours:14.4f} {theirs:12.4f} {mape(a[both], sn[both]):15.4f} {fva:12.4f}")
    assert worst < 1e-9, worst
    total_wall = sum(x["wall_s"] for x in rounds)
    scoring = [x["scoring_s"] for x in rounds[1:]]
    fractions = sorted(x["scoring_s"] / x["wall_s"] for x in rounds[1:])
    per_row = sum(x["history_bytes"] for x in rounds) / sum(x["history_rows"] for x in rounds)
    print(f"\nrealised accuracy of rounds 1..11 equals the independent computation ({len(joined):,} rows; largest MAPE difference {worst:.2e})")
    print(f"scoring: median {np.median(scoring):.2f}s per round (rounds 2..12), median {100 * np.median(fractions):.1f}% of the round, max {100 * fractions[-1]:.1f}%; all 12 rounds {total_wall:.0f}s")
    print(f"stored forecast history: median {np.median([x['history_bytes'] for x in rounds]):,.0f} B per forecast run, {per_row:.1f} B per forecast row")
    (out / "summary.json").write_text(json.dumps({"rounds": rounds, "rows_checked": len(joined), "max_diff": worst}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
