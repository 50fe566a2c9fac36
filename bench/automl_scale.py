"""A first full AutoML ``mm train`` on the accelerator's data shape, and where its time goes.

Data: N stores x 3 brands x 121 weeks of simulated orange-juice sales (``mm
sample``, as bench/scale.py; N = 3,991 is the accelerator's 11,973 series).
Config: the default one (AutoML on, ``candidates: auto``, 20 Optuna trials, 3
folds, 10 s per group), with the sample's columns and ``train.horizon`` 20 (the
sample's own config; ``--horizon``), ``split.train_end: auto``.

Two measurements, both on a fresh datastore (a first train: every group searched):

- **wall** (``--stores N``): ``mm train`` run as a command on the local engine
  (``--jobs``, default all cores), timed; seconds per group (median, p95) from
  training_output.csv's ``duration_s``, the train's wall time, its CPU time (the
  whole process tree's), and the projection of the wall time to 11,973 groups
  (linear in groups: every group is one independent search), labelled as such.
- **phases** (``--profile-groups K``, on the first K groups): the same train in
  this process on the serial engine, each phase's CPU seconds measured by
  wrapping the functions that do it (exclusive time: a fit inside the search
  counts as the fit, not as the search). Phases: the LightGBM search (Optuna's
  own work), LightGBM Dataset construction, LightGBM training, LightGBM
  prediction (the recursive steps), feature matrices, the statistical models
  (statsforecast), the other candidates (baselines, linear), calibration and
  choice, and what is left (reading partitions, writing models, outputs).

Needs statsforecast for ``candidates: auto``'s ETS and Theta (the pandas-2 venv).

    python bench/automl_scale.py --stores 100 --profile-groups 150
    python bench/automl_scale.py --stores 100 --profile-groups 150 --no-wall --repo /tmp/before   # the code before a change
    nice python bench/automl_scale.py --stores 3991 --profile-groups 0   # the full size (59 min at fd37685, a quiet machine)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # --repo: the checkout whose manymodels is measured (imported and run)

BRANDS = 3
WEEKS = 121
FULL_GROUPS = 11_973  # the accelerator's
REFERENCE_S = 71 * 60  # the accelerator's own AutoML run on a 16-process cluster


def make_data(folder: Path, stores: int) -> Path:
    from manymodels.extras.sample import generate_oj_sales, write_sample

    path = folder / "sales.csv"
    if not path.exists():
        write_sample(generate_oj_sales(stores=stores, brands=BRANDS, weeks=WEEKS, future_weeks=0, seed=0), path, "csv")
    return path


def settings(data: Path, horizon: int, jobs: int | None, kind: str, overrides: list[str]) -> dict:
    """The default config with the sample's columns (nothing under train.automl is set)."""
    from manymodels.config import apply_overrides
    from manymodels.extras.sample import data_settings

    raw = {
        "datastore": "store",
        "data": data_settings(data),
        "train": {"horizon": horizon, "min_history": 30},
        "engine": {"kind": kind, "jobs": jobs},
    }
    return apply_overrides(raw, overrides)


def fresh(folder: Path, data: Path, args, kind: str) -> Path:
    """A new datastore with the data split, and its config file."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = folder / "mm.yaml"
    config.write_text(yaml.safe_dump(settings(data, args.horizon, args.jobs, kind, args.set), sort_keys=False))
    run([sys.executable, "-m", "manymodels", "split", "--config", str(config), "--quiet"])
    return config


def run(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def pool_durations(store: Path) -> list[float]:
    """Each pooled model's fit time (``duration_s`` of its record), in the order the pools are stored."""
    return [float(json.loads(p.read_text()).get("duration_s", 0.0)) for p in sorted(store.glob("pools/*/*/v*.json"))]


def wall_run(data: Path, args) -> dict:
    sys.path.insert(1, str(HERE))
    from scale import (
        timed,  # the command's wall time and its whole process tree's CPU (workers included)
    )

    folder = args.out / f"wall_{args.stores}"
    config = fresh(folder, data, args, "local")
    load = os.getloadavg()[0]
    stats = timed([sys.executable, "-m", "manymodels", "train", "--config", str(config), "--quiet"], env={"PYTHONPATH": str(REPO)}, interval=1.0)
    wall, cpu = stats["wall_s"], stats["cpu_s"]
    out = pd.read_csv(folder / "store" / "outputs" / "training_output.csv")
    d = out["duration_s"].dropna().to_numpy()
    n = len(out)
    result = {
        "stores": args.stores, "groups": n, "failed": int((out["status"] == "failed").sum()),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_per_group_s": round(cpu / n, 3),
        "duration_median_s": round(float(np.median(d)), 3), "duration_p95_s": round(float(np.quantile(d, 0.95)), 3),
        "projected_wall_s_11973": round(wall / n * FULL_GROUPS, 0), "load_at_start": round(load, 2),
        "projected_quiet_wall_s_11973": round(cpu / n * FULL_GROUPS / (args.jobs or os.cpu_count() or 1), 0),
        "winners": out["model"].value_counts().to_dict(), "n_trials_median": float(out["n_trials"].median()) if "n_trials" in out else None,
    }
    pools = pool_durations(folder / "store")
    result["pool_fits_s"] = pools
    print(f"wall: {n} groups in {wall:.1f} s (CPU {cpu:.0f} s, {cpu / n:.3f} s a group; duration_s median {result['duration_median_s']} s, p95 {result['duration_p95_s']} s; "
          f"load {load:.2f} at start)", flush=True)
    if pools:
        print(f"  of which the pooled fits, before the first group: {' + '.join(f'{p:.1f}' for p in pools)} = {sum(pools):.1f} s", flush=True)
    if n >= FULL_GROUPS:
        verdict = "under" if wall < REFERENCE_S else "NOT under"
        print(f"MEASURED at the full size: {wall / 60:.1f} min, {verdict} the reference {REFERENCE_S / 60:.0f} min", flush=True)
    else:
        print(f"PROJECTION to {FULL_GROUPS:,} groups (linear in groups, not measured): {result['projected_wall_s_11973'] / 60:.1f} min at this run's wall time a group, "
              f"{result['projected_quiet_wall_s_11973'] / 60:.1f} min at its CPU a group on {args.jobs or os.cpu_count()} free cores; the reference {REFERENCE_S / 60:.0f} min", flush=True)
    return result


# -- phases --------------------------------------------------------------------

class Phases:
    """Exclusive CPU seconds per phase: wrapped functions push their phase while they run."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[tuple[str, float]] = []

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)
        phases = self

        def wrapped(*a, **k):
            phases.enter(phase)
            try:
                return original(*a, **k)
            finally:
                phases.leave()

        setattr(owner, name, wrapped)

    def enter(self, phase: str) -> None:
        now = time.process_time()
        if self.stack:
            outer, since = self.stack[-1]
            self.seconds[outer] += now - since
        self.stack.append((phase, now))

    def leave(self) -> None:
        now = time.process_time()
        phase, since = self.stack.pop()
        self.seconds[phase] += now - since
        if self.stack:
            self.stack[-1] = (self.stack[-1][0], now)


def instrument(phases: Phases) -> None:
    import lightgbm as lgb

    from manymodels.core import automl, calibration, features, models, statistical

    phases.wrap(automl, "tune_lightgbm", "Optuna search (its own work)")
    phases.wrap(lgb.Dataset, "construct", "LightGBM Dataset construction")
    phases.wrap(lgb, "train", "LightGBM training")
    phases.wrap(lgb.Booster, "predict", "LightGBM prediction")
    for name in ("__init__", "predict"):  # the single-row predictor of a recursive step (not in older checkouts)
        if hasattr(models, "RowPredictor"):
            phases.wrap(models.RowPredictor, name, "LightGBM prediction")
    for module in (models, features):
        for name in ("design_matrix", "step_features", "static_columns"):  # the steps' lag columns, not in older checkouts
            if hasattr(module, name):
                phases.wrap(module, name, "feature matrices")
    phases.wrap(statistical, "fit_series", "statistical fits (statsforecast)")
    phases.wrap(statistical, "forecast_series", "statistical fits (statsforecast)")
    phases.wrap(models, "fit_linear", "other candidates (baselines, linear)")
    phases.wrap(models, "predict_baseline", "other candidates (baselines, linear)")
    phases.wrap(automl.Evaluation, "calibrated", "calibration and choice")
    phases.wrap(automl, "pick_winner", "calibration and choice")
    phases.wrap(calibration, "factor", "calibration and choice")
    from manymodels.runner import tasks

    phases.wrap(tasks, "fit_group", "rest of fit_group (panels, folds, choice, the model's text)")  # tasks holds its own name


def phase_run(data: Path, args) -> dict:
    import manymodels as mm
    from manymodels.console import Terminal

    frame = pd.read_csv(data)
    stores = sorted(frame["Store"].unique())[: max(1, -(-args.profile_groups // BRANDS))]
    small = args.out / "profile_input.csv"
    frame[frame["Store"].isin(stores)].to_csv(small, index=False)
    folder = args.out / "profile"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = mm.config_from_dict(settings(small, args.horizon, 1, "serial", args.set), base_dir=folder)
    mm.split(config, Terminal(quiet=True))
    phases = Phases()
    instrument(phases)
    started_cpu, started = time.process_time(), time.perf_counter()
    phases.enter("I/O and orchestration (outside fit_group)")
    result = mm.train(config, Terminal(quiet=True))
    phases.leave()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    out = pd.read_csv(result.output)
    n = len(out)
    table = sorted(phases.seconds.items(), key=lambda kv: -kv[1])
    print(f"\nphases: {n} groups, serial, CPU {cpu:.1f} s ({cpu / n:.3f} s a group), wall {wall:.1f} s", flush=True)
    print("| phase | CPU s | s a group | share |\n|---|---|---|---|")
    for phase, s in table:
        print(f"| {phase} | {s:.1f} | {s / n:.3f} | {100 * s / cpu:.1f}% |")
    return {"groups": n, "cpu_s": cpu, "wall_s": wall, "phases": dict(table), "winners": out["model"].value_counts().to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=100, help="stores x 3 brands (3991: the accelerator's 11,973 groups)")
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=None, help="processes of the wall run (default: all cores)")
    parser.add_argument("--profile-groups", type=int, default=150, help="groups of the serial phase profile (0: none)")
    parser.add_argument("--no-wall", action="store_true", help="only the phase profile")
    parser.add_argument("--set", action="append", default=[], help="a config override, e.g. train.automl.n_trials=10")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "automl_scale")
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout whose manymodels is measured (a worktree of an older commit)")
    args = parser.parse_args(argv)
    global REPO
    REPO = args.repo.resolve()
    sys.path.insert(0, str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"data_{args.stores}").mkdir(parents=True, exist_ok=True)
    data = make_data(args.out / f"data_{args.stores}", args.stores)
    results = {}
    if args.profile_groups:
        results["phases"] = phase_run(data, args)
    if not args.no_wall:
        results["wall"] = wall_run(data, args)
    (args.out / f"summary_{args.stores}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
