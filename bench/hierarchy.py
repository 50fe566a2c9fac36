"""Hierarchical forecasting through mm: accuracy at every level, base vs each reconciliation method.

    python bench/hierarchy.py                         # tourism_au (304 region x state x purpose series)
    python bench/hierarchy.py --data dominicks        # Dominick's store x brand -> store, brand, total
    python bench/hierarchy.py --set train.automl.n_trials=5

tourism_au (../shared/data/tourism_au, see its README): quarterly 1998Q1-2017Q4,
the last 8 quarters held out (``split.holdout: 8``, horizon 8). Levels: total,
state, state x region, purpose, state x purpose, and the bottom region x state x
purpose (425 nodes). MASE: each node's mean absolute error over the in-sample
mean absolute seasonal difference (m = 4) of its training part, averaged over
the level's nodes; sMAPE in percent over the level's rows (both as in
../shared/data/tourism_au/README.md).

Dominick's (../shared/data/dominicks_oj, prepared as bench/dominicks_oj.py does):
weekly store x brand units, trained to week 148 and scored on weeks 149-160 with
their prices, deals and features known (horizon 12); levels total, store, brand
(1,008 nodes); ``missing: zero`` (3.9% of store-brand-weeks are gaps: with
``missing`` almost every aggregate week would be incomplete); m = 52.

The default config (``candidates: auto``) is trained once (``mm run``); every
method then reruns ``mm forecast`` only, which reuses every node's base forecast
and reconciles again: the seconds per method are that forecast run's wall time.
Accuracy is what ``mm forecast --json`` reports under ``hierarchy.accuracy``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import manymodels as mm  # noqa: E402
from manymodels.config import apply_overrides  # noqa: E402
from manymodels.console import Terminal  # noqa: E402
from manymodels.errors import ConfigError  # noqa: E402

SHARED = REPO.parent / "shared" / "data"  # ../shared/data; --root elsewhere (a git worktree)
METHODS = [
    ("bottom_up", []),
    ("top_down average_proportions", ["hierarchy.method=top_down", "hierarchy.top_down_rule=average_proportions"]),
    ("top_down proportion_averages", ["hierarchy.method=top_down", "hierarchy.top_down_rule=proportion_averages"]),
    ("top_down forecast_proportions", ["hierarchy.method=top_down", "hierarchy.top_down_rule=forecast_proportions"]),
    ("middle_out", ["hierarchy.method=middle_out"]),  # from the level in MIDDLE
    ("ols", ["hierarchy.method=ols"]),
    ("wls_struct", ["hierarchy.method=wls_struct"]),
    ("wls_var", ["hierarchy.method=wls_var"]),
    ("mint_shrink", ["hierarchy.method=mint_shrink"]),
]
MIDDLE = {"tourism": ["state"], "dominicks": ["store"]}


def tourism(out: Path, root: Path) -> dict:
    raw = pd.read_csv(root / "tourism_au" / "tourism_au_quarterly.csv")
    path = out / "tourism.csv"
    raw[["state", "region", "purpose", "date", "trips"]].to_csv(path, index=False)
    return {
        "datastore": str(out / "store_tourism"),
        "data": {"path": str(path), "time_column": "date", "target_column": "trips", "group_columns": ["state", "region", "purpose"], "frequency": "QS"},
        "split": {"holdout": 8},
        "train": {"horizon": 8, "min_history": 8},
        "hierarchy": {"levels": [[], ["state"], ["state", "region"], ["purpose"], ["state", "purpose"]], "middle_level": ["state"]},
    }


def dominicks(out: Path, root: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from dominicks_oj import prepare

    path = prepare(root / "dominicks_oj", out / "dominicks")
    known = [f"price{i}" for i in range(1, 12)] + ["price", "price_ratio", "deal", "feat"]
    return {
        "datastore": str(out / "store_dominicks"),
        "data": {"path": str(path), "time_column": "week", "target_column": "units", "group_columns": ["store", "brand"], "known_future_columns": known},
        "split": {"train_end": 148},
        "train": {"horizon": 12, "min_history": 20, "automl": {"folds": 3}},
        "hierarchy": {"levels": [[], ["store"], ["brand"]], "missing": "zero", "middle_level": ["store"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["tourism", "dominicks"], default="tourism")
    parser.add_argument("--root", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "hierarchy")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--tag", default="", help="a suffix for the summary file")
    parser.add_argument("--keep", action="store_true", help="reuse the datastore of an earlier run (only reconcile again)")
    parser.add_argument("--train-level", default=None, help="train only this level (comma-separated columns, e.g. state) and derive the others")
    parser.add_argument("--rule", default="average_proportions", help="with --train-level: the proportions rule for the levels below it")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = (tourism if args.data == "tourism" else dominicks)(args.out, args.root)
    methods = METHODS
    if args.train_level is not None:  # Azure's cheaper mode: one run, no reconciliation methods to compare
        level = [c for c in args.train_level.split(",") if c]
        raw["datastore"] += "_level_" + ("_".join(level) or "total")
        raw = apply_overrides(raw, [f"hierarchy.train_level={json.dumps(level)}", f"hierarchy.top_down_rule={args.rule}"])
        methods = [(f"train_level {args.train_level or 'total'} ({args.rule})", [])]
    raw = apply_overrides(raw, [*args.set, "hierarchy.method=bottom_up"])
    store = Path(raw["datastore"])
    if store.exists() and not args.keep:
        shutil.rmtree(store)
    config = mm.config_from_dict(raw, base_dir=REPO)
    quiet = Terminal(quiet=True)
    started = time.perf_counter()
    result = mm.run(config, quiet, jobs=args.jobs)
    train_s = time.perf_counter() - started
    print(f"{args.data}: {result.split.n_groups} nodes ({result.split.n_aggregate_nodes} aggregate); mm run {train_s:.1f}s "
          f"(train step {result.train.duration_s:.1f}s: trained {result.train.trained}, reused {result.train.reused}, failed {result.train.failed}); winners {result.train.winners}", flush=True)
    rows = {}
    for name, overrides in methods:
        try:
            variant = config.with_overrides(overrides)
        except ConfigError as exc:  # top_down without the total, for example
            print(f"  {name}: not applicable ({exc.message.splitlines()[-1].strip()})")
            continue
        started = time.perf_counter()
        forecast = mm.forecast(variant, quiet, jobs=args.jobs)
        seconds = time.perf_counter() - started
        h = forecast.hierarchy
        if "error" in h:
            print(f"  {name}: {h['error']}")
            continue
        accuracy = h["accuracy"]
        if not rows:
            rows["base"] = {"levels": {lvl: a["base"] or {"mase": None, "smape": None} for lvl, a in accuracy.items()}, "seconds": None}
        rows[name] = {"levels": {lvl: a["reconciled"] for lvl, a in accuracy.items()}, "seconds": seconds, "method_used": h["method"], "gap": h["coherence_gap"], "note": h.get("note", "")}
    levels = list(next(iter(rows.values()))["levels"])
    for metric in ("mase", "smape"):
        print(f"\n{metric.upper()} per level" + (" (%)" if metric == "smape" else ""))
        print(f"{'method':<31}" + "".join(f"{lvl:>16}" for lvl in levels) + f"{'forecast s':>12}")
        for name, r in rows.items():
            cells = "".join(f"{r['levels'][lvl][metric]:16.3f}" if r["levels"][lvl][metric] is not None else f"{'-':>16}" for lvl in levels)
            secs = f"{r['seconds']:12.2f}" if r["seconds"] is not None else f"{'':>12}"
            print(f"{name:<31}{cells}{secs}")
    print("\nmarkdown (MASE / sMAPE %):\n")
    print("| method | " + " | ".join(levels) + " | forecast s |")
    print("|---|" + "---|" * (len(levels) + 1))
    for name, r in rows.items():
        cells = [f"{r['levels'][lvl]['mase']:.3f} / {r['levels'][lvl]['smape']:.2f}" if r["levels"][lvl]["mase"] is not None else "-" for lvl in levels]
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds} |")
    summary = args.out / f"{args.data}{args.tag}_summary.json"
    summary.write_text(json.dumps({"run_seconds": train_s, "train_seconds": result.train.duration_s, "nodes": result.split.n_groups, "rows": rows}, indent=1))
    print(f"\ndetails: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
