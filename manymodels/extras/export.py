"""mm export: every group's model in a portable format, for scoring outside mm.

``--format onnx`` (the ``onnx`` extra) writes, per group of a train run:

- ``<key>.onnx``: LightGBM winners as a tree-ensemble graph over the model's
  feature row; ``linear`` winners as an exact graph over their inputs (known-
  future columns, period, series code). See ``onnx_graphs``.
- ``<key>.json``: the metadata a database user needs: group values, model
  version and run, the ordered inputs with the definition of each (how to
  compute ``lag_4`` or ``week_of_year`` in SQL), target transform, categories,
  series codes, time axis, residual quantiles.

The baselines (naive, seasonal_naive, mean, moving_average) are functions of
a series' whole history, not of one input row, so they get the ``.json`` only,
with the rule to compute them. ``index.csv`` lists every group and what was
written for it; ``export.json`` summarises. The export is built in a
temporary folder and swapped in whole, so a crash never leaves half of one.
With ``verify`` (default) each graph is run with onnxruntime on the group's
training rows and compared with mm's own prediction; a group that differs by
more than 1e-5 (relative, or absolute below 1) is reported failed, not exported.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._version import __version__
from ..config import Config
from ..console import Terminal
from ..core.features import FeatureSpec, design_matrix
from ..core.kernels import group_data, model_view
from ..core.models import Fitted, average, finish, forward, inverse, predict_linear
from ..core.pooling import is_blend, is_pooled, pool_spec
from ..core.results import TrainRow
from ..core.statistical import KINDS as STATISTICAL_KINDS
from ..core.timeindex import TimeAxis, calendar_names
from ..errors import MMError, UpstreamMissing
from ..runner.options import RunOptions
from ..runner.session import open_session
from ..runner.tasks import pooled_model
from ..steps.common import GroupsResult, group_spec
from ..steps.selection import GroupSelector
from ..store import registry
from ..store.datastore import Datastore
from ..store.files import atomic_write_bytes, atomic_write_json, atomic_write_text

FORMATS = ("onnx",)
ONNX_HINT = "pip install 'manymodels[onnx]'"
TOLERANCE = 1e-5
MARKER = "export.json"

BASELINE_RULES = {
    "naive": "every forecast period gets the series' last known value",
    "seasonal_naive": "each forecast period gets the value season_length periods earlier (or 2, 3... seasons earlier, the first that is known); with none known, the last known value",
    "mean": "every forecast period gets the mean of all the series' known values",
    "moving_average": "every forecast period gets the mean of the series' last `window` known values",
}
# statistical models (core/statistical.py): per-series states, forecast by statsforecast's filters from the history
def _member_kinds(meta: dict) -> list[str]:
    return [m["kind"] for m in meta["state"].get("members", [])]


def _statistical_ensemble(meta: dict) -> bool:
    """An ensemble with a statistical member: a rule over the history, like its members (no ONNX graph)."""
    return meta["kind"] == "ensemble" and any(k in STATISTICAL_KINDS for k in _member_kinds(meta))


STATISTICAL_RULE = (
    "a statistical model per series ({kind}): 'state.series' holds each series' fitted specification and parameters "
    "(in the order of 'series.codes'); the forecast filters the series' history with them and extrapolates "
    "(manymodels.core.statistical.forecast_series); the quantiles are the model's own intervals, not shifts"
)


# a blend averages its local model with pooled LightGBMs that read the rows as their pools do
# (other series codes, static categories): no single graph over one row of inputs gives that
BLEND_NOT_EXPORTED = (
    "a blend of the group's local model and its pooled models has no ONNX form (its parts read the rows differently); "
    "export it as its local model or its pool by training with train.automl.pooling.blend: false"
)


@dataclass
class ExportResult(GroupsResult):
    format: str
    output: str
    train_run_id: str
    status: str
    n_groups: int = 0
    onnx: int = 0
    metadata_only: int = 0
    no_model: int = 0
    failed: int = 0
    verified: int = 0
    max_relative_diff: float | None = None
    models: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    duration_s: float = 0.0
    mlflow: dict = field(default_factory=dict)  # what api.export registered in MLflow (tracking.mlflow.registered_model)


def export(
    config: Config,
    terminal: Terminal | None = None,
    *,
    fmt: str = "onnx",
    output: str | Path | None = None,
    groups: list[str] | None = None,
    run_id: str | None = None,
    verify: bool = True,
    options: RunOptions | None = None,
    **option_fields,
) -> ExportResult:
    """Export the models of a train run (default: the latest finished one) to ``output``.

    Of the run options (``options``, or its fields as keywords), only ``wait`` matters.
    """
    started = time.perf_counter()
    if fmt not in FORMATS:
        raise MMError(f"--format {fmt!r} is not supported", f"use one of: {', '.join(FORMATS)}")
    _require("onnx", "ONNX export needs the onnx package")
    if verify:
        _require("onnxruntime", "checking the exported models needs onnxruntime")
    with open_session(config, terminal, RunOptions.of(options, **option_fields)) as s:
        store, terminal = s.store, s.terminal
        record = registry.run_models(store, run_id)
        manifest = store.read_split_manifest()
        if manifest is None:
            raise UpstreamMissing(f"no split in datastore {store.root}: the export needs its time axis", "run 'mm split -c CONFIG' (or 'mm run') first")
        spec = group_spec(config, manifest)
        selector = GroupSelector(groups or [], config.data.group_columns)
        rows = registry.run_rows(store, record["id"], TrainRow)
        rows = sorted((r for r in rows if not selector or selector.matches(r.values)), key=lambda r: r.label)
        if output is None and not store.is_folder:
            raise MMError(f"the datastore {store.root} is not a folder: the export needs a local one", "pass --output FOLDER")
        target = Path(output) if output else store.export_dir(fmt)
        work = _fresh_folder(target)
        result = ExportResult(fmt, str(target), record["id"], "completed", n_groups=len(rows))
        index = []
        try:
            exporter = _OnnxExporter(store, config, spec, manifest, record, verify)
            with terminal.progress(f"export: {len(rows)} groups to {fmt}", total=len(rows)) as bar:
                for row in rows:
                    entry = exporter.group(row, work)
                    index.append(entry)
                    _count(result, entry)
                    bar.advance(1, failed=int(entry["status"] == "failed"))
            frame = pd.DataFrame([{**dict(zip(config.data.group_columns, e.pop("values"))), **e} for e in index])
            atomic_write_text(work / "index.csv", frame.to_csv(index=False))
            result.duration_s = round(time.perf_counter() - started, 3)
            result.status = "partial" if result.failed else "completed"
            atomic_write_json(work / MARKER, {**result.to_dict(), "output": str(target), "created": _now(), "mm_version": __version__, "axis": manifest["axis"], "files": ["index.csv", *sorted(f for e in index for f in (e["file"], e["metadata_file"]) if f)]})
            _publish(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return result


def _require(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise MMError(f"{what}, which is not installed", ONNX_HINT) from None


def _count(result: ExportResult, entry: dict) -> None:
    status = entry["status"]
    if status == "onnx":
        result.onnx += 1
    elif status == "metadata_only":
        result.metadata_only += 1
    elif status == "no_model":
        result.no_model += 1
    else:
        result.failed += 1
        result.failures.append({"group": entry["label"], "reason": entry["reason"], "error": entry["note"]})
    if entry.get("model"):
        result.models[entry["model"]] = result.models.get(entry["model"], 0) + 1
    diff = entry.get("max_relative_diff")
    if diff is not None and status == "onnx":
        result.verified += 1
        result.max_relative_diff = max(result.max_relative_diff or 0.0, diff)


# -- one group -------------------------------------------------------------------

class _OnnxExporter:
    def __init__(self, store: Datastore, config: Config, spec, manifest: dict, record: dict, verify: bool):
        self.store, self.config, self.spec, self.manifest, self.record, self.verify = store, config, spec, manifest, record, verify
        self.axis = TimeAxis.from_dict(manifest["axis"])

    def group(self, row: TrainRow, folder: Path) -> dict:
        version = row.model_version
        entry = {"values": row.values, "label": row.label, "key": row.key, "model": row.model or "", "model_version": version, "status": "", "reason": "", "file": "", "metadata_file": "", "max_relative_diff": None, "note": ""}
        if not row.has_model:
            return {**entry, "status": "no_model", "reason": row.reason.value or "failed", "note": row.error or "no model in this train run"}
        from .onnx_graphs import Unsupported

        key = row.key
        try:
            meta = self.store.read_model_meta(key, version)
            if is_blend(meta["kind"]):
                return {**entry, "status": "failed", "reason": "unsupported", "note": BLEND_NOT_EXPORTED}
            if is_pooled(meta["kind"]):  # its pool's LightGBM, with the group's own calibration and quantiles
                meta = pooled_model(self.store, meta)[0]
            document = self.metadata(row, meta)
            entry["metadata_file"] = f"{key}.json"
            if meta["kind"] in BASELINE_RULES or meta["kind"] in STATISTICAL_KINDS or _statistical_ensemble(meta):
                atomic_write_json(folder / entry["metadata_file"], document)
                what = f"an ensemble of {', '.join(_member_kinds(meta))}" if meta["kind"] == "ensemble" else meta["kind"]
                return {**entry, "status": "metadata_only", "note": f"{what} is a rule over the series' history, not a function of one row: see 'rule' in the .json"}
            model, check = self.graph(key, version, meta, document)
            entry["file"] = f"{key}.onnx"
            if self.verify:
                entry["max_relative_diff"] = diff = check(model)
                if not diff <= TOLERANCE:
                    return {**entry, "file": "", "metadata_file": "", "status": "failed", "reason": "mismatch", "note": f"onnxruntime differs from mm by {diff:.3g} (relative) on the group's training rows"}
            atomic_write_bytes(folder / entry["file"], model.SerializeToString())
            atomic_write_json(folder / entry["metadata_file"], document)
            return {**entry, "status": "onnx"}
        except Unsupported as exc:
            return {**entry, "file": "", "metadata_file": "", "status": "failed", "reason": "unsupported", "note": str(exc)}
        except Exception as exc:  # one group's problem must not stop the export of the others
            return {**entry, "file": "", "metadata_file": "", "status": "failed", "reason": "error", "note": f"{type(exc).__name__}: {exc}"}

    def graph(self, key: str, version: int, meta: dict, document: dict):
        from . import onnx_graphs

        props = {"mm.metadata": document, "mm.group": document["group"], "mm.key": key, "mm.model_version": str(version), "mm.run_id": str(meta.get("run_id")), "mm.kind": meta["kind"], "mm.inputs": [i["name"] for i in document["inputs"]]}
        nonnegative = document["target"]["nonnegative"]
        post = {
            "transform": document["target"]["transform"],
            "nonnegative": nonnegative,
            "quantiles": {q["output"]: q["shift"] for q in document["quantiles"]},
            "scale": document["calibration"]["factor"],
        }
        state = meta["state"]
        if meta["kind"] == "lightgbm":
            text = self._text(key, version, meta)
            model = onnx_graphs.lightgbm_graph(text, len(document["inputs"]), post, props, state.get("num_boost_round"))
            return model, lambda m: self._check_lightgbm(m, key, meta, text)
        if meta["kind"] == "ensemble":
            text = self._text(key, version, meta)
            members = {m["kind"]: m["state"] for m in state["members"]}
            lgb_state, linear_state = members["lightgbm"], members["linear"]
            model = onnx_graphs.ensemble_graph(
                text,
                len(document["inputs"]),
                {"transform": lgb_state["transform"], "nonnegative": nonnegative},
                linear_state,
                len(document["linear_inputs"]) - 2,
                {"transform": linear_state["transform"], "nonnegative": nonnegative},
                post,
                props,
                lgb_state.get("num_boost_round"),
            )
            return model, lambda m: self._check_ensemble(m, key, meta, text)
        model = onnx_graphs.linear_graph(state, len(document["inputs"]) - 2, post, props)
        return model, lambda m: self._check_linear(m, key, meta)

    def _text(self, key: str, version: int, meta: dict) -> str:
        pool = meta.get("pool")
        return self.store.read_pool_text(pool["pool"], int(pool["version"])) if pool else self.store.read_model_text(key, version)

    def _spec(self, meta: dict):
        return pool_spec(self.spec, tuple(meta["pool"]["level"])) if "pool" in meta else self.spec

    # metadata ---------------------------------------------------------------------
    def metadata(self, row: TrainRow, meta: dict) -> dict:
        kind, state, info = meta["kind"], meta["state"], meta["info"]
        spec, d = self._spec(meta), self.config.data
        transform = state.get("transform", "none")
        document = {
            "format": "onnx",
            "mm_version": __version__,
            "exported": _now(),
            "group": meta.get("group") or dict(zip(d.group_columns, row.values)),
            "label": row.label,
            "key": row.key,
            "model": {
                "kind": kind,
                "version": meta.get("version"),
                "train_run_id": meta.get("run_id"),
                "created": meta.get("created"),
                "train_start": meta.get("train_start"),
                "train_end": meta.get("train_end"),
                "backtest": meta.get("metrics"),
                "state": state,
                **({"pool": meta["pool"]} if "pool" in meta else {}),
            },
            "target": {"column": d.target_column, "transform": transform, "nonnegative": bool(info.get("nonnegative")), "units": "prediction is in the target's units; raw is in the transform space"},
            "time": {"column": d.time_column, "axis": self.manifest["axis"], "period": _period_definition(self.manifest["axis"])},
            "series": {"columns": list(spec.series_columns), "codes": info.get("series", []), "code": "position of the row's series values in 'codes' (0-based); a series not listed gets a code after the last"},
            "categories": info.get("categories", {}),
            "horizon": spec.horizon,
            "calibration": {
                "factor": float((meta.get("calibration") or {}).get("factor", 1.0)),
                "metric": (meta.get("calibration") or {}).get("metric"),
                "rule": "prediction = factor x the model's point forecast (fitted on the backtest to minimise the metric); the quantiles are not scaled",
            },
            "quantiles": [
                {"quantile": float(q), "output": f"prediction_q{float(q) * 100:g}", "shift": shift, "rule": "prediction shifted by 'shift' in the transform space (log1p: expm1(log1p(max(prediction, 0)) + shift)), clipped at 0 for non-negative targets"}
                for q, shift in sorted(((float(q), s) for q, s in (meta.get("residual_quantiles") or {}).items()))
            ],
        }
        if kind == "lightgbm":
            document["inputs"] = self._lightgbm_inputs(info, transform)
            document["forecasting"] = (
                "one ONNX call per period, in time order: the row of period t reads lags and windows of the target up to t-1; "
                "after the cutoff those are the model's own 'raw' outputs of the earlier periods (never actuals), exactly as mm forecasts"
            )
        elif kind == "linear":
            document["inputs"] = _linear_inputs(info)
            document["forecasting"] = "each row is independent of the others: one ONNX call scores any number of future rows"
        elif kind == "ensemble" and _statistical_ensemble(meta):
            document["inputs"] = []
            document["rule"] = (
                f"the mean of its members ({', '.join(_member_kinds(meta))}; 'state.members', each as its own model kind), "
                "averaged in the raw target space" + ("; clipped at 0" if info.get("nonnegative") else "")
            )
        elif kind == "ensemble":
            lgb_state = next(m["state"] for m in state["members"] if m["kind"] == "lightgbm")
            document["inputs"] = self._lightgbm_inputs(info, lgb_state["transform"])
            document["linear_inputs"] = _linear_inputs(info)
            document["forecasting"] = (
                "two inputs per row: 'features' (the LightGBM member's row, as for a LightGBM model) and 'inputs' (the linear member's row); "
                "one ONNX call per period, in time order: the lags of period t read the 'raw' outputs (the LightGBM member's own) of the earlier periods"
            )
        elif kind in STATISTICAL_KINDS:
            document["inputs"] = []
            document["rule"] = STATISTICAL_RULE.format(kind=kind) + ("; clipped at 0 for a series with no negative value" if info.get("nonnegative") else "")
        else:
            document["inputs"] = []
            document["rule"] = BASELINE_RULES[kind] + (
                " (averaged in the log1p space, then expm1)" if transform == "log1p" and kind in ("mean", "moving_average") else ""
            ) + ("; clipped at 0" if info.get("nonnegative") else "")
        return document

    def _lightgbm_inputs(self, info: dict, transform: str) -> list[dict]:
        fspec = FeatureSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["features"].items()})
        names = fspec.names(list(calendar_names(self.axis)) if fspec.calendar else [], len(info.get("series", [])) > 1)
        scale = "log1p(target)" if transform == "log1p" else "the target"
        definitions = {}
        for k in fspec.lags:
            definitions[f"lag_{k}"] = f"{scale} of the same series {k} period(s) before the row's period; null if unknown"
        for w in fspec.windows:
            definitions[f"rmean_{w}"] = f"mean of the known values of {scale} over the {w} periods before the row's period; null if none is known"
            definitions[f"rstd_{w}"] = f"sample standard deviation (n-1) of the same {w} periods; null if fewer than 2 are known"
        for c in fspec.numeric_exog:
            definitions[c] = f"known-future column {c} as a number; null if missing"
        for c in fspec.categorical_exog:
            definitions[c] = f"code of column {c}: 0-based position of its value (as text) in categories.{c}; null if missing or not listed"
        definitions.update(_CALENDAR_DEFINITIONS)
        definitions["series"] = "the row's series code (see series.code)"
        return [{"name": n, "definition": definitions.get(n, n)} for n in names]

    # verification -------------------------------------------------------------------
    def _group(self, key: str, meta: dict):
        frame = self.store.read_partition("train", key)
        spec, frame, _ = model_view(meta, self.spec, frame, frame)
        y = frame[spec.target_column].to_numpy(dtype=np.float64)
        data = group_data(frame, spec, meta["info"], y)
        return data, np.flatnonzero(~np.isnan(data.panel.y))

    def _check_lightgbm(self, model, key: str, meta: dict, text: str) -> float:
        import lightgbm as lgb

        data, rows = self._group(key, meta)
        transform = meta["state"]["transform"]
        grid = data.grid(np.ones(len(data.panel.y), dtype=bool), forward(data.panel.y, transform))
        X = design_matrix(data.panel, rows, grid, data.first, data.spec, data.with_series)
        want = lgb.Booster(model_str=text).predict(X, num_iteration=meta["state"].get("num_boost_round"), num_threads=1)
        return _relative_diff(_run(model, {"features": X}, "raw"), want)

    def _check_linear(self, model, key: str, meta: dict) -> float:
        data, rows = self._group(key, meta)
        inputs = linear_inputs(data, rows)
        want = predict_linear(Fitted("linear", meta["state"]), data, rows) * _scale(meta)
        return _relative_diff(_run(model, {"inputs": inputs}, "prediction"), want)

    def _check_ensemble(self, model, key: str, meta: dict, text: str) -> float:
        """mm's ensemble point on the training rows, each LightGBM row with actual lags."""
        import lightgbm as lgb

        data, rows = self._group(key, meta)
        members = {m["kind"]: m["state"] for m in meta["state"]["members"]}
        lgb_transform = members["lightgbm"]["transform"]
        grid = data.grid(np.ones(len(data.panel.y), dtype=bool), forward(data.panel.y, lgb_transform))
        X = design_matrix(data.panel, rows, grid, data.first, data.spec, data.with_series)
        raw = lgb.Booster(model_str=text).predict(X, num_iteration=members["lightgbm"].get("num_boost_round"), num_threads=1)
        lgb_point = finish(inverse(raw, lgb_transform), data)
        linear_point = predict_linear(Fitted("linear", members["linear"]), data, rows)
        want = finish(average([lgb_point, linear_point], meta["state"]["transform"]), data) * _scale(meta)
        got = _run(model, {"features": X, "inputs": linear_inputs(data, rows)}, "prediction")
        return _relative_diff(got, want)


def _linear_inputs(info: dict) -> list[dict]:
    filled = "; null is replaced by the training mean (model.state.exog_fill), then clamped to the training range (model.state.exog_min..exog_max)"
    return [
        *({"name": c, "definition": f"known-future column {c} as a number{filled}"} for c in info["features"]["numeric_exog"]),
        *({"name": c, "definition": f"code of column {c}: 0-based position of its value (as text) in categories.{c}{filled}"} for c in info["features"]["categorical_exog"]),
        {"name": "period", "definition": "the row's period number (see time.period)"},
        {"name": "series", "definition": "the row's series code (see series.code)"},
    ]


def linear_inputs(data, rows: np.ndarray) -> np.ndarray:
    """The input rows of an exported linear model: known-future columns, period, series code."""
    panel = data.panel
    return np.column_stack([panel.exog[rows], panel.period[rows].astype(np.float64), panel.series[rows].astype(np.float64)])


def _scale(meta: dict) -> float:
    return float((meta.get("calibration") or {}).get("factor", 1.0))


def _run(model, feeds: dict, output: str) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([output], feeds)[0].ravel()


def _relative_diff(got: np.ndarray, want: np.ndarray) -> float:
    if len(want) == 0:
        return 0.0
    both_nan = np.isnan(got) & np.isnan(want)
    diff = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
    diff = np.where(both_nan, 0.0, diff)
    return float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))


# -- helpers ---------------------------------------------------------------------------

_CALENDAR_DEFINITIONS = {
    "week_of_year": "(day of year - 1) // 7 + 1 of the row's time",
    "month": "month of the row's time, 1..12",
    "quarter": "quarter of the row's time, 1..4",
    "day_of_week": "day of week of the row's time, Monday = 0 .. Sunday = 6",
    "day_of_month": "day of month of the row's time, 1..31",
    "hour": "hour of the row's time, 0..23",
    "season_position": "period mod the season length",
}


def _period_definition(axis: dict) -> str:
    if axis["kind"] == "int":
        return f"period = (time - {axis['offset']}) // {axis['step']}"
    if axis["kind"] == "fixed":
        return f"period = (nanoseconds since 1970-01-01 UTC - {axis['offset']}) // {axis['step']}"
    return f"period = (year * 12 + month - 1) // {axis['step']}"


def _fresh_folder(target: Path) -> Path:
    """A temporary folder beside ``target``; refuses to replace a folder mm did not write."""
    if target.exists():
        if not target.is_dir():
            raise MMError(f"export output {target} is a file", "pass a folder with --output")
        if any(target.iterdir()) and not (target / MARKER).exists():
            raise MMError(f"export output {target} is not empty and is not an mm export; refusing to replace it", "pass a new or empty folder with --output")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.parent / f".tmp-export-{secrets.token_hex(4)}"
        work.mkdir()
    except OSError as exc:
        raise MMError(f"cannot write the export beside {target}: {exc.strerror}", "pass a writable folder with --output") from None
    return work


def _publish(work: Path, target: Path) -> None:
    """Swap the finished export in for the previous one."""
    old = None
    if target.exists():
        old = target.parent / f".tmp-old-export-{secrets.token_hex(4)}"
        os.replace(target, old)
    os.replace(work, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["ExportResult", "export", "linear_inputs"]
