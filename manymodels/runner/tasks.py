"""What runs on a worker: read a batch of groups, call the pure kernel, write artefacts.

A batch carries the datastore location and a spec, never the data itself, so
nothing large crosses process (or network) boundaries: each worker reads its
groups' partitions and writes their models or forecasts atomically, and sends
back a small result per group. This is the per-partition function that the
local pool and Dask run alike. Split's two passes over its buckets run here
too (``split_scan_batch``, ``split_write_batch``).

Every function may run twice for the same item (Dask reruns the tasks of a
worker that died): each is idempotent. Train adopts the model version this
same run already wrote; forecasts and partitions are content-addressed or
rewritten whole.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..core import partitioning, pooling
from ..core.accuracy import seasonal_naive_at_cutoff
from ..core.explain import explain_forecast, importance
from ..core.kernels import (
    GroupSpec,
    PoolInput,
    Seeds,
    SeriesCodes,
    checked_forecast,
    fit_group,
    has_booster,
    horizon_steps,
    load_fitted,
)
from ..core.metrics import history_scale, scores, unscored
from ..core.models import Fitted
from ..core.partitioning import BucketSpec
from ..core.results import ForecastRow, Reason, Status, TrainRow
from ..store import cache
from ..store.datastore import Datastore
from ..store.memory import release_memory
from .engine import Batch

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
    forecast: ForecastContext | None = None  # set: each group's forecast is staged with its new model (stage_forecast)
    forecast_config: str = ""  # the config part of the forecasts' fingerprints (cache.FORECAST)

    def row(self, item: dict, **outcome) -> TrainRow:
        """The row of ``item``'s group in this run."""
        return TrainRow.of_item(item, run_id=self.run_id, **outcome)

    def failed(self, item: dict, reason: Reason, error: str, **outcome) -> TrainRow:
        return self.row(item, status=Status.FAILED, reason=reason, error=error, **outcome)

    def crash(self, item: dict, message: str) -> TrainRow:
        """The row of a group the engine could not run (the engines' ``crash_result``)."""
        return self.failed(item, _crash_reason(message), message)


def train_batch(batch: Batch) -> list[TrainRow]:
    ctx: TrainContext = batch.context
    return _released([train_one(ctx, item) for item in batch.items])


def _released(results: list) -> list:
    """The batch's results, once the memory it used is back with the system (flat workers)."""
    release_memory()
    return results


REWRITE = "the split is marked incomplete: run 'mm split' (or 'mm run') again, which writes it back"


def _what(exc: Exception) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def _crash_reason(message: str) -> Reason:
    """The engines' message for a group they could not run says when its worker died (engine.WORKER_DIED)."""
    return Reason.WORKER_DIED if "died" in message else Reason.ERROR


def train_one(ctx: TrainContext, item: dict) -> TrainRow:
    store = _store(ctx.root)
    key = item["key"]
    try:
        frame = store.read_partition("train", key)
    except Exception as exc:
        return ctx.failed(item, Reason.PARTITION_MISSING, f"{_what(exc)}; {REWRITE}")
    versions = store.model_versions(key)
    if versions:
        done = _already_fitted(ctx, store, versions[-1], item)
        if done is not None:
            return done
    stored = _stored_tuning(store, key, item.get("previous_version"))
    tune = _should_tune(item, stored)
    refs = item.get("pools") or {}
    try:
        pooled = {name: _pool_input(store, ref, frame, ctx.spec, tune) for name, ref in refs.items()}
    except Exception as exc:  # a pool that cannot be read costs the group its pooled candidates, not its model
        pooled, refs = {}, {}
        item = {**item, "pool_error": _what(exc)}
    with np.errstate(all="ignore"):  # huge values overflow metrics to inf; that is reported, not printed
        result = fit_group(frame, ctx.spec, stored=stored, tune=tune, deadline=ctx.deadline, pooled=pooled, seeds=_seeds(item))
    if item.get("pool_error"):
        result["note"] = "; ".join(n for n in (result.get("note", ""), f"pooled candidates left out: {item['pool_error']}") if n)
    if result["status"] != Status.TRAINED:
        return ctx.failed(item, Reason(result["reason"]), result["error"], duration_s=result["duration_s"], demand_class=result.get("demand_class", ""))
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
        "duration_s": result["duration_s"],
        "pools": refs,  # the pools this group belongs to in this run (the step chooses among them)
    }
    if pooling.is_pooled(result["model"]):
        meta["pool_ref"] = refs[result["model"]]
    elif pooling.is_blend(result["model"]):
        meta = pooling.with_blend_refs(meta, refs)
    try:  # shares of gain (LightGBM) or of |coefficient| (linear) per feature: a label, never a failure
        meta["importance"] = importance(meta, result["model_text"], frame, ctx.spec, result.get("gain"))
    except Exception as exc:
        meta["importance"] = {"_error": f"{type(exc).__name__}: {exc}"}
    written = store.write_model(key, version, meta, result["model_text"])
    for old in versions[: max(0, len(versions) + 1 - ctx.keep_versions)]:
        store.remove_model(key, old)
    if ctx.forecast is not None and pooling.is_local(result["model"]):  # a pool's model is not in memory here
        stage_forecast(ctx, store, item, frame, json.loads(written), result.get("booster"))
    return ctx.row(
        item,
        status=Status.TRAINED,
        trained_in_run=ctx.run_id,
        model=result["model"],
        model_version=version,
        metrics=result["metrics"],
        n_backtest=result["n_backtest"],
        unscored=result["unscored"],
        selection_metric=result["selection_metric"],
        scores=result["scores"],
        n_trials=result["n_trials"],
        tuning=pooling.tuning_text(meta),
        note=result.get("note", ""),
        candidate_errors=result.get("candidate_errors") or {},
        demand_class=result.get("demand_class", ""),
        duration_s=result["duration_s"],
        pool=pool_versions_text(meta),
    )


def stage_forecast(ctx: TrainContext, store: Datastore, item: dict, history: pd.DataFrame, meta: dict, booster) -> None:
    """``mm forecast``'s work for this group, done while its new model is in memory (the forecast
    step would read the history again and parse the booster back): staged under the fingerprint
    the forecast step computes, which adopts it if nothing it is made from changed in between.

    ``meta`` is the metadata as stored (read back from its JSON text), so the forecast is the one
    the forecast step would make from the files. Any failure leaves the work to the forecast step,
    which reports it; the model stays trained."""
    if not item.get("n_inference"):
        return
    version = meta["version"]
    fingerprint = cache.fingerprint(cache.forecast_parts(item["fingerprint"], version, item["inference_hash"], item["parts"]["data"], ctx.forecast_config))
    try:
        inference, future = _inference(store, item["key"])
        made = make_forecast(ctx.forecast, inference, future, history, meta, Fitted(meta["kind"], meta["state"], booster=booster), version)
        store.stage_forecast(item["key"], fingerprint, made.table, {"model": meta["kind"], "fields": made.fields})
    except Exception:
        return


def _already_fitted(ctx: TrainContext, store: Datastore, version: int, item: dict) -> TrainRow | None:
    """The newest model version, if it was fitted from exactly these inputs.

    Fitted by this very run: the task is running again (Dask reran it after its
    worker died), so it reports that model as its own work: retries are
    idempotent. Fitted by an earlier, interrupted run: adopted, when reuse is allowed.
    """
    key = item["key"]
    try:
        meta = store.read_model_meta(key, version)
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != item["fingerprint"] or not store.has_model(key, version, booster=has_booster(meta)):
        return None
    tuning = meta.get("tuning") or {}
    if meta.get("run_id") == ctx.run_id:
        return _stored_model_row(ctx, item, meta, version, status=Status.TRAINED, tuning=tuning.get("source", ""), duration_s=meta.get("duration_s", 0.0))
    if not item.get("adopt"):
        return None
    return _stored_model_row(ctx, item, meta, version, decision=f"reused: finished by run {meta.get('run_id')}, which was interrupted")


def _stored_model_row(ctx: TrainContext, item: dict, meta: dict, version: int, **outcome) -> TrainRow:
    """The row of a model already on disk, from its metadata: reused (adopted) unless ``outcome`` says otherwise."""
    return ctx.row(
        item,
        **{
            "status": Status.REUSED,
            "model": meta["kind"],
            "model_version": version,
            "trained_in_run": meta.get("run_id"),
            "metrics": meta.get("metrics", {}),
            "n_backtest": (meta.get("tuning") or {}).get("n_backtest", 0),
            "unscored": (meta.get("tuning") or {}).get("unscored") or {},
            "selection_metric": meta.get("selection_metric", ""),
            "scores": meta.get("candidate_scores", {}),
            "n_trials": (meta.get("tuning") or {}).get("n_trials", 0),
            "tuning": "adopted",
            "note": (meta.get("tuning") or {}).get("note", ""),
            "candidate_errors": (meta.get("tuning") or {}).get("candidate_errors") or {},
            "demand_class": meta.get("demand_class", ""),
            "pool": pool_versions_text(meta),
            **outcome,
        },
    )


def pool_version_ref(ref: dict | None) -> str:
    """How a row names the pool version its model points to (empty: not a pooled model)."""
    return f"{ref['pool']}/v{ref['version']}" if ref else ""


def pool_versions_text(meta: dict) -> str:
    """The pool versions a model record points to, comma-separated (a blend has several)."""
    return ",".join(pool_version_ref(ref) for ref in pooling.blend_refs(meta))


def _seeds(item: dict) -> Seeds | None:
    seeds = item.get("seeds")
    return Seeds(tuple(seeds["params"]), int(seeds["n_trials"]), int(seeds["n_sampled"])) if seeds else None


# -- pooled models -------------------------------------------------------------------

_POOLS: dict[tuple[str, int], dict] = {}  # (pool, version) -> what this worker read of it, newest last
POOL_CACHE = 4  # pools kept per worker: a worker runs the groups of a batch, mostly of the same pools


def _pool(store: Datastore, pool: str, version: int, backtest: bool = False) -> dict:
    """A pool's metadata, series index and (when asked) backtest, read once per worker."""
    cached = _POOLS.get((pool, version))
    if cached is None or (backtest and "backtest" not in cached):
        meta = store.read_pool_meta(pool, version)
        cached = {"meta": meta, "index": {tuple(label): i for i, label in enumerate(meta["info"]["series"])}}
        if backtest:
            table = store.read_pool_backtest(pool, version)
            frame = table.to_pandas().sort_values("series", kind="stable") if table is not None else None
            cached["backtest"] = (frame, frame["series"].to_numpy() if frame is not None else None)
        _POOLS.pop((pool, version), None)
        _POOLS[(pool, version)] = cached
        while len(_POOLS) > POOL_CACHE:
            _POOLS.pop(next(iter(_POOLS)))
    return cached


def _pool_input(store: Datastore, ref: dict, frame, spec: GroupSpec, tune: bool) -> PoolInput:
    """One pool as a group's fit sees it: its backtest rows of the group's series when the group
    is searched (else only that it exists: a stored choice of it is refit with it)."""
    if not tune:
        return PoolInput(None, {}, "none")
    pool = _pool(store, ref["pool"], int(ref["version"]), backtest=True)
    frame_bt, codes = pool["backtest"]
    transform = pool["meta"]["state"].get("transform", "none")
    if frame_bt is None:
        return PoolInput(None, {}, transform)
    level = tuple(ref["level"])
    n_rest = len(pooling.outside(level, spec.group_columns))  # a pool series' label: the group's other values, then its own
    labels = {pool["index"][label]: label[n_rest:] for label in map(tuple, pooling.member_labels(frame, level, spec)) if label in pool["index"]}
    wanted = np.array(sorted(labels), dtype=np.int64)
    starts, ends = np.searchsorted(codes, wanted, "left"), np.searchsorted(codes, wanted, "right")
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(wanted) else np.empty(0, dtype=np.int64)
    return PoolInput(frame_bt.iloc[rows], labels, transform, pool["meta"].get("calibration_prior"))


def pooled_model(store: Datastore, meta: dict) -> tuple[dict, Fitted]:
    """A group's pooled model ready to forecast: the group's record (its calibration and
    quantile shifts) over its pool's model (state, features, booster, parsed once per worker)."""
    ref = meta["pool_ref"]
    pool = _pool(store, ref["pool"], int(ref["version"]))
    if "fitted" not in pool:
        text = store.read_pool_text(ref["pool"], int(ref["version"]))
        if not booster_text_ok(text):
            raise ValueError("the pool's LightGBM model text is truncated or not a LightGBM model")
        pool["fitted"] = load_fitted(pool["meta"], text)
    effective = {**meta, "kind": pool["meta"]["kind"], "state": pool["meta"]["state"], "info": pool["meta"]["info"], "pool": {**ref, "level": pool["meta"]["level"]}}
    return effective, pool["fitted"]


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


# -- pools -----------------------------------------------------------------------


@dataclass(frozen=True)
class PoolContext:
    root: str
    spec: GroupSpec  # the groups' spec (each pool's is derived from it)
    settings: pooling.PoolSettings
    run_id: str
    keep_versions: int

    def crash(self, item: dict, message: str) -> dict:
        return {"pool": item["pool"], "status": "failed", "error": message}


def pool_batch(batch: Batch) -> list[dict]:
    ctx: PoolContext = batch.context
    return _released([fit_pool_one(ctx, item) for item in batch.items])


def fit_pool_one(ctx: PoolContext, item: dict) -> dict:
    """Fit one pool from its members' train partitions and write it as a new version."""
    store = _store(ctx.root)
    pool, level = item["pool"], tuple(item["level"])
    versions = store.pool_versions(pool)
    if versions:  # run again for the same inputs (a retried task): the version it wrote stands
        try:
            last = store.read_pool_meta(pool, versions[-1])
        except (OSError, ValueError):
            last = {}
        if last.get("fingerprint") == item["fingerprint"] and last.get("run_id") == ctx.run_id:
            return _pool_outcome(item, versions[-1], last)
    try:
        frames = [store.read_partition("train", key) for key in item["members"]]
        frame = pooling.with_statics(pd.concat(frames, ignore_index=True), level, ctx.spec.group_columns)
        stored = None
        if item.get("stored_version"):
            stored = store.read_pool_meta(pool, int(item["stored_version"])).get("tuning")
        with np.errstate(all="ignore"):
            result = pooling.fit_pool(frame, pooling.pool_spec(ctx.spec, level), ctx.settings, stored, item["tune"], item["backtest"])
    except Exception as exc:  # one pool's failure costs its members that candidate, nothing else
        return {"pool": pool, "status": "failed", "error": _what(exc)}
    version = (versions[-1] if versions else 0) + 1
    meta = {
        **result["meta"],
        "name": item["name"],
        "level": list(level),
        "values": item["values"],
        "n_groups": len(item["members"]),
        "fingerprint": item["fingerprint"],
        "run_id": ctx.run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    backtest = pa.Table.from_pandas(result["backtest"], preserve_index=False) if result["backtest"] is not None else None
    store.write_pool(pool, version, meta, result["model_text"], backtest)
    return _pool_outcome(item, version, meta)


def _pool_outcome(item: dict, version: int, meta: dict) -> dict:
    tuning = meta.get("tuning") or {}
    return {"pool": item["pool"], "status": "trained", "version": version, "n_series": meta.get("n_series"), "n_trials": tuning.get("n_trials", 0), "source": tuning.get("source", ""), "duration_s": meta.get("duration_s", 0.0)}


# -- forecast ----------------------------------------------------------------

@dataclass(frozen=True)
class ForecastContext:
    root: str
    spec: GroupSpec
    train_run_id: str
    prediction_column: str
    quantile_columns: tuple[str, ...]
    output_columns: tuple[str, ...]  # inference columns to carry, in order
    cap_factor: float | None = None  # forecast.cap_factor
    explain: int = 0  # forecast.explain: top drivers per row (0: none)

    def failed(self, item: dict, reason: Reason, error: str) -> ForecastRow:
        return ForecastRow.of_item(item, status=Status.FAILED, reason=reason, error=error)

    def crash(self, item: dict, message: str) -> ForecastRow:
        """The row of a group the engine could not run (the engines' ``crash_result``)."""
        return self.failed(item, _crash_reason(message), message)


def forecast_batch(batch: Batch) -> list[ForecastRow]:
    ctx: ForecastContext = batch.context
    return _released([forecast_one(ctx, item) for item in batch.items])


STEP_COLUMN = "_mm_step"  # periods after the series' last known value; internal, not in the CSV


def forecast_one(ctx: ForecastContext, item: dict) -> ForecastRow:
    store = _store(ctx.root)
    key, version = item["key"], int(item["model_version"])
    try:
        inference, future = _inference(store, key)
        # no train rows in this split (the model is from an earlier one): nothing to read, not a missing file
        history = store.read_partition("train", key) if item.get("n_train", 1) else future.iloc[0:0]
    except Exception as exc:
        return ctx.failed(item, Reason.PARTITION_MISSING, f"{_what(exc)}; {REWRITE}")
    try:
        meta, fitted = load_model(store, key, version)
    except FileNotFoundError as exc:
        return ctx.failed(item, Reason.MODEL_MISSING, f"model v{version} is missing ({exc.filename}); run 'mm train' to fit it again")
    except (ValueError, KeyError, TypeError) as exc:  # the bytes are there but are not a model: move them aside
        moved = store.quarantine_model(key, version)
        where = f"; moved aside as {', '.join(m.rsplit('/', 1)[-1] + '.corrupt' for m in moved)}, so the next 'mm train' fits this group again" if moved else ""
        return ctx.failed(item, Reason.MODEL_UNREADABLE, f"model v{version} cannot be read ({type(exc).__name__}: {exc}){where}")
    except OSError as exc:
        return ctx.failed(item, Reason.MODEL_UNREADABLE, f"model v{version} cannot be read: {exc}")
    try:
        made = make_forecast(ctx, inference, future, history, meta, fitted, version)
    except NoPrediction as exc:
        return ctx.failed(item, Reason.NO_PREDICTION, str(exc))
    except Exception as exc:
        return ctx.failed(item, Reason.ERROR, f"{type(exc).__name__}: {exc}")
    store.write_forecast(key, item["fingerprint"], made.table)
    return ForecastRow.of_item(item, status=Status.FORECAST, **made.fields)


def _inference(store: Datastore, key: str) -> tuple[pa.Table, pd.DataFrame]:
    """A group's inference partition, as read (its columns go to the output) and as a frame."""
    inference = store.read_partition_table("inference", key)
    return inference, inference.to_pandas(use_threads=False)  # a few KB (see Datastore.read_partition)


class NoPrediction(Exception):
    """Some inference rows got no finite prediction (the message says which and why)."""


@dataclass(frozen=True)
class MadeForecast:
    """A group's forecast table and its ``ForecastRow`` fields (the checks' findings, the measures)."""

    table: pa.Table
    fields: dict


def make_forecast(ctx: ForecastContext, inference: pa.Table, future: pd.DataFrame, history: pd.DataFrame, meta: dict, fitted: Fitted, version: int) -> MadeForecast:
    """The forecast of a group's inference rows with its model, checked and measured: what
    ``mm forecast`` writes for it, whether it runs there or in the train task that fitted the
    model (``stage_forecast``). Raises NoPrediction when some rows get no finite prediction."""
    done = checked_forecast(history, future, meta, fitted, ctx.spec, ctx.cap_factor)
    if done.missing.any():
        raise NoPrediction(no_prediction(future, done.missing, meta, ctx.spec))
    matrix, checks = done.matrix, done.checks
    steps = horizon_steps(history, future, ctx.spec, done.series)
    table = _forecast_table(inference, matrix, version, steps, ctx)
    table = table.append_column(SNAIVE_COLUMN, pa.array(_seasonal_naive(history, future, steps, done.series, meta, ctx.spec), pa.float64()))
    table = with_mase_scale(table, _mase_scale(history, done.series, meta, ctx.spec))
    if ctx.explain:
        try:
            explained = explain_forecast(history, future, meta, fitted, ctx.spec, matrix[:, 0])
        except Exception:  # drivers explain a forecast: they never cost the group its forecast (empty columns)
            explained = None
        table = with_drivers(table, explained, ctx.explain)
    found = {"n_out_of_range": checks.n_out_of_range, "n_capped": checks.n_capped, "checks": {"out_of_range": checks.out_of_range, "capped": checks.capped}}
    return MadeForecast(table, {"n_missing_prediction": 0, **found, **measure_forecast(table, ctx)})


def forecast_actuals(table: pa.Table, ctx: ForecastContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, actual, prediction) of a forecast table's rows that have both an actual and a prediction."""
    actual = table[ctx.spec.target_column].to_numpy(zero_copy_only=False).astype(float)
    pred = table[ctx.prediction_column].to_numpy(zero_copy_only=False).astype(float)
    ok = ~(np.isnan(actual) | np.isnan(pred))
    return ok, actual[ok], pred[ok]


def with_drivers(table: pa.Table, explained, k: int) -> pa.Table:
    """The forecast table with its rows' top ``k`` drivers (fewer when the model has fewer; none
    when ``explained`` is None)."""
    n = table.num_rows
    names, effects = explained.top(k) if explained is not None else ([[] for _ in range(n)], np.empty((n, 0)))
    table = table.append_column("driver_base", pa.array(explained.base if explained is not None else np.full(n, np.nan), pa.float64()))
    for i in range(k):
        have = i < effects.shape[1]
        table = table.append_column(f"driver_{i + 1}", pa.array([n[i] if have else None for n in names], pa.string()))
        table = table.append_column(f"driver_{i + 1}_effect", pa.array(effects[:, i] if have else np.full(table.num_rows, np.nan), pa.float64()))
    return table


SNAIVE_COLUMN = "_mm_seasonal_naive"  # the seasonal naive forecast from the same cutoff (realised accuracy's FVA); not in the CSV


def _seasonal_naive(history, future, steps: np.ndarray, series: SeriesCodes, meta: dict, spec: GroupSpec) -> np.ndarray:
    season = (meta["info"].get("features") or {}).get("season_length")
    values = history[spec.target_column].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = ~np.isnan(values)
    period = history[spec.period_column].to_numpy(dtype=np.int64)
    return seasonal_naive_at_cutoff(series.history[ok], period[ok], values[ok], series.future, future[spec.period_column].to_numpy(dtype=np.int64), np.asarray(steps, dtype=np.float64), season)


MASE_SCALE_KEY = b"mm_mase_scale"  # in a forecast file's schema metadata: the history's MASE scale (JSON)


def _mase_scale(history, series: SeriesCodes, meta: dict, spec: GroupSpec) -> float | None:
    """The in-sample scale of the group's history, with the season length its model was fitted with."""
    season = (meta["info"].get("features") or {}).get("season_length")
    period = history[spec.period_column].to_numpy(dtype=np.int64)
    values = history[spec.target_column].to_numpy(dtype=np.float64, na_value=np.nan)
    return history_scale(series.history, period, values, season)


def with_mase_scale(table: pa.Table, scale: float | None) -> pa.Table:
    """The forecast table carrying its MASE scale, so that a reused forecast is scored from
    its file alone (the history it was made from is not read again)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), MASE_SCALE_KEY: json.dumps(scale).encode()})


def stored_mase_scale(table: pa.Table) -> float | None:
    raw = (table.schema.metadata or {}).get(MASE_SCALE_KEY)
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return float(value) if isinstance(value, (int, float)) else None  # none in a file of an older mm: not scored


def measure_forecast(table: pa.Table, ctx: ForecastContext) -> dict:
    """A group's forecast against the actuals among its inference rows: the ``ForecastRow``
    fields ``metrics``, ``n_actual``, ``unscored`` and, per quantile column, the actuals at or below it."""
    ok, actual, pred = forecast_actuals(table, ctx)
    if not ok.any():
        return {"metrics": {}, "n_actual": 0, "unscored": {}, "below_quantile": {}}
    below = {name: int(np.sum(actual <= table[name].to_numpy(zero_copy_only=False).astype(float)[ok])) for name in ctx.quantile_columns}
    scale = stored_mase_scale(table)
    with np.errstate(all="ignore"):
        metrics = scores(actual, pred, scale)
    return {"metrics": metrics, "n_actual": int(ok.sum()), "unscored": unscored(actual, pred, scale), "below_quantile": below}


def read_model(store: Datastore, key: str, version: int) -> tuple[dict, str | None]:
    """A model version's metadata and LightGBM text (None when it has no booster).

    Raises FileNotFoundError when a file is missing, ValueError, KeyError or TypeError
    when the bytes are there but are not a model, OSError when they cannot be read.
    The booster is written before the metadata, so metadata that can be read means
    a whole booster beside it, unless something else damaged it (checked here)."""
    meta = store.read_model_meta(key, version)
    return meta, _booster_text(store, key, version, meta)


def _booster_text(store: Datastore, key: str, version: int, meta: dict) -> str | None:
    text = store.read_model_text(key, version) if has_booster(meta) else None
    if text is not None and not booster_text_ok(text):
        raise ValueError("the LightGBM model text is truncated or not a LightGBM model")
    return text


def load_model(store: Datastore, key: str, version: int) -> tuple[dict, Fitted]:
    """A model version ready to forecast (``read_model``'s errors); a pooled one through its pool."""
    meta = store.read_model_meta(key, version)
    if pooling.is_pooled(meta["kind"]):
        return pooled_model(store, meta)
    text = _booster_text(store, key, version, meta)
    if pooling.is_blend(meta["kind"]):
        return meta, blend_model(store, meta, text)
    return meta, load_fitted(meta, text)


def blend_model(store: Datastore, meta: dict, text: str | None) -> Fitted:
    """A blend ready to forecast: its parts, each (meta, fitted) as that model forecasts alone:
    the group's local model (its own booster ``text``), then each pool with the group's own
    calibration of it (``kernels.forecast_fitted`` averages their points)."""
    local = pooling.local_part(meta)
    parts = [(local, load_fitted(local, text))]
    for name, ref in meta["blend"]["pools"].items():
        parts.append(pooled_model(store, {**meta, "pool_ref": ref, "calibration": {"factor": meta["blend"]["calibration"][name]}}))
    return Fitted(meta["kind"], meta["state"], parts=parts)


def booster_text_ok(text: str) -> bool:
    """LightGBM's text format starts with 'tree' and ends its trees with 'end of trees' (not cut short)."""
    return text.startswith("tree") and "end of trees" in text


def no_prediction(future, missing: np.ndarray, meta: dict, spec) -> str:
    """Why some inference rows got no (finite) prediction: series without history, or overflow."""
    n, total = int(missing.sum()), len(missing)
    columns = [c for c in (*spec.group_columns, *spec.series_columns) if c in future.columns]
    series = future.loc[missing, columns].drop_duplicates().head(3)
    labels = "; ".join(",".join(f"{c}={v}" for c, v in zip(columns, row)) for row in series.itertuples(index=False))
    return (
        f"{n} of {total} inference rows got no finite prediction from the {meta.get('kind')} model (series {labels}): "
        "a series with no history before the cutoff, or values too large to forecast"
    )


def _forecast_table(inference: pa.Table, matrix: np.ndarray, version: int, steps: np.ndarray, ctx: ForecastContext) -> pa.Table:
    """The inference rows' columns, then predictions, quantiles, model version, run id and step."""
    out = inference.select([c for c in ctx.output_columns if c in inference.column_names]).replace_schema_metadata(None)
    n = out.num_rows
    out = out.append_column(ctx.prediction_column, pa.array(matrix[:, 0], pa.float64()))
    for j, name in enumerate(ctx.quantile_columns, start=1):
        out = out.append_column(name, pa.array(matrix[:, j], pa.float64()))
    out = out.append_column("model_version", pa.array(np.full(n, version, dtype=np.int64)))
    out = out.append_column("run_id", pa.array([ctx.train_run_id] * n, pa.string()))
    return out.append_column(STEP_COLUMN, pa.array(np.asarray(steps, dtype=np.float64)))


# -- split ---------------------------------------------------------------------

@dataclass(frozen=True)
class SplitContext:
    root: str
    scratch: str  # where pass 1 left the buckets (relative to the datastore root)
    spec: BucketSpec
    schema: pa.Schema  # every bucket is read with this schema (the input files' unified one)
    has_previous: bool  # an earlier split exists: unchanged partitions are not rewritten


def bucket_folder(scratch: str, bucket: int) -> str:
    return f"{scratch}/b{bucket:05d}"


def groups_piece(scratch: str, bucket: int) -> str:
    return f"{scratch}/groups/{bucket:05d}.parquet"


def split_scan_batch(batch: Batch) -> list[dict]:
    ctx: SplitContext = batch.context
    return _released([{"bucket": b, "status": "ok", **partitioning.scan(_bucket_frame(ctx, b), ctx.spec)} for b in batch.items])


def split_write_batch(batch: Batch) -> list[dict]:
    ctx: SplitContext = batch.context
    return _released([split_write_one(ctx, b) for b in batch.items])


def split_write_one(ctx: SplitContext, bucket: int) -> dict:
    """Write the bucket's changed partitions and its piece of the groups table."""
    store = _store(ctx.root)
    plan = partitioning.plan(_bucket_frame(ctx, bucket), ctx.spec)
    previous = store.split_group_hashes(plan.groups["key"].tolist()) if ctx.has_previous else {}
    written = 0
    for kind, part, hash_column, count_column in (
        ("train", plan.train, "train_hash", "n_train"),
        ("inference", plan.inference, "inference_hash", "n_inference"),
    ):
        table = pa.Table.from_pandas(part[list(ctx.spec.columns)], preserve_index=False) if len(part) else None
        starts, ends = partitioning.group_slices(part, len(plan.groups))
        for i, (key, digest, count) in enumerate(zip(plan.groups["key"], plan.groups[hash_column], plan.groups[count_column])):
            old = previous.get(key, {}).get(hash_column)
            if count == 0:
                if old:
                    store.remove_partition(kind, key)
                continue
            if old == digest and store.has_partition(kind, key):
                continue
            store.write_partition(kind, key, table.slice(int(starts[i]), int(ends[i] - starts[i])))
            written += 1
    store.write_scratch_parquet(groups_piece(ctx.scratch, bucket), pa.Table.from_pandas(plan.groups, preserve_index=False))
    return {"bucket": bucket, "status": "ok", "groups_written": written, **plan.summary}


def split_crash(bucket: int, reason: str) -> dict:
    return {"bucket": bucket, "status": "failed", "error": reason}


def _bucket_frame(ctx: SplitContext, bucket: int):
    store = _store(ctx.root)
    folder = bucket_folder(ctx.scratch, bucket)
    pieces = [_conform(store.read_scratch(f"{folder}/{name}"), ctx.schema) for name in store.scratch_names(folder)]
    return pa.concat_tables(pieces).to_pandas()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The piece with exactly ``schema``'s columns and types (a file may lack a column: nulls)."""
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
