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

from .datastore import Datastore
from .engine import Batch
from .kernels import GroupSpec, fit_group, forecast_group, has_booster, horizon_steps

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
    versions = store.model_versions(key)
    if item.get("adopt") and versions:
        adopted = _finished_by_interrupted_run(store, key, versions[-1], item["fingerprint"])
        if adopted is not None:
            return {**base, **adopted}
    stored = _stored_tuning(store, key, item.get("previous_version"))
    result = fit_group(frame, ctx.spec, stored=stored, tune=_should_tune(item, stored), deadline=ctx.deadline)
    if result["status"] != "trained":
        return {**base, **{k: result[k] for k in ("status", "reason", "error", "duration_s")}}
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


def _finished_by_interrupted_run(store: Datastore, key: str, version: int, fingerprint: str) -> dict | None:
    """The newest model version if it was fitted from exactly these inputs (a killed run's work)."""
    try:
        meta = store.read_model_meta(key, version)
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    return {
        "status": "reused",
        "reason": "",
        "error": "",
        "decision": f"reused: finished by run {meta.get('run_id')}, which was interrupted",
        "model": meta["kind"],
        "model_version": version,
        "trained_in_run": meta.get("run_id"),
        "metrics": meta.get("metrics", {}),
        "scores": meta.get("candidate_scores", {}),
        "n_trials": (meta.get("tuning") or {}).get("n_trials", 0),
        "tuning_source": "adopted",
        "duration_s": 0.0,
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


STEP_COLUMN = "_mm_step"  # periods after the series' last known value; internal, not in the CSV


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
        text = store.read_model_text(key, version) if has_booster(meta) else None
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
    out[STEP_COLUMN] = horizon_steps(history, future, ctx.spec)
    store.write_forecast(key, item["fingerprint"], out)
    return {**base, "status": "forecast", "reason": "", "error": "", "n_missing_prediction": int(np.isnan(matrix[:, 0]).sum())}


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

