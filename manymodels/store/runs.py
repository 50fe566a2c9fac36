"""Run records: one per step execution.

A record is written when the step starts (status ``running``) and rewritten
when it ends (``completed``, ``partial`` when some groups failed, ``failed``
when the step could not run). A record still ``running`` whose process is gone
was interrupted (killed, machine rebooted); ``mm runs`` shows it as such.
Per-group statuses and reasons live beside it in ``<id>.groups.parquet``,
written in chunks as the step streams its rows (``GroupsTable``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .._version import __version__
from .datastore import Datastore
from .memory import release_memory


def new_run_id(step: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{step}-{secrets.token_hex(2)}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Run:
    store: Datastore
    step: str
    config_fingerprint: str
    id: str = ""
    started: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = self.id or new_run_id(self.step)
        self.started = _now()

    def begin(self) -> Run:
        self.store.write_run(self._record("running"))
        return self

    def finish(self, status: str, counts: dict[str, int], **extra: Any) -> dict:
        """Rewrite the record with its outcome (the groups table is written before, by ``GroupsTable``)."""
        self.extra.update(extra)
        record = self._record(status, counts=counts, ended=_now())
        self.store.write_run(record)
        return record

    def _record(self, status: str, counts: dict[str, int] | None = None, ended: str | None = None) -> dict:
        return {
            "id": self.id,
            "step": self.step,
            "status": status,
            "started": self.started,
            "ended": ended,
            "counts": counts or {},
            "config_fingerprint": self.config_fingerprint,
            "mm_version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": sys.argv[1:],
            **self.extra,
        }


# The columns every step's groups table starts with: who the group is, then what happened to it.
GROUP_IDENTITY = [("key", pa.string()), ("label", pa.string()), ("values", pa.string())]
GROUP_OUTCOME = [
    ("status", pa.string()),
    ("decision", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
    ("fingerprint", pa.string()),
    ("parts", pa.string()),
]


class GroupsTable:
    """A run's per-group table (``<id>.groups.parquet``), written chunk by chunk.

    Rows are dicts; fields missing from a row are null, fields outside the
    schema are dropped, dicts and lists are stored as JSON text.
    """

    CHUNK = 4096

    def __init__(self, store: Datastore, run_id: str, schema: pa.Schema):
        self.schema = schema
        self._json = {f.name for f in schema if pa.types.is_string(f.type)}
        self._context = store.run_groups_writer(run_id, schema)
        self._writer = self._context.__enter__()
        self._chunk: list[dict] = []

    def add(self, row: dict) -> None:
        self._chunk.append({k: json.dumps(v, default=str) if isinstance(v, (dict, list)) and k in self._json else v for k, v in row.items()})
        if len(self._chunk) >= self.CHUNK:
            self._write()

    def _write(self) -> None:
        if self._chunk:
            self._writer.write_table(pa.Table.from_pylist(self._chunk, schema=self.schema))
            self._chunk = []
            release_memory()

    def close(self) -> None:
        self._write()
        self._context.__exit__(None, None, None)

    def __enter__(self) -> GroupsTable:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._context.__exit__(kind, value, tb)


def effective_status(record: dict) -> str:
    """'interrupted' for a record left 'running' by a process that no longer exists."""
    if record.get("status") != "running":
        return record.get("status", "?")
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", 0))):
        return "interrupted"
    return "running"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(store: Datastore, step: str | None = None, limit: int | None = None) -> list[dict]:
    """The run records (of ``step``), oldest first, the newest ``limit`` of them; status as ``effective_status``."""
    records = [r for r in store.list_runs() if step is None or r.get("step") == step]
    if limit is not None:
        records = records[-limit:] if limit else []
    return [{**r, "status": effective_status(r)} for r in records]


@dataclass
class RunDetails:
    """One run: its record and its per-group rows (an interrupted run's: those its journal lists)."""

    record: dict
    groups: Any  # pandas.DataFrame

    def to_dict(self) -> dict:
        rows = json.loads(self.groups.to_json(orient="records")) if len(self.groups) else []
        return {**self.record, "groups": rows}


def run_details(store: Datastore, run_id: str) -> RunDetails:
    record = store.read_run(run_id)
    record["status"] = effective_status(record)
    groups = store.read_run_groups(run_id)
    if not len(groups):  # an interrupted run: its journal lists the groups it finished
        import pandas as pd

        groups = pd.DataFrame(store.read_journal(run_id))
    return RunDetails(record, groups)


def latest_run(store: Datastore, step: str, usable_only: bool = True) -> dict | None:
    """The newest run of ``step`` (completed or partial when ``usable_only``)."""
    for record in reversed(store.list_runs()):
        if record.get("step") != step:
            continue
        if not usable_only or record.get("status") in ("completed", "partial"):
            return record
    return None
