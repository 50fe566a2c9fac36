"""Seconds per group of a first ``mm train`` (median, p95), for one checkout of mm.

What a group costs, from ``duration_s`` in training_output.csv (the worker's
wall time of ``fit_group``: candidates, backtests, tuning and the final fit),
on two data sets of ``../shared/data``:

- ``dominicks``: Dominick's orange juice, round 1 of the benchmark protocol
  (train to week 135, horizon 3, prices, deal and feature as known-future
  columns), one group per store x brand (913 groups), the AutoML settings of
  configs/dominicks_oj.yaml (4 folds, metric mape, 20 Optuna trials, 10 s per
  group) and the candidates of the checkout's default (``--stores N``: the
  first N stores only);
- ``m3``: the first ``--m3-series`` series of each of M3's yearly, quarterly
  and monthly sets, one group per series, the checkout's default config.

``--repo`` picks the checkout to measure (its ``manymodels`` is imported), so
the same script measures the code before and after a change:

    git worktree add /tmp/before <commit>
    python bench/group_cost.py --repo /tmp/before --set train.automl.n_trials=0
    python bench/group_cost.py --set train.automl.n_trials=0

``--cpu`` runs the serial engine and reports each group's CPU seconds (the
process's, around ``fit_group``) instead of its wall time: on a machine shared
with other work, wall time measures the neighbours. ``--set`` applies to both data sets (for example ``train.automl.n_trials=0``:
the tuning cost is LightGBM's, the same before and after a change of the
other candidates). One run per data set; run it on a quiet machine with
``nice``, and compare medians of a few runs.
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
DATA = HERE.parent.parent / "shared" / "data"
M3 = {"yearly": (6, 1), "quarterly": (8, 4), "monthly": (18, 12)}


CPU_SECONDS: list[float] = []  # --cpu: process CPU seconds of each fit_group call, in order


def count_cpu(tasks_module) -> None:
    """Wrap the worker's fit_group to record its CPU time: on a busy machine wall time
    measures the neighbours, CPU time the work (the serial engine runs it in this process)."""
    fit = tasks_module.fit_group

    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return fit(*args, **kwargs)
        finally:
            CPU_SECONDS.append(time.process_time() - started)

    tasks_module.fit_group = timed


def run(mm, apply_overrides, Terminal, raw: dict, folder: Path, overrides: list[str]) -> pd.DataFrame:
    """Split, then a first train (timed); training_output.csv with the train wall time
    (and, with --cpu, each group's CPU seconds in ``cpu_s``)."""
    config = mm.config_from_dict(apply_overrides(raw, overrides), base_dir=folder)
    mm.split(config, Terminal(quiet=True))
    CPU_SECONDS.clear()
    started = time.perf_counter()
    result = mm.train(config, Terminal(quiet=True))
    wall = time.perf_counter() - started
    frame = pd.read_csv(result.output)
    frame.attrs["wall"] = wall
    if CPU_SECONDS:
        frame.attrs["cpu"] = np.array(CPU_SECONDS)
    return frame


def summary(name: str, frame: pd.DataFrame) -> dict:
    d = frame.attrs["cpu"] if "cpu" in frame.attrs else frame["duration_s"].dropna().to_numpy()
    out = {"data": name, "groups": int(len(frame)), "failed": int((frame["status"] == "failed").sum()), "median_s": float(np.median(d)),
           "p95_s": float(np.quantile(d, 0.95)), "sum_s": float(d.sum()), "wall_s": round(frame.attrs["wall"], 1), "winners": frame["model"].value_counts().to_dict()}
    what = "CPU" if "cpu" in frame.attrs else "wall"
    print(f"{name:<10} {what} {out['groups']:4d} groups  median {out['median_s']:.3f} s  p95 {out['p95_s']:.3f} s  sum {out['sum_s']:.0f} s  train wall {out['wall_s']} s  failed {out['failed']}  winners {out['winners']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose manymodels is measured")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "group_cost")
    parser.add_argument("--data", default="dominicks,m3")
    parser.add_argument("--m3-series", type=int, default=100)
    parser.add_argument("--stores", type=int, default=None, help="Dominick's: only the first N stores (x 11 brands)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--cpu", action="store_true", help="serial engine; per group CPU seconds instead of wall (robust to a busy machine)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    import manymodels as mm
    from manymodels.config import apply_overrides
    from manymodels.console import Terminal

    print(f"manymodels from {Path(mm.__file__).parent}", flush=True)
    if args.cpu:
        import importlib

        count_cpu(importlib.import_module("manymodels.runner.tasks"))
        args.set = [*args.set, "engine.kind=serial"]
    results = []
    if "dominicks" in args.data:
        folder = args.out / "dominicks"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        sys.path.insert(1, str(HERE))
        import dominicks_oj as d
        import yaml

        prepared = pd.read_csv(d.prepare(DATA / "dominicks_oj", folder))
        if args.stores:
            prepared = prepared[prepared["store"].isin(sorted(prepared["store"].unique())[: args.stores])]
        end = d.ROUND_ENDS[0]
        path = d.round_input(prepared, end, folder)
        raw = yaml.safe_load((HERE.parent / "configs" / "dominicks_oj.yaml").read_text())
        raw["datastore"] = str(folder / "store")
        raw["data"]["path"] = str(path)
        raw["data"]["group_columns"], raw["data"]["series_columns"] = ["store", "brand"], None
        raw["split"] = {"train_end": end}
        raw["train"]["automl"].pop("candidates", None)  # the checkout's default
        results.append(summary("dominicks", run(mm, apply_overrides, Terminal, raw, folder, args.set)))
    if "m3" in args.data:
        for period, (horizon, season) in M3.items():
            folder = args.out / f"m3_{period}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            frame = pd.read_csv(DATA / "m3" / f"m3_{period}.csv", usecols=["series_id", "t", "value", "split"])
            frame = frame[frame["series_id"].isin(frame["series_id"].drop_duplicates().head(args.m3_series)) & (frame["split"] == "train")]
            n_train = frame.groupby("series_id")["t"].transform("max")
            frame.assign(period=frame["t"] - n_train)[["series_id", "period", "value"]].to_csv(folder / "input.csv", index=False)
            raw = {"datastore": str(folder / "store"), "data": {"path": str(folder / "input.csv"), "time_column": "period", "target_column": "value", "group_columns": ["series_id"], "season_length": season},
                   "train": {"horizon": horizon, "min_history": 12}}  # 12: the default of before issue 12 (20) refuses M3 yearly
            results.append(summary(f"m3 {period}", run(mm, apply_overrides, Terminal, raw, folder, args.set)))
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
