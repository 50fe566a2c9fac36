"""Files of a datastore: atomic writes in a folder, and the folder and object-store backends.

Every write is atomic, so a crash never leaves a half-written file where a
reader would take it for a finished one: in a folder, a temporary file is
renamed over the target; in an object store, every object is written by one
PUT, which the store makes visible whole or not at all. Object stores also get
the conditional writes (create if absent, replace if unchanged) that the
datastore lock is built on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MMError

TMP_PREFIX = ".tmp-"


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
        unlink_quietly(tmp)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: Path, document: Any, durable: bool = False) -> None:
    atomic_write_text(path, json_text(document), durable)


def json_text(document: Any) -> str:
    """Strict JSON (RFC 8259): a NaN or infinite number, which strict readers refuse, is written as null."""
    return json.dumps(_strict(document), indent=1, sort_keys=True, default=str, allow_nan=False)


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def parquet_bytes(table: pa.Table, small: bool = False) -> bytes:
    """``table`` as Parquet. ``small``: a file of one group's few rows that is always read whole
    (a forecast): no dictionary pages and no column statistics, which on a few rows cost more to
    write than the data (0.97 -> 0.50 ms for an 8-row forecast) and are never used to skip any."""
    sink = pa.BufferOutputStream()
    plain = {"use_dictionary": False, "write_statistics": False} if small else {}
    pq.write_table(table, sink, compression="snappy", **plain)
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
            unlink_quietly(self.tmp)


def is_damage(exc: BaseException) -> bool:
    """Whether reading a file failed on its bytes (cut short, not JSON or Parquet), not on the machine.

    json and pyarrow report such bytes as ValueError (ArrowInvalid is one), or as an
    OSError with no errno (a Parquet footer that does not deserialize)."""
    if isinstance(exc, FileNotFoundError):
        return False
    return isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno is None)


def problem_of(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def unlink_quietly(path: str | Path) -> None:
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
        unlink_quietly(self.root / rel)

    def move(self, rel: str, to: str) -> None:
        os.replace(self.root / rel, self.root / to)  # atomic: ``to`` is the old file or the new one

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

    def move(self, rel: str, to: str) -> None:
        self.fs.mv(self._path(rel), self._path(to))  # a copy (one PUT: ``to`` appears whole), then a delete

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
