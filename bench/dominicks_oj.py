"""Dominick's orange juice, the "OrangeJuice_Pt_3Weeks_Weekly" protocol, through mm's API.

12 rounds: round r trains on weeks 40..E_r (E_r = 135, 137, ..., 157) and
forecasts weeks E_r+1..E_r+3, scored on E_r+2 and E_r+3 (one gap week). Prices,
deal and feat are known for the forecast weeks; sales are not: the inference
rows given to mm have an empty target, and the score is computed here against
the original data, never by mm. MAPE in percent over every test row that
exists (21,054 over the 12 rounds), actual = round(exp(logmove)).

    python bench/dominicks_oj.py                      # all granularities, 12 rounds
    python bench/dominicks_oj.py --baselines          # reproduce naive 109.67 and mean 70.74 first
    python bench/dominicks_oj.py --rounds 1 --granularity store_brand --default-model

Data preparation (also reachable with --prepare-only): units = round(exp(logmove));
`price` = the brand's own price and `price_ratio` = own price / mean price of the
other brands in the store-week; both are functions of the known-future prices.
The prepared table is written to bench/out/dominicks/oj_prepared.csv, which is
what configs/dominicks_oj.yaml points at.
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
from manymodels.console import Terminal  # noqa: E402

FIRST_WEEK = 40
ROUND_ENDS = [135 + 2 * r for r in range(12)]
PUBLISHED = {"naive": 109.67, "mean": 70.74, "lightgbm_global": 36.28}
GRANULARITIES = {
    "store_brand": {"group_columns": ["store", "brand"], "series_columns": None},
    "store": {"group_columns": ["store"], "series_columns": ["store", "brand"]},
    "brand": {"group_columns": ["brand"], "series_columns": ["store", "brand"]},
}
# store x brand groups without pooled candidates (train.automl.pooling.levels: none): the local-only
# reference the default (pooled candidates per brand, per store and over all series) is measured against
VARIANTS = {"store_brand_local": ("store_brand", {"train": {"automl": {"pooling": {"levels": "none"}}}})}
PRICE_COLUMNS = [f"price{i}" for i in range(1, 12)]


def prepare(data_dir: Path, out_dir: Path) -> Path:
    raw = pd.read_csv(data_dir / "yx.csv")
    raw["units"] = np.round(np.exp(raw["logmove"])).astype(np.int64)
    prices = raw[PRICE_COLUMNS].to_numpy()
    own = prices[np.arange(len(raw)), raw["brand"].to_numpy() - 1]
    others = (prices.sum(axis=1) - own) / (prices.shape[1] - 1)
    raw["price"] = own
    raw["price_ratio"] = own / others
    keep = ["store", "brand", "week", "units", *PRICE_COLUMNS, "price", "price_ratio", "deal", "feat"]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "oj_prepared.csv"
    raw[keep].sort_values(["store", "brand", "week"]).to_csv(path, index=False)
    return path


def round_input(prepared: pd.DataFrame, end: int, out_dir: Path) -> Path:
    """Weeks 40..end with sales, end+1..end+3 with prices but no sales."""
    part = prepared[(prepared["week"] >= FIRST_WEEK) & (prepared["week"] <= end + 3)].copy()
    part.loc[part["week"] > end, "units"] = np.nan
    path = out_dir / f"round_input_{end}.csv"
    part.to_csv(path, index=False)
    return path


def score(prepared: pd.DataFrame, forecast_csv: Path, end: int, prediction: str, keep: list | None = None) -> tuple[float, int, int, dict[str, int]]:
    """MAPE, scored rows, rows without a prediction, and per quantile column how many actuals fell below it.
    ``keep``: a list the scored rows (store, brand, week, units, prediction) are appended to."""
    truth = prepared[prepared["week"].isin([end + 2, end + 3])][["store", "brand", "week", "units"]]
    quantiles = [c for c in pd.read_csv(forecast_csv, nrows=0).columns if c.startswith(f"{prediction}_q")]
    pred = pd.read_csv(forecast_csv, usecols=["store", "brand", "week", prediction, *quantiles])
    joined = truth.merge(pred, on=["store", "brand", "week"], how="left")
    if keep is not None:
        keep.append(joined[["store", "brand", "week", "units", prediction]].rename(columns={prediction: "prediction"}).assign(end=end))
    missing = int(joined[prediction].isna().sum())
    zero = joined["units"] == 0  # MAPE is undefined there: not scored, and said
    if zero.any():
        print(f"  round to week {end}: {int(zero.sum())} rows with 0 units are not scored by MAPE", flush=True)
    ape = (np.abs(joined[prediction] - joined["units"]) / joined["units"])[~zero]
    below = {q: int((joined["units"] <= joined[q]).sum()) for q in quantiles}
    return float(100 * ape.mean()), len(joined), missing, below


def run_protocol(name: str, config_raw: dict, prepared: pd.DataFrame, out_dir: Path, rounds: list[int], jobs: int | None, quiet: bool, predictions: Path | None = None) -> dict:
    store_dir = out_dir / f"store_{name}"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    apes, rows, missing, per_round, below = [], 0, 0, [], {}
    wall = 0.0
    kept: list | None = [] if predictions else None
    for r in rounds:
        end = ROUND_ENDS[r - 1]
        path = round_input(prepared, end, out_dir)
        raw = json.loads(json.dumps(config_raw))
        raw["datastore"] = str(store_dir)
        raw["data"]["path"] = str(path)
        raw["split"] = {"train_end": end}
        config = mm.config_from_dict(raw, base_dir=REPO)
        started = time.perf_counter()
        result = mm.run(config, Terminal(quiet=quiet), jobs=jobs)
        elapsed = time.perf_counter() - started
        wall += elapsed
        mape, n, miss, under = score(prepared, Path(result.forecast.output), end, config.forecast.prediction_column, kept)
        for q, count in under.items():
            below[q] = below.get(q, 0) + count
        capped, outside = (result.forecast.capped or {}).get("n", 0), (result.forecast.out_of_range or {}).get("n", 0)
        per_round.append({"round": r, "mape": mape, "rows": n, "seconds": elapsed, "trained": result.train.trained, "tuned": result.train.tuned, "failed": result.train.failed, "winners": result.train.winners, "capped": capped, "out_of_range": outside})
        apes.append(mape * n)
        rows += n
        missing += miss
        print(f"  {name:<12} round {r:2d} (train to week {end}): MAPE {mape:6.2f}%  rows {n:5d}  {elapsed:6.1f}s  tuned {result.train.tuned:4d}  capped {capped}  out of range {outside}  winners {result.train.winners}", flush=True)
    if predictions:
        predictions.mkdir(parents=True, exist_ok=True)
        pd.concat(kept, ignore_index=True).to_csv(predictions / f"{name}.csv", index=False)
    # a quantile q is calibrated when about q of the actuals fall at or below it
    coverage = {q: round(count / rows, 3) for q, count in below.items()}
    return {"name": name, "mape": sum(apes) / rows, "rows": rows, "missing": missing, "seconds": wall, "coverage": coverage, "rounds": per_round}


def base_config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dominicks_oj")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "dominicks")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dominicks_oj.yaml")
    parser.add_argument("--rounds", default="1-12", help="e.g. 1-12, 1, 1,5,9")
    parser.add_argument("--granularity", default="store_brand,store,brand", help="comma-separated (store_brand, store, brand, store_brand_local); empty for baselines only")
    parser.add_argument("--baselines", action="store_true", help="first reproduce the published naive and mean forecast")
    parser.add_argument("--default-model", action="store_true", help="AutoML off: LightGBM with the default settings")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--predictions", type=Path, default=None, help="write each arm's scored rows (all rounds) to DIR/<arm>.csv, to compare or combine arms afterwards")
    parser.add_argument("--quiet", action="store_true", default=True)
    args = parser.parse_args(argv)

    prepared_path = prepare(args.data, args.out)
    print(f"prepared {prepared_path}")
    if args.prepare_only:
        return 0
    prepared = pd.read_csv(prepared_path)
    rounds = _parse_rounds(args.rounds)
    base = base_config(args.config)
    from manymodels.config import apply_overrides

    base = apply_overrides(base, args.set)
    if args.default_model:
        base.setdefault("train", {}).setdefault("automl", {})["enabled"] = False

    results = []
    if args.baselines:
        for kind in ("naive", "mean"):
            raw = json.loads(json.dumps(base))
            raw["data"].update(GRANULARITIES["store_brand"])
            raw.setdefault("train", {})["automl"] = {"enabled": True, "candidates": [kind], "n_trials": 0, "folds": 1}
            raw["train"]["min_history"] = 1
            res = run_protocol(f"{kind}", raw, prepared, args.out, rounds, args.jobs, args.quiet)
            res["published"] = PUBLISHED[kind]
            results.append(res)
    for name in [g for g in args.granularity.split(",") if g]:
        raw = json.loads(json.dumps(base))
        granularity, overrides = VARIANTS.get(name, (name, {}))
        raw["data"].update(GRANULARITIES[granularity])
        raw = _merged(raw, overrides)
        results.append(run_protocol(name, raw, prepared, args.out, rounds, args.jobs, args.quiet, args.predictions))

    print()
    print(f"{'method':<14}{'MAPE %':>9}{'published':>11}{'rows':>8}{'missing':>9}{'wall s':>9}{'ratio to 625 s':>16}")
    for res in results:
        pub = f"{res['published']:.2f}" if "published" in res else ""
        print(f"{res['name']:<14}{res['mape']:9.2f}{pub:>11}{res['rows']:8d}{res['missing']:9d}{res['seconds']:9.1f}{res['seconds'] / 625:16.2f}")
        if res.get("coverage"):
            print(" " * 14 + "  share of actuals at or below each quantile: " + ", ".join(f"{q} {v:.3f}" for q, v in res["coverage"].items()))
    print(f"(best published: single global LightGBM {PUBLISHED['lightgbm_global']}% in 625 s on a 2-vCPU VM)")
    summary = args.out / "summary.json"
    summary.write_text(json.dumps(results, indent=1, default=str))
    print(f"details: {summary}")
    return 0


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _parse_rounds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


if __name__ == "__main__":
    sys.exit(main())


