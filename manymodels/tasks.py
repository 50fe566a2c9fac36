"""What runs on a worker: read a batch of groups, call the pure kernel, write artefacts.

A batch carries the datastore location and a spec, never the data itself, so
nothing large crosses process (or network) boundaries: each worker reads its
groups' partitions and writes their models or forecasts atomically, and sends
back a small result per group. This is the per-partition function that the
local pool and Dask run alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._version import __version__
from .datastore import Datastore
from .engine import Batch
from .kernels import GroupSpec, fit_group, forecast_group, horizon_steps
from .metrics import scores

_STORES: dict[str, Datastore] = {}


def _store(root: str) -> Datastore:
    store = _STORES.get(root)
    if store is None:
        store = _STORES[root] = Datastore(root)
    return store


# -- train -------------------------------------------------------------------

@dataclass(frozen=True)
class TrainContext:
    root: str
    spec: GroupSpec
    run_id: str
    keep_versions: int
    deadline: float | None = None


def train_batch(batch: Batch) -> list[dict]:
    ctx: TrainContext = batch.context
    return [train_one(ctx, item) for item in batch.items]


def train_one(ctx: TrainContext, item: dict) -> dict:
    store = _store(ctx.root)
    key = item["key"]
    base = {"key": key, "fingerprint": item["fingerprint"], "parts": item["parts"], "decision": item["decision"]}
    try:
        frame = store.read_partition("train", key)
    except Exception as exc:
        return {**base, "status": "failed", "reason": "partition_missing", "error": f"cannot read train partition: {exc}", "duration_s": 0.0}
    stored = _stored_tuning(store, key, item.get("previous_version"))
    result = fit_group(frame, ctx.spec, stored=stored, tune=_should_tune(item, stored), deadline=ctx.deadline)
    if result["status"] != "trained":
        return {**base, **{k: result[k] for k in ("status", "reason", "error", "duration_s")}}
    versions = store.model_versions(key)
    version = (versions[-1] if versions else 0) + 1
    meta = {
        **result["meta"],
        "group": dict(zip(ctx.spec.group_columns, item["values"])),
        "key": key,
        "version": version,
        "run_id": ctx.run_id,
        "fingerprint": item["fingerprint"],
        "parts": item["parts"],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "train_start": item.get("train_start"),
        "train_end": item.get("train_end"),
    }
    store.write_model(key, version, meta, result["model_text"])
    for old in versions[: max(0, len(versions) + 1 - ctx.keep_versions)]:
        store.remove_model(key, old)
    return {
        **base,
        "status": "trained",
        "reason": "",
        "error": "",
        "model": result["model"],
        "model_version": version,
        "metrics": result["metrics"],
        "scores": result["scores"],
        "n_trials": result["n_trials"],
        "tuning_source": meta["tuning"].get("source", ""),
        "note": result.get("note", ""),
        "duration_s": result["duration_s"],
    }


def _stored_tuning(store: Datastore, key: str, version: int | None) -> dict | None:
    if not version:
        return None
    try:
        tuning = store.read_model_meta(key, int(version)).get("tuning") or {}
    except (OSError, ValueError):
        return None
    return tuning if tuning.get("params") else None


def _should_tune(item: dict, stored: dict | None) -> bool:
    policy = item.get("retune", "if_changed")
    if policy == "always":
        return True
    if policy == "never":
        return False
    return stored is None or stored.get("space") != item.get("space")


def train_crash(item: dict, reason: str) -> dict:
    return {
        "key": item["key"],
        "fingerprint": item["fingerprint"],
        "parts": item["parts"],
        "decision": item["decision"],
        "status": "failed",
        "reason": "worker_died" if "died" in reason else "error",
        "error": reason,
        "duration_s": 0.0,
    }


# -- forecast ----------------------------------------------------------------

@dataclass(frozen=True)
class ForecastContext:
    root: str
    spec: GroupSpec
    train_run_id: str
    prediction_column: str
    quantile_columns: tuple[str, ...]
    output_columns: tuple[str, ...]  # inference columns to carry, in order


def forecast_batch(batch: Batch) -> list[dict]:
    ctx: ForecastContext = batch.context
    return [forecast_one(ctx, item) for item in batch.items]


def forecast_one(ctx: ForecastContext, item: dict) -> dict:
    store = _store(ctx.root)
    key, version = item["key"], int(item["model_version"])
    base = {"key": key, "fingerprint": item["fingerprint"], "parts": item["parts"], "model_version": version, "decision": item["decision"]}
    try:
        future = store.read_partition("inference", key)
        history = store.read_partition("train", key) if store.has_partition("train", key) else future.iloc[0:0]
    except Exception as exc:
        return {**base, "status": "failed", "reason": "partition_missing", "error": str(exc)}
    try:
        meta = store.read_model_meta(key, version)
        text = store.read_model_text(key, version) if meta["kind"] == "lightgbm" else None
    except (OSError, ValueError, KeyError) as exc:
        return {**base, "status": "failed", "reason": "model_unreadable", "error": f"model v{version} cannot be read: {exc}"}
    try:
        matrix = forecast_group(history, future, meta, text, ctx.spec)
    except Exception as exc:
        return {**base, "status": "failed", "reason": "error", "error": f"{type(exc).__name__}: {exc}"}
    out = future[[c for c in ctx.output_columns if c in future.columns]].copy()
    out[ctx.prediction_column] = matrix[:, 0]
    for j, name in enumerate(ctx.quantile_columns, start=1):
        out[name] = matrix[:, j]
    out["model_version"] = version
    out["run_id"] = ctx.train_run_id
    store.write_forecast(key, out)
    return {**base, "status": "forecast", "reason": "", "error": "", **_accuracy(future, matrix, ctx, history)}


def _accuracy(future: pd.DataFrame, matrix: np.ndarray, ctx: ForecastContext, history: pd.DataFrame) -> dict:
    """Sums for pooled accuracy over all groups, and this group's own metrics."""
    actual = future[ctx.spec.target_column].to_numpy(dtype=np.float64)
    pred = matrix[:, 0]
    steps = horizon_steps(history, future, ctx.spec)
    beyond = int(np.sum(steps > ctx.spec.horizon))
    out = {"n_rows": len(future), "n_missing_prediction": int(np.isnan(pred).sum()), "n_beyond_horizon": beyond}
    ok = ~(np.isnan(actual) | np.isnan(pred))
    if not ok.any():
        return out
    a, p = actual[ok], pred[ok]
    err = np.abs(p - a)
    nz = a != 0
    denom = np.abs(a) + np.abs(p)
    out.update(
        {
            "n_actual": int(ok.sum()),
            "sum_ape": float(np.sum(err[nz] / np.abs(a[nz]))),
            "n_ape": int(nz.sum()),
            "sum_sape": float(np.sum(np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0))),
            "sum_abs_err": float(err.sum()),
            "sum_abs_actual": float(np.abs(a).sum()),
            "sum_sq_err": float(np.sum((p - a) ** 2)),
            "metrics": scores(a, p),
        }
    )
    if ctx.quantile_columns:
        inside = {}
        for j, name in enumerate(ctx.quantile_columns, start=1):
            q = matrix[ok, j]
            inside[name] = int(np.sum(a <= q))
        out["below_quantile"] = inside
    return out


def forecast_crash(item: dict, reason: str) -> dict:
    return {
        "key": item["key"],
        "fingerprint": item["fingerprint"],
        "parts": item["parts"],
        "model_version": item["model_version"],
        "decision": item["decision"],
        "status": "failed",
        "reason": "worker_died" if "died" in reason else "error",
        "error": reason,
    }


__all__ = ["TrainContext", "ForecastContext", "train_batch", "forecast_batch", "train_crash", "forecast_crash", "__version__"]
