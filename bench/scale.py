"""Scale: mm against the bare LightGBM fits, on the Many Models accelerator's data shape.

What is compared
----------------
Data: N stores x 3 brands x 121 weeks of simulated orange-juice sales
(`mm sample`; N = 3,991 gives the accelerator's 11,973 series and 1.44 M rows),
the last 8 weeks of every series held out (`split.holdout: 8`, `train.horizon: 8`).

The **reference** ("the bare fits") is the modelling work alone: for every group,
the same feature matrices (built with manymodels' own feature functions), the same
two LightGBM fits with the same fixed parameters and rounds (`lightgbm.train`: a
backtest fit on all but the last `horizon` periods, then the refit on all rows),
and the same recursive predictions (the backtest window and the held-out
weeks). The data is prepared in memory before the clock starts and inherited
by a process pool (fork) with one process per core and one LightGBM thread per
fit; tasks are lists of group indices. No datastore, no files, no
serialisation of models, no orchestration.

**mm** is `mm train` + `mm forecast` run as commands (subprocesses, as cron runs
them) on a datastore made by `mm split`, with AutoML off and the same fixed
parameters. Its wall time includes process start-up, reading partitions,
writing and reading models, forecasts and the output tables.

So ``ratio = (mm train + mm forecast) / reference`` is 1 + the cost of
orchestration, I/O and feature building outside the fits. The target for
11,973 groups is at most 1.25. Both are measured in the same run, alternating,
and the medians over ``--repeats`` are reported; the machine may be shared, so
ratios of medians are what to quote, not single times. With ``--verify`` (on by
default) the reference's predictions are compared with mm's
forecasting_output.csv, to show both did the same work.

Memory is the peak, over the step, of the summed proportional set size (PSS,
from /proc/<pid>/smaps_rollup) of the whole process tree: the mm command and
every process under it (the worker pool included), sampled every 50 ms. PSS
splits pages shared between processes (a forkserver's imports) among them, so
the sum is what the tree really occupies; the summed RSS (which counts shared
pages once per process) is printed beside it. The anonymous part of PSS (heap,
not mapped library files) is printed too: the file part is a share that
depends on how many other processes on the machine map the same libraries, so
on a shared machine the sizes are compared on the anonymous part as well.

Usage
-----
    python bench/scale.py --stores 3991 --rounds 100 --repeats 2   # 11,973 groups: ratio, split time
    python bench/scale.py --stores 3334 33334 --rounds 10 --no-reference --repeats 1
                                                             # memory at 10,002 vs 100,002 groups
    python bench/scale.py --stores 100 --repeats 1           # a quick check (300 groups)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

HORIZON = 8
BRANDS = 3
WEEKS = 121


# -- data and config -----------------------------------------------------------

def make_data(folder: Path, stores: int) -> Path:
    from manymodels.extras.sample import generate_oj_sales, write_sample

    path = folder / "sales.csv"
    if not path.exists():
        frame = generate_oj_sales(stores=stores, brands=BRANDS, weeks=WEEKS, future_weeks=0, seed=0)
        write_sample(frame, path, "csv")
    return path


def mm_settings(data: Path, rounds: int, jobs: int) -> dict:
    from manymodels.extras.sample import data_settings

    return {
        "datastore": "store",
        "data": data_settings(data),
        "split": {"holdout": HORIZON},
        "train": {"horizon": HORIZON, "min_history": 30, "num_boost_round": rounds, "automl": {"enabled": False}},
        "engine": {"kind": "local", "jobs": jobs},
    }


def mm_config(folder: Path, data: Path, rounds: int, jobs: int) -> Path:
    path = folder / "mm.yaml"
    path.write_text(yaml.safe_dump(mm_settings(data, rounds, jobs), sort_keys=False))
    return path


# -- process-tree memory -------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _memory_kb(pid: int) -> tuple[int, int, int]:
    """(PSS, RSS, anonymous PSS) of one process in kB; zeros if it is gone.

    Anonymous PSS (Pss_Anon + Pss_Shmem) is the memory the process allocated
    itself. The rest of PSS is its share of mapped files (Python, numpy, Arrow,
    LightGBM libraries), which shrinks or grows with how many *other* processes
    on the machine map the same files: comparisons between runs use the
    anonymous part, which only this tree's work changes.
    """
    pss = rss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    anon += int(line.split()[1])
    except OSError:
        pass
    return pss, rss, anon


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):
        return None


class TreeMemory:
    """Peak summed PSS and RSS of a process and all its descendants, and their CPU time, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.peak_pss = self.peak_rss = self.peak_anon = 0
        self.max_processes = 0
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per process (a process's last 50 ms may be missed)
        self.peaks: dict[int, int] = {}  # peak PSS (kB) per process: who holds the memory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            sizes = [_memory_kb(p) for p in pids]
            for p, (pss, _, _) in zip(pids, sizes):
                self.peaks[p] = max(self.peaks.get(p, 0), pss)
            for p in pids:
                seconds = _cpu_s(p)
                if seconds is not None:
                    self.cpu[p] = seconds
            self.peak_pss = max(self.peak_pss, sum(s[0] for s in sizes))
            self.peak_rss = max(self.peak_rss, sum(s[1] for s in sizes))
            self.peak_anon = max(self.peak_anon, sum(s[2] for s in sizes))
            self.max_processes = max(self.max_processes, sum(1 for s in sizes if s[1]))
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        per_process = sorted((kb / 1024 for p, kb in self.peaks.items() if p != self.pid), reverse=True)
        return {
            "peak_pss_mb": self.peak_pss / 1024,
            "peak_rss_mb": self.peak_rss / 1024,
            "peak_anon_mb": self.peak_anon / 1024,
            "processes": self.max_processes,
            "cpu_s": sum(self.cpu.values()),
            "parent_peak_pss_mb": self.peaks.get(self.pid, 0) / 1024,
            "child_peak_pss_mb": [round(x) for x in per_process[:4]],
        }


def timed(cmd: list[str], env: dict | None = None, interval: float = 0.05) -> dict:
    """Run a command; its wall time, peak tree memory and (if any) its JSON output.

    ``interval``: seconds between samples of the process tree. Each sample reads
    /proc for every process; at 50 ms that is about 17% of a core, fine for runs of
    a minute, too much beside an hour-long run on two cores (automl_scale uses 1 s).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    memory = TreeMemory(proc.pid, interval)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stats = memory.stop()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    try:
        document = json.loads(out) if out.strip() else {}
    except ValueError:
        document = {}
    return {"wall_s": wall, **stats, "json": document}


def _who(stats: dict) -> str:
    return f"; anonymous {stats['peak_anon_mb']:.0f} MB; per process: mm {stats['parent_peak_pss_mb']:.0f} MB, others {stats['child_peak_pss_mb']} MB"


def mm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "manymodels", *args, "--json", "--quiet"]


# -- the reference -------------------------------------------------------------

_GROUPS: list = []  # (train frame, future frame) per group, inherited by the forked workers
_SPEC = None


def prepare_reference(data: Path, rounds: int):
    """Every group's train and held-out rows, in memory, as mm split would make them."""
    from manymodels.config import config_from_dict
    from manymodels.steps.reader import find_input_files, read_input
    from manymodels.steps.split import PERIOD
    from manymodels.core.timeindex import infer_axis, parse_times
    from manymodels.steps.train import group_spec

    # the settings mm runs with, read here without writing them over mm's config file
    config = config_from_dict(mm_settings(data, rounds, 1), base_dir=data.parent)
    d = config.data
    frame = read_input(find_input_files(str(data)), text_columns=d.series_key, required=[]).drop_columns(list(d.drop_columns)).to_pandas()
    frame[d.target_column] = frame[d.target_column].astype(np.float64)
    frame[d.time_column] = parse_times(frame[d.time_column], d.time_column, str(data))
    series = frame.groupby(d.series_key, sort=True).ngroup().to_numpy()
    axis = infer_axis(frame[d.time_column], series, None, None, d.time_column, str(data))
    frame[PERIOD] = axis.to_periods(frame[d.time_column])
    spec = group_spec(config, {"axis": axis.to_dict()})
    columns = [*d.series_key, d.time_column, d.target_column, *d.known_future_columns, PERIOD]
    groups = []
    for _, part in frame.sort_values([*d.group_columns, PERIOD]).groupby(list(d.group_columns), sort=True):
        last = part[PERIOD].max()
        held_out = part[PERIOD].to_numpy() > last - HORIZON
        groups.append((part.loc[~held_out, columns].reset_index(drop=True), part.loc[held_out, columns].reset_index(drop=True)))
    return spec, groups


def reference_group(train: pd.DataFrame, future: pd.DataFrame, spec) -> np.ndarray:
    """The modelling work of one group, as mm's kernels do it, without files or serialisation."""
    from manymodels.core.kernels import backtest_folds, describe_group, group_data
    from manymodels.core.models import default_lightgbm_params, fit_lightgbm, predict

    y = train[spec.target_column].to_numpy(dtype=np.float64)
    info = describe_group(train, spec)
    data = group_data(train, spec, info, y)
    transform = "log1p" if data.nonnegative else "none"
    params = {**default_lightgbm_params(int(np.sum(~np.isnan(y))), spec.seed), **spec.params}
    for fold_train, fold_test in backtest_folds(data, spec.horizon, 1):
        fitted = fit_lightgbm(data, fold_train, params, spec.num_boost_round, transform)
        predict(fitted, data, fold_train, np.flatnonzero(fold_test))
    final = fit_lightgbm(data, np.ones(len(y), dtype=bool), params, spec.num_boost_round, transform)
    # the forecast: recursive predictions of the held-out rows from the history
    frame = pd.concat([train, future], ignore_index=True)
    y_all = np.concatenate([y, np.full(len(future), np.nan)])
    known = np.zeros(len(frame), dtype=bool)
    known[: len(train)] = True
    return predict(final, group_data(frame, spec, info, y_all), known, np.arange(len(train), len(frame)))


def _reference_chunk(indices: list[int]) -> list[tuple[int, np.ndarray]]:
    return [(i, reference_group(*_GROUPS[i], _SPEC)) for i in indices]


def run_reference(jobs: int) -> tuple[float, float, dict[int, np.ndarray]]:
    """Wall time and CPU time of the bare fits over every group in a fork pool, and their predictions."""
    chunks = [list(range(i, min(i + 16, len(_GROUPS)))) for i in range(0, len(_GROUPS), 16)]
    context = multiprocessing.get_context("fork")
    predictions: dict[int, np.ndarray] = {}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    pool = context.Pool(jobs)
    for part in pool.imap_unordered(_reference_chunk, chunks):
        predictions.update(part)
    pool.close()
    pool.join()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), predictions


def reference_main(args) -> int:
    """`scale.py reference`: run in its own process so its memory is measured alone."""
    global _GROUPS, _SPEC
    os.environ["OMP_NUM_THREADS"] = "1"
    _SPEC, _GROUPS = prepare_reference(Path(args.data), args.rounds)
    wall, cpu, predictions = run_reference(args.jobs)
    if args.predictions:
        rows = []
        for i, pred in predictions.items():
            future = _GROUPS[i][1]
            rows.append(pd.DataFrame({"Store": future["Store"], "Brand": future["Brand"], "WeekStarting": future["WeekStarting"], "reference": pred}))
        pd.concat(rows, ignore_index=True).to_parquet(args.predictions)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "groups": len(_GROUPS)}))
    return 0


def compare_predictions(reference: Path, forecast_csv: Path) -> dict:
    ref = pd.read_parquet(reference)
    ours = pd.read_csv(forecast_csv, dtype={"Store": str, "Brand": str}, parse_dates=["WeekStarting"])
    ref["WeekStarting"] = pd.to_datetime(ref["WeekStarting"])
    joined = ref.merge(ours[["Store", "Brand", "WeekStarting", "Prediction"]], on=["Store", "Brand", "WeekStarting"], how="outer", indicator=True)
    both = joined["_merge"] == "both"
    diff = np.abs(joined.loc[both, "reference"] - joined.loc[both, "Prediction"]) / np.maximum(np.abs(joined.loc[both, "reference"]), 1e-9)
    return {"rows_compared": int(both.sum()), "rows_unmatched": int((~both).sum()), "max_rel_diff": float(diff.max()) if both.any() else float("nan")}


# -- the benchmark ---------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_size(stores: int, args) -> dict:
    folder = args.out / f"stores{stores}"
    folder.mkdir(parents=True, exist_ok=True)
    data = make_data(folder, stores)
    config = mm_config(folder, data, args.rounds, args.jobs)
    env = {"OMP_NUM_THREADS": "1"}
    print(f"\n== {stores:,} stores x {BRANDS} brands = {stores * BRANDS:,} groups; {args.rounds} rounds; {args.jobs} jobs; load {os.getloadavg()[0]:.2f}", flush=True)
    splits, trains, forecasts, refs, totals = [], [], [], [], []
    verify = {}
    for r in range(args.repeats):
        shutil.rmtree(folder / "store", ignore_errors=True)
        split = timed(mm_cmd("split", "-c", str(config)), env)
        splits.append(split)
        print(f"  [{r + 1}] mm split     {split['wall_s']:8.1f} s   peak {split['peak_pss_mb']:7.0f} MB PSS ({split['peak_rss_mb']:.0f} MB RSS){_who(split)}", flush=True)
        if not args.no_reference:
            preds = folder / "reference.parquet"
            ref = timed([sys.executable, __file__, "reference", "--data", str(data), "--jobs", str(args.jobs), "--rounds", str(args.rounds), "--predictions", str(preds)], env)
            ref["wall_s_total"], ref["cpu_s_total"] = ref["wall_s"], ref["cpu_s"]
            ref["wall_s"], ref["cpu_s"] = ref["json"]["wall_s"], ref["json"]["cpu_s"]
            refs.append(ref)
            print(f"  [{r + 1}] reference    {ref['wall_s']:8.1f} s   peak {ref['peak_pss_mb']:7.0f} MB PSS (fits only), {ref['cpu_s']:.1f} CPU s; {ref['wall_s_total']:.1f} s with data preparation", flush=True)
        train = timed(mm_cmd("train", "-c", str(config)), env)
        forecast = timed(mm_cmd("forecast", "-c", str(config)), env)
        trains.append(train)
        forecasts.append(forecast)
        total = train["wall_s"] + forecast["wall_s"]
        totals.append(total)
        line = f"  [{r + 1}] mm train     {train['wall_s']:8.1f} s   peak {train['peak_pss_mb']:7.0f} MB PSS ({train['peak_rss_mb']:.0f} MB RSS), {train['cpu_s']:.1f} CPU s{_who(train)}\n"
        line += f"  [{r + 1}] mm forecast  {forecast['wall_s']:8.1f} s   peak {forecast['peak_pss_mb']:7.0f} MB PSS ({forecast['peak_rss_mb']:.0f} MB RSS), {forecast['cpu_s']:.1f} CPU s{_who(forecast)}"
        if refs:
            cpu = train["cpu_s"] + forecast["cpu_s"]
            line += f"\n  [{r + 1}] train+forecast {total:6.1f} s = {total / refs[-1]['wall_s']:.3f} x reference; CPU {cpu:.1f} s = {cpu / refs[-1]['cpu_s']:.3f} x reference"
        print(line, flush=True)
        if refs and args.verify and r == 0:
            verify = compare_predictions(folder / "reference.parquet", folder / "store" / "outputs" / "forecasting_output.csv")
            print(f"      predictions vs reference: {verify}", flush=True)
    result = {
        "stores": stores,
        "groups": stores * BRANDS,
        "rounds": args.rounds,
        "jobs": args.jobs,
        "repeats": args.repeats,
        "split_s": median([s["wall_s"] for s in splits]),
        "train_s": median([t["wall_s"] for t in trains]),
        "forecast_s": median([f["wall_s"] for f in forecasts]),
        "train_forecast_s": median(totals),
        "peak_pss_mb": {
            "split": max(s["peak_pss_mb"] for s in splits),
            "train": max(t["peak_pss_mb"] for t in trains),
            "forecast": max(f["peak_pss_mb"] for f in forecasts),
        },
        "peak_rss_mb": {
            "split": max(s["peak_rss_mb"] for s in splits),
            "train": max(t["peak_rss_mb"] for t in trains),
            "forecast": max(f["peak_rss_mb"] for f in forecasts),
        },
        "peak_anon_mb": {
            "split": max(s["peak_anon_mb"] for s in splits),
            "train": max(t["peak_anon_mb"] for t in trains),
            "forecast": max(f["peak_anon_mb"] for f in forecasts),
        },
        "verify": verify,
    }
    if refs:
        result["reference_s"] = median([x["wall_s"] for x in refs])
        result["ratio_of_medians"] = result["train_forecast_s"] / result["reference_s"]
        result["ratios"] = [t / x["wall_s"] for t, x in zip(totals, refs)]
        result["median_ratio"] = median(result["ratios"])
        result["reference_peak_pss_mb"] = max(x["peak_pss_mb"] for x in refs)
    return result


def report(results: list[dict]) -> None:
    print("\n== summary (medians)")
    for r in results:
        line = f"{r['groups']:>8,} groups: split {r['split_s']:.1f} s, train {r['train_s']:.1f} s, forecast {r['forecast_s']:.1f} s"
        if "reference_s" in r:
            line += f"; train+forecast {r['train_forecast_s']:.1f} s vs reference {r['reference_s']:.1f} s = {r['ratio_of_medians']:.3f}x (median of per-run ratios {r['median_ratio']:.3f}x)"
        print(line)
        peaks = r["peak_pss_mb"]
        anon = r["peak_anon_mb"]
        print(f"{'':>16} peak PSS MB: split {peaks['split']:.0f}, train {peaks['train']:.0f}, forecast {peaks['forecast']:.0f}")
        print(f"{'':>16} of which anonymous MB: split {anon['split']:.0f}, train {anon['train']:.0f}, forecast {anon['forecast']:.0f}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        for kind in ("peak_pss_mb", "peak_anon_mb"):
            name = "PSS" if kind == "peak_pss_mb" else "anonymous PSS"
            for step in ("split", "train", "forecast"):
                ratio = large[kind][step] / small[kind][step]
                print(f"peak {name} {step}: {large['groups']:,} groups / {small['groups']:,} groups = {ratio:.3f}x")
            worst_small, worst_large = max(small[kind].values()), max(large[kind].values())
            print(f"peak {name} over all steps: {worst_large:.0f} MB / {worst_small:.0f} MB = {worst_large / worst_small:.3f}x")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "reference":
        parser = argparse.ArgumentParser()
        parser.add_argument("reference")
        parser.add_argument("--data", required=True)
        parser.add_argument("--jobs", type=int, required=True)
        parser.add_argument("--rounds", type=int, required=True)
        parser.add_argument("--predictions", default=None)
        return reference_main(parser.parse_args())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, nargs="+", default=[3991], help="stores per size (x 3 brands = groups)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=300, help="train.num_boost_round")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-reference", action="store_true", help="only mm (memory runs)")
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "scale")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [bench_size(n, args) for n in args.stores]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
