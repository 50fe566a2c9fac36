"""mm serve: every group's forecast over HTTP, from the models the nightly run trained.

One process serves every group of one train run: the latest finished one (or a
pinned one). Nothing is loaded up front but the run's groups: a group's model
(its booster parsed once), train partition, inference rows and stored forecast
are read the first time a request needs them and kept in a bounded LRU cache
(``serve.cache_size`` groups).

Reading only. The server never writes the datastore, and it never sees half a
model: every datastore write is atomic (a temporary file renamed, or one PUT), a
model version is never rewritten (a new fit is a new version), and its metadata
is written after its booster, so a version whose metadata is there is whole.
A train run becomes visible to the server when its record says it finished,
after all its models are written.

Switching runs. A background thread lists ``runs/`` every
``serve.refresh_seconds`` (reading only records it has not seen finished) and
re-reads the split's manifest; when a newer train run, forecast run or split
appears, it loads a new ``Snapshot`` and swaps it in. A request takes the
snapshot once, when it starts, and answers from it alone: one response never
mixes two runs' models.

Two ways to a forecast, both the batch path's own code:

- nothing new in the request: the stored forecast of the latest forecast run
  made with the served train run, as ``mm forecast`` wrote it (the fast path);
- ``future`` rows (known-future values for a what-if) or ``history`` rows
  (actuals newer than the training data): the group's model forecasts through
  ``kernels.checked_forecast``, the same function ``mm forecast`` runs, so the
  same inputs give the same numbers.

FastAPI and uvicorn (the ``serve`` extra) are needed only by ``create_app`` and
``serve``; ``import manymodels`` never imports this module (``api.serve`` does).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import Config
from ..core.identity import group_key, group_label, jsonable
from ..core.kernels import GroupSpec, checked_forecast, horizon_steps
from ..core.results import Status, TrainRow
from ..core.timeindex import format_time, parse_times
from ..errors import MMError, UpstreamMissing
from ..runner.tasks import STEP_COLUMN, load_model
from ..steps.common import group_spec
from ..steps.forecast import quantile_columns
from ..store import registry
from ..store.datastore import Datastore
from .whatif import Prepared

try:  # the serve extra; everything but create_app works without it
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    FastAPI = None

USABLE = ("completed", "partial")


class RequestError(Exception):
    """A request the server answers with ``status`` and a message naming what is wrong."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def body(self) -> dict:
        return {"error": self.message, "status": self.status, **({"field": self.field} if self.field else {})}


# -- the runs being served ------------------------------------------------------

@dataclass(frozen=True)
class GroupInfo:
    """What a snapshot keeps per group (small: a run may have 100,000 groups)."""

    key: str
    label: str
    values: tuple
    status: str
    model: str | None
    model_version: int | None
    demand_class: str
    error: str
    train_hash: str | None = None  # the split's content hashes: a new split means new rows to read
    inference_hash: str | None = None
    n_inference: int = 0
    forecast: str | None = None  # fingerprint of its stored forecast (the fast path), if any
    trained_hash: str | None = None  # the train partition's hash its model was fitted on (the train row's parts)

    @property
    def has_model(self) -> bool:
        return self.status in (Status.TRAINED, Status.REUSED) and self.model_version is not None

    @property
    def history_matches(self) -> bool:
        """The split's train partition is the one the model was fitted on (same content hash).
        Not so between a nightly ``mm split`` that changed the group and the ``mm train`` that
        fits it again: the model's own history is gone from the split then. (A row recorded
        without its parts, by an older mm, is taken as it is.)"""
        return self.trained_hash is None or self.trained_hash == self.train_hash

    def group(self, columns: tuple[str, ...]) -> dict:
        return {c: jsonable(v) for c, v in zip(columns, self.values)}


@dataclass(frozen=True)
class Snapshot:
    """One train run as served: its groups, the split they read, the forecast run made with it."""

    train_run: dict
    forecast_run_id: str | None
    split_run_id: str | None
    spec: GroupSpec
    quantiles: tuple[float, ...]
    cap_factor: float | None
    groups: dict[str, GroupInfo]
    order: tuple[str, ...]  # keys by label, for paging
    by_text: dict[tuple, str]  # group values as text -> key (a request may send 2 as "2")
    loaded: str = field(default_factory=lambda: _now())

    @property
    def run_id(self) -> str:
        return self.train_run["id"]

    @property
    def version(self) -> tuple:
        return (self.run_id, self.forecast_run_id, self.split_run_id)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunWatcher:
    """The datastore's run records, kept up to date cheaply: a listing of ``runs/`` per look,
    and a read only of records not seen before or last seen running (a finished record is final)."""

    def __init__(self, store: Datastore):
        self.store = store
        self.records: dict[str, dict] = {}

    def look(self) -> None:
        ids = {name[: -len(".json")] for name in self.store.files.names("runs") if name.endswith(".json")}
        for run_id in list(self.records):
            if run_id not in ids:  # removed (mm clean)
                del self.records[run_id]
        for run_id in ids:
            known = self.records.get(run_id)
            if known is not None and known.get("status") != "running":
                continue
            try:
                self.records[run_id] = self.store.read_run(run_id)
            except MMError:  # damaged, or removed meanwhile: never a run to serve
                self.records.pop(run_id, None)

    def latest(self, step: str, **match) -> dict | None:
        usable = [r for r in self.records.values() if r.get("step") == step and r.get("status") in USABLE and all(r.get(k) == v for k, v in match.items())]
        return max(usable, key=lambda r: (str(r.get("started", "")), r["id"]), default=None)


class ServedRuns:
    """The snapshot requests are answered from, switched to a newer run without a restart."""

    def __init__(self, store: Datastore, config: Config, pin: str | None = None):
        self.store, self.config, self.pin = store, config, pin
        self.watcher = RunWatcher(store)
        self.switches = 0
        self.last_check = ""
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.watcher.look()
        train = registry.run_models(store, pin) if pin else self.watcher.latest("train")
        if train is None:
            raise UpstreamMissing(f"no finished train run in datastore {store.root}", "run 'mm train -c CONFIG' (or 'mm run') first")
        self.snapshot = self._load(train)

    def current(self) -> Snapshot:
        return self.snapshot  # one attribute read: a request holds this snapshot to its end

    def refresh(self) -> bool:
        """Look for newer runs; load and swap in a new snapshot when there are. True if it switched."""
        self.watcher.look()
        self.last_check = _now()
        train = self.snapshot.train_run if self.pin else (self.watcher.latest("train") or self.snapshot.train_run)
        forecast = self.watcher.latest("forecast", train_run_id=train["id"])
        wanted = (train["id"], forecast["id"] if forecast else None, _split_run_id(self.store))
        if wanted == self.snapshot.version:
            return False
        self.snapshot = self._load(train)
        self.switches += 1
        return True

    def _load(self, train: dict) -> Snapshot:
        forecast = self.watcher.latest("forecast", train_run_id=train["id"])
        return load_snapshot(self.store, self.config, train, forecast)

    def start(self) -> None:
        """Refresh every ``serve.refresh_seconds`` in a daemon thread until ``stop``."""

        def loop() -> None:
            while not self._stop.wait(self.config.serve.refresh_seconds):
                try:
                    self.refresh()
                    self.last_error = ""
                except Exception as exc:  # a run half-removed, a damaged table: keep serving what we have
                    self.last_error = f"{type(exc).__name__}: {exc}"

        self._thread = threading.Thread(target=loop, name="mm-serve-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _split_run_id(store: Datastore) -> str | None:
    manifest = store.read_split_manifest()
    return manifest.get("run_id") if manifest else None


def load_snapshot(store: Datastore, config: Config, train: dict, forecast: dict | None) -> Snapshot:
    """Read a train run's groups table, the split's groups and the forecast run's fingerprints."""
    manifest = store.read_split_manifest()
    if manifest is None or not store.has_split_groups():
        raise UpstreamMissing(f"no split in datastore {store.root}", "run 'mm split -c CONFIG' (or 'mm run') first")
    split: dict[str, tuple] = {}
    for batch in store.iter_split_groups(columns=["key", "train_hash", "inference_hash", "n_inference"]):
        for g in batch.to_pylist():
            split[g["key"]] = (g["train_hash"], g["inference_hash"], int(g["n_inference"] or 0))
    stored: dict[str, str] = {}
    if forecast is not None:
        for batch in store.iter_run_groups(forecast["id"], columns=["key", "status", "fingerprint"]):
            for g in batch.to_pylist():
                if g["status"] in (Status.FORECAST, Status.REUSED) and g["fingerprint"]:
                    stored[g["key"]] = g["fingerprint"]
    groups: dict[str, GroupInfo] = {}
    for row in registry.run_rows(store, train["id"], TrainRow):
        hashes = split.get(row.key, (None, None, 0))
        groups[row.key] = GroupInfo(
            key=row.key, label=row.label, values=tuple(row.values), status=str(row.status), model=row.model,
            model_version=row.model_version, demand_class=row.demand_class, error=row.error,
            train_hash=hashes[0], inference_hash=hashes[1], n_inference=hashes[2], forecast=stored.get(row.key),
            trained_hash=(row.parts or {}).get("data"),
        )
    order = tuple(sorted(groups, key=lambda k: groups[k].label))
    by_text = {_as_text(g.values): g.key for g in groups.values()}
    return Snapshot(
        train_run=train, forecast_run_id=forecast["id"] if forecast else None, split_run_id=manifest.get("run_id"),
        spec=group_spec(config, manifest), quantiles=tuple(config.forecast.quantiles), cap_factor=config.forecast.cap_factor,
        groups=groups, order=order, by_text=by_text,
    )


def _as_text(values) -> tuple:
    return tuple(str(jsonable(v)) for v in values)


# -- the cache of loaded groups ---------------------------------------------------

class Stats:
    """Counters for /metrics (hand-written Prometheus text: a handful of series needs no library)."""

    BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # endpoint -> [bucket counts..., +Inf, sum]
        self.counters = {"cache_hits": 0, "cache_loads": 0, "cache_evictions": 0, "model_errors": 0, "errors": 0, "whatif_fallbacks": 0}

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    def request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            k = (method, endpoint, status)
            self.requests[k] = self.requests.get(k, 0) + 1
            h = self.latency.setdefault(endpoint, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += 1
            h[-1] += seconds
            if status >= 500:
                self.counters["errors"] += 1

    def text(self, runs: ServedRuns, cache: GroupCache) -> str:
        snap = runs.current()
        out = [
            "# HELP mm_serve_requests_total HTTP requests answered, by method, endpoint and status.",
            "# TYPE mm_serve_requests_total counter",
        ]
        with self.lock:
            out += [f'mm_serve_requests_total{{method="{m}",endpoint="{e}",status="{s}"}} {n}' for (m, e, s), n in sorted(self.requests.items())]
            out += ["# HELP mm_serve_request_duration_seconds Time from request to response, by endpoint.", "# TYPE mm_serve_request_duration_seconds histogram"]
            for e, h in sorted(self.latency.items()):
                out += [f'mm_serve_request_duration_seconds_bucket{{endpoint="{e}",le="{b}"}} {int(h[i])}' for i, b in enumerate(self.BUCKETS)]
                out += [f'mm_serve_request_duration_seconds_bucket{{endpoint="{e}",le="+Inf"}} {int(h[-2])}']
                out += [f'mm_serve_request_duration_seconds_count{{endpoint="{e}"}} {int(h[-2])}', f'mm_serve_request_duration_seconds_sum{{endpoint="{e}"}} {h[-1]:.6f}']
            counters = dict(self.counters)
        described = {
            "cache_hits": "Group lookups answered from the cache.",
            "cache_loads": "Group parts (model, history, inference rows, stored forecast) read from the datastore.",
            "cache_evictions": "Groups dropped from the cache to stay within serve.cache_size.",
            "model_errors": "Requests answered 503 because a group's model could not be read.",
            "errors": "Responses with a 5xx status.",
            "whatif_fallbacks": "LightGBM groups whose what-if state could not be prepared (forecast the batch path's way instead).",
        }
        for name, help_text in described.items():
            out += [f"# HELP mm_serve_{name}_total {help_text}", f"# TYPE mm_serve_{name}_total counter", f"mm_serve_{name}_total {counters[name]}"]
        out += [
            "# HELP mm_serve_cache_groups Groups in the cache now.", "# TYPE mm_serve_cache_groups gauge", f"mm_serve_cache_groups {len(cache)}",
            "# HELP mm_serve_run_switches_total Switches to a newer train, forecast or split run.", "# TYPE mm_serve_run_switches_total counter",
            f"mm_serve_run_switches_total {runs.switches}",
            "# HELP mm_serve_run_info The train run served (value 1).", "# TYPE mm_serve_run_info gauge",
            f'mm_serve_run_info{{run_id="{snap.run_id}",forecast_run_id="{snap.forecast_run_id or ""}"}} 1',
            "# HELP mm_serve_groups Groups in the train run served.", "# TYPE mm_serve_groups gauge", f"mm_serve_groups {len(snap.groups)}",
        ]
        return "\n".join(out) + "\n"


@dataclass
class Model:
    meta: dict
    fitted: Any


class Loaded:
    """One group at one version (model version, split hashes, stored forecast): its parts,
    each read the first time a request needs it. Never changed once filled, so a request
    keeps using the one it got even if a newer version replaces it in the cache."""

    def __init__(self, store: Datastore, info: GroupInfo, stats: Stats):
        self.store, self.info, self.stats = store, info, stats
        self.lock = threading.Lock()
        self.parts: dict[str, Any] = {}

    def part(self, name: str, load) -> Any:
        if name in self.parts:
            self.stats.count("cache_hits")
            return self.parts[name]
        with self.lock:  # one reader per part: a burst of requests for a cold group parses its booster once
            if name not in self.parts:
                self.parts[name] = load()
                self.stats.count("cache_loads")
            return self.parts[name]

    def model(self) -> Model:
        return self.part("model", self._read_model)

    def _read_model(self) -> Model:
        key, version = self.info.key, int(self.info.model_version)
        try:
            return Model(*load_model(self.store, key, version))  # mm forecast's way: a pooled one through its pool
        except Exception as exc:  # missing, cut short, not a model: this group only, and not cached
            self.stats.count("model_errors")
            raise RequestError(503, f"the model of group {self.info.label} (v{version}) cannot be read: {type(exc).__name__}: {exc}; run 'mm train' to fit it again") from None

    def history(self, split_run_id: str | None) -> pd.DataFrame:
        return self.part("history", lambda: self._partition("train", split_run_id))

    def prepared(self, spec: GroupSpec, split_run_id: str | None) -> Prepared | None:
        """The what-if path's state (extras/whatif.py); None: this model goes the batch path's way."""
        return self.part("prepared", lambda: self._prepare(spec, split_run_id))

    def _prepare(self, spec: GroupSpec, split_run_id: str | None) -> Prepared | None:
        model, history = self.model(), self.history(split_run_id)
        try:
            return Prepared.of(history, model.meta, model.fitted, spec)
        except Exception:  # the shortcut failing (another LightGBM's C API...) must not fail the request
            self.stats.count("whatif_fallbacks")
            return None

    def inference(self, split_run_id: str | None) -> pd.DataFrame | None:
        """The group's stored inference rows (None when the split has none for it)."""
        if not self.info.n_inference:
            return None
        return self.part("inference", lambda: self._partition("inference", split_run_id))

    def _partition(self, kind: str, split_run_id: str | None) -> pd.DataFrame:
        """The partition of split run ``split_run_id`` (the snapshot's), or 503. A split removes
        its predecessor's manifest before it rewrites any partition, so a manifest still naming
        that run after the read means the rows read are that run's."""
        try:
            frame = self.store.read_partition(kind, self.info.key)
            now = _split_run_id(self.store)
        except Exception as exc:
            raise RequestError(503, f"the {kind} partition of group {self.info.label} cannot be read: {getattr(exc, 'message', exc)}; run 'mm split' again") from None
        if now != split_run_id:
            raise RequestError(503, f"a new split ({now or 'being written'}) replaced split run {split_run_id} while the {kind} rows of group {self.info.label} were read; retry: the server moves to the new split within serve.refresh_seconds")
        return frame

    def stored(self) -> pa.Table | None:
        """The stored forecast (None when gone: a newer forecast run replaced it)."""
        if not self.info.forecast:
            return None

        def read() -> pa.Table | None:
            try:
                return self.store.read_forecast(self.info.key, self.info.forecast)
            except (FileNotFoundError, MMError):
                return None

        return self.part("stored", read)


class GroupCache:
    """Loaded groups, the least recently used dropped beyond ``size``."""

    def __init__(self, store: Datastore, size: int, stats: Stats):
        self.store, self.size, self.stats = store, size, stats
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, Loaded] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, info: GroupInfo) -> Loaded:
        with self.lock:
            entry = self.entries.get(info.key)
            if entry is not None and entry.info == info:
                self.entries.move_to_end(info.key)
                return entry
            entry = self.entries[info.key] = Loaded(self.store, info, self.stats)  # new, or a newer version of the group
            self.entries.move_to_end(info.key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
                self.stats.count("cache_evictions")
            return entry


# -- requests ---------------------------------------------------------------------------

Scalar = str | int | float | bool | None


class GroupRequest(BaseModel):
    """One group, by ``key`` or by its column values (``group``), with optional new rows."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, description="The group's key (training_output.csv, GET /groups).")
    group: dict[str, Scalar] | None = Field(default=None, description="The group's column values, e.g. {\"Store\": 2, \"Brand\": \"tropicana\"}.")
    future: list[dict[str, Scalar]] | None = Field(default=None, description="Rows to forecast with their known-future values (what-if); they replace the stored inference rows of the same periods.")
    history: list[dict[str, Scalar]] | None = Field(default=None, description="Actuals newer than the training data (time, target, known-future values).")

    @model_validator(mode="after")
    def _one_way_to_name_it(self) -> GroupRequest:
        if (self.key is None) == (self.group is None):
            raise ValueError("give the group either as 'key' or as 'group' (its column values), not both or neither")
        return self


class ForecastRequest(BaseModel):
    """``groups``; or one group's fields (``key`` or ``group``, ``future``, ``history``) at the top level."""

    model_config = ConfigDict(extra="forbid")

    groups: list[GroupRequest] | None = Field(default=None, min_length=1)
    key: str | None = None
    group: dict[str, Scalar] | None = None
    future: list[dict[str, Scalar]] | None = None
    history: list[dict[str, Scalar]] | None = None
    horizon: int | None = Field(default=None, ge=1, description="Periods to forecast, at most the trained horizon (train.horizon); default: every stored inference row, or the rows given.")

    @model_validator(mode="after")
    def _groups_or_one(self) -> ForecastRequest:
        single = self.key is not None or self.group is not None or self.future is not None or self.history is not None
        if self.groups is None and not single:
            raise ValueError("name the groups to forecast: 'groups': [{'key': ...}], or 'key' / 'group' for one")
        if self.groups is not None and single:
            raise ValueError("give either 'groups' or one group's 'key' / 'group' / 'future' / 'history' at the top level, not both")
        if self.groups is None and (self.key is None) == (self.group is None):
            raise ValueError("give the group either as 'key' or as 'group' (its column values), not both or neither")
        return self

    def group_requests(self) -> list[GroupRequest]:
        if self.groups is not None:
            return self.groups
        return [GroupRequest.model_construct(key=self.key, group=self.group, future=self.future, history=self.history)]  # validated above


class Forecaster:
    """Answers requests from a snapshot: resolves groups, builds their rows, forecasts."""

    def __init__(self, store: Datastore, config: Config, runs: ServedRuns, cache: GroupCache):
        self.store, self.config, self.runs, self.cache = store, config, runs, cache

    # groups --------------------------------------------------------------------
    def resolve(self, snap: Snapshot, key: str | None, values: dict | None, where: str) -> GroupInfo:
        """The group a request names (404 naming it when the run has no such group)."""
        columns = snap.spec.group_columns
        if values is not None:
            unknown = [c for c in values if c not in columns]
            if unknown:
                raise RequestError(422, f"{_at(where, 'group')}: {unknown[0]!r} is not a group column; the group columns are {', '.join(columns)}", _at(where, f"group.{unknown[0]}"))
            missing = [c for c in columns if c not in values]
            if missing:
                raise RequestError(422, f"{_at(where, 'group')}: missing group column {missing[0]!r} (the group columns are {', '.join(columns)})", _at(where, f"group.{missing[0]}"))
            ordered = [values[c] for c in columns]
            key = group_key(ordered)
            if key not in snap.groups:
                key = snap.by_text.get(_as_text(ordered), key)
            name = group_label(columns, ordered)
        else:
            name = f"key {key}"
        info = snap.groups.get(key)
        if info is None:
            raise RequestError(404, f"unknown group {name}: train run {snap.run_id} has no such group", _at(where, "group" if values is not None else "key"))
        if not info.has_model:
            raise RequestError(404, f"group {info.label} has no model in train run {snap.run_id}: {info.error or 'training failed'}", _at(where, "key"))
        return info

    def group_by_path(self, snap: Snapshot, text: str) -> GroupInfo:
        """``/groups/{key}``: a key, or a label such as ``Store=2,Brand=tropicana``."""
        if text in snap.groups:
            return snap.groups[text]
        if "=" in text:
            values = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
            key = snap.by_text.get(tuple(values.get(c, "") for c in snap.spec.group_columns))
            if key:
                return snap.groups[key]
        raise RequestError(404, f"unknown group {text}: train run {snap.run_id} has no such group", "key")

    # forecasts ------------------------------------------------------------------
    def forecast(self, body: ForecastRequest) -> dict:
        snap = self.runs.current()  # once: every group of this response comes from this run
        requests = body.group_requests()
        if len(requests) > self.config.serve.max_groups:
            raise RequestError(413, f"{len(requests)} groups in one request; at most serve.max_groups = {self.config.serve.max_groups}", "groups")
        horizon = body.horizon
        if horizon is not None and horizon > snap.spec.horizon:
            raise RequestError(422, f"horizon: {horizon} is longer than the trained horizon {snap.spec.horizon} (train.horizon)", "horizon")
        single = body.groups is None
        out = []
        for i, req in enumerate(requests):
            where = "" if single else f"groups[{i}]"
            info = self.resolve(snap, req.key, req.group, where)
            out.append(self._one(snap, info, req, horizon, where))
        return {"run_id": snap.run_id, "forecast_run_id": snap.forecast_run_id, "forecasts": out}

    def _one(self, snap: Snapshot, info: GroupInfo, req: GroupRequest, horizon: int | None, where: str) -> dict:
        entry = self.cache.get(info)
        if not req.future and not req.history:
            table = entry.stored()
            wanted = (self.config.forecast.prediction_column, *quantile_columns(self.config), STEP_COLUMN)
            if table is not None and all(c in table.column_names for c in wanted):  # else made under other forecast.quantiles
                return self._answer(snap, info, "stored", self._stored_rows(snap, info, table, horizon), {})
        return self._computed(snap, info, entry, req, horizon, where)

    def _stored_rows(self, snap: Snapshot, info: GroupInfo, table: pa.Table, horizon: int | None) -> list[dict]:
        spec = snap.spec
        steps = table[STEP_COLUMN].to_numpy(zero_copy_only=False).astype(float)
        keep = np.flatnonzero(steps <= horizon) if horizon is not None else np.arange(len(steps))
        columns = quantile_columns(self.config)
        matrix = np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(float) for c in (self.config.forecast.prediction_column, *columns)])
        times = table[spec.time_column].to_pandas()
        series = {c: table[c].to_pylist() for c in spec.series_columns}
        return _rows(snap, info, keep, times, steps, matrix, series)

    def _computed(self, snap: Snapshot, info: GroupInfo, entry: Loaded, req: GroupRequest, horizon: int | None, where: str) -> dict:
        spec = snap.spec
        if not info.history_matches:  # never the model with another split's history
            raise RequestError(409, f"group {info.label}: its model (train run {snap.run_id}) was fitted on rows that split run {snap.split_run_id} has replaced; forecasts from 'future' or 'history' rows wait for the train run that fits it again ('mm train'); without them the stored forecast answers", _at(where, "future" if req.future else "history"))
        model = entry.model()
        history = entry.history(snap.split_run_id)
        base = entry.inference(snap.split_run_id)
        prepared = None if req.history else entry.prepared(spec, snap.split_run_id)  # new history: the batch path
        if req.history:
            new = rows_frame(req.history, history, info, spec, _at(where, "history"), target=True)
            _check_newer(new, history, spec, _at(where, "history"))
            history = pd.concat([history, new], ignore_index=True)
        steps_of = prepared.steps if prepared is not None else (lambda frame: horizon_steps(history, frame, spec))
        future = base if base is not None else history.iloc[0:0]
        if req.future:
            given = rows_frame(req.future, future, info, spec, _at(where, "future"), target=False)
            _check_future_steps(given, steps_of(given), spec, _at(where, "future"))
            future = _merge_future(future, given, spec, _at(where, "future"))
        steps = steps_of(future)
        keep = (steps >= 1) & ((steps <= horizon) if horizon is not None else True)
        if not keep.all():  # else no copy: the usual what-if sends just the periods to forecast
            future = future.loc[keep].reset_index(drop=True)
            steps = steps[keep]
        _check_covers(future, steps, horizon, spec, _at(where, "future"))
        done = prepared.forecast(future, snap.cap_factor) if prepared is not None else None
        if done is None:
            done = checked_forecast(history, future, model.meta, model.fitted, spec, snap.cap_factor)
        if done.missing.any():
            raise RequestError(422, f"group {info.label}: {int(done.missing.sum())} row(s) got no finite prediction (a series with no history, or values too large to forecast)", _at(where, "future"))
        times = future[spec.time_column]
        series = {c: future[c].tolist() for c in spec.series_columns}
        rows = _rows(snap, info, np.arange(len(future)), times, steps.astype(float), done.matrix, series)
        return self._answer(snap, info, "computed", rows, {"out_of_range": done.checks.out_of_range, "capped": done.checks.capped})

    def _answer(self, snap: Snapshot, info: GroupInfo, source: str, rows: list[dict], checks: dict) -> dict:
        return {
            "key": info.key, "group": info.group(snap.spec.group_columns), "label": info.label,
            "model": info.model, "model_version": info.model_version, "run_id": snap.run_id,
            "source": source, "checks": checks, "rows": rows,
        }


def _at(where: str, name: str) -> str:
    """A field's path in the request: ``future`` for a one-group request, ``groups[2].future`` in a list."""
    return f"{where}.{name}" if where else name


def _number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no NaN


def _rows(snap: Snapshot, info: GroupInfo, keep: np.ndarray, times, steps: np.ndarray, matrix: np.ndarray, series: dict) -> list[dict]:
    names = [f"{q:g}" for q in snap.quantiles]
    out = []
    texts = _time_texts(times, keep, snap.spec.time_axis)
    for n, i in enumerate(keep):
        row = {
            "time": texts[n], "step": int(steps[i]) if math.isfinite(steps[i]) else None,
            "prediction": _number(matrix[i, 0]), "quantiles": {n: _number(matrix[i, j + 1]) for j, n in enumerate(names)},
            "model": info.model, "model_version": info.model_version, "run_id": snap.run_id,
        }
        for c, values in series.items():
            row[c] = jsonable(values[i])
        out.append(row)
    return out


def _time_texts(times, keep: np.ndarray, axis) -> list[str]:
    """``format_time`` of the kept times: days at once when they are naive midnights (the usual
    answer: 20 weeks), else one by one."""
    values = times.to_numpy() if isinstance(times, (pd.Series, pd.Index)) else np.asarray(times)
    values = values[keep]
    if axis.kind != "int" and values.dtype.kind == "M":
        days = values.astype("datetime64[D]")
        if (days == values).all():
            return np.datetime_as_string(days, unit="D").tolist()
    return [format_time(v, axis) for v in values]


# -- request rows -> partition rows ---------------------------------------------------

def rows_frame(rows: list[dict], like: pd.DataFrame, info: GroupInfo, spec: GroupSpec, where: str, target: bool) -> pd.DataFrame:
    """Request rows as a frame with exactly the columns and types of the group's partition
    (``like``), its period column computed: what ``mm forecast`` reads from the split.
    422 naming the row and column for anything missing, unknown, mistyped or off the grid."""
    roles = {spec.time_column, *spec.known_future_columns, *spec.group_columns, *spec.series_columns}
    if target:
        roles.add(spec.target_column)
    required = [spec.time_column, *spec.series_columns, *spec.known_future_columns] + ([spec.target_column] if target else [])
    for i, row in enumerate(rows):
        for column in row:
            if column not in roles:
                hint = "; actuals go in 'history'" if column == spec.target_column else ""
                raise RequestError(422, f"{where}[{i}]: unknown column {column!r}; expected {', '.join(sorted(roles))}{hint}", f"{where}[{i}].{column}")
        for column in required:
            if column not in row:
                raise RequestError(422, f"{where}[{i}]: missing column {column!r}", f"{where}[{i}].{column}")
        for column, value in zip(spec.group_columns, info.values):
            if column in row and str(jsonable(row[column])) != str(jsonable(value)):
                raise RequestError(422, f"{where}[{i}].{column}: {row[column]!r} is not this group's value {jsonable(value)!r}", f"{where}[{i}].{column}")
    times = _times(rows, spec, where)
    data = {}
    for name, dtype in like.dtypes.items():
        if name == spec.period_column:
            data[name] = spec.time_axis.to_periods(times)
        elif name == spec.time_column:
            data[name] = _as_dtype(times, dtype, name, where)
        elif name in spec.group_columns:  # the group's own value, typed as its partition has it
            data[name] = _constant(info.values[spec.group_columns.index(name)], dtype, len(rows))
        else:
            data[name] = _column(name, [row.get(name) for row in rows], dtype, where)
    frame = pd.DataFrame(data)  # of arrays, not Series: nothing to align (a third of the time)
    if target:
        y = frame[spec.target_column].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise RequestError(422, f"{where}[{bad[0]}].{spec.target_column}: an actual must be a finite number", f"{where}[{bad[0]}].{spec.target_column}")
    return frame


@lru_cache(maxsize=4096)
def _constant(value, dtype, n: int):
    """A column of ``n`` times ``value`` as ``dtype`` (kept: the DataFrame built from it copies it)."""
    return pd.array([value] * n, dtype=dtype)


NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?\Z")


def _times(rows: list[dict], spec: GroupSpec, where: str) -> pd.Series:
    column = spec.time_column
    raw = [row.get(column) for row in rows]
    for i, value in enumerate(raw):
        if value is None or isinstance(value, bool):
            raise RequestError(422, f"{where}[{i}].{column}: a time is needed, not {value!r}", f"{where}[{i}].{column}")
    axis = spec.time_axis
    if axis.kind == "int":
        bad = [i for i, v in enumerate(raw) if not (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))]
        if bad:
            raise RequestError(422, f"{where}[{bad[0]}].{column}: {raw[bad[0]]!r} is not a period number", f"{where}[{bad[0]}].{column}")
        times = pd.Series([int(v) for v in raw], dtype=np.int64)
    else:
        if any(not isinstance(v, str) for v in raw):
            i = next(i for i, v in enumerate(raw) if not isinstance(v, str))
            raise RequestError(422, f"{where}[{i}].{column}: {raw[i]!r} is not a date (send ISO text such as 2021-08-05)", f"{where}[{i}].{column}")
        try:
            # plain ISO dates and times (the usual request) parse in numpy, 20x faster than
            # pandas' format inference and to the same values; anything else (zones...) goes there
            if all(NAIVE_ISO.match(v) for v in raw):
                times = pd.Series(np.array(raw, dtype="datetime64[ns]"))
            else:
                times = parse_times(pd.Series(raw, dtype=object), column, where)
        except MMError as exc:
            raise RequestError(422, exc.message, f"{where}.{column}") from None
        if pd.api.types.is_integer_dtype(times):
            raise RequestError(422, f"{where}.{column}: numbers where dates are expected", f"{where}.{column}")
    try:
        off = axis.off_grid(times)
    except (TypeError, ValueError) as exc:  # a zone-aware time against a naive axis, or the reverse
        raise RequestError(422, f"{where}.{column}: {exc}", f"{where}.{column}") from None
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise RequestError(422, f"{where}[{i}].{column}: {raw[i]!r} is off the group's time grid ({axis.label})", f"{where}[{i}].{column}")
    return times


def _column(name: str, values: list, dtype, where: str) -> pd.Series:
    """One request column with the partition's dtype: numbers checked one by one (a bool or a
    text is not a price), then converted as pandas converts a Parquet column."""
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        whole = pd.api.types.is_integer_dtype(dtype)
        for i, v in enumerate(values):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not (number or (v is None and not whole)) or (whole and number and not float(v).is_integer()):
                kind = "whole number" if whole else "number"
                raise RequestError(422, f"{where}[{i}].{name}: {v!r} is not a {kind}", f"{where}[{i}].{name}")
        numbers = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        if isinstance(dtype, np.dtype):  # checked above: no NaN for a whole-number column
            return numbers.astype(dtype)
        return pd.Series(numbers).astype(dtype).array
    try:
        return pd.Series(values, dtype=object).astype(dtype).array
    except (TypeError, ValueError):
        raise RequestError(422, f"{where}.{name}: values that are not of the column's type {dtype}", f"{where}.{name}") from None


def _as_dtype(times: pd.Series, dtype, name: str, where: str):
    if isinstance(dtype, np.dtype) and isinstance(times.dtype, np.dtype) and times.dtype.kind == dtype.kind == "M":
        return times.to_numpy().astype(dtype)  # naive times to the column's unit, without a Series
    try:
        return times.astype(dtype).array
    except (TypeError, ValueError) as exc:  # a zone-aware time for a naive column, or the reverse
        raise RequestError(422, f"{where}.{name}: {exc}", f"{where}.{name}") from None


def _series_columns(spec: GroupSpec) -> list[str]:
    return list(spec.series_columns)


def _merge_future(stored: pd.DataFrame, given: pd.DataFrame, spec: GroupSpec, where: str) -> pd.DataFrame:
    """The stored inference rows with the request's rows in place of those of the same periods,
    ordered by series and period as a partition is."""
    cols = [*_series_columns(spec), spec.period_column]
    given_keys = _row_keys(given, cols)
    if len(set(given_keys)) < len(given_keys):
        seen: set = set()
        i = next(i for i, k in enumerate(given_keys) if k in seen or seen.add(k))
        raise RequestError(422, f"{where}[{i}]: a second row for the same period", f"{where}[{i}].{spec.time_column}")
    if len(stored):
        replaced = set(given_keys)
        keep = np.array([k not in replaced for k in _row_keys(stored, cols)], dtype=bool)
        merged = pd.concat([stored.loc[keep], given], ignore_index=True) if keep.any() else given
    else:
        merged = given
    if len(cols) > 1:
        return merged.sort_values(cols, kind="stable").reset_index(drop=True)
    periods = merged[cols[0]].to_numpy()
    if merged is given and (np.diff(periods) > 0).all():  # the usual what-if: every period, in order
        return given
    return merged.iloc[np.argsort(periods, kind="stable")].reset_index(drop=True)


def _row_keys(frame: pd.DataFrame, cols: list[str]) -> list:
    return list(zip(*(frame[c].tolist() for c in cols)))


def _check_newer(new: pd.DataFrame, history: pd.DataFrame, spec: GroupSpec, where: str) -> None:
    """History rows must come after the training data of their series, once each."""
    cols = _series_columns(spec)
    if new.duplicated([*cols, spec.period_column]).any():
        i = int(np.flatnonzero(new.duplicated([*cols, spec.period_column]).to_numpy())[0])
        raise RequestError(422, f"{where}[{i}]: a second row for the same period", f"{where}[{i}].{spec.time_column}")
    if cols:
        last = history.groupby(cols, observed=True)[spec.period_column].max()
        joined = new[cols].merge(last.rename("_last"), left_on=cols, right_index=True, how="left")["_last"].to_numpy(dtype=float, na_value=np.nan)
    else:
        joined = np.full(len(new), float(history[spec.period_column].max()) if len(history) else np.nan)
    periods = new[spec.period_column].to_numpy(dtype=float)
    stale = np.flatnonzero(periods <= joined)
    if len(stale):
        i = int(stale[0])
        raise RequestError(422, f"{where}[{i}].{spec.time_column}: {format_time(new[spec.time_column].iloc[i], spec.time_axis)} is not newer than the training data of its series", f"{where}[{i}].{spec.time_column}")


def _check_future_steps(future: pd.DataFrame, steps: np.ndarray, spec: GroupSpec, where: str) -> None:
    """Rows sent must be after the last known value and within the trained horizon."""
    bad = np.flatnonzero(~np.isfinite(steps.astype(float)))
    if len(bad):
        i = int(bad[0])
        raise RequestError(422, f"{where}[{i}]: a row for a series with no history in this group ({_series_of(future, i, spec)})", f"{where}[{i}]")
    early = np.flatnonzero(steps < 1)
    if len(early):
        i = int(early[0])
        when = format_time(future[spec.time_column].iloc[i], spec.time_axis)
        raise RequestError(422, f"{where}[{i}].{spec.time_column}: {when} is not after the last known value of its series", f"{where}[{i}].{spec.time_column}")
    beyond = np.flatnonzero(steps > spec.horizon)
    if len(beyond):
        i = int(beyond[0])
        when = format_time(future[spec.time_column].iloc[i], spec.time_axis)
        raise RequestError(422, f"{where}[{i}].{spec.time_column}: {when} is {int(steps[i])} periods after the last known value, beyond the trained horizon {spec.horizon}", f"{where}[{i}].{spec.time_column}")


def _series_of(frame: pd.DataFrame, i: int, spec: GroupSpec) -> str:
    cols = [*spec.group_columns, *spec.series_columns]
    return ",".join(f"{c}={jsonable(frame[c].iloc[i])}" for c in cols if c in frame.columns)


def _check_covers(future: pd.DataFrame, steps: np.ndarray, horizon: int | None, spec: GroupSpec, where: str) -> None:
    """Every series must have a row for each step from 1 to the horizon (or to its last row)."""
    if not len(future):
        raise RequestError(422, f"{where}: nothing to forecast: no stored inference rows after the last known value; send the periods in 'future'", where)
    cols = _series_columns(spec)
    codes = future.groupby(cols, sort=False, observed=True).ngroup().to_numpy() if cols else np.zeros(len(future), dtype=np.int64)
    for code in np.unique(codes):
        mine = np.sort(steps[codes == code].astype(np.int64))
        want = horizon if horizon is not None else int(mine.max())
        missing = sorted(set(range(1, want + 1)) - set(mine.tolist()))
        if missing:
            i = int(np.flatnonzero(codes == code)[0])
            raise RequestError(422, f"{where}: the rows do not cover the horizon: {_series_of(future, i, spec)} has no row {missing[0]} period(s) after its last known value (of {want}); send it in 'future'", where)


# -- the app ---------------------------------------------------------------------

def read_api_key(path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise MMError(f"cannot read the API key file {path}: {exc.strerror or exc}", "give a readable file holding one key") from None
    if not key:
        raise MMError(f"the API key file {path} is empty", "write the key into it (one line)")
    return key.encode()


def endpoint_of(path: str) -> str:
    """A bounded label for /metrics (never the raw path: group keys would be series of their own)."""
    if path in ("/forecast", "/groups", "/health", "/metrics", "/docs", "/openapi.json"):
        return path
    if path.startswith("/groups/"):
        return "/groups/{key}"
    return "other"


class Guard:
    """The outermost ASGI layer: metrics for every request, the body limit (413), the API key (401)."""

    OPEN = ("/health",)  # answered without a key: load balancers probe it

    def __init__(self, app, stats: Stats, max_body: int, api_key: bytes | None):
        self.app, self.stats, self.max_body, self.api_key = app, stats, max_body, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        finally:
            self.stats.request(scope.get("method", "?"), endpoint_of(scope.get("path", "")), status["code"], time.perf_counter() - started)

    async def _guarded(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None and scope.get("path") not in self.OPEN and not self._authorised(headers):
            return await _reply(send, 401, {"error": "an API key is needed: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'", "status": 401}, [(b"www-authenticate", b"Bearer")])
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _reply(send, 413, _too_large(self.max_body))
        body, more = b"", True
        while more:  # read it all here (at most max_body bytes), so a chunked body is bounded too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _reply(send, 413, _too_large(self.max_body))
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorised(self, headers: dict) -> bool:
        given = headers.get("x-api-key")
        auth = headers.get("authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)


def _too_large(limit: int) -> dict:
    return {"error": f"the request body is larger than serve.max_body_bytes = {limit:,} bytes", "status": 413}


async def _reply(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


if FastAPI is not None:

    class Json(JSONResponse):
        """JSON with non-ASCII escaped: a lone surrogate a client sent (``"\\ud800"``) and that a
        message echoes must not fail the response (Starlette's JSONResponse writes raw UTF-8)."""

        def render(self, content: Any) -> bytes:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


@dataclass
class Server:
    """What ``create_app`` builds: the ASGI app and the parts behind it (tests and the bench look inside)."""

    app: Any
    runs: ServedRuns
    cache: GroupCache
    stats: Stats
    forecaster: Forecaster


def create_app(config: Config, *, pin: str | None = None, api_key: bytes | None = None, watch: bool = True) -> Server:
    """The FastAPI app serving ``config``'s datastore (the ``serve`` extra). ``watch``: switch to
    newer runs in a background thread (every ``serve.refresh_seconds``)."""
    if FastAPI is None:
        raise MMError("mm serve needs FastAPI and uvicorn, which are not installed", "pip install 'manymodels[serve]'")

    store = Datastore(config.datastore)
    if not store.is_datastore():
        raise UpstreamMissing(f"no datastore at {store.root}", "run 'mm run -c CONFIG' first")
    stats = Stats()
    runs = ServedRuns(store, config, pin)
    cache = GroupCache(store, config.serve.cache_size, stats)
    forecaster = Forecaster(store, config, runs, cache)

    app = FastAPI(
        title="manymodels serve",
        description="Forecasts of every group of the latest train run (mm serve). Read-only.",
        version=__import__("manymodels").__version__,
    )

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return Json(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in exc.errors()[:5]]
        return Json({"error": "; ".join(problems), "status": 422, "field": where}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return Json({"error": f"unexpected error: {type(exc).__name__}: {exc} (a bug in mm; please report it)", "status": 500}, status_code=500)

    # async, so it runs on the event loop's thread: a forecast is CPU work that holds the GIL, and
    # in Starlette's thread pool eight clients' requests only fought over it (196/s at 8 clients
    # against 256/s at one, bench/serve.py); on the loop they queue and run one after another
    @app.post("/forecast", summary="Forecast one or many groups")
    async def forecast(body: ForecastRequest):
        return Json(forecaster.forecast(body))

    @app.get("/groups", summary="The served run's groups, paged and filtered by column values")
    def groups(request: Request, limit: int = 100, offset: int = 0):
        return Json(_list_groups(runs.current(), dict(request.query_params), limit, offset))

    @app.get("/groups/{key}", summary="One group: its model, version, backtest metrics, demand class, drivers")
    def group(key: str):
        snap = runs.current()
        info = forecaster.group_by_path(snap, key)
        return Json(_describe(snap, info, cache))

    @app.get("/health", summary="Liveness, and which runs are served")
    def health():
        snap = runs.current()
        return Json({
            "status": "ok", "run_id": snap.run_id, "forecast_run_id": snap.forecast_run_id, "split_run_id": snap.split_run_id,
            "pinned": bool(pin), "groups": len(snap.groups), "loaded": snap.loaded, "last_check": runs.last_check,
            "history_replaced": sum(1 for g in snap.groups.values() if g.has_model and not g.history_matches),
            "last_error": runs.last_error, "cache": {"groups": len(cache), "size": cache.size},
        })

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics():
        return PlainTextResponse(stats.text(runs, cache), media_type="text/plain; version=0.0.4")

    if watch:  # pinned too: a newer forecast run or split of the pinned train run is picked up
        runs.start()
    return Server(Guard(app, stats, config.serve.max_body_bytes, api_key), runs, cache, stats, forecaster)


PAGING = ("limit", "offset")
FILTERS = ("model", "status", "demand_class")


def _list_groups(snap: Snapshot, query: dict, limit: int, offset: int) -> dict:
    columns = snap.spec.group_columns
    if not 1 <= limit <= 10_000:
        raise RequestError(422, f"limit: {limit} is not between 1 and 10000", "limit")
    if offset < 0:
        raise RequestError(422, f"offset: {offset} is negative", "offset")
    wanted = {k: v for k, v in query.items() if k not in PAGING}
    unknown = [k for k in wanted if k not in columns and k not in FILTERS]
    if unknown:
        raise RequestError(422, f"{unknown[0]}: not a filter; filter by a group column ({', '.join(columns)}) or by {', '.join(FILTERS)}", unknown[0])
    by_column = {columns.index(k): v for k, v in wanted.items() if k in columns}
    by_field = {k: v for k, v in wanted.items() if k in FILTERS}
    matched = []
    for key in snap.order:
        info = snap.groups[key]
        if all(str(jsonable(info.values[i])) == v for i, v in by_column.items()) and all(str(getattr(info, k)) == v for k, v in by_field.items()):
            matched.append(info)
    page = matched[offset : offset + limit]
    return {
        "run_id": snap.run_id, "total": len(matched), "offset": offset, "limit": limit,
        "groups": [{"key": g.key, "label": g.label, "group": g.group(columns), "status": g.status, "model": g.model, "model_version": g.model_version, "demand_class": g.demand_class} for g in page],
    }


def _describe(snap: Snapshot, info: GroupInfo, cache: GroupCache) -> dict:
    out = {
        "key": info.key, "label": info.label, "group": info.group(snap.spec.group_columns), "run_id": snap.run_id,
        "status": info.status, "model": info.model, "model_version": info.model_version, "demand_class": info.demand_class,
        "error": info.error or None, "stored_forecast": info.forecast is not None,
        # false between a split that changed the group and the train run that fits it again (409)
        "what_if": info.has_model and info.history_matches,
    }
    if not info.has_model:
        return out
    meta = cache.get(info).model().meta
    features = (meta.get("info") or {}).get("features") or {}
    out.update({
        "trained_in_run": meta.get("run_id"), "created": meta.get("created"),
        "train_start": meta.get("train_start"), "train_end": meta.get("train_end"),
        "metrics": {k: _number(v) if isinstance(v, (int, float)) else None for k, v in (meta.get("metrics") or {}).items()},
        "selection_metric": meta.get("selection_metric"), "candidate_scores": meta.get("candidate_scores") or {},
        "drivers": [*features.get("numeric_exog", []), *features.get("categorical_exog", [])],
    })
    return out


def serve(config: Config, *, host: str = "127.0.0.1", port: int = 8000, pin: str | None = None, api_key_file: str | Path | None = None, on_ready=None) -> None:
    """Run the server until interrupted (``mm serve``)."""
    try:
        import uvicorn
    except ImportError:
        raise MMError("mm serve needs FastAPI and uvicorn, which are not installed", "pip install 'manymodels[serve]'") from None
    server = create_app(config, pin=pin, api_key=read_api_key(api_key_file))
    if on_ready is not None:
        on_ready(server)
    try:
        uvicorn.run(server.app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        server.runs.stop()
