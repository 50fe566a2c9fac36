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
    <root>/runs/<run_id>.json            run record (+ .groups.parquet, .journal.jsonl)
    <root>/outputs/training_output.csv, forecasting_output.csv
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
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import DamagedFile, MMError, UpstreamMissing

FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"
STEP_DIRS = {
    "split": ("split",),
    "train": ("models", "outputs/training_output.csv"),
    "forecast": ("forecasts", "outputs/forecasting_output.csv"),
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
REDO_FORECAST = "delete that file and run 'mm forecast' (or 'mm run') again: that group is forecast again"


# -- group identity ----------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A group value as plain JSON (numpy scalars, dates and NaN included)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def group_key(values: Sequence[Any]) -> str:
    """Stable file-system-safe key of a group: a hash of its canonical JSON."""
    canonical = json.dumps([jsonable(v) for v in values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=10).hexdigest()


def group_label(columns: Sequence[str], values: Sequence[Any]) -> str:
    """``Store=2,Brand=tropicana``: how a group is named in messages and --groups."""
    return ",".join(f"{c}={jsonable(v)}" for c, v in zip(columns, values))


def is_url(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


# -- atomic files in a folder ------------------------------------------------

_TMP_COUNTER = itertools.count()


def _tmp_name(path: Path) -> Path:
    # unique per process and write; the O_EXCL open below refuses any collision
    return path.parent / f"{TMP_PREFIX}{os.getpid()}-{next(_TMP_COUNTER)}-{path.name}"


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    tmp = _tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0666 & ~umask, like any file
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: Path, document: Any, durable: bool = False) -> None:
    atomic_write_text(path, _json_text(document), durable)


def _json_text(document: Any) -> str:
    return json.dumps(document, indent=1, sort_keys=True, default=str)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


class AtomicFile:
    """A file written in pieces and published by rename on success (large outputs)."""

    def __init__(self, path: Path, mode: str = "w"):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _tmp_name(path)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.file = os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {}))

    def __enter__(self):
        return self.file

    def __exit__(self, kind, value, tb) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            _unlink_quietly(self.tmp)


def is_damage(exc: BaseException) -> bool:
    """Whether reading a file failed on its bytes (cut short, not JSON or Parquet), not on the machine.

    json and pyarrow report such bytes as ValueError (ArrowInvalid is one), or as an
    OSError with no errno (a Parquet footer that does not deserialize)."""
    if isinstance(exc, FileNotFoundError):
        return False
    return isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno is None)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- where the bytes live ------------------------------------------------------

class FolderFiles:
    """A datastore folder on this machine or a shared file system: temporary file + rename."""

    def __init__(self, root: Path):
        self.root = root

    def location(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> bytes:
        with open(self.root / rel, "rb") as f:
            return f.read()

    def source(self, rel: str) -> str:
        """Something pyarrow opens directly."""
        return str(self.root / rel)

    def scan_path(self, rel: str) -> str:
        """The name of ``rel`` in ``arrow_filesystem()``, for multi-file dataset scans."""
        return str(self.root / rel)

    def arrow_filesystem(self):
        return None  # pyarrow's local file system

    def write(self, rel: str, data: bytes, durable: bool = False) -> None:
        atomic_write_bytes(self.root / rel, data, durable)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.root / rel)

    def names(self, rel: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root / rel) if not n.startswith(TMP_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        _unlink_quietly(self.root / rel)

    def delete_tree(self, rel: str) -> None:
        shutil.rmtree(self.root / rel, ignore_errors=True)

    def size(self, rel: str) -> int:
        return tree_size(self.root / rel)

    @contextmanager
    def writer(self, rel: str, binary: bool):
        with AtomicFile(self.root / rel, "wb" if binary else "w") as f:
            yield f

    def appender(self, rel: str):
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        return open(self.root / rel, "a", encoding="utf-8")


class ObjectFiles:
    """A datastore in an object store (``s3://bucket/prefix``) through fsspec.

    Every object is written by one PUT (or one multipart upload, completed in
    one call), which the store publishes atomically, so no temporary names or
    renames are needed. Listings are never cached: several processes write.
    """

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise MMError(f"datastore {url} is a URL, which needs fsspec", "pip install 'manymodels[dask]' (or fsspec and s3fs)") from None
        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        options = {"use_listings_cache": False} if protocol in ("s3", "s3a", "gs", "gcs", "abfs", "az") else {}
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as exc:
            raise MMError(f"cannot open datastore {url}: {exc}", "install the fsspec driver for this URL (s3fs for s3://)") from None
        self.base = self.base.rstrip("/")
        self.protocol = protocol

    def location(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def source(self, rel: str):
        return pa.BufferReader(self.read(rel))

    def scan_path(self, rel: str) -> str:
        return self._path(rel)

    def arrow_filesystem(self):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))

    def write(self, rel: str, data: bytes, durable: bool = False) -> None:
        self.fs.pipe_file(self._path(rel), data)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def names(self, rel: str) -> list[str]:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str) -> None:
        try:
            self.fs.rm(self._path(rel), recursive=True)
        except FileNotFoundError:
            pass

    def size(self, rel: str) -> int:
        try:
            return int(self.fs.du(self._path(rel), total=True))
        except FileNotFoundError:
            return 0

    @contextmanager
    def writer(self, rel: str, binary: bool):
        # spooled locally, published by one upload when complete
        with tempfile.TemporaryDirectory(prefix="mm-upload-") as folder:
            local = Path(folder) / "part"
            with open(local, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
                yield f
            self.fs.put_file(str(local), self._path(rel))

    # conditional writes, for the lease lock (see lock.LeaseLock) -----------------
    def _bucket_key(self, rel: str) -> tuple[str, str]:
        if self.protocol not in ("s3", "s3a"):
            raise MMError(f"datastore {self.url}: locking needs conditional writes, which mm supports on S3 only", "use an s3:// URL or a shared folder")
        bucket, _, key = self._path(rel).partition("/")
        return bucket, key

    def create_if_absent(self, rel: str, data: bytes) -> str | None:
        """Write the object only if none exists; its ETag, or None if one existed."""
        return self._conditional_put(rel, data, IfNoneMatch="*")

    def replace_if(self, rel: str, data: bytes, etag: str) -> str | None:
        """Overwrite the object only if it is still the version ``etag``; the new ETag or None."""
        return self._conditional_put(rel, data, IfMatch=etag)

    def read_versioned(self, rel: str) -> tuple[bytes, str, float] | None:
        """The object's bytes, ETag and age in seconds by the store's own clock, or None.

        One GET, so the three belong together. The age is the response's Date
        minus the object's Last-Modified, both from the server: no clock skew
        between machines enters it.
        """
        from fsspec.asyn import sync

        bucket, key = self._bucket_key(rel)

        async def get():
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
            return data, response["ETag"], _age_seconds(response)

        try:
            return sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def delete_if(self, rel: str, etag: str) -> None:
        current = self.read_versioned(rel)
        if current is not None and current[1] == etag:
            self.delete(rel)

    def _conditional_put(self, rel: str, data: bytes, **condition) -> str | None:
        bucket, key = self._bucket_key(rel)
        try:
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except FileNotFoundError:
            if "IfMatch" in condition:
                return None  # the object is gone: not the version we meant to replace
            raise
        except OSError as exc:
            if _condition_failed(exc):
                return None
            raise
        return response["ETag"]


def _age_seconds(response: dict) -> float:
    from email.utils import parsedate_to_datetime

    date = (response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}).get("date")
    now = parsedate_to_datetime(date) if date else dt.datetime.now(dt.timezone.utc)
    return (now - response["LastModified"]).total_seconds()


def _condition_failed(exc: OSError) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code", "") in ("PreconditionFailed", "412", "ConditionalRequestConflict")


# -- the datastore -----------------------------------------------------------

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
    def _forecast(key: str, fingerprint: str) -> str:
        return f"forecasts/{key[:2]}/{key}/{fingerprint}.parquet"

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
            entries += [self.INPUT_STATE, f"outputs/{self.REPORT}", "exports"]
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
                self.files.write(self.MARKER, _json_text({"format": FORMAT_VERSION, "created": _now()}).encode())
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
        for top in ("split", "models", "forecasts", "outputs", "runs", ".mm"):
            base = self.root / top
            if not base.is_dir():
                continue
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        _unlink_quietly(os.path.join(dirpath, name))
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
            # ParquetFile, not read_table: no dataset discovery, 2-3x faster on small files
            return pq.ParquetFile(self.files.source(rel)).read()
        except FileNotFoundError:
            raise UpstreamMissing(f"{kind} partition of group {key} is missing ({self.files.location(rel)})", "run 'mm split' again") from None

    def read_partition(self, kind: str, key: str) -> pd.DataFrame:
        return self.read_partition_table(kind, key).to_pandas()

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
        self.files.write(self.SPLIT_MANIFEST, _json_text(manifest).encode(), durable=True)

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
    def write_model(self, key: str, version: int, meta: dict, model_text: str | None) -> None:
        # the booster first: metadata is what makes a version visible
        if model_text is not None:
            packed = pa.Codec(MODEL_CODEC, MODEL_LEVEL).compress(model_text.encode("utf-8"), asbytes=True)
            self.files.write(self._model_text(key, version), packed)
        self.files.write(self._model_meta(key, version), _json_text(meta).encode())

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

    # forecasts ------------------------------------------------------------
    def write_forecast(self, key: str, fingerprint: str, table: pa.Table | pd.DataFrame) -> None:
        """Write the group's new forecast, then drop its older ones."""
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        rel = self._forecast(key, fingerprint)
        self.files.write(rel, parquet_bytes(table))
        folder, name = rel.rsplit("/", 1)
        for other in self.files.names(folder):
            if other != name:
                self.files.delete(f"{folder}/{other}")

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
        return self._read_parquet(self._forecast(key, fingerprint), REDO_FORECAST)

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

    # runs -----------------------------------------------------------------
    def write_run(self, record: dict) -> None:
        self.files.write(self._run(record["id"]), _json_text(record).encode(), durable=True)

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
        return Journal(self.files, run_id)

    def read_journal(self, run_id: str) -> list[dict]:
        out = []
        for rel in Journal.parts(self.files, run_id):
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
        self.files.write(self.INPUT_STATE, _json_text(state).encode())

    # reading back what mm wrote ------------------------------------------------
    @contextmanager
    def _reading(self, rel: str, hint: str):
        """A read that fails on the file's bytes (``is_damage``) raises DamagedFile, naming it, with ``hint``."""
        try:
            yield
        except Exception as exc:
            if not is_damage(exc):
                raise
            raise DamagedFile(self.files.location(rel), _problem(exc), hint) from None

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

    def _read_parquet(self, rel: str, hint: str) -> pa.Table:
        with self._reading(rel, hint):
            return pq.ParquetFile(self.files.source(rel)).read()

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


class Journal:
    """A run's per-group results, appended as they arrive (JSON lines).

    In a folder: one file, appended and flushed after each batch. In an object
    store, which cannot append: numbered part objects, one per flush, written
    at most every ``PART_SECONDS``. A line cut by a crash ends the journal.
    """

    PART_SECONDS = 5.0

    def __init__(self, files: FolderFiles | ObjectFiles, run_id: str):
        self.files = files
        self.run_id = run_id
        self._lines: list[str] = []
        self._part = 0
        self._last = time.monotonic()
        self._file = files.appender(Datastore._run(run_id, ".journal.jsonl")) if isinstance(files, FolderFiles) else None

    @staticmethod
    def parts(files, run_id: str) -> list[str]:
        if isinstance(files, FolderFiles):
            return [Datastore._run(run_id, ".journal.jsonl")]
        prefix = f"{run_id}.journal."
        return [f"runs/{n}" for n in files.names("runs") if n.startswith(prefix) and n.endswith(".jsonl")]

    def write(self, row: dict) -> None:
        line = json.dumps(row, default=str) + "\n"
        if self._file is not None:
            self._file.write(line)
        else:
            self._lines.append(line)

    def flush(self, force: bool = False) -> None:
        if self._file is not None:
            self._file.flush()
            return
        if self._lines and (force or time.monotonic() - self._last >= self.PART_SECONDS):
            self._part += 1
            self.files.write(Datastore._run(self.run_id, f".journal.{self._part:06d}.jsonl"), "".join(self._lines).encode())
            self._lines = []
            self._last = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            self.flush(force=True)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def use_system_allocator() -> None:
    """Let Arrow allocate with the C library's malloc instead of its bundled mimalloc.

    Measured on a split of 100,002 groups (12 M rows streamed in 8 MB blocks):
    with mimalloc the mm process kept 250 MB after reading (225 MB at 10,002
    groups: its retained pages grow with the data streamed through); with
    malloc, which ``release_memory`` trims, 204 MB at both sizes. Called where
    mm's own processes start (the CLI, pool workers), never on import, so a
    program using the API keeps its own choice; ARROW_DEFAULT_MEMORY_POOL wins.
    """
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL") and _LIBC is not None:
        pa.set_memory_pool(pa.system_memory_pool())


def release_memory() -> None:
    """Give freed memory back to the system, so a streaming step's memory stays flat.

    Allocators keep freed pages for reuse, and how much they keep grows with the
    data that streamed through: Arrow's (measured: +60 MB over a 100,000-row
    table read in batches, +20 MB with this after each batch) and glibc's, which
    keeps numpy's and pandas' freed arrays in its heap. Streaming steps call
    this after each batch; it costs about a millisecond.
    """
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None  # not glibc (macOS, musl): nothing to trim


_LIBC = _glibc()


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
