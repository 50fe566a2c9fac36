"""Per-group rows of a step, kept on local disk instead of in memory.

A step visits every group once, but it also needs what the previous run
recorded for each group (to decide reuse), and it writes sorted tables at the
end (training_output.csv, the run's groups table). Holding those rows as
Python objects costs 1-2 KB a group, which is what made memory grow with the
number of groups. A ``Spool`` keeps them in a temporary SQLite file instead:
a few MB of page cache whatever the count, point lookups by group key, and
rows streamed back sorted (SQLite sorts on disk when it must). The file goes
where the datastore says (inside a folder datastore, so on its disk: a /tmp on
tmpfs would hold it in memory again).

Rows are JSON documents; each table is either keyed (one row per group key,
looked up with ``get``) or a sequence (``add`` then ``rows``, ordered by a sort
text, then by arrival).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

FLUSH_ROWS = 2000


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def dumps(row: dict) -> str:
    return json.dumps(row, default=_plain, separators=(",", ":"))


class Spool:
    def __init__(self, folder: str | None = None) -> None:
        """``folder``: where to keep the file (default: the system's temporary folder)."""
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._folder = tempfile.TemporaryDirectory(prefix="spool-", dir=folder)
        self._db = sqlite3.connect(os.path.join(self._folder.name, "rows.sqlite"), isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-4000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("BEGIN")
        self._tables: dict[str, bool] = {}  # name -> keyed
        self._pending: dict[str, list[tuple]] = {}

    # writing ---------------------------------------------------------------
    def _table(self, name: str, keyed: bool) -> None:
        if name in self._tables:
            return
        if keyed:
            self._db.execute(f'CREATE TABLE "{name}" (key TEXT PRIMARY KEY, doc TEXT)')
        else:
            self._db.execute(f'CREATE TABLE "{name}" (seq INTEGER PRIMARY KEY, sort TEXT, doc TEXT)')
        self._tables[name] = keyed
        self._pending[name] = []

    def put(self, table: str, key: str, row: dict) -> None:
        """Keyed: the row of ``key`` (replacing any earlier one)."""
        self._table(table, keyed=True)
        self._buffer(table, (key, dumps(row)))

    def add(self, table: str, row: dict, sort: str = "") -> None:
        """Sequence: one more row, to come back ordered by ``sort``, then arrival."""
        self._table(table, keyed=False)
        self._buffer(table, (sort, dumps(row)))

    def put_many(self, table: str, rows: Iterable[dict], key: str = "key") -> int:
        n = 0
        for row in rows:
            self.put(table, row[key], row)
            n += 1
        return n

    def _buffer(self, table: str, values: tuple) -> None:
        pending = self._pending[table]
        pending.append(values)
        if len(pending) >= FLUSH_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        pending = self._pending.get(table)
        if not pending:
            return
        if self._tables[table]:
            self._db.executemany(f'INSERT OR REPLACE INTO "{table}" (key, doc) VALUES (?, ?)', pending)
        else:
            self._db.executemany(f'INSERT INTO "{table}" (sort, doc) VALUES (?, ?)', pending)
        pending.clear()

    # reading ---------------------------------------------------------------
    def get(self, table: str, key: str) -> dict | None:
        if table not in self._tables:
            return None
        self._flush(table)
        found = self._db.execute(f'SELECT doc FROM "{table}" WHERE key = ?', (key,)).fetchone()
        return json.loads(found[0]) if found else None

    def rows(self, table: str) -> Iterator[dict]:
        """Every row of a sequence table, ordered by sort text, then arrival."""
        if table not in self._tables:
            return
        self._flush(table)
        order = "key" if self._tables[table] else "sort, seq"
        # a cursor of its own: other tables may be written while this one is read
        cursor = self._db.cursor()
        for (doc,) in cursor.execute(f'SELECT doc FROM "{table}" ORDER BY {order}'):
            yield json.loads(doc)

    def count(self, table: str) -> int:
        if table not in self._tables:
            return 0
        self._flush(table)
        return self._db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]

    # lifecycle -------------------------------------------------------------
    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
