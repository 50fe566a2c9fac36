"""Model exploration on Dominick's OJ: every candidate's real MAPE, straight from the kernels.

Fits each store x brand (or coarser group) with ``fit_group`` for some rounds of the
benchmark protocol and scores, on the test weeks, the candidate AutoML chose and
every candidate forced alone. Used to design the AutoML defaults; the benchmark
itself is bench/dominicks_oj.py (through the public API and the datastore).

    python bench/dominicks_explore.py --rounds 1,4,8,12 --set automl.n_trials=10
"""

from __future__ import annotations

import os

# one BLAS/OpenMP thread per worker process, as mm's own pool does (set before numpy loads)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from manymodels.config import AutoMLConfig  # noqa: E402
from manymodels.core.kernels import AutoMLSpec, GroupSpec, fit_group, forecast_group  # noqa: E402
from manymodels.steps.split import PERIOD  # noqa: E402
from manymodels.core.timeindex import TimeAxis  # noqa: E402

KNOWN = [f"price{i}" for i in range(1, 12)] + ["price", "price_ratio", "deal", "feat"]
ROUND_ENDS = [135 + 2 * r for r in range(12)]


def make_spec(overrides: dict, series_columns=()) -> GroupSpec:
    automl = AutoMLConfig(metric="mape", timeout_per_group=None, retune="always").model_dump(mode="json")
    automl.update({k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("automl.")})
    base = dict(
        group_columns=("store", "brand"),
        series_columns=tuple(series_columns),
        time_column="week",
        target_column="units",
        period_column=PERIOD,
        known_future_columns=tuple(KNOWN),
        axis=TimeAxis("int", 1, 0, "int", None).to_dict(),
        horizon=3,
        min_history=20,
        lags="auto",
        windows="auto",
        calendar=True,
        target_transform="auto",
        params={},
        num_boost_round=300,
        automl=AutoMLSpec.of(automl, space="explore"),
        quantiles=(),
        seed=0,
    )
    for k, v in overrides.items():
        if not k.startswith("automl."):
            base[k] = v
    return GroupSpec(**base)


def one_group(args):
    history, future, spec, forced = args
    out = {}
    result = fit_group(history, spec)
    if result["status"] != "trained":
        return None
    out["auto"] = forecast_group(history, future, result["meta"], result["model_text"], spec)[:, 0]
    out["_winner"] = result["model"]
    out["_scores"] = result["scores"]
    for kind in forced:
        s = replace(spec, automl=replace(spec.automl, candidates=(kind,), reference=None))
        r = fit_group(history, s)
        out[kind] = forecast_group(history, future, r["meta"], r["model_text"], s)[:, 0]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--prepared", type=Path, default=HERE / "out" / "dominicks" / "oj_prepared.csv")
    p.add_argument("--rounds", default="1")
    p.add_argument("--group", default="store,brand")
    p.add_argument("--forced", default="lightgbm,linear,mean,naive,moving_average")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--save", type=Path, default=None, help="write every prediction and backtest score here (parquet)")
    args = p.parse_args()
    overrides = {}
    for item in args.set:
        k, v = item.split("=", 1)
        overrides[k] = json.loads(v) if v[:1] in "[{0123456789-tfn" else v
    data = pd.read_csv(args.prepared)
    group_cols = args.group.split(",")
    series_cols = [c for c in ("store", "brand") if c not in group_cols]
    spec = make_spec(overrides, series_cols)
    spec = GroupSpec(**{**spec.__dict__, "group_columns": tuple(group_cols)})
    forced = [f for f in args.forced.split(",") if f]
    totals: dict[str, list] = {}
    winners: dict[str, int] = {}
    saved: list[dict] = []
    started = time.perf_counter()
    zero_rows = 0
    for r in [int(x) for x in args.rounds.split(",")]:
        end = ROUND_ENDS[r - 1]
        part = data[(data.week >= 40) & (data.week <= end + 3)].copy()
        part[PERIOD] = part["week"]
        tasks, truths = [], []
        for _, g in part.groupby(group_cols):
            hist = g[g.week <= end].reset_index(drop=True)
            fut = g[g.week > end].reset_index(drop=True)
            truth = fut["units"].to_numpy(dtype=float)
            score_rows = fut["week"].isin([end + 2, end + 3]).to_numpy()
            fut = fut.assign(units=np.nan)
            tasks.append((hist, fut, spec, forced))
            truths.append((truth, score_rows))
        with Pool(args.jobs) as pool:
            results = pool.map(one_group, tasks, chunksize=4)
        for res, (truth, rows), task in zip(results, truths, tasks):
            if res is None:
                continue
            if args.save:
                fut = task[1]
                for i in np.flatnonzero(rows):
                    saved.append(
                        {"round": r, **{c: fut[c].iloc[i] for c in ("store", "brand", "week")}, "actual": truth[i], "winner": res["_winner"],
                         **{f"pred_{k}": v[i] for k, v in res.items() if not k.startswith("_")},
                         **{f"score_{k}": v for k, v in res["_scores"].items()}}
                    )
            winners[res["_winner"]] = winners.get(res["_winner"], 0) + 1
            for name, pred in res.items():
                if name.startswith("_"):
                    continue
                scored = rows & (truth != 0)  # MAPE is undefined at 0 units: not scored, and counted below
                ape = np.abs(pred[scored] - truth[scored]) / truth[scored]
                totals.setdefault(name, []).append(ape)
                zero_rows += int(np.sum(rows & (truth == 0))) if name == "auto" else 0
        line = "  ".join(f"{k} {100 * np.concatenate(v).mean():.2f}" for k, v in totals.items())
        skipped = f"; {zero_rows} rows with 0 units not scored" if zero_rows else ""
        print(f"after round {r}: {line}   ({time.perf_counter() - started:.0f}s{skipped})", flush=True)
    print("winners:", winners)
    if args.save:
        pd.DataFrame(saved).to_parquet(args.save)
        print(f"saved {len(saved)} rows to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
