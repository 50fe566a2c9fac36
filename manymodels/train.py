"""mm train: one model per group, reusing every group whose inputs did not change."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import pandas as pd

from . import cache, registry
from .automl import search_space_fingerprint
from .config import Config
from .console import Terminal
from .datastore import Datastore
from .engine import make_batches
from .errors import EXIT_OK, EXIT_PARTIAL, UpstreamMissing
from .kernels import GroupSpec
from .metrics import METRIC_NAMES
from .runs import Run
from .selection import GroupSelector
from .session import Session, open_session
from .split import PERIOD
from .tasks import TrainContext, train_batch, train_crash

TRAINING_OUTPUT = "training_output.csv"


@dataclass
class TrainResult:
    run_id: str
    status: str
    n_groups: int = 0
    trained: int = 0
    reused: int = 0
    failed: int = 0
    tuned: int = 0
    duration_s: float = 0.0
    output: str = ""
    failures: list[dict] = field(default_factory=list)
    winners: dict[str, int] = field(default_factory=dict)
    median_backtest: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def to_dict(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


def group_spec(config: Config, manifest: dict) -> GroupSpec:
    d, t = config.data, config.train
    return GroupSpec(
        group_columns=tuple(d.group_columns),
        series_columns=tuple(c for c in d.series_key if c not in d.group_columns),
        time_column=d.time_column,
        target_column=d.target_column,
        period_column=PERIOD,
        known_future_columns=tuple(d.known_future_columns),
        axis=manifest["axis"],
        horizon=t.horizon,
        min_history=t.min_history,
        lags=t.features.lags,
        windows=t.features.windows,
        calendar=t.features.calendar,
        target_transform=t.features.target_transform,
        params=dict(t.params),
        num_boost_round=t.num_boost_round,
        automl=t.automl.model_dump(mode="json"),
        quantiles=tuple(config.forecast.quantiles),
        seed=t.seed,
    )


def load_split(store: Datastore, config: Config, terminal: Terminal) -> tuple[dict, pd.DataFrame]:
    manifest = store.read_split_manifest()
    if manifest is None:
        raise UpstreamMissing(f"no split in datastore {store.root}", "run 'mm split -c CONFIG' first (or 'mm run', which splits, trains and forecasts)")
    current = config.section_fingerprint(*cache.SPLIT_SECTIONS)
    if (manifest.get("parts") or {}).get("config") != current:
        terminal.warn("the split was made with a different data/split config; run 'mm split' (or 'mm run') to redo it")
    return manifest, store.read_split_groups()


def train(
    config: Config,
    terminal: Terminal | None = None,
    *,
    groups: list[str] | None = None,
    retry_failed: bool = False,
    allow_reuse: bool | None = None,
    jobs: int | None = None,
    engine: str | None = None,
    scheduler: str | None = None,
    wait: float = 0.0,
    session: Session | None = None,
) -> TrainResult:
    """Fit (or reuse) one model per group; write training_output.csv and a run record."""
    with open_session(config, terminal, allow_reuse, jobs, engine, scheduler, wait, session) as s:
        return _train(s, groups or [], retry_failed)


def _train(s: Session, group_specs: list[str], retry_failed: bool) -> TrainResult:
    config, store, terminal = s.config, s.store, s.terminal
    started = time.perf_counter()
    manifest, table = load_split(store, config, terminal)
    spec = group_spec(config, manifest)
    _, previous = registry.train_state(store)
    selector = GroupSelector(group_specs, config.data.group_columns)
    retry = {k for k, v in previous.items() if v.get("status") == "failed"} if retry_failed else None
    config_fp = config.section_fingerprint(*cache.TRAIN_SECTIONS)
    axis_fp = cache.digest(manifest["axis"])
    automl = config.train.automl
    space = search_space_fingerprint(automl.model_dump(mode="json"))

    run = Run(store, "train", config_fp).begin()
    rows: list[dict] = []
    to_fit: list[dict] = []
    selected = 0
    for g in table.to_dict("records"):
        values = json.loads(g["values"])
        chosen = (selector.matches(values) if selector else True) and (retry is None or g["key"] in retry)
        prev = previous.get(g["key"])
        if not chosen:
            if prev is not None:  # keep the group's current model in this run's registry
                rows.append({**prev, "run_id": run.id, "decision": "not selected: kept", "duration_s": 0.0})
            continue
        selected += 1
        if g["n_train"] == 0:
            rows.append(_failed_row(g, run.id, "no_history", "no training rows: every row of this group is after the cutoff or has no target"))
            continue
        parts = cache.with_version({"data": g["train_hash"], "config": config_fp, "axis": axis_fp})
        version = prev.get("model_version") if prev else None
        intact = (
            bool(version)
            and prev.get("status") in ("trained", "reused")
            and prev.get("fingerprint") == cache.fingerprint(parts)
            and store.model_meta_path(g["key"], int(version)).exists()
        )
        decision = cache.decide(prev, parts, s.allow_reuse, intact, "model")
        if decision.reuse:
            terminal.detail(f"{g['label']}: reused, {decision.reason}")
            rows.append({**prev, **_ident(g), "status": "reused", "decision": f"reused: {decision.reason}", "run_id": run.id, "duration_s": 0.0})
            continue
        terminal.detail(f"{g['label']}: retrain, {decision.reason}")
        to_fit.append(
            {
                **_ident(g),
                "fingerprint": cache.fingerprint(parts),
                "parts": parts,
                "decision": f"trained: {decision.reason}",
                "previous_version": version,
                "retune": automl.retune,
                "space": space,
                "adopt": s.allow_reuse,
            }
        )
    if retry is not None and not to_fit:
        terminal.info("train: no failed groups to retry")

    deadline = time.time() + automl.timeout_total if automl.enabled and automl.timeout_total else None
    context = TrainContext(str(store.root), spec, run.id, config.registry.keep_versions, deadline)
    info = {g["key"]: g for g in to_fit}
    interrupted = True
    try:
        with store.open_journal(run.id) as journal, terminal.progress(f"train: fitting {len(to_fit)} groups", total=len(to_fit)) as bar:
            batches = make_batches(context, to_fit, s.jobs)
            for _, results in s.engine().map(train_batch, batches, train_crash) if batches else ():
                for r in results:
                    row = _result_row(info[r["key"]], r, run.id)
                    journal.write(json.dumps(row, default=str) + "\n")
                    rows.append(row)
                    if r["status"] == "failed":
                        terminal.detail(f"{row['label']}: failed, {row['error']}")
                journal.flush()
                bar.advance(len(results), failed=sum(r["status"] == "failed" for r in results))
        interrupted = False
    finally:
        if interrupted:
            run.finish("interrupted", {"done": len(rows)})
    result = _finish(s, run, rows, manifest, selected, time.perf_counter() - started)
    return result


def _ident(g: dict) -> dict:
    return {
        "key": g["key"],
        "label": g["label"],
        "values": json.loads(g["values"]),
        "n_train_rows": int(g["n_train"]),
        "train_start": g["train_start"],
        "train_end": g["train_end"],
    }


def _failed_row(g: dict, run_id: str, reason: str, error: str) -> dict:
    return {**_ident(g), "status": "failed", "reason": reason, "error": error, "decision": "failed", "run_id": run_id, "model_version": None, "duration_s": 0.0}


def _result_row(item: dict, r: dict, run_id: str) -> dict:
    row = {
        **{k: item[k] for k in ("key", "label", "values", "n_train_rows", "train_start", "train_end")},
        "status": r["status"],
        "decision": r.get("decision", ""),
        "reason": r.get("reason", ""),
        "error": r.get("error", ""),
        "fingerprint": r["fingerprint"],
        "parts": r["parts"],
        "run_id": run_id,
        "trained_in_run": r.get("trained_in_run") or (run_id if r["status"] == "trained" else None),
        "duration_s": r.get("duration_s", 0.0),
    }
    if r["status"] in ("trained", "reused"):
        row.update(
            {
                "model": r["model"],
                "model_version": r["model_version"],
                "metrics": r["metrics"],
                "scores": r["scores"],
                "n_trials": r["n_trials"],
                "tuning": r.get("tuning_source", ""),
                "note": r.get("note", ""),
            }
        )
    return row


def _finish(s: Session, run: Run, rows: list[dict], manifest: dict, selected: int, elapsed: float) -> TrainResult:
    store, config = s.store, s.config
    rows.sort(key=lambda r: r["label"])
    counts = {"trained": 0, "reused": 0, "failed": 0}
    for r in rows:
        if r.get("decision") == "not selected: kept":
            continue
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    status = "partial" if counts["failed"] else "completed"
    groups_table = pd.DataFrame([_storable(r) for r in rows])
    out_path = store.output_path(TRAINING_OUTPUT)
    with store.output_file(TRAINING_OUTPUT) as f:
        training_output(rows, config).to_csv(f, index=False)
    winners: dict[str, int] = {}
    for r in rows:
        if r["status"] in ("trained", "reused") and r.get("model"):
            winners[r["model"]] = winners.get(r["model"], 0) + 1
    medians = {}
    for m in ("mape", "smape", "wape"):
        values = [r.get("metrics", {}).get(m) for r in rows if r["status"] in ("trained", "reused") and isinstance(r.get("metrics"), dict)]
        values = [v for v in values if v is not None and not math.isnan(v)]
        if values:
            medians[m] = float(pd.Series(values).median())
    result = TrainResult(
        run_id=run.id,
        status=status,
        n_groups=selected,
        trained=counts["trained"],
        reused=counts["reused"],
        failed=counts["failed"],
        tuned=sum(1 for r in rows if r["status"] == "trained" and r.get("tuning") == "tuned"),
        duration_s=round(elapsed, 3),
        output=str(out_path),
        failures=[{"group": r["label"], "reason": r.get("reason", ""), "error": r.get("error", "")} for r in rows if r["status"] == "failed"],
        winners=winners,
        median_backtest=medians,
    )
    run.finish(status, counts, groups_table, output=str(out_path), winners=winners)
    return result


def _storable(r: dict) -> dict:
    out = dict(r)
    for k in ("values", "parts", "metrics", "scores"):
        if k in out and not isinstance(out[k], str):
            out[k] = json.dumps(out[k], default=str)
    if out.get("model_version") is not None:
        out["model_version"] = int(out["model_version"])
    return out


def training_output(rows: list[dict], config: Config) -> pd.DataFrame:
    """The binding training_output.csv table: one row per group of this run."""
    columns = list(config.data.group_columns)
    records = []
    candidates = list(config.train.automl.candidates) if config.train.automl.enabled else []
    for r in rows:
        metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        scores = r.get("scores") if isinstance(r.get("scores"), dict) else {}
        record = dict(zip(columns, r["values"]))
        record.update(
            {
                "status": r["status"],
                "model": r.get("model") if r["status"] != "failed" else "",
                "model_version": r.get("model_version") if r["status"] != "failed" else None,
                "run_id": r["run_id"],
                "n_train_rows": r.get("n_train_rows"),
                "train_start": r.get("train_start"),
                "train_end": r.get("train_end"),
                **{m: metrics.get(m) for m in METRIC_NAMES},
                "duration_s": r.get("duration_s", 0.0),
                "error": r.get("error", "") if r["status"] == "failed" else "",
                "trained_in_run": r.get("trained_in_run") or "",
                "decision": r.get("decision", ""),
                "n_trials": r.get("n_trials", 0),
                "tuning": r.get("tuning", ""),
                **{f"score_{c}": scores.get(c) for c in candidates},
            }
        )
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if "model_version" in frame:
        frame["model_version"] = frame["model_version"].astype("Int64")
    return frame
