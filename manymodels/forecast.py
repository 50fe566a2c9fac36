"""mm forecast: predict every inference row with its group's model from one train run."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import cache, registry
from .config import Config
from .console import Terminal
from .datastore import Datastore
from .engine import make_batches
from .errors import EXIT_OK, EXIT_PARTIAL
from .runs import Run, latest_run
from .session import Session, open_session
from .split import PERIOD
from .timeindex import NS_PER_DAY
from .metrics import scores
from .tasks import STEP_COLUMN, ForecastContext, forecast_batch, forecast_crash
from .train import group_spec, load_split

FORECASTING_OUTPUT = "forecasting_output.csv"


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
    manifest, table = load_split(store, config, terminal)
    spec = group_spec(config, manifest)
    train_record, models_table = registry.run_models(store, run_id)
    models = {r["key"]: r for r in models_table.to_dict("records")} if len(models_table) else {}
    previous = _previous_forecasts(store)
    config_fp = config.section_fingerprint(*cache.FORECAST_SECTIONS)
    run = Run(store, "forecast", config_fp, extra={"train_run_id": train_record["id"]}).begin()
    terminal.detail(f"forecast: using the models of train run {train_record['id']}")

    rows: list[dict] = []
    to_run: list[dict] = []
    for g in table.to_dict("records"):
        if g["n_inference"] == 0:
            continue
        ident = {"key": g["key"], "label": g["label"], "values": json.loads(g["values"]), "n_rows": int(g["n_inference"])}
        m = models.get(g["key"])
        version = None if m is None or _missing(m.get("model_version")) else int(m["model_version"])
        if m is None or m.get("status") == "failed" or version is None:
            why = "not in the train run" if m is None else (m.get("error") or "training failed")
            rows.append({**ident, "status": "no_model", "reason": "no_model", "error": f"no model in train run {train_record['id']}: {why}"})
            continue
        parts = cache.with_version({"model": f"{m['fingerprint']}:{version}", "inference": g["inference_hash"], "history": g["train_hash"], "config": config_fp})
        fingerprint = cache.fingerprint(parts)
        exists = store.forecast_path(g["key"], fingerprint).exists()
        decision = cache.decide(previous.get(g["key"]), parts, s.allow_reuse, exists, "forecast")
        if decision.reuse:
            terminal.detail(f"{g['label']}: forecast reused, {decision.reason}")
            rows.append({**ident, "status": "reused", "decision": f"reused: {decision.reason}", "fingerprint": fingerprint, "parts": parts, "model_version": version})
            continue
        terminal.detail(f"{g['label']}: forecast, {decision.reason}")
        to_run.append({**ident, "model_version": version, "fingerprint": fingerprint, "parts": parts, "decision": f"forecast: {decision.reason}"})

    context = ForecastContext(
        root=str(store.root),
        spec=spec,
        train_run_id=train_record["id"],
        prediction_column=config.forecast.prediction_column,
        quantile_columns=quantile_columns(config),
        output_columns=tuple(c for c in manifest["columns"] if c != PERIOD),
    )
    info = {g["key"]: g for g in to_run}
    interrupted = True
    try:
        with terminal.progress(f"forecast: {len(to_run)} groups", total=len(to_run)) as bar:
            batches = make_batches(context, to_run, s.jobs)
            for _, results in s.engine().map(forecast_batch, batches, forecast_crash) if batches else ():
                for r in results:
                    item = info[r["key"]]
                    rows.append({**{k: item[k] for k in ("key", "label", "values", "n_rows")}, **r})
                    if r["status"] == "failed":
                        terminal.detail(f"{item['label']}: forecast failed, {r['error']}")
                bar.advance(len(results), failed=sum(r["status"] == "failed" for r in results))
        interrupted = False
    finally:
        if interrupted:
            run.finish("interrupted", {"done": len(rows)})
    return _finish(s, run, rows, train_record, context, time.perf_counter() - started)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _previous_forecasts(store: Datastore) -> dict[str, dict]:
    """What the last forecast run recorded per group: only used to explain what changed."""
    record = latest_run(store, "forecast", usable_only=False)
    if record is None:
        return {}
    return {row["key"]: registry.decode_row(row) for row in store.read_run_groups(record["id"]).to_dict("records")}


def _finish(s: Session, run: Run, rows: list[dict], train_record: dict, context: ForecastContext, elapsed: float) -> ForecastResult:
    store = s.store
    rows.sort(key=lambda r: r["label"])
    ok = [r for r in rows if r["status"] in ("forecast", "reused")]
    tally = _write_output(store, ok, context)
    counts = {k: sum(r["status"] == k for r in rows) for k in ("forecast", "reused", "failed", "no_model")}
    status = "partial" if counts["failed"] or counts["no_model"] else "completed"
    result = ForecastResult(
        run_id=run.id,
        status=status,
        train_run_id=train_record["id"],
        n_groups=len(rows),
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
        failures=[{"group": r["label"], "reason": r.get("reason", ""), "error": r.get("error", "")} for r in rows if r["status"] in ("failed", "no_model")],
    )
    table = pd.DataFrame([{k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows])
    run.finish(status, counts, table, train_run_id=train_record["id"], output=result.output, accuracy=result.accuracy)
    return result


CHUNK_ROWS = 50_000


def _write_output(store: Datastore, rows: list[dict], context: ForecastContext) -> Tally:
    """Concatenate the groups' forecasts into one CSV (in chunks, published atomically),
    measuring accuracy against any actuals on the way."""
    axis = context.spec.time_axis
    daily_or_coarser = axis.kind == "month" or (axis.kind == "fixed" and axis.step % NS_PER_DAY == 0)
    date_format = "%Y-%m-%d" if daily_or_coarser else "%Y-%m-%dT%H:%M:%S"
    header = [*context.output_columns, context.prediction_column, *context.quantile_columns, "model_version", "run_id"]
    tally = Tally(context)
    with store.output_file(FORECASTING_OUTPUT) as f:
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
        self.per_group: list[tuple[str, dict]] = []

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
        self.per_group.append((label, scores(a, p)))

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

    def worst(self, n: int = 5) -> list[dict]:
        scored = [(label, m) for label, m in self.per_group if not math.isnan(m["wape"])]
        scored.sort(key=lambda x: -x[1]["wape"])
        return [{"group": label, **{k: m.get(k) for k in ("mape", "smape", "wape")}} for label, m in scored[:n]]
