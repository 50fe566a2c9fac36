"""mm forecast: predict every inference row with its group's model from one train run.

Streams like mm train: the split's groups are read in record batches, the train
run's models and the previous forecast run's rows are looked up in a Spool,
groups to forecast are handed to the engine batch by batch, and
forecasting_output.csv is written from each group's forecast file, in group
order, a chunk at a time.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from ..config import Config, driver_columns
from ..console import Terminal
from ..core.metrics import HEADLINE, METRIC_NAMES, both_zero
from ..core.results import ForecastRow, Reason, Status, TrainRow
from ..core.timeindex import NS_PER_DAY
from ..runner.options import RunOptions
from ..runner.session import Session, open_session
from ..runner.tasks import (
    STEP_COLUMN,
    ForecastContext,
    forecast_actuals,
    forecast_batch,
    measure_forecast,
)
from ..store import cache, registry
from ..store.memory import release_memory
from ..store.runs import GROUP_IDENTITY, GROUP_OUTCOME, GroupsTable, Run, latest_run
from ..store.spool import Spool
from .accuracy import ForecastHistory
from .common import GroupsResult, group_spec, load_split
from .reconcile import BASE_SUFFIX, Reconciliation, reconcile_run
from .split import PERIOD, check_column_names

FORECASTING_OUTPUT = "forecasting_output.csv"
SPLIT_FIELDS = ["key", "label", "values", "n_train", "n_inference", "train_hash", "inference_hash"]

# The run's groups table (mm runs show, mm report, and the next forecast run's explanations):
# one column per ForecastRow field.
GROUPS_SCHEMA = pa.schema(
    [
        *GROUP_IDENTITY,
        ("n_rows", pa.int64()),
        *GROUP_OUTCOME,
        ("model_version", pa.int64()),
        ("n_missing_prediction", pa.int64()),
        ("metrics", pa.string()),
        ("n_actual", pa.int64()),
        ("unscored", pa.string()),  # JSON {metric: rows with an actual it could not score}
        ("below_quantile", pa.string()),
        ("n_out_of_range", pa.int64()),  # known-future values outside the series' training range
        ("n_capped", pa.int64()),  # rows capped by forecast.cap_factor
        ("checks", pa.string()),  # JSON: the first cases of both, named
    ]
)
CHECK_FIELDS = ("n_out_of_range", "n_capped", "checks")


@dataclass
class ForecastResult(GroupsResult):
    run_id: str
    status: str
    train_run_id: str
    n_groups: int = 0
    forecast: int = 0
    reused: int = 0
    failed: int = 0
    no_model: int = 0
    n_rows: int = 0
    rows_beyond_horizon: int = 0
    duration_s: float = 0.0
    output: str = ""
    accuracy: dict[str, float | None] = field(default_factory=dict)  # pooled; None: the metric scored no row
    unscored: dict[str, dict[str, int]] = field(default_factory=dict)  # per metric: {"rows", "groups"} it could not score
    coverage: dict[str, float] = field(default_factory=dict)
    worst_groups: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    # {"n": cases, "groups": groups with any, "examples": the first cases named}
    out_of_range: dict = field(default_factory=dict)
    capped: dict = field(default_factory=dict)
    hierarchy: dict = field(default_factory=dict)  # with hierarchy.levels: the reconciliation (steps/reconcile.py)

    def groups_failed(self) -> int:
        return self.failed + self.no_model  # a group without a model is not forecast either


def quantile_columns(config: Config) -> tuple[str, ...]:
    return tuple(f"{config.forecast.prediction_column}_q{q * 100:g}" for q in config.forecast.quantiles)


def forecast(
    config: Config,
    terminal: Terminal | None = None,
    *,
    run_id: str | None = None,
    options: RunOptions | None = None,
    session: Session | None = None,
    **option_fields,
) -> ForecastResult:
    """Forecast every inference row; write forecasting_output.csv and a run record.

    ``run_id``: the train run whose models to use (default: the latest finished one).
    ``options`` (or its fields as keywords, see RunOptions) say how it runs; in ``session``, the session's.
    """
    with open_session(config, terminal, RunOptions.of(options, **option_fields), session) as s:
        return _forecast(s, run_id)


def _forecast(s: Session, run_id: str | None) -> ForecastResult:
    config, store, terminal = s.config, s.store, s.terminal
    started = time.perf_counter()
    manifest = load_split(store, config, terminal)
    check_column_names(config, [c for c in manifest["columns"] if c != PERIOD], "the split's columns")  # forecast.* may have changed since
    train_record = registry.run_models(store, run_id)
    config_fp = cache.config_fingerprint(config, cache.FORECAST)
    with Spool(store.local_scratch()) as spool:
        registry.load_run_groups(store, train_record["id"], spool, "models")
        previous = latest_run(store, "forecast", usable_only=False)  # only explains what changed
        registry.load_run_groups(store, previous["id"] if previous else None, spool, "previous", lambda m: terminal.warn(f"{m}; it only explains what changed"))
        run = Run(store, "forecast", config_fp, extra={"train_run_id": train_record["id"]}).begin()
        terminal.detail(f"forecast: using the models of train run {train_record['id']}")
        n_run = _plan(s, spool, train_record["id"], config_fp)
        context = forecast_context(config, store.location, manifest, train_record["id"])
        _run(s, spool, run, context, n_run)
        return _finish(s, run, spool, train_record, context, time.perf_counter() - started)


def forecast_context(config: Config, root: str, manifest: dict, train_run_id: str) -> ForecastContext:
    """How the groups are forecast with the models of ``train_run_id`` (also what its train
    tasks stage forecasts with, see ``tasks.stage_forecast``)."""
    return ForecastContext(
        root=root,
        spec=group_spec(config, manifest),
        train_run_id=train_run_id,
        prediction_column=config.forecast.prediction_column,
        quantile_columns=quantile_columns(config),
        output_columns=tuple(c for c in manifest["columns"] if c != PERIOD),
        cap_factor=config.forecast.cap_factor,
        explain=config.forecast.explain,
    )


def _plan(s: Session, spool: Spool, train_run_id: str, config_fp: str) -> int:
    """Decide every group with inference rows: reused and model-less groups go to
    ``spool['rows']``, groups to forecast to ``spool['todo']``; how many to forecast."""
    to_run = 0
    for batch in s.store.iter_split_groups(columns=SPLIT_FIELDS):
        for g in batch.to_pylist():
            if g["n_inference"] == 0:
                continue
            ident = {"key": g["key"], "label": g["label"], "values": json.loads(g["values"]), "n_rows": int(g["n_inference"])}
            if not s.config.hierarchy.trains(s.config.data.group_columns, ident["values"]):
                continue  # hierarchy.train_level: derived from that level's forecasts when reconciling
            found = spool.get("models", g["key"])
            model = TrainRow.from_dict(found) if found else None
            if model is None or not model.has_model:
                why = "not in the train run" if model is None else (model.error or "training failed")
                _keep(spool, ForecastRow(**ident, status=Status.NO_MODEL, reason=Reason.NO_MODEL, error=f"no model in train run {train_run_id}: {why}"))
                continue
            version = model.model_version
            parts = cache.forecast_parts(model.fingerprint, version, g["inference_hash"], g["train_hash"], config_fp)
            fingerprint = cache.fingerprint(parts)
            exists = s.store.has_forecast(g["key"], fingerprint)
            decision = cache.decide(spool.get("previous", g["key"]), parts, s.allow_reuse, exists, "forecast")
            if decision.reuse:  # measured when the output is written (see _finish)
                s.terminal.detail(f"{g['label']}: forecast reused, {decision.reason}")
                previous = spool.get("previous", g["key"]) or {}
                checked = {k: previous[k] for k in CHECK_FIELDS if k in previous}  # the same forecast: the same findings
                _keep(spool, ForecastRow.from_dict({**ident, "status": Status.REUSED, "decision": f"reused: {decision.reason}", "fingerprint": fingerprint, "parts": parts, "model_version": version, **checked}))
                continue
            item = {**ident, "model_version": version, "fingerprint": fingerprint, "parts": parts, "n_train": int(g["n_train"])}
            if _adopted(s, spool, item, model, train_run_id):
                continue
            s.terminal.detail(f"{g['label']}: forecast, {decision.reason}")
            spool.add("todo", {**item, "decision": f"forecast: {decision.reason}"})
            to_run += 1
    return to_run


def _adopted(s: Session, spool: Spool, item: dict, model: TrainRow, train_run_id: str) -> bool:
    """Adopt the forecast the train task staged for this group, if cache.decide_staged says so."""
    staged = s.store.staged_forecast(item["key"], item["fingerprint"]) if s.allow_reuse else None  # not read in vain
    decision = cache.decide_staged(staged, model.model, s.allow_reuse, train_run_id)
    if not decision.reuse:
        return False
    s.store.adopt_staged_forecast(item["key"], item["fingerprint"])
    s.terminal.detail(f"{item['label']}: forecast, {decision.reason}")
    _keep(spool, ForecastRow.of_item(item, status=Status.FORECAST, decision=f"forecast: {decision.reason}", **staged["fields"]))
    return True


def _keep(spool: Spool, row: ForecastRow) -> None:
    spool.add("rows", row.to_dict(), sort=row.label)


def _run(s: Session, spool: Spool, run: Run, context: ForecastContext, n_run: int) -> None:
    for done in s.execute(run, forecast_batch, context.crash, context, spool.rows("todo"), n_run, f"forecast: {n_run} groups"):
        for _, row in done:
            _keep(spool, row)
            if row.status is Status.FAILED:
                s.terminal.detail(f"{row.label}: forecast failed, {row.error}")


def _finish(s: Session, run: Run, spool: Spool, train_record: dict, context: ForecastContext, elapsed: float) -> ForecastResult:
    store = s.store
    counts = {k: 0 for k in (Status.FORECAST, Status.REUSED, Status.FAILED, Status.NO_MODEL)}
    failures: list[dict] = []
    findings = Findings()
    hier = _reconciled(s, run, spool, context)
    # the run's groups table is published before forecasting_output.csv: a failure writing either keeps the previous output
    # ...and the history of the forecasts this run made (realised accuracy scores them later) is published last
    history = ForecastHistory(store, run.id, s.config, context.prediction_column)
    with history, store.output_file(FORECASTING_OUTPUT) as f, GroupsTable(store, run.id, GROUPS_SCHEMA) as groups:
        output = _Output(f, context, hierarchy=hier is not None)
        for row in map(ForecastRow.from_dict, spool.rows("rows")):
            counts[row.status] += 1
            if row.has_forecast:
                table = store.read_forecast(row.key, row.fingerprint)
                if row.status is Status.REUSED:
                    # Measured from the file it reuses, which is read for the CSV anyway: right
                    # whichever earlier run wrote it (not only the last one), and also when that
                    # run's groups table has no measures (an older mm).
                    row = replace(row, **measure_forecast(table, context))
                else:
                    history.add(row.key, table)  # the base forecast, as stored
                shown = hier.adjust(row, table, context) if hier else table
                if shown is not None:  # an aggregate node is in hierarchy_forecast.csv only
                    output.add(row, shown)
            else:
                failures.append(row.failure())
            findings.add(row)
            groups.add(row.to_dict())
        for table in hier.derived_tables(store, context, run.id) if hier else ():  # hierarchy.train_level's split-down bottom series
            output.add(DERIVED_ROW, table)
        tally = output.close()
    history_bytes = history.close()
    store.mark_split_damaged(sum(f["reason"] == Reason.PARTITION_MISSING for f in failures))
    status = "partial" if counts[Status.FAILED] or counts[Status.NO_MODEL] else "completed"
    result = ForecastResult(
        run_id=run.id,
        status=status,
        train_run_id=train_record["id"],
        n_groups=sum(counts.values()),
        forecast=counts[Status.FORECAST],
        reused=counts[Status.REUSED],
        failed=counts[Status.FAILED],
        no_model=counts[Status.NO_MODEL],
        n_rows=tally.rows,
        rows_beyond_horizon=tally.beyond_horizon,
        duration_s=round(elapsed, 3),
        output=str(store.output_path(FORECASTING_OUTPUT)),
        accuracy=tally.accuracy(),
        unscored=tally.unscored(),
        coverage=tally.coverage(),
        worst_groups=tally.worst(),
        failures=failures,
        out_of_range=findings.summary("out_of_range"),
        capped=findings.summary("capped"),
        hierarchy=hier.summary if hier else {},
    )
    run.finish(status, counts, train_run_id=train_record["id"], output=result.output, accuracy=result.accuracy, unscored=result.unscored, out_of_range=result.out_of_range, capped=result.capped, history_bytes=history_bytes, hierarchy=result.hierarchy)
    return result


# what the tally sees of a bottom series hierarchy.train_level derived: no actuals of its own to
# score (its accuracy is hierarchy_forecast.csv's, per level), only its rows
DERIVED_ROW = ForecastRow(key="", label="", values=[], n_rows=0, status=Status.FORECAST)


def _reconciled(s: Session, run: Run, spool: Spool, context: ForecastContext) -> Reconciliation | None:
    """With a hierarchy, the run's base forecasts reconciled (None without one). A reconciliation
    that cannot run leaves the base forecasts in the output and says why, in the summary and the record."""
    if s.config.hierarchy.levels is None:
        return None
    try:
        execute = lambda *work: s.execute(run, *work)  # noqa: E731  (per-node work on the run's engine)
        return reconcile_run(s.config, s.store, spool, context, s.terminal.warn, execute)
    except (ValueError, KeyError, StopIteration) as exc:
        s.terminal.warn(f"hierarchy: the forecasts could not be reconciled ({exc}); forecasting_output.csv has the base forecasts")
        return Reconciliation({}, {"error": str(exc)})


class Findings:
    """The forecast checks' findings over all groups: totals and the first cases named."""

    EXAMPLES = 20

    def __init__(self):
        self.n = {"out_of_range": 0, "capped": 0}
        self.groups = {"out_of_range": 0, "capped": 0}
        self.examples: dict[str, list[str]] = {"out_of_range": [], "capped": []}

    def add(self, row: ForecastRow) -> None:
        for what in self.n:
            n = getattr(row, f"n_{what}")
            if not n:
                continue
            self.n[what] += n
            self.groups[what] += 1
            room = self.EXAMPLES - len(self.examples[what])
            self.examples[what] += row.checks.get(what, [])[: max(0, room)]

    def summary(self, what: str) -> dict:
        return {"n": self.n[what], "groups": self.groups[what], "examples": self.examples[what]} if self.n[what] else {}


CHUNK_ROWS = 10_000  # rows of forecasting_output.csv written at a time (~6 MB of tables)


class _Output:
    """forecasting_output.csv: the groups' forecasts concatenated (in chunks; the caller
    publishes the file atomically), with the run's accuracy tallied on the way."""

    def __init__(self, f, context: ForecastContext, hierarchy: bool = False):
        axis = context.spec.time_axis
        daily_or_coarser = axis.kind == "month" or (axis.kind == "fixed" and axis.step % NS_PER_DAY == 0)
        self.date_format = "%Y-%m-%d" if daily_or_coarser else "%Y-%m-%dT%H:%M:%S"
        base = [context.prediction_column + BASE_SUFFIX] if hierarchy else []  # reconciled in the prediction column
        self.header = [*context.output_columns, context.prediction_column, *base, *context.quantile_columns, *driver_columns(context.explain), "model_version", "run_id"]
        self.f = f
        self.tally = Tally(context)
        self.chunk: list[pa.Table] = []
        self.size = 0

    def add(self, row: ForecastRow, table: pa.Table) -> None:
        self.tally.add(row, table)
        self.chunk.append(table)
        self.size += table.num_rows
        if self.size >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.chunk:
            return
        frame = pa.concat_tables(self.chunk, promote_options="permissive").to_pandas()
        frame.to_csv(self.f, header=self.tally.rows == 0, index=False, columns=[c for c in self.header if c in frame.columns], date_format=self.date_format)
        self.tally.rows += len(frame)
        self.chunk, self.size = [], 0
        release_memory()

    def close(self) -> Tally:
        self._flush()
        if self.tally.rows == 0:
            self.f.write(",".join(self.header) + "\n")
        return self.tally


class Tally:
    """Accuracy of the forecasts against the actuals in the inference rows, pooled over the groups,
    with the rows each metric could not score (see ``core.metrics``)."""

    def __init__(self, context: ForecastContext):
        self.context = context
        self.rows = 0
        self.beyond_horizon = 0
        self.n = 0  # rows with an actual and a prediction
        self.n_ape = 0  # ...whose actual is not 0 (what MAPE scores)
        self.n_scaled = 0  # ...in groups with a MASE scale (what MASE scores)
        self.n_both_zero = 0  # ...whose actual and forecast are both 0 (sMAPE: exact)
        self.sum_ape = self.sum_sape = self.sum_abs_err = self.sum_abs_actual = self.sum_sq_err = self.sum_scaled_err = 0.0
        self.groups_without = dict.fromkeys(METRIC_NAMES, 0)  # groups with actuals but no value of the metric
        self.below = {name: 0 for name in context.quantile_columns}
        self._worst: list[tuple[float, int, str, dict]] = []  # a min-heap of the N worst groups by WAPE
        self._seen = 0

    def add(self, row: ForecastRow, table: pa.Table) -> None:
        """One group: its forecast ``table`` for the pooled errors, its row's measures for the rest."""
        steps = table[STEP_COLUMN].to_numpy(zero_copy_only=False).astype(float)
        self.beyond_horizon += int(np.sum(steps > self.context.spec.horizon))
        if not row.n_actual:
            return
        _, a, p = forecast_actuals(table, self.context)
        err = np.abs(p - a)
        nz = a != 0
        denom = np.abs(a) + np.abs(p)
        self.n += row.n_actual
        self.n_ape += int(nz.sum())
        self.n_both_zero += both_zero(a, p)
        self.sum_ape += float(np.sum(err[nz] / np.abs(a[nz])))
        self.sum_sape += float(np.sum(np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0)))
        self.sum_abs_err += float(err.sum())
        self.sum_abs_actual += float(np.abs(a).sum())
        self.sum_sq_err += float(np.sum((p - a) ** 2))
        mase = row.metrics.get("mase")
        if _finite(mase):  # the group's MAE over its own scale: pooled, the mean scaled error of every row
            self.sum_scaled_err += mase * row.n_actual
            self.n_scaled += row.n_actual
        for m in METRIC_NAMES:
            self.groups_without[m] += not _finite(row.metrics.get(m))
        for name in self.below:
            self.below[name] += row.below_quantile.get(name, 0)
        self._keep_if_worst(row)

    WORST = 5

    def _keep_if_worst(self, row: ForecastRow) -> None:
        wape = row.metrics.get("wape")
        if not _finite(wape):  # every actual 0: no WAPE to rank by (counted in groups_without)
            return
        self._seen += 1
        entry = (wape, -self._seen, row.label, {"metrics": row.metrics, "n_rows": row.n_actual, "unscored": row.unscored})  # ties: the earlier group ranks worse
        if len(self._worst) < self.WORST:
            heapq.heappush(self._worst, entry)
        elif entry[:3] > self._worst[0][:3]:
            heapq.heapreplace(self._worst, entry)

    def accuracy(self) -> dict[str, float | None]:
        """The pooled metrics, zero-safe first; None where a metric scored no row."""
        if not self.n:
            return {}
        return {
            "wape": _ratio(self.sum_abs_err, self.sum_abs_actual, 100.0),
            "mase": _ratio(self.sum_scaled_err, self.n_scaled),
            "smape": _ratio(self.sum_sape, self.n, 100.0),
            "mape": _ratio(self.sum_ape, self.n_ape, 100.0),
            "rmse": math.sqrt(self.sum_sq_err / self.n),
            "n_rows": self.n,
            "n_both_zero": self.n_both_zero,
        }

    def unscored(self) -> dict[str, dict[str, int]]:
        """Per metric: ``rows`` the pooled figure could not score, and ``groups`` that have no
        value of their own (for WAPE these differ: a group whose actuals are all 0 has no WAPE,
        but its errors still count in the pooled one)."""
        if not self.n:
            return {}
        rows = {"mape": self.n - self.n_ape, "smape": 0, "wape": 0 if self.sum_abs_actual else self.n, "rmse": 0, "mase": self.n - self.n_scaled}
        return {m: {"rows": rows[m], "groups": self.groups_without[m]} for m in METRIC_NAMES}

    def coverage(self) -> dict[str, float]:
        return {name: below / self.n for name, below in self.below.items()} if self.n else {}

    def worst(self) -> list[dict]:
        ranked = sorted(self._worst, key=lambda e: e[:2], reverse=True)
        return [{"group": label, **{k: _or_none(m["metrics"].get(k)) for k in HEADLINE}, "n_rows": m["n_rows"], "unscored": m["unscored"]} for _, _, label, m in ranked]


def _ratio(num: float, den: float, unit: float = 1.0) -> float | None:
    return unit * num / den if den else None


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _or_none(value) -> float | None:
    """A metric for JSON: None where it is undefined (NaN is not JSON)."""
    return value if _finite(value) else None
