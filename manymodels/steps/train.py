"""mm train: one model per group, reusing every group whose inputs did not change.

The step streams: the split's groups table is read in record batches; what the
previous train run recorded for a group is looked up in a Spool (local disk);
groups to fit are spooled, then handed to the engine batch by batch as workers
free up; results are journaled and spooled as they arrive; training_output.csv
and the run's groups table are written from the spool, sorted by group, in
chunks. No structure in this process grows with the number of groups.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import Config
from ..console import Terminal
from ..core import statistical
from ..core.identity import digest
from ..core.metrics import HEADLINE, METRIC_NAMES
from ..core.pooling import BLEND as pooling_blend
from ..core.pooling import level_name as pooling_level_name
from ..core.results import Reason, Status, TrainRow
from ..errors import InputDataError
from ..runner.options import RunOptions
from ..runner.session import Session, open_session
from ..runner.tasks import TrainContext, train_batch
from ..store import cache, registry
from ..store.datastore import Datastore
from ..store.runs import GROUP_IDENTITY, GROUP_OUTCOME, GroupsTable, Run
from ..store.spool import Spool
from .accuracy import drifted_keys
from .common import GroupsResult, group_spec, load_split
from .forecast import forecast_context
from .pools import (
    PoolPlan,
    choose_pools,
    fit_pools,
    has_pool_scores,
    pooling_levels,
    prune_pools,
)
from .selection import GroupSelector

TRAINING_OUTPUT = "training_output.csv"
CSV_CHUNK = 5000

# The run's groups table: what forecast and the next train run read back (one column per TrainRow field).
GROUPS_SCHEMA = pa.schema(
    [
        *GROUP_IDENTITY,
        ("n_train_rows", pa.int64()),
        ("train_start", pa.string()),
        ("train_end", pa.string()),
        *GROUP_OUTCOME,
        ("run_id", pa.string()),
        ("trained_in_run", pa.string()),
        ("duration_s", pa.float64()),
        ("model", pa.string()),
        ("model_version", pa.int64()),
        ("metrics", pa.string()),
        ("n_backtest", pa.int64()),
        ("unscored", pa.string()),  # JSON {metric: backtest rows it could not score}
        ("selection_metric", pa.string()),
        ("scores", pa.string()),
        ("n_trials", pa.int64()),
        ("tuning", pa.string()),
        ("note", pa.string()),
        ("candidate_errors", pa.string()),  # JSON {candidate: why it was dropped}
        ("demand_class", pa.string()),
        ("pool", pa.string()),
    ]
)
SPLIT_FIELDS = ["key", "label", "values", "n_train", "train_start", "train_end", "train_hash", "n_inference", "inference_hash"]
NOT_SELECTED = "not selected: kept"  # the decision of a group outside --groups / --retry-failed


@dataclass
class TrainResult(GroupsResult):
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
    median_backtest: dict[str, float] = field(default_factory=dict)  # per metric, over the groups it could score
    backtest_rows: int = 0  # backtest rows of the groups with a model (all their folds)
    unscored: dict[str, dict[str, int]] = field(default_factory=dict)  # per metric: backtest "rows" it could not score, "groups" it has no value for
    metric_fallbacks: dict[str, int] = field(default_factory=dict)  # groups chosen by another metric than train.automl.metric, by that metric
    pooling: dict = field(default_factory=dict)  # pooled models fitted, reused, failed; verdicts; groups that chose each


def train(
    config: Config,
    terminal: Terminal | None = None,
    *,
    groups: list[str] | None = None,
    retry_failed: bool = False,
    options: RunOptions | None = None,
    session: Session | None = None,
    **option_fields,
) -> TrainResult:
    """Fit (or reuse) one model per group; write training_output.csv and a run record.

    ``options`` (or its fields as keywords, see RunOptions) say how it runs; in ``session``, the session's.
    """
    with open_session(config, terminal, RunOptions.of(options, **option_fields), session) as s:
        return _train(s, groups or [], retry_failed)


def _train(s: Session, group_specs: list[str], retry_failed: bool) -> TrainResult:
    config, store = s.config, s.store
    started = time.perf_counter()
    manifest = load_split(store, config, s.terminal)
    if not group_specs and not retry_failed:
        _check_some_group_is_long_enough(store, config)
    config_fp = cache.config_fingerprint(config, cache.TRAIN)
    with Spool(store.local_scratch()) as spool:
        registry.train_state(store, spool, s.terminal.warn)
        run = Run(store, "train", config_fp).begin()
        selected, n_fit = _plan(s, spool, run, GroupSelector(group_specs, config.data.group_columns), retry_failed, manifest, config_fp)
        if retry_failed and not n_fit:
            s.terminal.info("train: no failed groups to retry")
        if n_fit:
            _warn_if_auto_lacks_statistical_models(config, s.terminal)
        context = TrainContext(
            store.location,
            group_spec(config, manifest),
            run.id,
            config.registry.keep_versions,
            _deadline(config),
            forecast=forecast_context(config, store.location, manifest, run.id),
            forecast_config=cache.config_fingerprint(config, cache.FORECAST),
        )
        plan = fit_pools(s, spool, run, context.spec, config_fp, digest(manifest["axis"])) if n_fit else PoolPlan([])
        _fit(s, spool, run, context, n_fit, plan)
        pooling = plan.summary() if plan.levels else {}
        if plan.levels and n_fit:
            pooling.update(choose_pools(s, spool, lambda row: _keep(spool, row), config.train.automl.evidence))
            _say_pools(s, pooling)
        return _finish(s, run, spool, selected, time.perf_counter() - started, pooling, plan)


def _check_some_group_is_long_enough(store: Datastore, config: Config) -> None:
    """Every group shorter than train.min_history is a config or input problem, not N group failures:
    refuse before anything (training_output.csv, the registry) changes."""
    longest, n = 0, 0
    for batch in store.iter_split_groups(columns=["n_train_periods"]):
        column = batch.column(0).to_numpy(zero_copy_only=False)
        n += len(column)
        longest = max(longest, int(column.max()) if len(column) else 0)
    need = config.train.min_history
    if n and longest < need:
        raise InputDataError(
            f"no group has train.min_history = {need} periods of history: the longest of the {n:,} groups has {longest}",
            "lower train.min_history (and train.horizon / train.automl.folds with it), or give the groups more history "
            "(check split.train_end and split.holdout)",
        )


def _deadline(config: Config) -> float | None:
    automl = config.train.automl
    return time.time() + automl.timeout_total if automl.enabled and automl.timeout_total else None


def _plan(s: Session, spool: Spool, run: Run, selector: GroupSelector, retry_failed: bool, manifest: dict, config_fp: str) -> tuple[int, int]:
    """Decide every group: rows of kept, reused and unfit groups go to ``spool['rows']``,
    groups to fit to ``spool['fit']``. Returns (groups selected, groups to fit)."""
    store, terminal = s.store, s.terminal
    axis_fp = digest(manifest["axis"])
    automl = s.config.train.automl
    space = cache.search_space_fingerprint(s.config)
    drifted = drifted_keys(store) if automl.retune == "on_drift" else set()
    if automl.retune == "on_drift":
        run.extra["drifted_groups"] = len(drifted)  # searched again; the run's groups table says which (tuning)
    selected = to_fit = 0
    for batch in store.iter_split_groups(columns=SPLIT_FIELDS):
        for g in batch.to_pylist():
            values = json.loads(g["values"])
            if not s.config.hierarchy.trains(s.config.data.group_columns, values):
                continue  # hierarchy.train_level: this node is derived from that level's (steps/reconcile.py)
            recorded = spool.get("previous", g["key"])  # the last train run's row, as the cache reads it
            prev = TrainRow.from_dict(recorded) if recorded else None
            chosen = (selector.matches(values) if selector else True) and (not retry_failed or (prev is not None and prev.status is Status.FAILED))
            if not chosen:
                if prev is not None:  # keep the group's current model in this run's registry
                    _keep(spool, replace(prev, run_id=run.id, decision=NOT_SELECTED, duration_s=0.0))
                continue
            selected += 1
            if g["n_train"] == 0:
                why = "no training rows: every row of this group is after the cutoff or has no target"
                _keep(spool, TrainRow(**_ident(g), status=Status.FAILED, reason=Reason.NO_HISTORY, error=why, decision="failed", run_id=run.id))
                continue
            parts = cache.with_version({"data": g["train_hash"], "config": config_fp, "axis": axis_fp})
            version = prev.model_version if prev else None
            intact = (
                prev is not None
                and prev.has_model
                and prev.fingerprint == cache.fingerprint(parts)
                and store.has_model(g["key"], version, booster=prev.model in ("lightgbm", "ensemble"))
            )
            decision = cache.decide(recorded, parts, s.allow_reuse, intact, "model")
            if decision.reuse:
                terminal.detail(f"{g['label']}: reused, {decision.reason}")
                _keep(spool, replace(prev, **_ident(g), status=Status.REUSED, decision=f"reused: {decision.reason}", run_id=run.id, duration_s=0.0))
                continue
            terminal.detail(f"{g['label']}: retrain, {decision.reason}")
            spool.add(
                "fit",
                {
                    **_ident(g),
                    "fingerprint": cache.fingerprint(parts),
                    "parts": parts,
                    "decision": f"trained: {decision.reason}",
                    "previous_version": version,
                    "retune": _retune(automl.retune, g["key"], drifted),
                    "space": space,
                    "adopt": s.allow_reuse,
                    # what the task's staged forecast is made from besides its model (tasks.stage_forecast)
                    "n_inference": int(g["n_inference"]),
                    "inference_hash": g["inference_hash"],
                },
            )
            to_fit += 1
    return selected, to_fit


def _retune(policy: str, key: str, drifted: set[str]) -> str:
    """on_drift: the groups the realised accuracy flagged are searched again, the others refit their decision."""
    if policy != "on_drift":
        return policy
    return "always" if key in drifted else "never"


def _keep(spool: Spool, row: TrainRow) -> None:
    spool.add("rows", row.to_dict(), sort=row.label)


def _fit(s: Session, spool: Spool, run: Run, context: TrainContext, n_fit: int, plan: PoolPlan) -> None:
    """Fit the spooled groups on the engine; journal and spool each result as it arrives
    (a group that scored pools waits in ``spool['pending']`` for ``choose_pools``)."""
    columns = list(s.config.data.group_columns)

    def items(chosen) -> Iterator[dict]:
        for i, item in enumerate(spool.rows("fit")):
            if chosen(i):
                yield {**item, "pools": plan.refs_of(item["values"], columns)} if plan.refs else item

    sampled = _warm_start_sample(s.config, n_fit)
    with s.store.open_journal(run.id) as journal:
        if not sampled:
            _fit_items(s, spool, run, context, journal, items(lambda i: True), n_fit, f"train: fitting {n_fit} groups")
            return
        # shared tuning: a sample searched in full, whose winners warm-start everyone else's search
        label = f"train: fitting {len(sampled)} sampled groups (their LightGBM parameters seed the other {n_fit - len(sampled)})"
        winners = _fit_items(s, spool, run, context, journal, items(sampled.__contains__), len(sampled), label)
        seeds = _seeds(s, winners, s.config.train.automl.warm_start.n_trials)
        rest = (dict(item, seeds=seeds) if seeds else item for item in items(lambda i: i not in sampled))
        _fit_items(s, spool, run, context, journal, rest, n_fit - len(sampled), f"train: fitting {n_fit - len(sampled)} groups")


def _fit_items(s: Session, spool: Spool, run: Run, context: TrainContext, journal, items, n: int, label: str) -> list[TrainRow]:
    """Run ``items`` on the engine; returns the rows of the groups whose LightGBM was searched."""
    searched = []
    for done in s.execute(run, train_batch, context.crash, context, items, n, label):
        for _, row in done:
            journal.write(row.to_dict())
            if has_pool_scores(row):
                spool.add("pending", row.to_dict(), sort=row.label)
            else:
                _keep(spool, row)
            if row.status is Status.FAILED:
                s.terminal.detail(f"{row.label}: failed, {row.error}")
            elif row.status is Status.TRAINED and row.n_trials > 1:
                searched.append(row)
        journal.flush()
    return searched


def _warm_start_sample(config: Config, n_fit: int) -> set[int]:
    """Which of the groups to fit (by position) are searched in full first: evenly spread, when
    more than twice train.automl.warm_start.sample groups are fitted (else each alone)."""
    automl = config.train.automl
    sample = automl.warm_start.sample
    if not automl.enabled or not sample or automl.n_trials <= automl.warm_start.n_trials or n_fit <= 2 * sample:
        return set()
    return set(range(0, n_fit, n_fit // sample)[:sample])


def _seeds(s: Session, searched: list[TrainRow], n_trials: int) -> dict | None:
    """The distinct LightGBM parameters the sampled groups' searches chose (as many as the seeded
    search has trials beside the defaults)."""
    found: list[dict] = []
    for row in searched:
        try:
            params = (s.store.read_model_meta(row.key, row.model_version).get("tuning") or {}).get("params", {}).get("lightgbm")
        except (OSError, ValueError):
            continue
        if params and params not in found:
            found.append(params)
    if not found:
        return None
    return {"params": found[: max(1, n_trials - 1)], "n_trials": n_trials, "n_sampled": len(searched)}


def _ident(g: dict) -> dict:
    return {
        "key": g["key"],
        "label": g["label"],
        "values": json.loads(g["values"]),
        "n_train_rows": int(g["n_train"]),
        "train_start": g["train_start"],
        "train_end": g["train_end"],
    }


class _Summary:
    """What the result reports, accumulated row by row (a few numbers per group at most)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric  # train.automl.metric: a group chosen by another one fell back
        self.counts = {Status.TRAINED: 0, Status.REUSED: 0, Status.FAILED: 0}
        self.tuned = 0
        self.winners: dict[str, int] = {}
        self.metrics = {m: array("d") for m in HEADLINE}
        self.backtest_rows = 0
        self.unscored = {m: {"rows": 0, "groups": 0} for m in METRIC_NAMES}
        self.fallbacks: dict[str, int] = {}
        self.failures: list[dict] = []
        self.partitions_missing = 0
        self.pools: set[str] = set()  # the pool versions rows point to (a handful: pools x versions)

    def add(self, r: TrainRow) -> None:
        if r.pool:
            self.pools.update(r.pool.split(","))  # a blend points to several
        ok = r.status in (Status.TRAINED, Status.REUSED)
        if r.decision != NOT_SELECTED:
            self.counts[r.status] += 1
        if r.status is Status.TRAINED and r.n_trials > 0:  # searched now, not a stored decision
            self.tuned += 1
        if ok and r.model:
            self.winners[r.model] = self.winners.get(r.model, 0) + 1
        if ok:
            self._add_backtest(r)
        if r.status is Status.FAILED:
            self.failures.append(r.failure())
            self.partitions_missing += r.reason is Reason.PARTITION_MISSING

    def _add_backtest(self, r: TrainRow) -> None:
        for m in METRIC_NAMES:
            v = r.metrics.get(m)
            if v is not None and v == v and m in self.metrics:
                self.metrics[m].append(v)
            self.unscored[m]["groups"] += v is None or v != v
            self.unscored[m]["rows"] += r.unscored.get(m, 0)  # a model of an older mm: not known
        self.backtest_rows += r.n_backtest
        if r.selection_metric and r.selection_metric != self.metric:
            self.fallbacks[r.selection_metric] = self.fallbacks.get(r.selection_metric, 0) + 1

    def medians(self) -> dict[str, float]:
        return {m: float(np.median(np.frombuffer(v))) for m, v in self.metrics.items() if len(v)}


def _say_pools(s: Session, pooling: dict) -> None:
    chosen = ", ".join(f"{name} by {n:,}" for name, n in sorted(pooling.get("chosen", {}).items())) or "by no group"
    s.terminal.info(
        f"train: pooled models: {pooling['fitted']} fitted, {pooling['reused']} reused, {len(pooling['failed'])} failed; "
        f"{pooling.get('approved', 0)} of {pooling.get('scored', 0)} pooled candidates (the pools and the blend) "
        f"beat their members' local models; chosen {chosen}"
    )


def _finish(s: Session, run: Run, spool: Spool, selected: int, elapsed: float, pooling: dict | None = None, plan: PoolPlan | None = None) -> TrainResult:
    """training_output.csv and the run's groups table, streamed from the spool in group order."""
    store, config = s.store, s.config
    automl = config.train.automl
    summary = _Summary(automl.metric if automl.enabled else "wape")
    out_path = store.output_path(TRAINING_OUTPUT)
    # the run's groups table is published before training_output.csv: a failure writing either keeps the previous output
    with store.output_file(TRAINING_OUTPUT) as f, GroupsTable(store, run.id, GROUPS_SCHEMA) as groups:
        chunk: list[TrainRow] = []
        header = True
        for r in map(TrainRow.from_dict, spool.rows("rows")):
            summary.add(r)
            groups.add(r.to_dict())
            chunk.append(r)
            if len(chunk) >= CSV_CHUNK:
                training_output(chunk, config).to_csv(f, index=False, header=header)
                chunk, header = [], False
        if chunk or header:
            training_output(chunk, config).to_csv(f, index=False, header=header)
    store.mark_split_damaged(summary.partitions_missing)
    if plan is not None and plan.refs:  # after the run's groups table: the versions its rows point to stay
        prune_pools(store, plan, summary.pools, config.registry.keep_versions)
    status = "partial" if summary.counts[Status.FAILED] else "completed"
    result = TrainResult(
        run_id=run.id,
        status=status,
        n_groups=selected,
        trained=summary.counts[Status.TRAINED],
        reused=summary.counts[Status.REUSED],
        failed=summary.counts[Status.FAILED],
        tuned=summary.tuned,
        duration_s=round(elapsed, 3),
        output=str(out_path),
        failures=summary.failures,
        winners=summary.winners,
        median_backtest=summary.medians(),
        backtest_rows=summary.backtest_rows,
        unscored=summary.unscored,
        metric_fallbacks=summary.fallbacks,
        pooling=pooling or {},
    )
    backtest = {"median": result.median_backtest, "rows": result.backtest_rows, "unscored": result.unscored, "metric_fallbacks": result.metric_fallbacks}
    run.finish(status, summary.counts, output=str(out_path), winners=summary.winners, backtest=backtest, pooling=pooling or {})
    return result


def _warn_if_auto_lacks_statistical_models(config: Config, terminal: Terminal) -> None:
    a = config.train.automl
    if a.enabled and a.candidates == "auto" and not statistical.available():
        terminal.warn(
            "train.automl.candidates auto: statsforecast is not installed, so ETS, Theta and the Croston family are left out "
            "(LightGBM, linear and the baselines only; each group's tuning column says so): pip install 'manymodels[stats]'"
        )


# How much of each group's backtest its metrics cover (empty for a failed group, or a model of an
# older mm that did not count): smape and rmse score every row, so they have no column.
BACKTEST_COVERAGE = ["n_backtest", "n_unscored_mape", "n_unscored_wape", "n_unscored_mase", "selection_metric"]


def _scored_candidates(config: Config) -> list[str]:
    """Every candidate a group may have a score for: the listed (or all, under auto) and the pools."""
    if not config.train.automl.enabled:
        return []
    pools = [*map(pooling_level_name, pooling_levels(config))]
    blend = [pooling_blend] if pools and config.train.automl.pooling.blend else []
    return [*config.train.automl.candidate_names(), *pools, *blend]


def training_output_columns(config: Config) -> list[str]:
    candidates = _scored_candidates(config)
    fixed = ["status", "model", "model_version", "run_id", "n_train_rows", "train_start", "train_end", *METRIC_NAMES, "duration_s", "error", "trained_in_run", "decision", "n_trials", "tuning", "dropped_candidates", "demand_class", *BACKTEST_COVERAGE]
    return [*config.data.group_columns, *fixed, *(f"score_{c}" for c in candidates)]


def _dropped(errors: dict[str, str]) -> str:
    """``candidate: why`` for every candidate left out of the group's choice."""
    return "; ".join(f"{kind}: {why}" for kind, why in errors.items())


def _coverage(r: TrainRow) -> dict:
    known = bool(r.unscored) and r.status is not Status.FAILED
    counts = {f"n_unscored_{m}": r.unscored.get(m) if known else None for m in ("mape", "wape", "mase")}
    return {"n_backtest": r.n_backtest if known else None, **counts, "selection_metric": r.selection_metric}


def training_output(rows: list[TrainRow], config: Config) -> pd.DataFrame:
    """The binding training_output.csv table: one row per group of this run."""
    columns = list(config.data.group_columns)
    records = []
    candidates = _scored_candidates(config)
    for r in rows:
        failed = r.status is Status.FAILED
        record = dict(zip(columns, r.values))
        record.update(
            {
                "status": r.status.value,
                "model": "" if failed else r.model,
                "model_version": None if failed else r.model_version,
                "run_id": r.run_id,
                "n_train_rows": r.n_train_rows,
                "train_start": r.train_start,
                "train_end": r.train_end,
                **{m: r.metrics.get(m) for m in METRIC_NAMES},
                "duration_s": r.duration_s,
                "error": r.error if failed else "",
                "trained_in_run": r.trained_in_run or "",
                "decision": r.decision,
                "n_trials": r.n_trials,
                "tuning": "; ".join(t for t in (r.tuning, r.note) if t),
                "dropped_candidates": _dropped(r.candidate_errors),
                "demand_class": r.demand_class,
                **_coverage(r),
                **{f"score_{c}": r.scores.get(c) for c in candidates},
            }
        )
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=training_output_columns(config))
    for column in ("model_version", *BACKTEST_COVERAGE[:-1]):
        frame[column] = frame[column].astype("Int64")
    return frame
