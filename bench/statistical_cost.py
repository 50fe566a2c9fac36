"""What the statistical candidates cost and score per series, on M3 monthly.

For each kind of manymodels.core.statistical, on N series of the M3 monthly data
(../shared/data/m3/, h = 18, season 12): the wall time of ``fit_series`` and of
``forecast_series`` (with 80% and 95% intervals) per series, median and p95
in milliseconds, and sMAPE and MASE on the competition hold-out with the M3
conventions of the data's README (per series, then the plain mean; MASE scaled
by the in-sample mean absolute 12-step difference). The series are an evenly
spaced sample of the 1,428 sorted by id (every category). A kind that drops a
series (CandidateUnfit) is scored there with the seasonal naive forecast and
the count is printed; so is the share of hold-out values inside the 80%
interval. One process, one thread; run it with ``nice``.

    nice python bench/statistical_cost.py                 # 200 series, every kind
    nice python bench/statistical_cost.py --n 1428        # all monthly series
    nice python bench/statistical_cost.py --kinds ets theta
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, not an installed copy
from manymodels.core import statistical as st  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the repository (a git worktree one level deeper finds it one level up)
DATA = next((p for p in (REPO.parent / "shared" / "data" / "m3" / "m3_monthly.csv",
                         REPO.parent.parent / "shared" / "data" / "m3" / "m3_monthly.csv") if p.exists()),
            REPO.parent / "shared" / "data" / "m3" / "m3_monthly.csv")
H, M = 18, 12
# MASE on all 1,428 monthly series (statsforecast models, from the fev benchmark; the data's README)
COMBINATIONS = (("ets", "theta"), ("ets", "theta", "arima"), ("ets", "theta", "mstl"))
PUBLISHED_MASE = {"seasonal_naive": 1.146, "ets": 0.863, "theta": 0.855, "arima": 0.875}


def load(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[r["series_id"]].append((int(r["t"]), float(r["value"]), r["split"]))
    out = {}
    for sid, values in rows.items():
        values.sort()
        train = np.array([v for _, v, s in values if s == "train"])
        test = np.array([v for _, v, s in values if s == "test"])
        out[sid] = (train, test)
    return out


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    denom = np.abs(actual) + np.abs(forecast)  # 0/0: an exact forecast (as mm scores it)
    return float(np.mean(np.where(denom > 0, 200 * np.abs(actual - forecast) / np.where(denom > 0, denom, 1), 0.0)))


def mase(actual: np.ndarray, forecast: np.ndarray, train: np.ndarray) -> float:
    """NaN for a constant history (no scale): the means below skip it, and say how many."""
    scale = np.mean(np.abs(train[M:] - train[:-M]))
    return float(np.mean(np.abs(actual - forecast)) / scale) if scale > 0 else float("nan")


def seasonal_naive(train: np.ndarray, h: int) -> np.ndarray:
    return np.array([train[len(train) - M + (i % M)] for i in range(h)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="series (evenly spaced over the 1,428; default 200)")
    ap.add_argument("--kinds", nargs="*", default=list(st.KINDS))
    ap.add_argument("--data", type=Path, default=DATA, help=f"m3_monthly.csv (default {DATA})")
    args = ap.parse_args()

    started = time.perf_counter()
    import statsforecast

    st._sf()  # statsforecast.models: its import is timed apart from the fits
    import_s = time.perf_counter() - started
    data = load(args.data)
    ids = sorted(data)
    pick = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, min(args.n, len(ids)))]
    print(f"M3 monthly: {len(pick)} of {len(ids)} series, h={H}, season {M}; statsforecast {statsforecast.__version__}, import {import_s:.2f} s")

    base = {"smape": [], "mase": []}
    for sid in pick:
        train, test = data[sid]
        f = seasonal_naive(train, H)
        base["smape"].append(smape(test, f))
        base["mase"].append(mase(test, f, train))

    results = {}
    forecasts: dict[str, list[np.ndarray]] = {}
    for kind in args.kinds:
        fit_ms, fc_ms, sm, ms, dropped, specs = [], [], [], [], 0, defaultdict(int)
        inside = []  # hold-out values inside the 80% interval
        t_kind = time.perf_counter()
        for sid in pick:
            train, test = data[sid]
            try:
                t0 = time.perf_counter()
                state = st.fit_series(kind, train, M)
                t1 = time.perf_counter()
                f, intervals = st.forecast_series(state, train, H, (80, 95))
                t2 = time.perf_counter()
                fit_ms.append((t1 - t0) * 1000)
                fc_ms.append((t2 - t1) * 1000)
                specs[str(state.get("spec", ""))[:14]] += 1
                inside.append((test >= intervals["lo-80"]) & (test <= intervals["hi-80"]))
            except st.CandidateUnfit:
                dropped += 1
                f = seasonal_naive(train, H)
            sm.append(smape(test, f))
            ms.append(mase(test, f, train))
            forecasts.setdefault(kind, []).append(f)
        total = np.array(fit_ms) + np.array(fc_ms)
        results[kind] = {
            "fit_med": float(np.median(fit_ms)), "fit_p95": float(np.percentile(fit_ms, 95)),
            "fc_med": float(np.median(fc_ms)), "fc_p95": float(np.percentile(fc_ms, 95)),
            "tot_med": float(np.median(total)), "tot_p95": float(np.percentile(total, 95)),
            "smape": float(np.mean(sm)), "mase": float(np.nanmean(ms)), "dropped": dropped,
            "cover80": float(np.mean(np.concatenate(inside))) if inside else float("nan"),
            "wall_s": time.perf_counter() - t_kind,
            "specs": sorted(specs.items(), key=lambda kv: -kv[1])[:3],
        }
        print(f"  {kind}: {results[kind]['wall_s']:.1f} s", flush=True)

    print()
    print(f"{'kind':<22}{'fit med':>9}{'fit p95':>9}{'fc med':>8}{'fc p95':>8}{'tot med':>9}{'tot p95':>9}"
          f"{'sMAPE':>8}{'MASE':>8}{'publ.':>7}{'cov80':>7}{'drop':>6}   ms per series; most chosen specs")
    print(f"{'seasonal_naive':<22}{'':>9}{'':>9}{'':>8}{'':>8}{'':>9}{'':>9}"
          f"{np.mean(base['smape']):8.2f}{np.nanmean(base['mase']):8.3f}{PUBLISHED_MASE['seasonal_naive']:7.3f}{'':>7}{'':>6}")
    for kind, r in results.items():
        pub = PUBLISHED_MASE.get(kind)
        specs = ", ".join(f"{s} {c}" for s, c in r["specs"])
        print(f"{kind:<22}{r['fit_med']:9.1f}{r['fit_p95']:9.1f}{r['fc_med']:8.1f}{r['fc_p95']:8.1f}{r['tot_med']:9.1f}{r['tot_p95']:9.1f}"
              f"{r['smape']:8.2f}{r['mase']:8.3f}{(f'{pub:7.3f}' if pub else '      -')}{r['cover80']:7.2f}{r['dropped']:6d}   {specs}")
    for combo in COMBINATIONS:
        if all(k in forecasts for k in combo):
            sm, ms = [], []
            for i, sid in enumerate(pick):
                train, test = data[sid]
                f = np.mean([forecasts[k][i] for k in combo], axis=0)
                sm.append(smape(test, f))
                ms.append(mase(test, f, train))
            label = "mean " + "+".join(combo)
            print(f"{label:<22}{'':>9}{'':>9}{'':>8}{'':>8}{'':>9}{'':>9}{np.mean(sm):8.2f}{np.nanmean(ms):8.3f}")
    unscaled = int(np.sum(np.isnan(base["mase"])))
    if unscaled:
        print(f"MASE leaves out {unscaled} series with a constant history (no scale).")
    print(f"\n'publ.': MASE on all 1,428 series (statsforecast via fev, the data's README); "
          f"here {len(pick)} series. cov80: share of hold-out values inside the\n"
          f"80% interval. Wall {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
