"""Reuse on 1,000 groups: what a nightly rerun costs when little has changed.

Through the real CLI (subprocesses, as cron runs it), on simulated OJ sales:

1. first `mm train` (after `mm split`) on N groups;
2. a second `mm train` with nothing changed: reported as a ratio to the first
   (target: under 5%);
3. the data of 10 groups changed: `mm run` must retrain exactly those 10;
4. the inference rows replaced (new planned prices): every forecast is new,
   no model is retrained.

    python bench/reuse.py                  # 1,000 groups, AutoML as configured below
    python bench/reuse.py --repeats 3      # median of 3 no-op reruns
    python bench/reuse.py --fast           # fixed LightGBM parameters (a harder ratio: a cheaper first run)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from manymodels.extras.sample import data_settings, generate_oj_sales  # noqa: E402


def mm(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "manymodels", *args, "--json", "--quiet"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"mm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=1000, help="number of groups (stores x 4 brands)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="AutoML off: fixed LightGBM parameters")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "reuse")
    args = parser.parse_args()

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    stores = args.groups // 4
    frame = generate_oj_sales(stores=stores, brands=4, weeks=121, future_weeks=8, seed=11)
    data = args.out / "sales.parquet"
    frame.to_parquet(data)
    config = {
        "datastore": "store",
        "data": data_settings(data),
        "train": {
            "horizon": 8,
            "min_history": 20,
            "automl": {"enabled": not args.fast, "n_trials": 8, "folds": 2, "timeout_per_group": None},
        },
    }
    config_path = args.out / "mm.yaml"
    config_path.write_text(yaml.safe_dump(config))
    c = str(config_path)
    n_groups = stores * 4
    print(f"{n_groups} groups, {len(frame):,} rows, AutoML {'off' if args.fast else 'on (8 trials, 2 folds)'}")

    mm("split", "-c", c)
    first_s, first = mm("train", "-c", c)
    assert first["trained"] == n_groups, first
    mm("forecast", "-c", c)
    noop = []
    for _ in range(args.repeats):
        seconds, again = mm("train", "-c", c)
        assert again["reused"] == n_groups and again["trained"] == 0, again
        noop.append(seconds)
    noop_s = statistics.median(noop)
    print(f"first mm train        {first_s:8.2f} s   ({n_groups} trained)")
    print(f"rerun, nothing changed{noop_s:8.2f} s   (median of {args.repeats}; {again['reused']} reused)  ratio {noop_s / first_s:.1%}  (target < 5%)")

    # 10 groups get new history
    keys = frame[["Store", "Brand"]].drop_duplicates().sample(10, random_state=1)
    changed = frame.merge(keys.assign(_hit=True), on=["Store", "Brand"], how="left")
    hit = changed["_hit"].eq(True) & changed["Quantity"].notna()
    changed.loc[hit, "Quantity"] = changed.loc[hit, "Quantity"] + 1
    changed.drop(columns="_hit").to_parquet(data)
    seconds, run = mm("run", "-c", c)
    trained = run["train"]["trained"]
    training = pd.read_csv(args.out / "store" / "outputs" / "training_output.csv")
    retrained = set(map(tuple, training.loc[training["status"] == "trained", ["Store", "Brand"]].to_numpy()))
    expected = set(map(tuple, keys.to_numpy()))
    print(f"10 groups changed     {seconds:8.2f} s   mm run retrained {trained} groups; exactly the changed ones: {retrained == expected}")

    # new inference rows: planned prices change for every group
    before = pd.read_csv(args.out / "store" / "outputs" / "forecasting_output.csv")
    future = changed["Quantity"].isna()
    replanned = changed.drop(columns="_hit")
    replanned.loc[future, "Price"] = np.round(replanned.loc[future, "Price"] * 0.9, 2)
    replanned.to_parquet(data)
    seconds, run = mm("run", "-c", c)
    after = pd.read_csv(args.out / "store" / "outputs" / "forecasting_output.csv")
    moved = float((before["Prediction"] != after["Prediction"]).mean())
    print(
        f"inference replaced    {seconds:8.2f} s   retrained {run['train']['trained']}, forecast {run['forecast']['forecast']} groups anew, "
        f"{moved:.0%} of predictions changed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
