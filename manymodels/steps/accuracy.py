"""Realised accuracy (``mm accuracy``, and in ``mm run`` after the split): every stored
forecast scored against the actuals a later split brought, and the drift flags.

Each forecast run leaves ``history/forecasts/<run_id>.parquet`` (``ForecastHistory``,
written by mm forecast): the forecasts that run made, a few columns per row. A
forecast reused by a later run is the same forecast and stays in the run that made
it, so nothing is stored twice. Scoring joins those rows with the current split's
train partitions on (group, series, time): a row is scored once, the first time its
period has an actual, and appended to ``outputs/accuracy_history.parquet``.

The drift rule (``accuracy.drift_window``, ``accuracy.drift_factor``): a group whose
error over its last ``drift_window`` scored periods (every forecast run and horizon
step that forecast them, pooled as ``train.automl.metric`` pools) exceeds
``drift_factor`` times the backtest error of the model that made its newest scored
forecast is flagged; ``train.automl.retune: on_drift`` searches those groups again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import Config
from ..console import Terminal
from ..core import accuracy as core
from ..core.identity import group_label
from ..errors import DamagedFile
from ..runner.options import RunOptions
from ..runner.session import Session, open_session
from ..runner.tasks import SNAIVE_COLUMN, STEP_COLUMN, stored_mase_scale
from ..store.datastore import Datastore
from .common import load_split

RUN_COLUMN = "forecast_run_id"
STEP = "horizon_step"


@dataclass
class AccuracyResult:
    metric: str
    output: str = ""
    n_runs: int = 0  # forecast runs with a stored history
    n_new: int = 0  # rows scored this time
    n_rows: int = 0  # rows in accuracy_history
    n_groups: int = 0
    overall: dict = field(default_factory=dict)  # {metric, seasonal_naive, fva, n_rows} over every scored row
    latest: dict = field(default_factory=dict)  # the same over the rows scored this time
    by_step: list[dict] = field(default_factory=list)
    by_run: list[dict] = field(default_factory=list)
    degraded: list[dict] = field(default_factory=list)  # the groups whose realised error grew most over backtest
    drift: list[str] = field(default_factory=list)  # labels of the groups flagged
    drift_rule: dict = field(default_factory=dict)
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# -- writing the history (called by mm forecast) ---------------------------------

class ForecastHistory:
    """The forecasts one forecast run makes, streamed into ``history/forecasts/<run_id>.parquet``
    a chunk at a time (memory does not grow with the groups) and published when it closes.

    Per row: the group key, its series and time columns, the horizon step, the
    prediction, the seasonal naive forecast from the same cutoff, the MASE scale of
    the history, and the train run and model version that made it."""

    CHUNK_ROWS = 50_000

    def __init__(self, store: Datastore, run_id: str, config: Config, prediction_column: str):
        self.store, self.run_id = store, run_id
        self.columns = [*config.data.series_key, config.data.time_column]
        self.prediction_column = prediction_column
        self.pieces: list[pa.Table] = []
        self.n_pending = 0
        self.schema: pa.Schema | None = None
        self._context = self._writer = None

    def add(self, key: str, table: pa.Table) -> None:
        if SNAIVE_COLUMN not in table.column_names:  # a forecast file of an older mm: nothing to compare it with
            return
        n = table.num_rows
        piece = table.select([*self.columns, STEP_COLUMN, self.prediction_column, SNAIVE_COLUMN, "run_id", "model_version"])
        piece = piece.rename_columns([*self.columns, STEP, "prediction", "seasonal_naive", "train_run_id", "model_version"])
        scale = stored_mase_scale(table)
        piece = piece.append_column("mase_scale", pa.array(np.full(n, np.nan if scale is None else scale), pa.float64()))
        self.pieces.append(piece.add_column(0, "key", pa.array([key] * n, pa.string())).replace_schema_metadata(None))
        self.n_pending += n
        if self.n_pending >= self.CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pieces:
            return
        table = pa.concat_tables(self.pieces, promote_options="permissive")
        if self._writer is None:
            self.schema = table.schema
            self._context = self.store.forecast_history_writer(self.run_id, self.schema)
            self._writer = self._context.__enter__()
        self._writer.write_table(table.cast(self.schema))  # the split's partitions share one schema
        self.pieces, self.n_pending = [], 0

    def close(self) -> int:
        """Publish the run's history; its size in bytes (0: the run made no new forecast)."""
        self._flush()
        if self._context is None:
            return 0
        self._context.__exit__(None, None, None)
        self._context = None
        return self.store.forecast_history_bytes(self.run_id)

    def __enter__(self) -> ForecastHistory:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None and self._context is not None:  # nothing half-written is published
            self._context.__exit__(kind, value, tb)
            self._context = None


# -- scoring ------------------------------------------------------------------

def accuracy(config: Config, terminal: Terminal | None = None, *, options: RunOptions | None = None, session: Session | None = None, **option_fields) -> AccuracyResult:
    """Score every stored forecast whose periods now have an actual; write accuracy_history.parquet."""
    with open_session(config, terminal, RunOptions.of(options, **option_fields), session) as s:
        return _accuracy(s)


def _accuracy(s: Session) -> AccuracyResult:
    config, store = s.config, s.store
    started = time.perf_counter()
    load_split(store, config, s.terminal)
    metric = config.train.automl.metric
    keys = _join_keys(config)
    existing = _read_scored(store, s.terminal)
    runs = store.forecast_history_runs()
    pending = _pending(store, runs, existing, keys, s.terminal)
    scored = _score(store, config, pending, keys, metric)
    rows = scored if existing is None or not len(existing) else pd.concat([existing.drop(columns=["drift"], errors="ignore"), scored], ignore_index=True)
    result = AccuracyResult(metric=metric, n_runs=len(runs), n_new=len(scored), drift_rule=_rule(config))
    if len(rows):
        flags = group_drift(store, config, rows)
        rows["drift"] = rows["key"].map(flags["drift"]).fillna(False).astype(bool)
        rows = rows.sort_values([RUN_COLUMN, "key", config.data.time_column], kind="stable", ignore_index=True)
        store.write_accuracy_history(rows)
        _summarise(result, rows, scored, flags, config)
        result.output = str(store.output_path(store.ACCURACY_HISTORY))
    result.duration_s = round(time.perf_counter() - started, 3)
    return result


def _join_keys(config: Config) -> list[str]:
    """What names a forecast row across splits: the group key, its finer series columns, its time."""
    d = config.data
    return ["key", *[c for c in d.series_key if c not in d.group_columns], d.time_column]


def _read_scored(store: Datastore, terminal: Terminal) -> pd.DataFrame | None:
    """The rows scored before; a damaged table is scored again from the stored forecasts (a nightly
    run must not stop on it), losing only rows whose actuals have left the split since."""
    try:
        return store.read_accuracy_history()
    except DamagedFile as exc:
        terminal.warn(f"{exc.message}: every stored forecast is scored again against the split's actuals")
        return None


def _pending(store: Datastore, runs: list[str], existing: pd.DataFrame | None, keys: list[str], terminal: Terminal) -> pd.DataFrame:
    """Every stored forecast row not scored yet, with its forecast run (a damaged history file is
    skipped with a warning: the other runs are scored)."""
    done = set(existing[RUN_COLUMN].unique()) if existing is not None and len(existing) else set()
    frames = []
    for run_id in runs:
        try:
            table = store.read_forecast_history(run_id)
        except DamagedFile as exc:
            terminal.warn(f"{exc.message}; hint: {exc.hint}")
            continue
        frame = _normal_time(table.to_pandas(), keys[-1])
        frame.insert(0, RUN_COLUMN, run_id)
        if run_id in done:  # only its rows that were not scored before
            seen = existing.loc[existing[RUN_COLUMN] == run_id, keys].assign(_seen=True)
            frame = frame.merge(_normal_time(seen, keys[-1]), on=keys, how="left")
            frame = frame[frame["_seen"].isna()].drop(columns="_seen")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _normal_time(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Times as nanosecond datetimes (partitions of different splits may carry other units)."""
    if pd.api.types.is_datetime64_any_dtype(frame[column]):
        frame[column] = frame[column].astype("datetime64[ns]")
    return frame


def _score(store: Datastore, config: Config, pending: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """The pending rows whose period has an actual in the split's train partitions, scored."""
    if not len(pending):
        return pd.DataFrame()
    target = config.data.target_column
    actuals = store.scan_groups("train", sorted(pending["key"].unique()), [*keys[1:], target]).to_pandas()
    actuals = _normal_time(actuals.rename(columns={"_mm_key": "key"}), keys[-1])
    actuals = actuals[actuals[target].notna()][[*keys, target]].rename(columns={target: "actual"})
    rows = pending.merge(actuals.drop_duplicates(keys), on=keys, how="inner")
    rows = rows[rows["prediction"].notna()].reset_index(drop=True)
    a, p, sn, scale = (rows[c].to_numpy(dtype=np.float64) for c in ("actual", "prediction", "seasonal_naive", "mase_scale"))
    rows["error"] = p - a  # signed: its mean is the bias
    rows["abs_error"] = np.abs(p - a)
    rows[metric] = core.row_errors(metric, a, p, scale)
    rows[f"seasonal_naive_{metric}"] = core.row_errors(metric, a, sn, scale)
    rows["fva"] = rows[f"seasonal_naive_{metric}"] - rows[metric]  # > 0: the forecast beat seasonal naive
    return rows


def _rule(config: Config) -> dict:
    a = config.accuracy
    return {"metric": config.train.automl.metric, "window": a.drift_window, "factor": a.drift_factor}


def group_drift(store: Datastore, config: Config, rows: pd.DataFrame) -> pd.DataFrame:
    """Per group (index: key): realised error over its last ``drift_window`` scored periods, the
    backtest error of the model that made its newest scored forecast, their ratio, and the flag."""
    metric = config.train.automl.metric
    window, factor = config.accuracy.drift_window, config.accuracy.drift_factor
    time_column = config.data.time_column
    newest = rows.sort_values(RUN_COLUMN, kind="stable").groupby("key")["train_run_id"].last()  # run ids sort by time
    backtest = _backtest_errors(store, newest, metric)
    out = {}
    for key, g in rows.groupby("key", sort=False):
        periods = np.sort(g[time_column].unique())[-window:]
        recent = g[g[time_column].isin(periods)]
        realised = core.pooled_error(metric, *(recent[c].to_numpy(dtype=np.float64) for c in ("actual", "prediction", "mase_scale")))
        bt = backtest.get(key)
        flagged = core.drifted(realised, bt, len(periods), window, factor)
        ratio = realised / bt if bt and math.isfinite(realised) and math.isfinite(bt) else math.nan
        out[key] = {"realised": realised, "backtest": bt, "ratio": ratio, "drift": flagged, "n_periods": len(periods)}
    return pd.DataFrame.from_dict(out, orient="index")


def _backtest_errors(store: Datastore, train_run_of: pd.Series, metric: str) -> dict[str, float]:
    """Each group's backtest ``metric`` in the train run whose model made its newest scored forecast."""
    out: dict[str, float] = {}
    for run_id, keys in train_run_of.groupby(train_run_of).groups.items():
        wanted = set(keys)
        try:  # a train run whose table is gone or damaged: its groups have no backtest to compare with (no flag)
            for batch in store.iter_run_groups(run_id, columns=["key", "metrics"]):
                for row in batch.to_pylist():
                    if row["key"] in wanted and row["metrics"]:
                        value = json.loads(row["metrics"]).get(metric)
                        out[row["key"]] = float(value) if isinstance(value, (int, float)) else math.nan
        except DamagedFile:
            continue
    return out


def drifted_keys(store: Datastore) -> set[str]:
    """The groups flagged at the last scoring (``train.automl.retune: on_drift`` searches them again)."""
    rows = store.read_accuracy_history()
    if rows is None or "drift" not in rows.columns:
        return set()
    return set(rows.loc[rows["drift"], "key"].unique())


# -- the summary ----------------------------------------------------------------

def pooled_summary(metric: str, frame: pd.DataFrame) -> dict:
    """Scored rows pooled: the forecast's metric, seasonal naive's, the value added (on the rows
    seasonal naive could forecast), the bias (mean signed error) and the row count."""
    values = lambda col: frame[col].to_numpy(dtype=np.float64)  # noqa: E731
    model = core.pooled_error(metric, values("actual"), values("prediction"), values("mase_scale"))
    naive_rows = frame[frame["seasonal_naive"].notna()]
    naive = core.pooled_error(metric, *(naive_rows[c].to_numpy(dtype=np.float64) for c in ("actual", "seasonal_naive", "mase_scale")))
    same = core.pooled_error(metric, *(naive_rows[c].to_numpy(dtype=np.float64) for c in ("actual", "prediction", "mase_scale")))
    return {metric: _or_none(model), "seasonal_naive": _or_none(naive), "fva": _or_none(naive - same), "bias": _or_none(float(frame["error"].mean())) if len(frame) else None, "n_rows": int(len(frame))}


def _or_none(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


DEGRADED = 5


def _summarise(result: AccuracyResult, rows: pd.DataFrame, scored: pd.DataFrame, flags: pd.DataFrame, config: Config) -> None:
    metric, time_column, group_columns = result.metric, config.data.time_column, list(config.data.group_columns)
    result.n_rows = len(rows)
    result.n_groups = int(rows["key"].nunique())
    result.overall = pooled_summary(metric, rows)
    result.latest = pooled_summary(metric, scored) if len(scored) else {}
    result.by_step = [{"step": int(step), **pooled_summary(metric, g)} for step, g in rows.groupby(STEP)]
    result.by_run = [{"forecast_run_id": run, "first_period": _first_period(g, time_column), **pooled_summary(metric, g)} for run, g in rows.groupby(RUN_COLUMN)]
    labels = labels_of(rows, group_columns)
    result.drift = sorted(labels[k] for k in flags.index[flags["drift"].astype(bool)])
    ranked = flags[flags["ratio"].notna()].sort_values("ratio", ascending=False).head(DEGRADED)
    result.degraded = [{"group": labels[k], "realised": _or_none(r.realised), "backtest": _or_none(r.backtest), "ratio": _or_none(r.ratio), "drift": bool(r.drift)} for k, r in ranked.iterrows()]


def _first_period(frame: pd.DataFrame, time_column: str) -> str:
    """The first period a forecast run's scored rows cover (its forecast origin's next period)."""
    first = frame.loc[frame[STEP] == frame[STEP].min(), time_column].min()
    return first.date().isoformat() if isinstance(first, pd.Timestamp) else str(first)


def labels_of(rows: pd.DataFrame, group_columns: list[str]) -> dict[str, str]:
    """Group key -> its label (``Store=2,Brand=x``), from the group columns the rows carry."""
    first = rows.drop_duplicates("key")
    return dict(zip(first["key"], (group_label(group_columns, values) for values in first[group_columns].itertuples(index=False))))
