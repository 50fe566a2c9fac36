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
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from . import cache, registry
from .config import Config
from .console import Terminal
from .datastore import Datastore, release_memory
from .errors import EXIT_OK, EXIT_PARTIAL
from .runs import GROUP_IDENTITY, GROUP_OUTCOME, GroupsTable, Run, latest_run
from .session import Session, open_session
from .split import PERIOD, check_column_names
from .spool import Spool
from .timeindex import NS_PER_DAY
from .metrics import scores
from .tasks import STEP_COLUMN, ForecastContext, forecast_batch, forecast_crash
from .train import group_spec, load_split

FORECASTING_OUTPUT = "forecasting_output.csv"
SPLIT_FIELDS = ["key", "label", "values", "n_train", "n_inference", "train_hash", "inference_hash"]

# The run's groups table (mm runs show, and the next forecast run's explanations).
GROUPS_SCHEMA = pa.schema(
    [
        *GROUP_IDENTITY,
        ("n_rows", pa.int64()),
        *GROUP_OUTCOME,
        ("model_version", pa.int64()),
        ("n_missing_prediction", pa.int64()),
    ]
)


@dataclass
class ForecastResult:
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
    accuracy: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)
    worst_groups: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed or self.no_model else EXIT_OK

    def to_dict(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


def quantile_columns(config: Config) -> tuple[str, ...]:
    return tuple(f"{config.forecast.prediction_column}_q{q * 100:g}" for q in config.forecast.quantiles)


def forecast(
    config: Config,
    terminal: Terminal | None = None,
    *,
    run_id: str | None = None,
    allow_reuse: bool | None = None,
    jobs: int | None = None,
    engine: str | None = None,
    scheduler: str | None = None,
    wait: float = 0.0,
    session: Session | None = None,
) -> ForecastResult:
    """Forecast every inference row; write forecasting_output.csv and a run record."""
    with open_session(config, terminal, allow_reuse, jobs, engine, scheduler, wait, session) as s:
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
        context = ForecastContext(
            root=store.location,
            spec=group_spec(config, manifest),
            train_run_id=train_record["id"],
            prediction_column=config.forecast.prediction_column,
            quantile_columns=quantile_columns(config),
            output_columns=tuple(c for c in manifest["columns"] if c != PERIOD),
        )
        _run(s, spool, run, context, n_run)
        return _finish(s, run, spool, train_record, context, time.perf_counter() - started)


def _plan(s: Session, spool: Spool, train_run_id: str, config_fp: str) -> int:
    """Decide every group with inference rows: reused and model-less groups go to
    ``spool['rows']``, groups to forecast to ``spool['todo']``; how many to forecast."""
    to_run = 0
    for batch in s.store.iter_split_groups(columns=SPLIT_FIELDS):
        for g in batch.to_pylist():
            if g["n_inference"] == 0:
                continue
            ident = {"key": g["key"], "label": g["label"], "values": json.loads(g["values"]), "n_rows": int(g["n_inference"])}
            m = spool.get("models", g["key"])
            version = None if m is None or _missing(m.get("model_version")) else int(m["model_version"])
            if m is None or m.get("status") == "failed" or version is None:
                why = "not in the train run" if m is None else (m.get("error") or "training failed")
                _keep(spool, {**ident, "status": "no_model", "reason": "no_model", "error": f"no model in train run {train_run_id}: {why}"})
                continue
            parts = cache.with_version({"model": f"{m['fingerprint']}:{version}", "inference": g["inference_hash"], "history": g["train_hash"], "config": config_fp})
            fingerprint = cache.fingerprint(parts)
            exists = s.store.has_forecast(g["key"], fingerprint)
            decision = cache.decide(spool.get("previous", g["key"]), parts, s.allow_reuse, exists, "forecast")
            if decision.reuse:
                s.terminal.detail(f"{g['label']}: forecast reused, {decision.reason}")
                _keep(spool, {**ident, "status": "reused", "decision": f"reused: {decision.reason}", "fingerprint": fingerprint, "parts": parts, "model_version": version})
                continue
            s.terminal.detail(f"{g['label']}: forecast, {decision.reason}")
            spool.add("todo", {**ident, "model_version": version, "fingerprint": fingerprint, "parts": parts, "decision": f"forecast: {decision.reason}", "n_train": int(g["n_train"])})
            to_run += 1
    return to_run


def _keep(spool: Spool, row: dict) -> None:
    spool.add("rows", row, sort=row["label"])


def _run(s: Session, spool: Spool, run: Run, context: ForecastContext, n_run: int) -> None:
    for done in s.execute(run, forecast_batch, forecast_crash, context, spool.rows("todo"), n_run, f"forecast: {n_run} groups"):
        for item, r in done:
            _keep(spool, {**{k: item[k] for k in ("key", "label", "values", "n_rows")}, **r})
            if r["status"] == "failed":
                s.terminal.detail(f"{item['label']}: forecast failed, {r['error']}")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finish(s: Session, run: Run, spool: Spool, train_record: dict, context: ForecastContext, elapsed: float) -> ForecastResult:
    store = s.store
    counts = {k: 0 for k in ("forecast", "reused", "failed", "no_model")}
    failures: list[dict] = []
    # the run's groups table is published before forecasting_output.csv: a failure writing either keeps the previous output
    with store.output_file(FORECASTING_OUTPUT) as f, GroupsTable(store, run.id, GROUPS_SCHEMA) as groups:
        def forecasts():
            """The rows in group order, tallied and stored on the way, that have a forecast."""
            for r in spool.rows("rows"):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
                groups.add(r)
                if r["status"] in ("failed", "no_model"):
                    failures.append({"group": r["label"], "reason": r.get("reason", ""), "error": r.get("error", "")})
                else:
                    yield r

        tally = _write_output(store, f, forecasts(), context)
    store.mark_split_damaged(sum(f["reason"] == "partition_missing" for f in failures))
    status = "partial" if counts["failed"] or counts["no_model"] else "completed"
    result = ForecastResult(
        run_id=run.id,
        status=status,
        train_run_id=train_record["id"],
        n_groups=sum(counts.values()),
        forecast=counts["forecast"],
        reused=counts["reused"],
        failed=counts["failed"],
        no_model=counts["no_model"],
        n_rows=tally.rows,
        rows_beyond_horizon=tally.beyond_horizon,
        duration_s=round(elapsed, 3),
        output=str(store.output_path(FORECASTING_OUTPUT)),
        accuracy=tally.accuracy(),
        coverage=tally.coverage(),
        worst_groups=tally.worst(),
        failures=failures,
    )
    run.finish(status, counts, train_run_id=train_record["id"], output=result.output, accuracy=result.accuracy)
    return result


CHUNK_ROWS = 10_000  # rows of forecasting_output.csv written at a time (~6 MB of tables)


def _write_output(store: Datastore, f, rows, context: ForecastContext) -> Tally:
    """Concatenate the groups' forecasts into one CSV ``f`` (in chunks; the caller publishes it
    atomically), measuring accuracy against any actuals on the way."""
    axis = context.spec.time_axis
    daily_or_coarser = axis.kind == "month" or (axis.kind == "fixed" and axis.step % NS_PER_DAY == 0)
    date_format = "%Y-%m-%d" if daily_or_coarser else "%Y-%m-%dT%H:%M:%S"
    header = [*context.output_columns, context.prediction_column, *context.quantile_columns, "model_version", "run_id"]
    tally = Tally(context)
    chunk: list[pa.Table] = []
    size = 0

    def flush() -> None:
        nonlocal chunk, size
        if not chunk:
            return
        frame = pa.concat_tables(chunk, promote_options="permissive").to_pandas()
        frame.to_csv(f, header=tally.rows == 0, index=False, columns=[c for c in header if c in frame.columns], date_format=date_format)
        tally.rows += len(frame)
        chunk, size = [], 0
        release_memory()

    for r in rows:
        table = store.read_forecast(r["key"], r["fingerprint"])
        tally.add(r["label"], table)
        chunk.append(table)
        size += table.num_rows
        if size >= CHUNK_ROWS:
            flush()
    flush()
    if tally.rows == 0:
        f.write(",".join(header) + "\n")
    return tally


class Tally:
    """Accuracy of the forecasts against the actuals in the inference rows, group by group."""

    def __init__(self, context: ForecastContext):
        self.context = context
        self.rows = 0
        self.beyond_horizon = 0
        self.n = 0
        self.n_ape = 0
        self.sum_ape = self.sum_sape = self.sum_abs_err = self.sum_abs_actual = self.sum_sq_err = 0.0
        self.below = {name: 0 for name in context.quantile_columns}
        self._worst: list[tuple[float, int, str, dict]] = []  # a min-heap of the N worst groups by WAPE
        self._seen = 0

    def add(self, label: str, table: pa.Table) -> None:
        c = self.context
        steps = table[STEP_COLUMN].to_numpy(zero_copy_only=False).astype(float)
        self.beyond_horizon += int(np.sum(steps > c.spec.horizon))
        actual = table[c.spec.target_column].to_numpy(zero_copy_only=False).astype(float)
        pred = table[c.prediction_column].to_numpy(zero_copy_only=False).astype(float)
        ok = ~(np.isnan(actual) | np.isnan(pred))
        if not ok.any():
            return
        a, p = actual[ok], pred[ok]
        err = np.abs(p - a)
        nz = a != 0
        denom = np.abs(a) + np.abs(p)
        self.n += int(ok.sum())
        self.n_ape += int(nz.sum())
        self.sum_ape += float(np.sum(err[nz] / np.abs(a[nz])))
        self.sum_sape += float(np.sum(np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0)))
        self.sum_abs_err += float(err.sum())
        self.sum_abs_actual += float(np.abs(a).sum())
        self.sum_sq_err += float(np.sum((p - a) ** 2))
        for name in c.quantile_columns:
            q = table[name].to_numpy(zero_copy_only=False).astype(float)[ok]
            self.below[name] += int(np.sum(a <= q))
        self._keep_if_worst(label, scores(a, p))

    WORST = 5

    def _keep_if_worst(self, label: str, metrics: dict) -> None:
        if math.isnan(metrics["wape"]):
            return
        self._seen += 1
        entry = (metrics["wape"], -self._seen, label, metrics)  # ties: the earlier group ranks worse
        if len(self._worst) < self.WORST:
            heapq.heappush(self._worst, entry)
        elif entry > self._worst[0]:
            heapq.heapreplace(self._worst, entry)

    def accuracy(self) -> dict[str, float]:
        if not self.n:
            return {}
        return {
            "mape": 100.0 * self.sum_ape / self.n_ape if self.n_ape else float("nan"),
            "smape": 100.0 * self.sum_sape / self.n,
            "wape": 100.0 * self.sum_abs_err / self.sum_abs_actual if self.sum_abs_actual else float("nan"),
            "rmse": math.sqrt(self.sum_sq_err / self.n),
            "n_rows": self.n,
        }

    def coverage(self) -> dict[str, float]:
        return {name: below / self.n for name, below in self.below.items()} if self.n else {}

    def worst(self) -> list[dict]:
        ranked = sorted(self._worst, reverse=True)
        return [{"group": label, **{k: m.get(k) for k in ("mape", "smape", "wape")}} for _, _, label, m in ranked]
