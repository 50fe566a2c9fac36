"""mm forecast with a ``hierarchy``: reconcile the nodes' base forecasts so that they add up.

Every node (bottom series and aggregates, see steps/aggregate.py) was trained and
forecast as an ordinary group; its stored forecast is its *base* forecast and is
reused like any other. After every forecast run this module puts them on one
matrix (nodes x forecast periods), reconciles it with ``hierarchy.method``
(core/reconcile.py; a failed node's branch falls back to bottom-up), and gives
the forecast step the reconciled bottom rows for ``forecasting_output.csv``; it
writes every node of every level to ``outputs/hierarchy_forecast.csv``.

What the projections weigh nodes by: ``wls_var`` and ``mint_shrink`` need each
node's forecast errors, which train does not keep per period (only the backtest's
metrics). Each node's stored model forecasts the node's own training history from
the last ERROR_WINDOWS origins (windows of ``horizon`` periods, aligned on the
periods across nodes): in-sample errors, as in MinT's usual estimate, with the
model's own parameters and no refit. They are stored per node, named by its model
and history (the datastore's ``hierarchy/errors/``), so only nodes whose model or
history changed forecast again. ``wls_var`` uses their mean square, ``mint_shrink``
their shrunk covariance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import ALL_NODES, Config
from ..core import reconcile as rc
from ..core.identity import digest
from ..core.kernels import GroupSpec, forecast_fitted
from ..core.results import ForecastRow, TrainRow
from ..core.timeindex import TimeAxis
from ..runner.engine import Batch
from ..runner.tasks import STEP_COLUMN, load_model
from ..store.datastore import Datastore
from ..store.spool import Spool
from .split import PERIOD

HIERARCHY_OUTPUT = "hierarchy_forecast.csv"
BASE_SUFFIX = "_base"  # the base forecast's column: Prediction_base
MAX_NAMED = 20  # failed nodes named in the run record and --json


def level_name(columns) -> str:
    return " x ".join(columns) or "total"


@dataclass
class Reconciliation:
    """The reconciled forecasts of one forecast run, for the output and the run record."""

    bottom: dict[str, pd.DataFrame]  # bottom key -> period, reconciled prediction and quantiles
    summary: dict = field(default_factory=dict)
    derived: dict[str, int] = field(default_factory=dict)  # hierarchy.train_level: bottom key not forecast -> its last training period

    def derived_tables(self, store, context, run_id: str):
        """forecasting_output.csv's rows of the bottom series that were not forecast
        (hierarchy.train_level): each one's inference rows with its derived forecast
        (no base forecast, no model version), in key order."""
        p = context.prediction_column
        for key in sorted(self.derived):
            values = self.bottom.get(key)
            frame = store.read_partition("inference", key)
            if values is None or frame.empty:
                continue
            lookup = values.set_index(PERIOD)
            period = frame[PERIOD].to_numpy(dtype=np.int64)
            out = frame[[c for c in context.output_columns if c in frame.columns]].copy()
            out[p] = lookup[p].reindex(period).to_numpy()
            out[p + BASE_SUFFIX] = np.nan
            for q in context.quantile_columns:
                out[q] = lookup[q].reindex(period).to_numpy()
            out["model_version"] = pd.array([None] * len(out), dtype="Int64")
            out["run_id"] = run_id
            out[STEP_COLUMN] = (period - self.derived[key]).astype(np.float64)
            yield pa.Table.from_pandas(out, preserve_index=False)

    def adjust(self, row: ForecastRow, table: pa.Table, context) -> pa.Table | None:
        """A node's forecast table as forecasting_output.csv shows it: None for an aggregate
        node (it is in hierarchy_forecast.csv), the reconciled values for a bottom series,
        the base forecast kept in ``<prediction>_base``."""
        if any(str(v) == ALL_NODES for v in row.values):
            return None
        values = self.bottom.get(row.key)
        if values is None:
            return table
        frame = table.to_pandas()
        p = context.prediction_column
        lookup = values.set_index(PERIOD)
        periods = _periods(frame, context)
        frame[p + BASE_SUFFIX] = frame[p]
        frame[p] = lookup[p].reindex(periods).to_numpy()
        for q in context.quantile_columns:
            frame[q] = lookup[q].reindex(periods).to_numpy()
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(table.schema.metadata)


@dataclass
class _Nodes:
    """Every node of the hierarchy with what the run has for it, in the core's node order."""

    h: rc.Hierarchy
    keys: list[str | None]  # group key per node (None: no group in the split)
    rows: list[ForecastRow | None]


def reconcile_run(config: Config, store, spool: Spool, context, warn, execute=None) -> Reconciliation:
    """Reconcile the forecast run whose rows are in ``spool['rows']`` and whose train run's rows
    are in ``spool['models']``; write hierarchy_forecast.csv. ``execute`` runs per-node work on the
    engine (``Session.execute`` without its run argument); without it, in this process."""
    nodes = _nodes(config, spool, store)
    h = nodes.h
    p, quantiles = context.prediction_column, list(context.quantile_columns)
    forecasts = _forecast_tables(store, nodes, context)
    periods = np.sort(forecasts[PERIOD].unique()) if len(forecasts) else np.array([], dtype=np.int64)
    absent = _absent(forecasts, periods, h.n_nodes)
    base = _matrix(forecasts, p, periods, h.n_nodes, absent)
    qbase = np.stack([_matrix(forecasts, q, periods, h.n_nodes, absent) for q in quantiles], axis=2) if quantiles else None
    actual = _matrix(forecasts, context.spec.target_column, periods, h.n_nodes)
    history, first, season = _history(store, nodes, context)
    sources = None
    if config.hierarchy.train_level is not None:
        actual = _inference_actuals(store, nodes, context, periods, actual)
        method, note = "train_level", ""
        result, shifted = _from_train_level(config, h, base, qbase, history)
    else:
        result, method, note, sources = _reconciled(config, nodes, spool, store, context, base, history, first, warn, execute)
        shifted = None
        if qbase is not None:
            filled = np.where(np.isnan(base), result.forecasts, base)  # a filled or fallback node: its quantiles move with it
            shifted = rc.shift_quantiles(filled, result.forecasts, qbase, nonnegative=config.hierarchy.nonnegative)
    reconciled = result.forecasts
    frame = _long(config, nodes, periods, forecasts, base, reconciled, qbase, shifted, actual, p, quantiles)
    _write(store, frame)
    bottom = _bottom_values(nodes, periods, reconciled, shifted, p, quantiles)
    summary = _summary(config, nodes, result, method, note, reconciled, base, actual, history, season, store)
    if sources is not None:
        summary["residuals"] = sources  # which errors weighed the nodes (see _residuals)
    derived: dict[str, int] = {}
    if config.hierarchy.train_level is not None:
        summary["train_level"] = level_name(config.hierarchy.train_level)
        summary["top_down_rule"] = config.hierarchy.top_down_rule
        last = _last_periods(history, first)
        derived = {k: int(last[i]) for i, (k, row) in enumerate(zip(nodes.keys, nodes.rows)) if i >= h.n_aggregate and k is not None and row is None}
    return Reconciliation(bottom, summary, derived)


def _reconciled(config: Config, nodes: _Nodes, spool: Spool, store, context, base, history, first, warn, execute=None):
    """``hierarchy.method`` on every node's base forecast: (result, method used, note, residual sources)."""
    h = nodes.h
    method, note = config.hierarchy.method, ""
    options = _method_options(config, h, history)
    if method == "mint_shrink":
        options["max_nodes"] = rc.MINT_MAX_NODES  # read now: the limit is the module's, at run time
    residuals, sources = _residuals(config, nodes, spool, store, context, history, first, execute) if method in ("wls_var", "mint_shrink") else (None, None)
    try:
        result = rc.reconcile_failed(h, base, method, nonnegative=config.hierarchy.nonnegative, history=options.pop("history"), residuals=residuals, **options)
    except rc.CovarianceTooLarge as exc:
        note = f"{exc}: reconciled with wls_var instead"
        warn(f"hierarchy: {note}")
        method = "wls_var"
        result = rc.reconcile_failed(h, base, method, nonnegative=config.hierarchy.nonnegative, history=_bottom(h, history), residuals=residuals)
    return result, method, note, sources


def _from_train_level(config: Config, h: rc.Hierarchy, base, qbase, history) -> tuple[rc.Reconciled, np.ndarray | None]:
    """hierarchy.train_level: every node from that level's forecasts (``rc.from_level``), its
    quantiles split and summed the same way (as if the bottom series moved together: an
    approximation, like the projections' shifted quantiles). A failed node of that level has
    no other forecast to fall back on: its bottom series and every node above them stay
    empty (``unfilled``), named in the summary."""
    c = config.hierarchy
    level = next(k for k, cols in enumerate(h.levels) if set(cols) == set(c.train_level))
    hist = _bottom(h, history)
    forecasts = rc.from_level(h, base, level, hist, c.top_down_rule, nonnegative=c.nonnegative)
    shifted = None
    if qbase is not None:
        shifted = np.stack([rc.from_level(h, qbase[:, :, j], level, hist, c.top_down_rule, nonnegative=c.nonnegative) for j in range(qbase.shape[2])], axis=2)
    trained = h.level_nodes[level]
    failed = trained[np.isnan(base[trained]).any(axis=1)]
    unfilled = h.n_aggregate + np.flatnonzero(np.isnan(forecasts[h.n_aggregate:]).any(axis=1))
    none = np.array([], dtype=np.int64)
    return rc.Reconciled(forecasts, failed, none, none, unfilled), shifted


def _inference_actuals(store, nodes: _Nodes, context, periods: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The actuals (split.holdout) of every node from its inference rows: a node that was not
    forecast (hierarchy.train_level) has no forecast file to carry them."""
    keys = [k for k in nodes.keys if k is not None]
    target = context.spec.target_column
    frame = store.scan_groups("inference", keys, [PERIOD, target]).to_pandas()
    if frame.empty or not len(periods):
        return actual
    index = {k: i for i, k in enumerate(nodes.keys) if k is not None}
    frame = frame[frame[PERIOD].isin(periods)]
    out = actual.copy()
    out[frame["_mm_key"].map(index).to_numpy(dtype=np.int64), np.searchsorted(periods, frame[PERIOD].to_numpy())] = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _last_periods(history: np.ndarray, first: int) -> np.ndarray:
    """Each node's last period with a target (-1 without one)."""
    seen = ~np.isnan(history)
    last = history.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1)
    return np.where(seen.any(axis=1), first + last, -1)


# -- the structure ------------------------------------------------------------------


def _nodes(config: Config, spool: Spool, store) -> _Nodes:
    groups = list(config.data.group_columns)
    levels = config.hierarchy.aggregate_levels(groups)
    rows = [ForecastRow.from_dict(r) for r in spool.rows("rows")]
    entries = [(row.key, row.values, row) for row in rows]
    if config.hierarchy.train_level is not None:
        # only train_level's nodes were forecast: every node with inference rows is in the
        # hierarchy all the same (its history gives the proportions, its forecast is derived)
        forecast = {row.key: row for row in rows}
        entries = [(g["key"], json.loads(g["values"]), forecast.get(g["key"]))
                   for batch in store.iter_split_groups(columns=["key", "values", "n_inference"])
                   for g in batch.to_pylist() if g["n_inference"] > 0]
    by_level: dict[frozenset, dict[tuple, tuple[str, ForecastRow | None]]] = {}
    for key, values, row in entries:
        named = dict(zip(groups, values))
        present = frozenset(c for c in groups if str(named[c]) != ALL_NODES)
        by_level.setdefault(present, {})[tuple(str(named[c]) for c in groups)] = (key, row)
    bottom_rows = by_level.get(frozenset(groups), {})
    bottom = pd.DataFrame(list(bottom_rows), columns=groups)
    h = rc.build_hierarchy(bottom, levels, bottom=groups)
    keys: list[str | None] = []
    found: list[ForecastRow | None] = []
    for node in range(h.n_nodes):
        columns = h.levels[h.node_level[node]]
        named = dict(zip(columns, h.node_key[node]))
        full = tuple(str(named.get(c, ALL_NODES)) for c in groups)
        key, row = by_level.get(frozenset(columns), {}).get(full, (None, None))
        found.append(row)
        keys.append(key)
    return _Nodes(h, keys, found)


def _method_options(config: Config, h: rc.Hierarchy, history: np.ndarray) -> dict:
    c = config.hierarchy
    options: dict = {"history": _bottom(h, history)}
    if c.method == "top_down":
        options["rule"] = c.top_down_rule
    if c.method == "middle_out":
        wanted = frozenset(c.middle_level or [])
        options["level"] = next(k for k, cols in enumerate(h.levels) if frozenset(cols) == wanted)
    return options


def _bottom(h: rc.Hierarchy, history: np.ndarray) -> np.ndarray:
    return history[h.n_aggregate:]


# -- reading the run's forecasts and the nodes' histories ------------------------------


def _forecast_tables(store, nodes: _Nodes, context) -> pd.DataFrame:
    fingerprints = {row.key: row.fingerprint for row in nodes.rows if row is not None and row.has_forecast}
    columns = [PERIOD, context.spec.time_column, context.prediction_column, *context.quantile_columns, context.spec.target_column]
    table = store.scan_groups("forecast", list(fingerprints), columns, fingerprints)
    frame = table.to_pandas()
    index = {k: i for i, k in enumerate(nodes.keys) if k is not None}
    frame["_node"] = frame["_mm_key"].map(index)
    frame = frame.dropna(subset=[context.spec.time_column, "_node"]).astype({"_node": np.int64})
    frame[PERIOD] = _periods(frame, context)
    return frame


def _periods(frame: pd.DataFrame, context) -> np.ndarray:
    """The forecast rows' periods on the split's grid (a forecast file keeps the time, not the period)."""
    return np.asarray(context.spec.time_axis.to_periods(frame[context.spec.time_column]), dtype=np.int64)


def _absent(frame: pd.DataFrame, periods: np.ndarray, n_nodes: int) -> np.ndarray:
    """Where a forecast node has no inference row (a series that ends early, a gap in its
    future rows): it has nothing to add there, so it counts as 0, not as a failed forecast."""
    present = np.zeros((n_nodes, len(periods)), dtype=bool)
    if len(frame):
        present[frame["_node"].to_numpy(), np.searchsorted(periods, frame[PERIOD].to_numpy())] = True
    return ~present & present.any(axis=1, keepdims=True)


def _matrix(frame: pd.DataFrame, column: str, periods: np.ndarray, n_nodes: int, absent: np.ndarray | None = None) -> np.ndarray:
    out = np.full((n_nodes, len(periods)), np.nan)
    if len(frame) and column in frame.columns:
        at = np.searchsorted(periods, frame[PERIOD].to_numpy())
        out[frame["_node"].to_numpy(), at] = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    if absent is not None:
        out[absent] = 0.0
    return out


def _history(store, nodes: _Nodes, context) -> tuple[np.ndarray, int, int]:
    """Every node's training target on one period grid (nodes x periods, NaN where none), the
    grid's first period, and the season."""
    keys = [k for k in nodes.keys if k is not None]
    target = context.spec.target_column
    frame = store.scan_groups("train", keys, [PERIOD, target]).to_pandas()
    season = TimeAxis.from_dict(context.spec.axis).season_length or 1
    if frame.empty:
        return np.full((nodes.h.n_nodes, 1), np.nan), 0, season
    index = {k: i for i, k in enumerate(nodes.keys) if k is not None}
    first, last = int(frame[PERIOD].min()), int(frame[PERIOD].max())
    out = np.full((nodes.h.n_nodes, last - first + 1), np.nan)
    out[frame["_mm_key"].map(index).to_numpy(dtype=np.int64), frame[PERIOD].to_numpy(dtype=np.int64) - first] = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
    return out, first, season


ERROR_WINDOWS = 4  # in-sample origins: the last 4 windows of train.horizon periods before the cutoff


def _residuals(config: Config, nodes: _Nodes, spool: Spool, store, context, history: np.ndarray, first: int, execute=None) -> tuple[np.ndarray, dict]:
    """Each node's forecast errors on one grid of periods (nodes x periods, NaN where none), for
    wls_var's variances and mint_shrink's covariance, and how many nodes had each kind.

    ``backtest``: the out-of-sample errors train kept (``backtest_errors`` in the model's
    decision: each fold's model fitted before its origin), which is what the weights should
    be, the spread of the base forecasts' errors. The in-sample errors of a model fitted on
    the same periods understate the small series' errors against their aggregates' (tourism_au:
    the bottom series' summed errors were 1.03x the total's in-sample, 1.7x in the test
    quarters; README "Which method"). ``in_sample``: a node whose decision has none (a pooled
    model, a model trained by an older mm): its stored ones, or ``node_errors_batch`` on the
    engine (``execute``; in this process without one). ``backtest_rmse``: neither; its
    backtest RMSE as its only value, or the median variance per bottom series times its size
    when it has no backtest either."""
    h = nodes.h
    last = first + history.shape[1] - 1  # the last training period of any node: the in-sample origins count back from it
    found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * h.n_nodes
    counts = {"backtest": 0, "in_sample": 0, "backtest_rmse": 0}
    todo: list[dict] = []
    for i, (key, row) in enumerate(zip(nodes.keys, nodes.rows)):
        entry = spool.get("models", key) if key else None
        model = TrainRow.from_dict(entry) if entry else None
        if model is None or not model.has_model or row is None:
            continue
        kept = _kept_errors(store, key, model) if config.hierarchy.errors == "backtest" else None
        if kept is not None:
            found[i] = kept
            counts["backtest"] += 1
            continue
        item = {"key": key, "node": i, "model_version": int(model.model_version), "fingerprint": _errors_fingerprint(model, row, context.spec.horizon, last)}
        stored = store.read_node_errors(key, item["fingerprint"])
        if stored is None:
            todo.append(item)
        else:
            found[i] = _as_periods(stored, context.spec.horizon, last)
    ctx = ErrorsContext(context.root, context.spec, last)
    if execute is None:
        results = zip(todo, node_errors_batch(Batch(ctx, todo)) if todo else [])
    else:
        results = (pair for done in execute(node_errors_batch, ctx.crash, ctx, iter(todo), len(todo), f"hierarchy: in-sample errors of {len(todo)} nodes") for pair in done)
    for item, result in results:
        if result["status"] == "ok":
            found[item["node"]] = (np.asarray(result["periods"], dtype=np.int64), np.asarray(result["errors"], dtype=np.float64))
    counts["in_sample"] = sum(f is not None for f in found) - counts["backtest"]
    found = [f if f is not None and len(f[0]) else None for f in found]
    periods = np.unique(np.concatenate([f[0] for f in found if f is not None] or [np.zeros(1, np.int64)]))
    out = np.full((h.n_nodes, len(periods)), np.nan)
    for i, f in enumerate(found):
        if f is not None:
            out[i, np.searchsorted(periods, f[0])] = f[1]
    none = np.isnan(out).all(axis=1)
    if none.any():
        variance = _backtest_variance(nodes, spool)
        out[none, 0] = np.sqrt(variance[none])
        counts["backtest_rmse"] = int(none.sum())
    return out, counts


def _kept_errors(store, key: str, model: TrainRow) -> tuple[np.ndarray, np.ndarray] | None:
    """The node's backtest errors (periods, errors) from its model's decision, or None."""
    try:
        decision = store.read_model_meta(key, int(model.model_version)).get("tuning") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kept = decision.get("backtest_errors")
    if not kept or decision.get("pooled_choice") or not kept.get("periods"):
        return None  # a pooled model's decision holds the local candidates' backtest, not the pool's
    periods = np.asarray(kept["periods"], dtype=np.int64)
    errors = np.asarray(kept["errors"], dtype=np.float64)
    keep = np.isfinite(errors)
    return periods[keep], errors[keep]


def _errors_fingerprint(model: TrainRow, row: ForecastRow, horizon: int, last: int) -> str:
    """What a node's stored in-sample errors are made of: its model, history and origins."""
    return digest(model.fingerprint, model.model_version, (row.parts or {}).get("history", ""), ERROR_WINDOWS, horizon, last)


def _as_periods(stored: pa.Table, horizon: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """A stored errors table (column, error) as (periods, errors): column (k-1)*horizon + j is
    step j+1 after origin last - k*horizon."""
    column = stored["column"].to_numpy().astype(np.int64)
    periods = last - (column // horizon + 1) * horizon + 1 + column % horizon
    return periods, stored["error"].to_numpy().astype(np.float64)


@dataclass(frozen=True)
class ErrorsContext:
    """What a worker needs to take nodes' in-sample errors (``node_errors_batch``)."""

    root: str
    spec: GroupSpec  # the forecast's
    last: int  # the origins count back from it

    def crash(self, item: dict, message: str) -> dict:
        return {"status": "failed", "key": item["key"], "error": message}


def node_errors_batch(batch: Batch) -> list[dict]:
    """The engine's kernel: per node, its stored model forecasts its own history from the last
    ERROR_WINDOWS windows of ``horizon`` periods before ``last`` (in-sample: the model was
    fitted on those periods too; its own parameters, no refit); stored in the datastore by
    model and history so a rerun reads them. A node whose model cannot forecast its history
    gets an empty table (it falls back, see ``_residuals``)."""
    ctx: ErrorsContext = batch.context
    store = Datastore(ctx.root)
    out = []
    for item in batch.items:
        key = item["key"]
        try:
            stored = _forecast_history(store, key, int(item["model_version"]), ctx.spec, ctx.last)
        except Exception:  # noqa: BLE001  (any model failure: this node falls back)
            stored = pa.table({"column": pa.array([], pa.int64()), "error": pa.array([], pa.float64())})
        store.write_node_errors(key, item["fingerprint"], stored)
        periods, errors = _as_periods(stored, ctx.spec.horizon, ctx.last)
        out.append({"status": "ok", "key": key, "periods": periods.tolist(), "errors": errors.tolist()})
    return out


def _forecast_history(store, key: str, version: int, spec, last: int) -> pa.Table:
    history = store.read_partition("train", key).sort_values(PERIOD, kind="stable").reset_index(drop=True)
    meta, fitted = load_model(store, key, version)  # a pooled model through its pool
    period = history[PERIOD].to_numpy(dtype=np.int64)
    columns, errors = [], []
    for k in range(1, ERROR_WINDOWS + 1):
        origin = last - k * spec.horizon
        past, future = history[period <= origin], history[(period > origin) & (period <= origin + spec.horizon)]
        if len(past) < spec.min_history or future.empty:
            continue
        predicted = forecast_fitted(past, future, meta, fitted, spec)[:, 0]
        columns.append((k - 1) * spec.horizon + future[PERIOD].to_numpy(dtype=np.int64) - origin - 1)
        errors.append(future[spec.target_column].to_numpy(dtype=np.float64) - predicted)
    column = np.concatenate(columns) if columns else np.array([], dtype=np.int64)
    error = np.concatenate(errors) if errors else np.array([], dtype=np.float64)
    keep = np.isfinite(error)
    return pa.table({"column": column[keep], "error": error[keep]})


def _backtest_variance(nodes: _Nodes, spool: Spool) -> np.ndarray:
    h = nodes.h
    rmse = np.full(h.n_nodes, np.nan)
    for i, key in enumerate(nodes.keys):
        found = spool.get("models", key) if key else None
        value = TrainRow.from_dict(found).metrics.get("rmse") if found else None
        if value is not None and math.isfinite(value) and value > 0:
            rmse[i] = value
    variance = rmse ** 2
    known = np.isfinite(variance)
    per_series = float(np.median(variance[known] / h.sizes[known])) if known.any() else 1.0
    return np.where(known, variance, per_series * h.sizes)


# -- the outputs -------------------------------------------------------------------------


def _long(config, nodes, periods, forecasts, base, reconciled, qbase, shifted, actual, p, quantiles) -> pd.DataFrame:
    """hierarchy_forecast.csv: one row per node and forecast period."""
    h = nodes.h
    groups = list(config.data.group_columns)
    n, t = h.n_nodes, len(periods)
    node = np.repeat(np.arange(n), t)
    out = {
        "level": np.repeat([level_name(h.levels[k]) if k < h.bottom_level else "bottom" for k in h.node_level], t),
        "node": np.repeat([h.label(i) for i in range(n)], t),
    }
    for c in groups:
        values = []
        for i in range(n):
            named = dict(zip(h.levels[h.node_level[i]], h.node_key[i]))
            values.append(str(named.get(c, ALL_NODES)))
        out[c] = np.repeat(values, t)
    times = forecasts.drop_duplicates(PERIOD).set_index(PERIOD)[config.data.time_column]
    out[config.data.time_column] = np.tile(times.reindex(periods).to_numpy(), n)
    out[config.data.target_column] = actual.ravel()
    out[p + BASE_SUFFIX] = base.ravel()
    out[p] = reconciled.ravel()
    for j, q in enumerate(quantiles):
        out[_base_quantile(q, p)] = qbase[:, :, j].ravel()
        out[q] = shifted[:, :, j].ravel()
    frame = pd.DataFrame(out)
    return frame[~(np.isnan(base).all(axis=1)[node] & np.isnan(reconciled).all(axis=1)[node])]  # a node nothing is known about


def _base_quantile(column: str, p: str) -> str:
    return p + BASE_SUFFIX + column[len(p):]  # Prediction_q90 -> Prediction_base_q90


def _write(store, frame: pd.DataFrame) -> None:
    with store.output_file(HIERARCHY_OUTPUT) as f:
        frame.to_csv(f, index=False)


def _bottom_values(nodes: _Nodes, periods, reconciled, shifted, p: str, quantiles: list[str]) -> dict[str, pd.DataFrame]:
    h = nodes.h
    out = {}
    for i in range(h.n_aggregate, h.n_nodes):
        key = nodes.keys[i]
        if key is None:
            continue
        values = {PERIOD: periods, p: reconciled[i]}
        for j, q in enumerate(quantiles):
            values[q] = shifted[i, :, j]
        out[key] = pd.DataFrame(values)
    return out


def _summary(config, nodes: _Nodes, result: rc.Reconciled, method: str, note: str, reconciled, base, actual, history, season, store) -> dict:
    h = nodes.h
    named = lambda idx: [h.label(int(i)) for i in idx[:MAX_NAMED]]  # noqa: E731
    out = {
        "method": method,
        "top_down_rule": config.hierarchy.top_down_rule if method == "top_down" else None,
        "nonnegative": config.hierarchy.nonnegative,
        "n_nodes": int(h.n_nodes),
        "n_bottom": int(h.n_bottom),
        "levels": {level_name(cols) if k < h.bottom_level else "bottom": int(len(h.level_nodes[k])) for k, cols in enumerate(h.levels)},
        "level_order": [level_name(cols) if k < h.bottom_level else "bottom" for k, cols in enumerate(h.levels)],  # run records sort keys
        "failed_nodes": {"n": int(len(result.failed)), "examples": named(result.failed)},
        "fallback_nodes": {"n": int(len(result.fallback)), "examples": named(result.fallback)},
        "filled_bottom": {"n": int(len(result.filled)), "examples": named(result.filled)},
        "unfilled_bottom": {"n": int(len(result.unfilled)), "examples": named(result.unfilled)},
        "coherence_gap": _gap(h, reconciled),
        "output": str(store.output_path(HIERARCHY_OUTPUT)),
    }
    if note:
        out["note"] = note
    accuracy = level_accuracy(h, base, reconciled, actual, history, season)
    if accuracy:
        out["accuracy"] = accuracy
    return out


def _gap(h: rc.Hierarchy, y: np.ndarray) -> float | None:
    finite = np.isfinite(y).all(axis=1)
    if not finite.any():
        return None
    rows = np.flatnonzero(finite)
    bottom = y[h.n_aggregate:]
    implied = h.S @ np.nan_to_num(bottom)
    covered = np.asarray(h.S[rows] @ (~np.isfinite(bottom).all(axis=1)).astype(float)).ravel() == 0
    rows = rows[covered]
    return float(np.max(np.abs(y[rows] - implied[rows]))) if len(rows) else None


def level_accuracy(h: rc.Hierarchy, base, reconciled, actual, history, season: int) -> dict:
    """Per level, base vs reconciled: MASE (each node's error over its in-sample seasonal-naive
    scale, averaged over the node's rows and then over nodes), sMAPE and WAPE (pooled), over the
    periods with an actual and both forecasts."""
    if not np.isfinite(actual).any():
        return {}
    m = season if history.shape[1] > season else 1
    scale = np.nanmean(np.abs(history[:, m:] - history[:, :-m]), axis=1) if history.shape[1] > m else np.full(h.n_nodes, np.nan)
    out = {}
    for k, cols in enumerate(h.levels):
        idx = h.level_nodes[k]
        a = actual[idx]
        derived = not np.isfinite(base[idx]).any()  # hierarchy.train_level: a level with no base forecast
        ok = np.isfinite(a) & np.isfinite(reconciled[idx]) & (derived | np.isfinite(base[idx]))
        if not ok.any():
            continue
        entry = {"n_nodes": int(ok.any(axis=1).sum()), "n_rows": int(ok.sum())}
        for name, f in (("base", base[idx]), ("reconciled", reconciled[idx])):
            entry[name] = None if derived and name == "base" else _scores(a, f, ok, scale[idx])
        out[level_name(cols) if k < h.bottom_level else "bottom"] = entry
    return out


def _scores(a, f, ok, scale) -> dict:
    err = np.where(ok, np.abs(f - a), np.nan)
    denom = np.abs(a) + np.abs(f)
    sape = np.where(ok & (denom > 0), 2 * err / np.where(denom > 0, denom, 1), np.where(ok, 0.0, np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        node_mae = np.nanmean(err, axis=1)
        mase = node_mae / scale
    mase = mase[np.isfinite(mase)]
    total_actual = float(np.nansum(np.where(ok, np.abs(a), 0.0)))
    return {
        "mase": float(np.mean(mase)) if len(mase) else None,
        "smape": float(100 * np.nanmean(sape)),
        "wape": float(100 * np.nansum(err) / total_actual) if total_actual else None,
    }
