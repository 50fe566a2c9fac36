"""The datastore: the only module that knows the layout.

    <root>/.mm/datastore.json            marker: this folder is an mm datastore
    <root>/.mm/lock                      who is writing (see lock.py)
    <root>/.mm/input_state.json          size/mtime -> content hash of input files
    <root>/.mm/scratch/                  a running step's temporary files (split's buckets, the
                                         spools of train and forecast), removed when it ends
    <root>/split/manifest.json           how the split was made (axis, cutoff, fingerprint)
    <root>/split/groups.parquet          one row per group: key, values, counts, content hashes
    <root>/split/{train,inference}/<k2>/<key>.parquet
    <root>/models/<k2>/<key>/v<N>.json   model metadata (what the version is, what it was fitted from)
    <root>/models/<k2>/<key>/v<N>.lgb.txt.zst  the booster: LightGBM's own text format, zstd-compressed
    <root>/forecasts/<k2>/<key>/<fp>.parquet  the latest forecast of each group, named by its fingerprint
    <root>/forecasts/<k2>/<key>/staged-<fp>.parquet  a forecast the train task made with the model it
                                         had just fitted, for mm forecast to adopt (steps/forecast.py)
    <root>/hierarchy/errors/<k2>/<key>/<fp>.parquet  with a hierarchy: a node's in-sample forecast errors
                                         (steps/reconcile.py), named by the model and history they are from
    <root>/runs/<run_id>.json            run record (+ .groups.parquet, .journal.jsonl)
    <root>/history/forecasts/<run_id>.parquet  what one forecast run predicted, kept for realised accuracy
                                         (only the forecasts it made; a reused one is in the run that made it)
    <root>/outputs/training_output.csv, forecasting_output.csv, hierarchy_forecast.csv
    <root>/outputs/accuracy_history.parquet  stored forecasts scored against later actuals (mm accuracy)
    <root>/outputs/report.html           mm report (default location)
    <root>/exports/<format>/             mm export (default location): <key>.onnx, <key>.json, index.csv

Group values are data, never paths: a group's files are named by a hash of its
values (``key``), so ``../x``, ``CON`` or a 300-character value stay inside the
datastore.

The root is a folder (on this machine or a shared file system every Dask worker
mounts) or the URL of an object store that fsspec knows (``s3://bucket/prefix``).
Every write is atomic, so a crash never leaves a half-written file where a
reader would take it for a finished one: in a folder, a temporary file is
renamed over the target; in an object store, every object is written by one
PUT, which the store makes visible whole or not at all.

Model boosters are LightGBM's text format compressed with zstd (level 1: about
3.5x smaller, 1-2 ms per 300-tree model); ``zstd -d v1.lgb.txt.zst`` gives the
plain text back. Uncompressed ``v<N>.lgb.txt`` files of older datastores are
still read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..errors import DamagedFile, MMError, UpstreamMissing
from .files import (
    TMP_PREFIX,
    FolderFiles,
    ObjectFiles,
    is_damage,
    is_url,
    json_text,
    parquet_bytes,
    problem_of,
    unlink_quietly,
)
from .journal import Journal
from .memory import release_memory

FORMAT_VERSION = 1
STEP_DIRS = {
    "split": ("split",),
    "train": ("models", "pools", "outputs/training_output.csv"),
    "forecast": ("forecasts", "outputs/forecasting_output.csv", "hierarchy", "outputs/hierarchy_forecast.csv"),
}
MODEL_CODEC = "zstd"
MODEL_LEVEL = 1

# How each kind of metadata file is written again when it is found damaged (DamagedFile's hint).
REDO_SPLIT = "run 'mm split' (or 'mm run'): a split whose manifest is damaged is done again"
REWRITE_SPLIT = "run 'mm split --no-allow-reuse', which writes the split again (groups whose rows did not change keep their models)"
REDO_RUN_GROUPS = {
    "train": "run 'mm train' (or 'mm run') again: it writes a new table, adopting the models whose inputs did not change",
    "forecast": "run 'mm forecast' (or 'mm run') again: it writes a new table",
}
OTHER_RUN = "pick another run from 'mm runs' (a damaged train run's models are adopted by the next 'mm train' when their inputs did not change)"
REDO_MARKER = "delete that file and run the command again: mm writes it anew (it only records the datastore's format)"
REDO_HISTORY = "delete that file: its forecast run is then no longer scored (the rows already in outputs/accuracy_history.parquet stay)"
REDO_ACCURACY = "delete outputs/accuracy_history.parquet and run 'mm accuracy': the stored forecasts are scored again against the split's actuals"
REDO_FORECAST = "delete that file and run 'mm forecast' (or 'mm run') again: that group is forecast again"


def _read_small(source) -> pa.Table:
    """One group's Parquet file (a partition, a forecast: a few KB), read on the calling thread.

    ParquetFile, not read_table: no dataset discovery (2-3x faster on small files). No read
    coalescing and no Arrow thread pool: on files this small, handing the columns to threads
    costs more than decoding them (a 120-row partition 0.76 -> 0.38 ms), and the engines
    already run one worker per core.
    """
    return pq.ParquetFile(source, pre_buffer=False).read(use_threads=False)


class Datastore:
    def __init__(self, root: str | Path):
        text = str(root)
        if text.startswith("file://"):
            text = text[len("file://") :]
        if is_url(text):
            self.files: FolderFiles | ObjectFiles = ObjectFiles(text)
            self.root: Path | str = self.files.url
            self.is_folder = False
        else:
            self.root = Path(text)
            self.files = FolderFiles(self.root)
            self.is_folder = True

    @property
    def location(self) -> str:
        """What workers are given to open the same datastore."""
        return str(self.root)

    # layout: relative names ------------------------------------------------
    MARKER = ".mm/datastore.json"
    LOCK = ".mm/lock"
    INPUT_STATE = ".mm/input_state.json"
    SCRATCH = ".mm/scratch"
    SPLIT_MANIFEST = "split/manifest.json"
    SPLIT_GROUPS = "split/groups.parquet"

    @staticmethod
    def _partition(kind: str, key: str) -> str:
        assert kind in ("train", "inference")
        return f"split/{kind}/{key[:2]}/{key}.parquet"

    @staticmethod
    def _model_dir(key: str) -> str:
        return f"models/{key[:2]}/{key}"

    @staticmethod
    def _model_meta(key: str, version: int) -> str:
        return f"{Datastore._model_dir(key)}/v{version}.json"

    @staticmethod
    def _model_text(key: str, version: int) -> str:
        return f"{Datastore._model_dir(key)}/v{version}.lgb.txt.zst"

    @staticmethod
    def _model_text_plain(key: str, version: int) -> str:
        return f"{Datastore._model_dir(key)}/v{version}.lgb.txt"

    @staticmethod
    def _pool(pool: str, version: int, suffix: str) -> str:
        # ``pool``: a pooled model's key (identity.group_key of its name and level values): never raw values
        return f"pools/{pool[:2]}/{pool}/v{version}{suffix}"

    @staticmethod
    def _forecast(key: str, fingerprint: str) -> str:
        return f"forecasts/{key[:2]}/{key}/{fingerprint}.parquet"

    @staticmethod
    def _forecast_history(run_id: str) -> str:
        return f"history/forecasts/{run_id}.parquet"

    ACCURACY_HISTORY = "accuracy_history.parquet"  # in outputs/

    @staticmethod
    def _node_errors(key: str, fingerprint: str) -> str:
        return f"hierarchy/errors/{key[:2]}/{key}/{fingerprint}.parquet"

    @staticmethod
    def _run(run_id: str, suffix: str = ".json") -> str:
        return f"runs/{run_id}{suffix}"

    # layout: locations (a Path in a folder datastore, a URL otherwise) -----
    @property
    def marker(self):
        return self.files.location(self.MARKER)

    @property
    def lock_path(self):
        return self.files.location(self.LOCK)

    REPORT = "report.html"  # mm report's default output

    @property
    def report_path(self):
        return self.output_path(self.REPORT)

    def export_dir(self, fmt: str):
        return self.files.location(f"exports/{fmt}")

    @property
    def input_state_path(self):
        return self.files.location(self.INPUT_STATE)

    @property
    def split_manifest_path(self):
        return self.files.location(self.SPLIT_MANIFEST)

    @property
    def split_groups_path(self):
        return self.files.location(self.SPLIT_GROUPS)

    def partition_path(self, kind: str, key: str):
        return self.files.location(self._partition(kind, key))

    def model_meta_path(self, key: str, version: int):
        return self.files.location(self._model_meta(key, version))

    def model_text_path(self, key: str, version: int):
        return self.files.location(self._model_text(key, version))

    def model_dir(self, key: str):
        return self.files.location(self._model_dir(key))

    def forecast_path(self, key: str, fingerprint: str):
        """A group's forecast, named by the fingerprint of everything it was made from."""
        return self.files.location(self._forecast(key, fingerprint))

    def output_path(self, name: str):
        return self.files.location(f"outputs/{name}")

    def read_output(self, name: str) -> bytes:
        """An output file's bytes (FileNotFoundError when there is none)."""
        return self.files.read(f"outputs/{name}")

    @property
    def runs_dir(self):
        return self.files.location("runs")

    def run_path(self, run_id: str, suffix: str = ".json"):
        return self.files.location(self._run(run_id, suffix))

    def step_entries(self, step: str) -> list[str]:
        """What ``mm clean --step`` removes, that exists (never anything else), relative to the root."""
        steps = ("split", "train", "forecast") if step == "all" else (step,)
        entries = [rel for s in steps for rel in STEP_DIRS[s]]
        entries += [f"runs/{name}" for name in self.files.names("runs") if any(f"-{s}-" in name for s in steps)]
        if step == "all":
            entries += [self.INPUT_STATE, f"outputs/{self.REPORT}", "exports", "history", f"outputs/{self.ACCURACY_HISTORY}"]
        return [rel for rel in entries if self._present(rel)]

    def _present(self, rel: str) -> bool:
        if self.is_folder:
            path = self.root / rel
            return path.exists() or path.is_symlink()
        return self.files.exists(rel)

    def entry_size(self, rel: str) -> int:
        return self.files.size(rel)

    def check_removable(self, rel: str) -> None:
        """Raise unless ``rel`` can be removed without touching anything outside the datastore."""
        if self.is_folder:
            self.assert_inside(self.root / rel)

    def remove_entry(self, rel: str) -> None:
        """Delete ``rel`` (inside the datastore) without following symlinks out of it."""
        if not self.is_folder:
            self.files.delete_tree(rel)  # a prefix or a single object
            return
        path = self.root / rel
        self.assert_inside(path)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)  # rmtree never follows symlinks inside the tree

    # lifecycle ------------------------------------------------------------
    def exists(self) -> bool:
        return self.root.exists() if self.is_folder else True

    def ensure(self) -> None:
        """Create the datastore (or check that an existing folder is one)."""
        if self.is_folder and self.root.exists() and not self.root.is_dir():
            raise MMError(f"datastore {self.root} is a file, not a folder", "point 'datastore' in the config at a folder")
        try:
            info = self._read_json(self.MARKER, REDO_MARKER)
        except FileNotFoundError:
            try:
                if self.is_folder:
                    self.root.mkdir(parents=True, exist_ok=True)
                self.files.write(self.MARKER, json_text({"format": FORMAT_VERSION, "created": _now()}).encode())
            except PermissionError:
                raise MMError(f"cannot create datastore {self.root}: permission denied", "choose a writable folder for 'datastore'") from None
            return
        if not isinstance(info.get("format", 0), int):
            raise DamagedFile(self.marker, f"format {info.get('format')!r} is not a number", REDO_MARKER)
        if info.get("format", 0) > FORMAT_VERSION:
            raise MMError(f"datastore {self.root} was written by a newer mm (format {info.get('format')})", "upgrade manymodels")

    def is_datastore(self) -> bool:
        return self.files.exists(self.MARKER)

    def lock(self, wait_s: float = 0.0):
        """The datastore's writer lock: an OS file lock in a folder, a lease object in S3."""
        from .lock import DatastoreLock, LeaseLock

        if self.is_folder:
            return DatastoreLock(self.lock_path, wait_s=wait_s)
        return LeaseLock(self.files, self.LOCK, wait_s=wait_s, where=str(self.root))

    def sweep_temporary_files(self) -> int:
        """Remove what a killed process left behind (call with the lock held).

        Temporary files (never visible under their final name) and split's scratch
        space. Object stores have no temporary files: every PUT is atomic.
        """
        self.files.delete_tree(self.SCRATCH)
        if not self.is_folder:
            return 0
        removed = 0
        for top in ("split", "models", "forecasts", "history", "outputs", "runs", ".mm"):
            base = self.root / top
            if not base.is_dir():
                continue
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        unlink_quietly(os.path.join(dirpath, name))
                        removed += 1
        return removed

    # scratch space (split's buckets, the steps' spools) ------------------------
    def local_scratch(self) -> str | None:
        """A folder on this machine's disk for temporary files of a step (None: the system's)."""
        return str(self.root / self.SCRATCH) if self.is_folder else None

    def scratch(self, run_id: str, name: str) -> str:
        return f"{self.SCRATCH}/{run_id}/{name}"

    def write_scratch(self, rel: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self.files.write(rel, sink.getvalue().to_pybytes())

    def read_scratch(self, rel: str) -> pa.Table:
        return pa.ipc.open_stream(self.files.read(rel)).read_all()

    def scratch_names(self, rel: str) -> list[str]:
        return self.files.names(rel)

    def write_scratch_parquet(self, rel: str, table: pa.Table) -> None:
        self.files.write(rel, parquet_bytes(table))

    def read_scratch_parquet(self, rel: str) -> pa.Table:
        return pq.ParquetFile(self.files.source(rel)).read()

    def remove_scratch(self, run_id: str) -> None:
        self.files.delete_tree(f"{self.SCRATCH}/{run_id}")

    # split ----------------------------------------------------------------
    def write_partition(self, kind: str, key: str, table: pa.Table) -> None:
        self.files.write(self._partition(kind, key), parquet_bytes(table))

    def read_partition_table(self, kind: str, key: str) -> pa.Table:
        rel = self._partition(kind, key)
        try:
            return _read_small(self.files.source(rel))
        except FileNotFoundError:
            raise UpstreamMissing(f"{kind} partition of group {key} is missing ({self.files.location(rel)})", "run 'mm split' again") from None

    def read_partition(self, kind: str, key: str) -> pd.DataFrame:
        return self.read_partition_table(kind, key).to_pandas(use_threads=False)  # a few KB: see _read_small

    def has_partition(self, kind: str, key: str) -> bool:
        return self.files.exists(self._partition(kind, key))

    def remove_partition(self, kind: str, key: str) -> None:
        self.files.delete(self._partition(kind, key))

    def split_group_hashes(self, keys: list[str]) -> dict[str, dict]:
        """The content hashes the current split recorded for ``keys`` (those it has)."""
        import pyarrow.compute as pc

        try:
            table = pq.ParquetFile(self.files.source(self.SPLIT_GROUPS)).read(columns=["key", "train_hash", "inference_hash"])
        except FileNotFoundError:
            return {}
        except Exception as exc:
            if not is_damage(exc):
                raise
            return {}  # nothing to compare with: every partition is written again
        found = table.filter(pc.is_in(table["key"], value_set=pa.array(keys, table.schema.field("key").type)))
        return {row["key"]: row for row in found.to_pylist()}

    def split_groups_writer(self, schema: pa.Schema):
        """Write split/groups.parquet piece by piece (``.write_table``); published when closed."""
        return self._parquet_writer(self.SPLIT_GROUPS, schema)

    def has_split_groups(self) -> bool:
        return self.files.exists(self.SPLIT_GROUPS)

    def iter_split_groups(self, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._iter_parquet(self.SPLIT_GROUPS, columns, batch_size, REWRITE_SPLIT)
        except FileNotFoundError:
            raise UpstreamMissing(f"no split in datastore {self.root}", "run 'mm split -c CONFIG' first") from None

    def check_split_groups(self) -> None:
        """Raise DamagedFile when split/groups.parquet is cut short (its footer, read alone, is cheap)."""
        with self._reading(self.SPLIT_GROUPS, REWRITE_SPLIT):
            pq.ParquetFile(self.files.source(self.SPLIT_GROUPS)).metadata

    def write_split_manifest(self, manifest: dict) -> None:
        # written after groups.parquet: the manifest is what marks the split complete
        self.files.write(self.SPLIT_MANIFEST, json_text(manifest).encode(), durable=True)

    def mark_split_damaged(self, n_groups: int) -> None:
        """Partitions of the split turned out to be missing: the next split rewrites them instead of reusing it."""
        try:
            manifest = self.read_split_manifest()
        except DamagedFile:
            return  # the next split does it all again anyway
        if manifest is not None and n_groups:
            manifest["damaged"] = int(manifest.get("damaged", 0)) + n_groups
            self.write_split_manifest(manifest)

    def remove_split_manifest(self) -> None:
        """Mark the split incomplete (before its partitions change)."""
        self.files.delete(self.SPLIT_MANIFEST)

    def read_split_manifest(self) -> dict | None:
        """The manifest of the current split; None when there is none; DamagedFile when it cannot be read."""
        try:
            return self._read_json(self.SPLIT_MANIFEST, REDO_SPLIT)
        except FileNotFoundError:
            return None

    def read_split_groups(self) -> pd.DataFrame:
        try:
            return self._read_parquet(self.SPLIT_GROUPS, REWRITE_SPLIT).to_pandas()
        except FileNotFoundError:
            raise UpstreamMissing(f"no split in datastore {self.root}", "run 'mm split -c CONFIG' first") from None

    # models ---------------------------------------------------------------
    def write_model(self, key: str, version: int, meta: dict, model_text: str | None) -> str:
        """Write a model version; returns its metadata's JSON text (what a reader of it gets)."""
        # the booster first: metadata is what makes a version visible
        if model_text is not None:
            packed = pa.Codec(MODEL_CODEC, MODEL_LEVEL).compress(model_text.encode("utf-8"), asbytes=True)
            self.files.write(self._model_text(key, version), packed)
        text = json_text(meta)
        self.files.write(self._model_meta(key, version), text.encode())
        return text

    def read_model_meta(self, key: str, version: int) -> dict:
        return json.loads(self.files.read(self._model_meta(key, version)))

    def read_model_text(self, key: str, version: int) -> str:
        try:
            packed = self.files.read(self._model_text(key, version))
        except FileNotFoundError:
            return self.files.read(self._model_text_plain(key, version)).decode("utf-8")  # an older datastore
        try:
            return pa.input_stream(pa.py_buffer(packed), compression=MODEL_CODEC).read().decode("utf-8")
        except OSError as exc:  # the bytes were read: they are not a zstd stream (a content error, not an I/O one)
            raise ValueError(f"{self._model_text(key, version)} is not a zstd-compressed model: {exc}") from None

    def has_model(self, key: str, version: int, booster: bool = False) -> bool:
        """Whether the version exists (its metadata; with ``booster``, its LightGBM file too)."""
        if not self.files.exists(self._model_meta(key, version)):
            return False
        return not booster or self.files.exists(self._model_text(key, version)) or self.files.exists(self._model_text_plain(key, version))

    def quarantine_model(self, key: str, version: int) -> list[str]:
        """Move the files of a version that cannot be read aside (``<name>.corrupt``): it is then
        no longer a version, and the next train fits the group again. Returns what was moved."""
        moved = []
        for rel in (self._model_meta(key, version), self._model_text(key, version), self._model_text_plain(key, version)):
            try:
                data = self.files.read(rel)
            except FileNotFoundError:
                continue
            self.files.write(rel + ".corrupt", data)
            self.files.delete(rel)
            moved.append(rel)
        return moved

    def model_versions(self, key: str) -> list[int]:
        names = self.files.names(self._model_dir(key))
        return sorted(int(n[1:-5]) for n in names if n.startswith("v") and n.endswith(".json") and n[1:-5].isdigit())

    def model_keys(self) -> Iterator[str]:
        """Every group key with a model folder, in key order."""
        for prefix in self.files.names("models"):
            for key in self.files.names(f"models/{prefix}"):
                if not key.startswith("."):
                    yield key

    def remove_model(self, key: str, version: int) -> None:
        self.files.delete(self._model_text(key, version))
        self.files.delete(self._model_text_plain(key, version))
        self.files.delete(self._model_meta(key, version))

    def drop_booster(self, key: str, version: int) -> None:
        """Delete a version's LightGBM file, keeping its metadata (a group switched to a pooled model)."""
        self.files.delete(self._model_text(key, version))
        self.files.delete(self._model_text_plain(key, version))

    # pooled models (one per pool, shared by its member groups) ------------
    POOL_META, POOL_TEXT, POOL_BACKTEST = ".json", ".lgb.txt.zst", ".backtest.parquet"

    def write_pool(self, pool: str, version: int, meta: dict, model_text: str, backtest: pa.Table | None) -> None:
        # the booster and backtest first: metadata is what makes a version visible
        self.files.write(self._pool(pool, version, self.POOL_TEXT), pa.Codec(MODEL_CODEC, MODEL_LEVEL).compress(model_text.encode("utf-8"), asbytes=True))
        if backtest is not None:
            self.files.write(self._pool(pool, version, self.POOL_BACKTEST), parquet_bytes(backtest))
        self.files.write(self._pool(pool, version, self.POOL_META), json_text(meta).encode())

    def read_pool_meta(self, pool: str, version: int) -> dict:
        return json.loads(self.files.read(self._pool(pool, version, self.POOL_META)))

    def read_pool_text(self, pool: str, version: int) -> str:
        packed = self.files.read(self._pool(pool, version, self.POOL_TEXT))
        try:
            return pa.input_stream(pa.py_buffer(packed), compression=MODEL_CODEC).read().decode("utf-8")
        except OSError as exc:
            raise ValueError(f"{self._pool(pool, version, self.POOL_TEXT)} is not a zstd-compressed model: {exc}") from None

    def read_pool_backtest(self, pool: str, version: int) -> pa.Table | None:
        rel = self._pool(pool, version, self.POOL_BACKTEST)
        if not self.files.exists(rel):
            return None
        return self._read_parquet(rel, "run 'mm train' again: the pool is fitted again")

    def pool_versions(self, pool: str) -> list[int]:
        names = self.files.names(f"pools/{pool[:2]}/{pool}")
        suffix = self.POOL_META
        return sorted(int(n[1 : -len(suffix)]) for n in names if n.startswith("v") and n.endswith(suffix) and n[1 : -len(suffix)].isdigit())

    def remove_pool(self, pool: str, version: int) -> None:
        for suffix in (self.POOL_TEXT, self.POOL_BACKTEST, self.POOL_META):
            self.files.delete(self._pool(pool, version, suffix))

    # forecasts ------------------------------------------------------------
    def write_forecast(self, key: str, fingerprint: str, table: pa.Table | pd.DataFrame) -> None:
        """Write the group's new forecast, then drop its older ones."""
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        self._write_replacing_folder(self._forecast(key, fingerprint), table)

    def _write_replacing_folder(self, rel: str, table: pa.Table) -> None:
        """Write ``rel``, then delete every other file of its folder (one current version per folder)."""
        self.files.write(rel, parquet_bytes(table, small=True))
        self._drop_others(rel)

    def _drop_others(self, rel: str, prefix: str = "") -> None:
        """Delete the files of ``rel``'s folder but ``rel`` (with ``prefix``: only those named so)."""
        folder, name = rel.rsplit("/", 1)
        for other in self.files.names(folder):
            if other != name and other.startswith(prefix):
                self.files.delete(f"{folder}/{other}")

    STAGED = "staged-"
    STAGED_KEY = b"mm_staged"  # a staged forecast's schema metadata: its model kind and ForecastRow fields (JSON)

    @classmethod
    def _staged_forecast(cls, key: str, fingerprint: str) -> str:
        folder, name = cls._forecast(key, fingerprint).rsplit("/", 1)
        return f"{folder}/{cls.STAGED}{name}"  # beside the forecast it becomes

    def stage_forecast(self, key: str, fingerprint: str, table: pa.Table, about: dict) -> None:
        """Write a forecast made before mm forecast runs (``about``: what it needs to adopt it);
        an older staged one is dropped, the group's current forecast kept."""
        rel = self._staged_forecast(key, fingerprint)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), self.STAGED_KEY: json.dumps(about).encode()})  # as made (NaN metrics included)
        self.files.write(rel, parquet_bytes(table, small=True))
        self._drop_others(rel, self.STAGED)

    def staged_forecast(self, key: str, fingerprint: str) -> dict | None:
        """What the staged forecast of this fingerprint says of itself; None when there is none
        (or it cannot be read: the forecast step then makes the forecast itself)."""
        rel = self._staged_forecast(key, fingerprint)
        try:
            raw = pq.read_schema(self.files.source(rel)).metadata or {}
            return json.loads(raw[self.STAGED_KEY])
        except (OSError, KeyError, ValueError, pa.ArrowException):
            return None

    def adopt_staged_forecast(self, key: str, fingerprint: str) -> None:
        """Make the staged forecast the group's forecast of this fingerprint (its other files go)."""
        rel = self._forecast(key, fingerprint)
        self.files.move(self._staged_forecast(key, fingerprint), rel)
        self._drop_others(rel)

    def has_forecast(self, key: str, fingerprint: str) -> bool:
        return self.files.exists(self._forecast(key, fingerprint))

    def forecast_schema(self, key: str, fingerprint: str) -> pa.Schema | None:
        """The columns of a group's forecast, or None when it has none."""
        rel = self._forecast(key, fingerprint)
        if not self.files.exists(rel):
            return None
        with self._reading(rel, REDO_FORECAST):
            return pq.ParquetFile(self.files.source(rel)).schema_arrow

    def read_forecast(self, key: str, fingerprint: str) -> pa.Table:
        return self._read_parquet(self._forecast(key, fingerprint), REDO_FORECAST, small=True)

    # a hierarchy node's in-sample errors (steps/reconcile.py) ---------------
    def write_node_errors(self, key: str, fingerprint: str, table: pa.Table) -> None:
        """Keep one version per node: the errors of its current model and history."""
        self._write_replacing_folder(self._node_errors(key, fingerprint), table)

    def read_node_errors(self, key: str, fingerprint: str) -> pa.Table | None:
        """The node's stored errors, or None (none yet, or unreadable: they are computed again)."""
        rel = self._node_errors(key, fingerprint)
        if not self.files.exists(rel):
            return None
        try:
            return self._read_parquet(rel, REDO_FORECAST, small=True)
        except DamagedFile:
            return None

    def scan_groups(self, kind: str, keys: Sequence[str], columns: Sequence[str], fingerprints: dict[str, str] | None = None) -> pa.Table:
        """``columns`` of many groups' files in one multi-threaded scan, plus a ``_mm_key`` column.

        ``kind`` is ``train`` or ``inference`` (partitions) or ``forecast`` (the
        forecast with ``fingerprints[key]``). Groups without a file are skipped; a
        column a file lacks is null.
        """
        if kind == "forecast":
            fingerprints = fingerprints or {}
            keys = [k for k in keys if k in fingerprints]
            rel_of = lambda key: self._forecast(key, fingerprints[key])  # noqa: E731
        else:
            rel_of = lambda key: self._partition(kind, key)  # noqa: E731
        files = {self.files.scan_path(rel_of(k)): k for k in keys if self.files.exists(rel_of(k))}
        if not files:
            return pa.table({"_mm_key": pa.array([], pa.string())})
        wanted = list(dict.fromkeys(columns))
        filesystem = self.files.arrow_filesystem()
        try:
            schema = _scan_schema(pq.read_schema(next(iter(files)), filesystem=filesystem), wanted)
            dataset = pads.dataset(list(files), schema=schema, format="parquet", filesystem=filesystem)
            parts, names = [], []
            for tagged in dataset.scanner(columns=list(schema.names)).scan_batches():
                parts.append(tagged.record_batch)
                names.append(files[tagged.fragment.path])
            table = pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()
            lengths = [b.num_rows for b in parts]
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            if isinstance(exc, OSError) and not is_damage(exc):
                raise
            # files whose column types differ: read them one by one, letting pyarrow unify (and naming a damaged one)
            tables = []
            for p in files:
                with self._reading(rel_of(files[p]), REDO_FORECAST if kind == "forecast" else REWRITE_SPLIT):
                    names_in_file = pq.read_schema(p, filesystem=filesystem).names
                    tables.append(pq.read_table(p, columns=[c for c in wanted if c in names_in_file], filesystem=filesystem))
            table = pa.concat_tables(tables, promote_options="permissive")
            names, lengths = list(files.values()), [t.num_rows for t in tables]
        key_column = pa.array(np.repeat(np.array(names, dtype=object), lengths) if names else [], pa.string())
        return table.append_column("_mm_key", key_column)

    # forecast history (realised accuracy) -----------------------------------
    def forecast_history_writer(self, run_id: str, schema: pa.Schema):
        """Write what forecast run ``run_id`` predicted (the forecasts it made), kept after its
        forecast files are replaced; piece by piece, published when closed."""
        return self._parquet_writer(self._forecast_history(run_id), schema)

    def forecast_history_runs(self) -> list[str]:
        """The forecast runs with a stored history, oldest first (run ids sort by time)."""
        return sorted(n[: -len(".parquet")] for n in self.files.names("history/forecasts") if n.endswith(".parquet") and not n.startswith(TMP_PREFIX))

    def read_forecast_history(self, run_id: str) -> pa.Table:
        return self._read_parquet(self._forecast_history(run_id), REDO_HISTORY)

    def forecast_history_bytes(self, run_id: str) -> int:
        return self.files.size(self._forecast_history(run_id))

    def read_accuracy_history(self) -> pd.DataFrame | None:
        """outputs/accuracy_history.parquet, or None when nothing was scored yet."""
        rel = f"outputs/{self.ACCURACY_HISTORY}"
        if not self.files.exists(rel):
            return None
        return self._read_parquet(rel, REDO_ACCURACY).to_pandas()

    def write_accuracy_history(self, frame: pd.DataFrame) -> None:
        with self.output_file(self.ACCURACY_HISTORY, binary=True) as f:
            f.write(parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False)))

    # runs -----------------------------------------------------------------
    def write_run(self, record: dict) -> None:
        self.files.write(self._run(record["id"]), json_text(record).encode(), durable=True)

    def read_run(self, run_id: str) -> dict:
        try:
            return self._read_json(self._run(run_id), OTHER_RUN)
        except FileNotFoundError:
            raise MMError(f"no run {run_id!r} in datastore {self.root}", "list runs with 'mm runs'") from None

    def run_groups_writer(self, run_id: str, schema: pa.Schema):
        """Write a run's per-group table piece by piece; published when closed."""
        return self._parquet_writer(self._run(run_id, ".groups.parquet"), schema)

    def iter_run_groups(self, run_id: str, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """A run's groups table, streamed (nothing when it has none; DamagedFile when it cannot be read)."""
        try:
            yield from self._iter_parquet(self._run(run_id, ".groups.parquet"), columns, batch_size, _redo_run_groups(run_id))
        except FileNotFoundError:
            return

    def read_run_groups(self, run_id: str) -> pd.DataFrame:
        try:
            return self._read_parquet(self._run(run_id, ".groups.parquet"), _redo_run_groups(run_id)).to_pandas()
        except FileNotFoundError:
            return pd.DataFrame()

    def list_runs(self) -> list[dict]:
        """Every run record, oldest first. A record that cannot be read is listed as status
        ``damaged`` (its step and start time read from its id), never taken for a usable run."""
        records = []
        for name in self.files.names("runs"):
            if name.endswith(".json"):
                try:
                    records.append(self._read_json(f"runs/{name}", OTHER_RUN))
                except DamagedFile as exc:
                    records.append(damaged_run(name[: -len(".json")], exc))
                except OSError:
                    continue  # removed meanwhile (mm clean)
        records.sort(key=lambda r: (str(r.get("started", "")), str(r.get("id", ""))))
        return records

    def open_journal(self, run_id: str) -> Journal:
        return Journal(self.files, "runs", f"{run_id}.journal")

    def read_journal(self, run_id: str) -> list[dict]:
        out = []
        for rel in Journal.parts(self.files, "runs", f"{run_id}.journal"):
            try:
                text = self.files.read(rel).decode("utf-8")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    break  # a line cut by a crash: everything before it is good
        return out

    # outputs --------------------------------------------------------------
    def output_file(self, name: str, binary: bool = False):
        """A context manager giving a file; the output appears, whole, when it closes without error."""
        return self.files.writer(f"outputs/{name}", binary)

    # input hashing state --------------------------------------------------
    def read_input_state(self) -> dict:
        """What the input files hashed to last time; {} when unknown or damaged (they are hashed again)."""
        try:
            state = json.loads(self.files.read(self.INPUT_STATE))
        except (FileNotFoundError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def write_input_state(self, state: dict) -> None:
        self.files.write(self.INPUT_STATE, json_text(state).encode())

    # reading back what mm wrote ------------------------------------------------
    @contextmanager
    def _reading(self, rel: str, hint: str):
        """A read that fails on the file's bytes (``is_damage``) raises DamagedFile, naming it, with ``hint``."""
        try:
            yield
        except Exception as exc:
            if not is_damage(exc):
                raise
            raise DamagedFile(self.files.location(rel), problem_of(exc), hint) from None

    # parquet tables, streamed ------------------------------------------------
    @contextmanager
    def _parquet_writer(self, rel: str, schema: pa.Schema):
        with self.files.writer(rel, binary=True) as f:
            with pq.ParquetWriter(f, schema, compression="snappy") as writer:
                yield writer

    def _iter_parquet(self, rel: str, columns, batch_size: int, hint: str) -> Iterator[pa.RecordBatch]:
        """Batches of a Parquet file mm wrote; DamagedFile (with ``hint``) when its bytes are not Parquet."""
        with self._reading(rel, hint):
            handle = pq.ParquetFile(self.files.source(rel))
            if handle.metadata.num_rows == 0:
                return
            for batch in handle.iter_batches(batch_size=batch_size, columns=columns):
                yield batch
                release_memory()

    def _read_parquet(self, rel: str, hint: str, small: bool = False) -> pa.Table:
        """A Parquet file mm wrote, whole; ``small``: one group's few rows (``_read_small``)."""
        with self._reading(rel, hint):
            source = self.files.source(rel)
            return _read_small(source) if small else pq.ParquetFile(source).read()

    def _read_json(self, rel: str, hint: str) -> dict:
        """A JSON object mm wrote; FileNotFoundError when absent, DamagedFile (with ``hint``) when not one."""
        data = self.files.read(rel)
        with self._reading(rel, hint):
            document = json.loads(data)  # ValueError: not JSON, or bytes that are not UTF-8
        if not isinstance(document, dict):
            raise DamagedFile(self.files.location(rel), f"a JSON {type(document).__name__}, not an object", hint)
        return document


    # cleaning -------------------------------------------------------------
    def assert_inside(self, path: Path) -> None:
        root = self.root.resolve()
        parent = path.parent.resolve()  # the entry itself may be a symlink; its folder must be ours
        if parent != root and root not in parent.parents:
            raise MMError(
                f"refusing to touch {path}: it is outside the datastore {root} (through a symlink)",
                "nothing was removed; remove that symlink, or the files it leads to, yourself",
            )


def damaged_run(run_id: str, damage: DamagedFile) -> dict:
    """What ``list_runs`` shows for a record that cannot be read: its id says its step and start."""
    parts = run_id.split("-")  # runs.new_run_id: YYYYmmdd-HHMMSS-<step>-<hex>
    try:
        started = dt.datetime.strptime(f"{parts[0]}-{parts[1]}", "%Y%m%d-%H%M%S").isoformat()
    except (IndexError, ValueError):
        started = ""
    return {"id": run_id, "step": _step_of(run_id), "status": "damaged", "started": started, "error": damage.message, "path": damage.path}


def _step_of(run_id: str) -> str:
    return "-".join(run_id.split("-")[2:-1]) or "?"


def _redo_run_groups(run_id: str) -> str:
    step = _step_of(run_id)
    return REDO_RUN_GROUPS.get(step, f"run 'mm {step}' (or 'mm run') again: it writes a new table")


def _scan_schema(schema: pa.Schema, wanted: list[str]) -> pa.Schema:
    fields = [schema.field(c) for c in wanted if c in schema.names]
    # a first file whose column is all-null must not force null on the others
    return pa.schema([pa.field(f.name, pa.float64()) if pa.types.is_null(f.type) else f for f in fields])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
