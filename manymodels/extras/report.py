"""mm report: one self-contained HTML page about a datastore's latest runs.

The page works offline (inline CSS, JavaScript and SVG; no CDN, no fetch) and
stays fast with 10,000 groups because nothing per group is drawn up front:

- a small columnar table (one entry per group: label, group values, model,
  status, metrics, training time) is parsed when the page opens; the
  distributions, rankings, training times and failures are drawn from it;
- each group's chart data (the last ``history`` periods of each series, its
  forecast, interval and actuals, candidate scores) is one line of JSON in a
  ``text/plain`` block. The table carries each line's offset and length, and
  the page parses a line only when that group is selected.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..config import Config
from ..console import Terminal
from ..core.metrics import HEADLINE, METRIC_NAMES
from ..core.partitioning import PERIOD
from ..core.results import ForecastRow, GroupRow, Status, TrainRow
from ..core.timeindex import NS_PER_DAY, TimeAxis
from ..errors import DamagedFile, MMError, UpstreamMissing
from ..store.datastore import Datastore
from ..store.files import atomic_write_text
from ..store.registry import run_rows
from ..store.runs import effective_status, latest_run
from .report_hierarchy import hierarchy_section
from .report_insights import insights

DEFAULT_HISTORY = 156  # periods of history per series in the group charts
SIGNIFICANT = 4  # digits kept for chart values (the page shows shapes, the CSVs hold the numbers)
MAX_SPAN = 20_000  # longest dense array one series may put in a chart
RECENT_RUNS = 20
ERROR_CHARS = 400


@dataclass
class ReportResult:
    path: str
    n_groups: int
    n_charts: int
    n_failed: int
    train_run_id: str | None
    forecast_run_id: str | None
    bytes: int
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def report(config: Config, terminal: Terminal | None = None, *, output: str | Path | None = None, history: int = DEFAULT_HISTORY) -> ReportResult:
    """Write the HTML report of the datastore's latest train and forecast runs.

    ``output``: file (or folder) to write; default ``<datastore>/outputs/report.html``.
    ``history``: periods of history per series in the group charts (0: all).
    Reads the datastore without locking it: every file mm writes is published atomically.
    """
    started = time.perf_counter()
    if history < 0:
        raise MMError(f"history must be >= 0 (got {history})", "pass the number of periods to chart, or 0 for all")
    store = Datastore(config.datastore)
    if not store.is_datastore():
        raise UpstreamMissing(f"no mm datastore at {store.root}", "run 'mm run -c CONFIG' first, then 'mm report'")
    train_record, forecast_record = latest_run(store, "train"), latest_run(store, "forecast")
    if train_record is None and forecast_record is None:
        raise UpstreamMissing(
            f"no finished train or forecast run in datastore {store.root}: nothing to report",
            "run 'mm train -c CONFIG' (or 'mm run') first, then 'mm report'",
        )
    document, lines = build_document(store, config, train_record, forecast_record, history)
    page = render_page(document, lines)
    path = store.report_path if output is None else Path(output)
    if output is not None and path.is_dir():
        path = path / "report.html"
    try:
        if output is None:  # in the datastore: a folder or an object store, published whole
            with store.output_file(store.REPORT) as f:
                f.write(page)
        else:
            atomic_write_text(path, page)
    except OSError as exc:
        raise MMError(f"cannot write the report to {path}: {exc.strerror}", "pass a writable file with --output") from None
    groups = document["groups"]
    return ReportResult(
        path=str(path),
        n_groups=len(groups["label"]),
        n_charts=document["meta"]["n_charts"],
        n_failed=document["summary"]["n_failed"],
        train_run_id=train_record["id"] if train_record else None,
        forecast_run_id=forecast_record["id"] if forecast_record else None,
        bytes=len(page.encode("utf-8")),
        duration_s=round(time.perf_counter() - started, 3),
    )


# -- gathering ----------------------------------------------------------------

def build_document(store: Datastore, config: Config, train_record: dict | None, forecast_record: dict | None, history: int) -> tuple[dict, list[str]]:
    """The page's data (a JSON-able dict) and one chart line per group, in table order."""
    manifest = store.read_split_manifest()
    try:
        split_groups = store.read_split_groups()
    except UpstreamMissing:
        split_groups = pd.DataFrame()
    train_rows = _rows_by_key(store, train_record, TrainRow)
    forecast_rows = _rows_by_key(store, forecast_record, ForecastRow)
    ident = _identities(split_groups, train_rows, forecast_rows)
    if not ident:
        raise UpstreamMissing(f"the latest runs in datastore {store.root} list no groups", "run 'mm run -c CONFIG' again, then 'mm report'")
    keys = [key for key, _, _ in ident]
    group_columns = list(manifest["group_columns"]) if manifest else list(config.data.group_columns)
    values = [v for _, _, v in ident]

    # each run's row of each group, in table order (None: the run has no row for the group)
    train = [train_rows.get(k) for k in keys]
    forecast = [forecast_rows.get(k) for k in keys]
    durations = _model_durations(store, train)
    chart = ChartData(store, config, manifest, history)
    # drivers, importance and realised accuracy (report_insights.py): per group into its line, and for the page
    per_key, insight = insights(store, config, keys, train, {r.key: r.fingerprint for r in forecast if r is not None and r.has_forecast})
    lines = chart.lines(keys, split_groups, train, forecast, per_key)
    offsets, lengths, position = [], [], 0
    for line in lines:
        offsets.append(position if line else -1)
        lengths.append(len(line))
        position += len(line) + 1  # lines are joined by "\n"

    table: dict[str, Any] = {
        "label": [label for _, label, _ in ident],
        "cols": {c: _categorical([v[i] if i < len(v) else None for v in values]) for i, c in enumerate(group_columns)},
        "train_status": _categorical(_each(train, lambda r: r.status)),
        "model": _categorical(_each(train, lambda r: r.model if r.has_model else None)),
        "version": _each(train, lambda r: r.model_version),
        "train_reason": _categorical(_each(train, lambda r: r.reason)),
        "train_error": _each(train, lambda r: _short(r.error)),
        "decision": _categorical(_each(train, lambda r: r.decision)),
        "tuning": _categorical(_each(train, lambda r: r.tuning)),
        "duration": _rounded(durations),
        "n_train_rows": _each(train, lambda r: r.n_train_rows),
        "bt": {m: _rounded(_metric(train, m)) for m in METRIC_NAMES},
        # how much of each group's backtest / actuals a metric covers (see core/metrics.py)
        "bt_n": _each(train, lambda r: r.n_backtest if r.unscored else None),
        "bt_miss": {m: _each(train, lambda r: r.unscored.get(m)) for m in PARTIAL},
        "bt_by": _categorical(_each(train, lambda r: r.selection_metric or None)),
        "fc_status": _categorical(_each(forecast, lambda r: r.status)),
        "fc_reason": _categorical(_each(forecast, lambda r: r.reason)),
        "fc_error": _each(forecast, lambda r: _short(r.error)),
        "fc_decision": _categorical(_each(forecast, lambda r: r.decision)),
        "fc": {m: _rounded(_metric(forecast, m)) for m in METRIC_NAMES},
        "fc_n": _each(forecast, lambda r: r.n_actual if r.unscored else None),
        "fc_miss": {m: _each(forecast, lambda r: r.unscored.get(m)) for m in PARTIAL},
        "off": offsets,
        "len": lengths,
    }
    metrics = [{"id": f"bt_{m}", "src": "bt", "key": m, "label": f"backtest {_METRIC_LABELS[m]}"} for m in METRIC_NAMES if _any(table["bt"][m])]
    metrics += [{"id": f"fc_{m}", "src": "fc", "key": m, "label": f"forecast {_METRIC_LABELS[m]}"} for m in METRIC_NAMES if _any(table["fc"][m])]
    metrics.sort(key=lambda m: (ORDER.index(m["key"]), m["src"] != "fc"))  # zero-safe first; forecast WAPE first when there are actuals
    summary = _summary(store, manifest, train_record, forecast_record, train, forecast, durations)
    document = {
        "meta": {
            "title": f"manymodels report: {str(store.root).rstrip('/').rsplit('/', 1)[-1]}",
            "datastore": str(store.root),
            "config": config.source,
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "mm_version": __version__,
            "group_columns": group_columns,
            "target": config.data.target_column,
            "prediction": config.forecast.prediction_column,
            "axis": _axis_for_page(manifest["axis"]) if manifest else None,
            "history": history,
            "band": chart.band_names,
            "n_charts": chart.n_charts,
        },
        "summary": summary,
        "runs": _recent_runs(store),
        "metrics": metrics,
        "groups": table,
        **insight,
        "hierarchy": hierarchy_section(store, config, manifest, forecast_record),  # None without one
    }
    return document, lines


class ChartData:
    """Per-group chart lines: history, forecast, interval and actuals of each series."""

    def __init__(self, store: Datastore, config: Config, manifest: dict | None, history: int):
        self.store, self.config, self.manifest, self.history = store, config, manifest, history
        self.band_names: list[str] = []
        self.n_charts = 0  # groups with something to chart
        d = config.data
        self.target = manifest.get("target_column", d.target_column) if manifest else d.target_column
        self.time = manifest.get("time_column", d.time_column) if manifest else d.time_column
        group_columns = manifest.get("group_columns", d.group_columns) if manifest else d.group_columns
        series = manifest.get("series_columns", d.series_key) if manifest else d.series_key
        self.series_columns = [c for c in series if c not in group_columns]

    def lines(self, keys: list[str], split_groups: pd.DataFrame, train: list[TrainRow | None], forecast: list[ForecastRow | None], more: dict[str, dict] | None = None) -> list[str]:
        extras = [_extras(r) if r is not None else {} for r in train]
        extras = [{**e, **(more or {}).get(k, {})} for k, e in zip(keys, extras)]
        if self.manifest is None:  # partitions were cleaned: no charts, the tables still work
            return [_line(e) if e else "" for e in extras]
        axis = TimeAxis.from_dict(self.manifest["axis"])
        with_train = set(split_groups["key"][split_groups["n_train"] > 0]) if len(split_groups) else set()
        hist = self._history([k for k in keys if k in with_train])
        # which forecast file is current for each group: the one of the latest forecast run
        fingerprints = {r.key: r.fingerprint for r in forecast if r is not None and r.has_forecast}
        future = self._forecasts(keys, axis, fingerprints)
        out = []
        for key, extra in zip(keys, extras):
            series: dict[str, dict] = {}
            h = hist.get(key)
            if h is not None:
                for name, period, y in h:
                    series.setdefault(name, {"n": name}).update(_dense(period, {"y": y}, "p0"))
            f = future.get(key)
            if f is not None:
                for name, period, cols in f:
                    series.setdefault(name, {"n": name}).update(_dense(period, cols, "f0"))
            entry = {**extra, "s": list(series.values())} if series else extra
            self.n_charts += bool(series)
            out.append(_line(entry) if entry else "")
        return out

    def _history(self, keys: list[str]) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
        table = self.store.scan_groups("train", keys, [*self.series_columns, self.target, PERIOD]).to_pandas()
        if not len(table) or self.target not in table or PERIOD not in table:
            return {}
        table["_mm_series"] = self._series_names(table)
        table = table.sort_values(["_mm_key", "_mm_series", PERIOD], kind="stable")
        y = pd.to_numeric(table[self.target], errors="coerce").to_numpy(dtype=np.float64)
        period = table[PERIOD].to_numpy(dtype=np.int64)
        out: dict[str, list] = {}
        for key, name, lo, hi in _segments(table["_mm_key"].to_numpy(), table["_mm_series"].to_numpy()):
            p, v = period[lo:hi], y[lo:hi]
            if self.history:
                keep = p > p[-1] - self.history
                p, v = p[keep], v[keep]
            out.setdefault(key, []).append((name, p, v))
        return out

    def _forecasts(self, keys: list[str], axis: TimeAxis, fingerprints: dict[str, str]) -> dict[str, list[tuple[str, np.ndarray, dict]]]:
        store, prediction = self.store, self.config.forecast.prediction_column
        first = next((k for k in keys if k in fingerprints), None)
        schema = store.forecast_schema(first, fingerprints[first]) if first else None
        if schema is None:
            return {}
        names = schema.names
        quantiles = sorted((c for c in names if c.startswith(f"{prediction}_q")), key=_quantile_of)
        self.band_names = [quantiles[0], quantiles[-1]] if len(quantiles) >= 2 else []
        wanted = [*self.series_columns, self.time, prediction, *self.band_names, self.target]
        table = store.scan_groups("forecast", keys, wanted, fingerprints).to_pandas()
        if not len(table) or prediction not in table or self.time not in table:
            return {}
        table[PERIOD] = axis.to_periods(table[self.time])
        table["_mm_series"] = self._series_names(table)
        table = table.sort_values(["_mm_key", "_mm_series", PERIOD], kind="stable")
        period = table[PERIOD].to_numpy(dtype=np.int64)
        arrays = {"f": table[prediction]}
        if self.band_names:
            arrays["lo"], arrays["hi"] = table[self.band_names[0]], table[self.band_names[1]]
        if self.target in table:
            arrays["a"] = table[self.target]
        arrays = {k: pd.to_numeric(v, errors="coerce").to_numpy(dtype=np.float64) for k, v in arrays.items()}
        out: dict[str, list] = {}
        for key, name, lo, hi in _segments(table["_mm_key"].to_numpy(), table["_mm_series"].to_numpy()):
            cols = {k: v[lo:hi] for k, v in arrays.items() if not (k == "a" and np.isnan(v[lo:hi]).all())}
            out.setdefault(key, []).append((name, period[lo:hi], cols))
        return out

    def _series_names(self, table: pd.DataFrame) -> np.ndarray:
        if not self.series_columns:
            return np.full(len(table), "", dtype=object)
        parts = [c + "=" + table[c].astype("string").fillna("").astype(str) for c in self.series_columns if c in table]
        if not parts:
            return np.full(len(table), "", dtype=object)
        name = parts[0]
        for p in parts[1:]:
            name = name + "," + p
        return name.to_numpy(dtype=object)


def _extras(row: TrainRow) -> dict:
    """What the page shows beside a group's chart besides the table: candidate scores, notes."""
    entry: dict[str, Any] = {}
    if row.scores:
        entry["scores"] = {k: _round_scalar(v) for k, v in row.scores.items()}
    if row.note:
        entry["note"] = row.note
    return entry


def _segments(keys: np.ndarray, series: np.ndarray):
    """(key, series, start, end) of each run of equal (key, series) in sorted arrays."""
    n = len(keys)
    if n == 0:
        return
    change = np.flatnonzero((keys[1:] != keys[:-1]) | (series[1:] != series[:-1])) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        yield keys[lo], series[lo], lo, hi


def _dense(period: np.ndarray, columns: dict[str, np.ndarray], start_name: str) -> dict:
    """Values on a dense period grid (gaps as null), rounded for the page."""
    if not len(period):
        return {}
    p0 = int(period[0])
    span = min(int(period[-1]) - p0 + 1, MAX_SPAN)
    keep = period - p0 < span
    out: dict[str, Any] = {start_name: p0}
    for name, values in columns.items():
        grid = np.full(span, np.nan)
        grid[period[keep] - p0] = values[keep]
        out[name] = _rounded(grid)
    return out


def _line(entry: dict) -> str:
    # ASCII only and no '<': offsets count characters, and the line sits inside a <script> block
    return _safe(json.dumps(entry, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str))


def _safe(text: str) -> str:
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- tables -------------------------------------------------------------------

def _rows_by_key(store: Datastore, record: dict | None, row_type: type[GroupRow]) -> dict[str, Any]:
    """A run's rows by group key (none without a run)."""
    return {r.key: r for r in run_rows(store, record["id"], row_type)} if record else {}


def _identities(split_groups: pd.DataFrame, *runs: dict[str, GroupRow]) -> list[tuple[str, str, list]]:
    """(key, label, values) of every group of the split and of the runs, in label order."""
    found: dict[str, tuple[str, list]] = {}
    if len(split_groups):
        for key, label, values in zip(split_groups["key"], split_groups["label"], split_groups["values"]):
            found.setdefault(key, (label, json.loads(values) if isinstance(values, str) else list(values)))
    for rows in runs:
        for r in rows.values():
            found.setdefault(r.key, (r.label, r.values))
    return sorted(((key, label, values) for key, (label, values) in found.items()), key=lambda g: g[1])


def _each(rows: list, get) -> list:
    """``get(row)`` of each row, None where there is no row."""
    return [None if r is None else get(r) for r in rows]


def _metric(rows: list, name: str) -> list:
    return _each(rows, lambda r: r.metrics.get(name))


def _model_durations(store: Datastore, train: list[TrainRow | None]) -> list[float | None]:
    """Seconds each group's current model took to train, also for models reused from earlier runs."""
    earlier: dict[tuple[str, str], float] = {}
    for run_id in {r.trained_in_run for r in train if r is not None and r.status is Status.REUSED and r.trained_in_run}:
        try:
            earlier.update({(run_id, r.key): r.duration_s for r in run_rows(store, run_id, TrainRow) if r.status is Status.TRAINED})
        except DamagedFile:
            continue  # an earlier run's damaged table: the durations of its models are unknown
    return _each(train, lambda r: r.duration_s if r.status is Status.TRAINED else earlier.get((r.trained_in_run, r.key)) if r.status is Status.REUSED else None)


def _summary(store, manifest, train_record, forecast_record, train: list[TrainRow | None], forecast: list[ForecastRow | None], durations) -> dict:
    trained = [r for r in train if r is not None]
    failed = [(t is not None and t.status is Status.FAILED) or (f is not None and not f.has_forecast) for t, f in zip(train, forecast)]
    out: dict[str, Any] = {"n_failed": sum(failed), "split": None, "train": None, "forecast": None}  # groups
    if manifest:
        out["split"] = {"run_id": manifest.get("run_id"), **{k: v for k, v in (manifest.get("summary") or {}).items() if k != "warnings"}}
    if train_record:
        with_model = [r for r in trained if r.has_model]
        medians = {m: _median([r.metrics.get(m) for r in with_model]) for m in ORDER}
        seconds = [d for d in durations if d is not None]
        out["train"] = {
            **_run_facts(train_record),
            "winners": train_record.get("winners") or {},
            "median_backtest": {m: v for m, v in medians.items() if v is not None},
            **_backtest_coverage(with_model, train_record),
            "tuned": sum(1 for r in trained if r.status is Status.TRAINED and r.n_trials > 0),
            "training_seconds": {"total": round(sum(seconds), 3), "median": _round_scalar(float(np.median(seconds))) if seconds else None},
        }
    if forecast_record:
        out["forecast"] = {
            **_run_facts(forecast_record),
            "train_run_id": forecast_record.get("train_run_id"),
            "accuracy": {k: _round_scalar(v) for k, v in (forecast_record.get("accuracy") or {}).items()},
            "unscored": {m: u.get("rows", 0) for m, u in (forecast_record.get("unscored") or {}).items()},  # none in an older record
            "coverage": _coverage(forecast),
        }
    return out


def _backtest_coverage(with_model: list[TrainRow], record: dict) -> dict:
    """For the train card: how many groups each median is over, and the backtest rows each metric could not score."""
    known = [r for r in with_model if r.unscored]  # a model of an older mm did not count
    return {
        "n_models": len(with_model),
        "median_groups": {m: sum(1 for r in with_model if _finite(r.metrics.get(m))) for m in ORDER},
        "backtest_rows": sum(r.n_backtest for r in known),
        "unscored": {m: sum(r.unscored.get(m, 0) for r in known) for m in PARTIAL},
        "metric_fallbacks": (record.get("backtest") or {}).get("metric_fallbacks") or {},
    }


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _run_facts(record: dict) -> dict:
    return {
        "id": record["id"],
        "status": effective_status(record),
        "started": record.get("started"),
        "ended": record.get("ended"),
        "duration_s": _run_seconds(record),
        "counts": record.get("counts") or {},
        "host": record.get("host"),
    }


def _coverage(forecast: list[ForecastRow | None]) -> dict[str, float]:
    """Per quantile column, the share of the actuals at or below it, over every group's forecast."""
    done = [r for r in forecast if r is not None and r.has_forecast]
    total = sum(r.n_actual for r in done)
    if not total:
        return {}
    sums: dict[str, int] = {}
    for r in done:
        for name, count in r.below_quantile.items():
            sums[name] = sums.get(name, 0) + int(count)
    return {name: round(count / total, 4) for name, count in sorted(sums.items(), key=lambda kv: _quantile_of(kv[0]))}


def _recent_runs(store: Datastore) -> list[dict]:
    return [
        {"id": r.get("id"), "step": r.get("step"), "status": effective_status(r), "started": r.get("started"), "duration_s": _run_seconds(r), "counts": r.get("counts") or {}}
        for r in store.list_runs()[-RECENT_RUNS:]
    ][::-1]


def _run_seconds(record: dict) -> float | None:
    try:
        return round((dt.datetime.fromisoformat(record["ended"]) - dt.datetime.fromisoformat(record["started"])).total_seconds(), 3)
    except (KeyError, TypeError, ValueError):
        return None


def _axis_for_page(axis: dict) -> dict:
    if axis["kind"] == "fixed":
        return {"kind": "fixed", "step_ms": axis["step"] / 1e6, "offset_ms": axis["offset"] / 1e6, "date_only": axis["step"] % NS_PER_DAY == 0, "label": axis["label"]}
    return {"kind": axis["kind"], "step": axis["step"], "offset": axis["offset"], "label": axis["label"]}


# -- small helpers ------------------------------------------------------------

_METRIC_LABELS = {"mape": "MAPE %", "smape": "sMAPE %", "wape": "WAPE %", "rmse": "RMSE", "mase": "MASE"}
ORDER = (*HEADLINE, "rmse")  # zero-safe first
PARTIAL = ("mape", "wape", "mase")  # the metrics that may leave rows unscored (smape and rmse score every row)


def _categorical(values: list) -> dict:
    """Strings repeated over many groups, as levels + codes (-1: none)."""
    levels: dict[str, int] = {}
    codes = []
    for v in values:
        if v is None:
            codes.append(-1)
            continue
        codes.append(levels.setdefault(str(v), len(levels)))
    return {"levels": list(levels), "codes": codes}


def _rounded(values) -> list:
    """Numbers to ``SIGNIFICANT`` digits, NaN/None as null (small JSON, same picture)."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64) if not isinstance(values, np.ndarray) else values.astype(np.float64)
    finite = np.isfinite(arr)
    out = np.where(finite, arr, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.floor(np.log10(np.abs(np.where(out == 0, 1.0, out))))
    scale = 10.0 ** (SIGNIFICANT - 1 - magnitude)
    out = np.round(out * scale) / scale
    # integral values without '.0' (a third of the page's bytes are chart numbers)
    return [(int(v) if v.is_integer() and abs(v) < 1e15 else v) if ok else None for v, ok in zip(out.tolist(), finite.tolist())]


def _round_scalar(value):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _rounded([value])[0]


def _median(values: list) -> float | None:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return _round_scalar(float(np.median(ok))) if ok else None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _short(value) -> str | None:
    if _missing(value) or value == "":
        return None
    text = str(value)
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _any(values: list) -> bool:
    return any(v is not None for v in values)


def _quantile_of(name: str) -> float:
    try:
        return float(name.rsplit("_q", 1)[1])
    except (IndexError, ValueError):
        return math.inf


# -- the page -----------------------------------------------------------------

def render_page(document: dict, lines: list[str]) -> str:
    """The HTML page: template + inline CSS/JS + the data blocks."""
    assets = resources.files("manymodels.extras") / "report_assets"
    template = (assets / "report.html").read_text(encoding="utf-8")
    css = (assets / "report.css").read_text(encoding="utf-8")
    script = (assets / "report.js").read_text(encoding="utf-8")
    data = _safe(json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str))
    head, rest = template.split("/*MM_CSS*/")
    middle, rest = rest.split("/*MM_DATA*/")
    before_series, rest = rest.split("/*MM_SERIES*/")
    before_js, tail = rest.split("/*MM_JS*/")
    head = head.replace("MM_TITLE", html.escape(document["meta"]["title"]))
    return "".join([head, css, middle, data, before_series, "\n".join(lines), before_js, script, tail])
