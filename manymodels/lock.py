"""One writer per datastore.

``mm split/train/forecast/clean/run`` hold an exclusive lock on
``<datastore>/.mm/lock`` for their whole run. The lock is an OS file lock
(``flock``): the kernel releases it when the holder dies, even by ``kill -9``,
so a crashed run never blocks the next one. The holder writes who it is (pid,
host, start time, command) into the file, so a second ``mm`` can say who it is
waiting for, wait up to ``--wait`` seconds, or exit with that message.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import DatastoreLocked

POLL_S = 0.2


class DatastoreLock:
    def __init__(self, path: Path, wait_s: float = 0.0, command: str | None = None):
        self.path = path
        self.wait_s = wait_s
        self.command = command or " ".join(["mm", *sys.argv[1:2]])
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
                    raise DatastoreLocked(
                        f"datastore {self.path.parent.parent} is in use by {describe(holder)}",
                        "wait for it to finish, or pass --wait SECONDS to queue behind it",
                    ) from None
                if on_wait and not told:
                    on_wait(f"waiting for {describe(holder)} to release the datastore (up to {self.wait_s:.0f}s)")
                    told = True
                time.sleep(POLL_S)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
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


def describe(holder: dict) -> str:
    if not holder:
        return "another mm process"
    return f"'{holder.get('command', 'mm')}' (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')})"
