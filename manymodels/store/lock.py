"""One writer per datastore.

``mm split/train/forecast/clean/run`` hold an exclusive lock on the datastore
for their whole run; a second ``mm`` says who it is waiting for, waits up to
``--wait`` seconds, or exits with that message. Two kinds, chosen by the
datastore:

- a folder (``DatastoreLock``): an OS file lock (``flock``) on
  ``<datastore>/.mm/lock``. The kernel releases it when the holder dies, even
  by ``kill -9``, so a crashed run never blocks the next one. The holder writes
  who it is (pid, host, start time, command) into the file and empties it on
  release, so a lock file still naming a holder when the lock is free means the
  holder was killed.
- an object store (``LeaseLock``): S3 has no locks, only conditional writes.
  The lock is the object ``.mm/lock``, holding who holds it and for how long
  (a lease). It is created with ``If-None-Match: *``, which fails if it exists,
  so of several writers exactly one gets it. The holder renews the lease every
  third of it by rewriting the object with ``If-Match: <its ETag>``. A holder
  that dies stops renewing; once the object is older than its lease (by the
  store's own clock: the response's Date minus Last-Modified, so machines'
  clocks never enter), the next ``mm`` takes it over with ``If-Match`` on the
  version it read, so of several successors exactly one wins. Release deletes
  the object if it is still the holder's.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import DatastoreLocked

POLL_S = 0.2
LEASE_S = 60.0


def _holder_info(command: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }


def _default_command() -> str:
    return " ".join(["mm", *sys.argv[1:2]])


def _locked(where: str, holder: dict) -> DatastoreLocked:
    return DatastoreLocked(
        f"datastore {where} is in use by {describe(holder)}",
        "wait for it to finish, or pass --wait SECONDS to queue behind it",
    )


class DatastoreLock:
    def __init__(self, path: Path, wait_s: float = 0.0, command: str | None = None):
        self.path = path
        self.wait_s = wait_s
        self.command = command or _default_command()
        self.recovered = False  # the previous holder was killed without releasing
        self.lost = False
        self._fd: int | None = None

    def acquire(self, on_wait=None) -> DatastoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder()
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise _locked(str(self.path.parent.parent), holder) from None
                if on_wait and not told:
                    on_wait(f"waiting for {describe(holder)} to release the datastore (up to {self.wait_s:.0f}s)")
                    told = True
                time.sleep(POLL_S)
        self.recovered = os.fstat(fd).st_size > 0
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_info(self.command)).encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DatastoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class LeaseLock:
    """The writer lock of an object-store datastore: a lease object (see the module doc).

    ``files`` offers ``create_if_absent``, ``replace_if``, ``read_versioned`` and
    ``delete_if`` (files.ObjectFiles does, on S3).
    """

    def __init__(self, files, rel: str, wait_s: float = 0.0, command: str | None = None, lease_s: float = LEASE_S, where: str = ""):
        self.files = files
        self.rel = rel
        self.wait_s = wait_s
        self.command = command or _default_command()
        self.lease_s = lease_s
        self.where = where or rel
        self.recovered = False
        self.lost = False
        self._etag: str | None = None
        self._token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _document(self) -> bytes:
        return json.dumps({**_holder_info(self.command), "token": self._token, "lease_s": self.lease_s}).encode()

    def acquire(self, on_wait=None) -> LeaseLock:
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            etag = self._try_acquire()
            if etag is not None:
                break
            holder = self.holder()
            if time.monotonic() >= deadline:
                raise _locked(self.where, holder)
            if on_wait and not told:
                on_wait(f"waiting for {describe(holder)} to release the datastore (up to {self.wait_s:.0f}s)")
                told = True
            time.sleep(POLL_S)
        self._etag = etag
        self._renewer = threading.Thread(target=self._renew, name="mm-lease", daemon=True)
        self._renewer.start()
        return self

    def _try_acquire(self) -> str | None:
        etag = self.files.create_if_absent(self.rel, self._document())
        if etag is not None:
            return etag
        current = self.files.read_versioned(self.rel)
        if current is None:
            return None  # released just now: the next round creates it
        body, their_etag, age = current
        if age <= _lease_of(body, self.lease_s):
            return None
        etag = self.files.replace_if(self.rel, self._document(), their_etag)
        if etag is not None:
            self.recovered = True  # the holder stopped renewing: it was killed
        return etag

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            if not self._renew_once():
                return

    def _renew_once(self) -> bool:
        """Extend the lease; False if another mm took the lock over (this one stalled past it)."""
        try:
            etag = self.files.replace_if(self.rel, self._document(), self._etag)
        except OSError:
            return True  # a network hiccup: try again next period, the lease has slack
        if etag is None:
            self.lost = True
            return False
        self._etag = etag
        return True

    def holder(self) -> dict:
        current = self.files.read_versioned(self.rel)
        if current is None:
            return {}
        try:
            return json.loads(current[0])
        except ValueError:
            return {}

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self._etag is not None and not self.lost:
            self.files.delete_if(self.rel, self._etag)
        self._etag = None

    def __enter__(self) -> LeaseLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lease_of(body: bytes, default: float) -> float:
    try:
        return float(json.loads(body).get("lease_s", default))
    except (ValueError, TypeError, AttributeError):
        return default


def describe(holder: dict) -> str:
    if not holder:
        return "another mm process"
    return f"'{holder.get('command', 'mm')}' (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')})"
