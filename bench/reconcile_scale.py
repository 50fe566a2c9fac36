"""What reconciliation costs at scale: manymodels.core.reconcile on ~30,000 bottom series.

A generated hierarchy of R regions x S stores x K SKUs (default 30 x 10 x 100 =
30,000 bottom series) with three levels above the bottom (total, region,
region x store: 331 aggregate nodes), or with ``--crossed`` the levels total,
region, SKU, region x SKU (3,131 aggregates: grouped, not nested). Base
forecasts are the summed truth plus noise, h = 12; residuals and history are
T = 36 periods with 5% missing. For building S and for each method: wall time
and the peak of memory allocated during it (tracemalloc: numpy and scipy
report their buffers to it). mint_shrink is then measured on smaller
hierarchies (30 x 10 x K for a few K) to place MINT_MAX_NODES, since the full
one is above it: there it raises CovarianceTooLarge, which is what the table
shows for it. One process; run it with ``nice``.

    nice python bench/reconcile_scale.py
    nice python bench/reconcile_scale.py --crossed --mint-skus 0
    nice python bench/reconcile_scale.py --regions 3 --skus 10 --mint-skus 16,33   # quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, not an installed copy
from manymodels.core import reconcile as rc  # noqa: E402


def _table(regions: int, stores: int, skus: int) -> dict[str, np.ndarray]:
    region = np.repeat(np.arange(regions), stores * skus)
    store = np.tile(np.repeat(np.arange(stores), skus), regions)
    sku = np.tile(np.arange(skus), regions * stores)
    return {"region": region, "store": store, "sku": sku}


def _levels(crossed: bool) -> list[list[str]]:
    return [[], ["region"], ["sku"], ["region", "sku"]] if crossed else [[], ["region"], ["region", "store"]]


def _measure(fn):
    """(result, seconds, peak MiB allocated during the call)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
    except rc.CovarianceTooLarge as exc:
        result = exc
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def _data(hier: rc.Hierarchy, h: int, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.gamma(2.0, 5.0, size=(hier.n_bottom, h))
    base = np.asarray(hier.S @ truth)
    base += rng.normal(0, 4.0, size=base.shape) * np.sqrt(hier.sizes)[:, None]  # some bottoms < 0
    errors = rng.normal(0, 1.0, size=(hier.n_bottom, T))
    residuals = np.asarray(hier.S @ errors) + rng.normal(0, 0.5, size=(hier.n_nodes, T))
    residuals[rng.random(residuals.shape) < 0.05] = np.nan
    history = rng.gamma(2.0, 5.0, size=(hier.n_bottom, T))
    history[rng.random(history.shape) < 0.05] = np.nan
    return base, residuals, history


def _row(name: str, seconds: float, peak: float, note: str = "") -> None:
    print(f"| {name} | {seconds:,.3f} | {peak:,.1f} | {note} |", flush=True)


def _mint_sweep(args, levels) -> None:
    """mint_shrink (plain and nonnegative) on R x S x K for each K of --mint-skus."""
    skus = [int(k) for k in args.mint_skus.split(",") if int(k) > 0]
    if skus:
        print(f"\nmint_shrink on {args.regions} x {args.stores} x K (T = {args.T}, 5% missing residuals)\n")
        print("| K | nodes | wall s | peak MiB | nonnegative: wall s | peak MiB |\n|---|---|---|---|---|---|")
    for k in skus:
        small = rc.build_hierarchy(_table(args.regions, args.stores, k), levels)
        base, residuals, _ = _data(small, args.h, args.T)
        _, seconds, peak = _measure(lambda: rc.mint_shrink(small, base, residuals, max_nodes=10**9))
        _, nn_seconds, nn_peak = _measure(lambda: rc.mint_shrink(small, base, residuals, nonnegative=True, max_nodes=10**9))
        print(f"| {k} | {small.n_nodes:,} | {seconds:,.1f} | {peak:,.0f} | {nn_seconds:,.1f} | {nn_peak:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=30)
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--skus", type=int, default=100)
    parser.add_argument("--h", type=int, default=12)
    parser.add_argument("--T", type=int, default=36, help="periods of residuals and history")
    parser.add_argument("--crossed", action="store_true", help="levels total, region, sku, region x sku")
    parser.add_argument("--mint-skus", default="16,40,66",
                        help="SKUs per store of the smaller hierarchies mint_shrink is timed on (0: none)")
    args = parser.parse_args()

    table = _table(args.regions, args.stores, args.skus)
    levels = _levels(args.crossed)
    hier, seconds, peak = _measure(lambda: rc.build_hierarchy(table, levels))
    print(f"{hier.n_bottom:,} bottom series, {hier.n_aggregate:,} aggregate nodes, levels {levels}, h = {args.h}, T = {args.T}\n")
    print("| step | wall s | peak MiB | note |\n|---|---|---|---|")
    _row("build S", seconds, peak, f"{hier.S.nnz:,} non-zeros")
    base, residuals, history = _data(hier, args.h, args.T)
    runs = [
        ("bottom_up", {}),
        ("top_down average_proportions", {"rule": "average_proportions", "history": history}),
        ("top_down proportion_averages", {"rule": "proportion_averages", "history": history}),
        ("top_down forecast_proportions", {"rule": "forecast_proportions"}),
        ("middle_out from region", {"level": 1}),
        ("ols", {}),
        ("wls_struct", {}),
        ("wls_var", {"residuals": residuals}),
        ("mint_shrink", {"residuals": residuals}),
    ]
    for name, options in runs:
        method = name.split()[0]
        for nonnegative in (False, True):
            y, seconds, peak = _measure(lambda m=method, o=options, nn=nonnegative: rc.reconcile(hier, base, m, nonnegative=nn, **o))
            label = name + (", nonnegative" if nonnegative else "")
            if isinstance(y, rc.CovarianceTooLarge):
                _row(label, seconds, peak, f"CovarianceTooLarge ({hier.n_nodes:,} > {y.limit:,} nodes): callers use wls_var")
                break
            _row(label, seconds, peak, f"total {y[0].mean():,.0f} (base {base[0].mean():,.0f}), smallest {y.min():,.1f}")
    broken = base.copy()
    broken[hier.level_nodes[1][0]] = np.nan  # a failed region
    broken[hier.n_nodes - 1] = np.nan  # and a bottom series of the last region
    y, seconds, peak = _measure(lambda: rc.reconcile_failed(hier, broken, "wls_var", residuals=residuals, history=history))
    _row("reconcile_failed wls_var (a region and a bottom series failed)", seconds, peak,
         f"{len(y.fallback):,} nodes bottom-up, {len(y.filled)} filled, coherence gap {rc.coherence_gap(hier, y.forecasts):.1e}")

    _mint_sweep(args, levels)
    print(f"\nprocess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:,.2f} GiB")


if __name__ == "__main__":
    main()
