"""A run's journal: each group's result appended as it arrives, so a killed run's work is kept."""

from __future__ import annotations

import json
import time

from .files import FolderFiles, ObjectFiles


class Journal:
    """A run's per-group results, appended as they arrive (JSON lines).

    In a folder: one file, appended and flushed after each batch. In an object
    store, which cannot append: numbered part objects, one per flush, written
    at most every ``PART_SECONDS``. A line cut by a crash ends the journal.
    """

    PART_SECONDS = 5.0

    def __init__(self, files: FolderFiles | ObjectFiles, folder: str, stem: str):
        """The journal ``<folder>/<stem>.jsonl`` (object stores: ``<stem>.NNNNNN.jsonl`` parts)."""
        self.files = files
        self.folder, self.stem = folder, stem
        self._lines: list[str] = []
        self._part = 0
        self._last = time.monotonic()
        self._file = files.appender(f"{folder}/{stem}.jsonl") if isinstance(files, FolderFiles) else None

    @staticmethod
    def parts(files, folder: str, stem: str) -> list[str]:
        if isinstance(files, FolderFiles):
            return [f"{folder}/{stem}.jsonl"]
        return [f"{folder}/{n}" for n in files.names(folder) if n.startswith(f"{stem}.") and n.endswith(".jsonl")]

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
            self.files.write(f"{self.folder}/{self.stem}.{self._part:06d}.jsonl", "".join(self._lines).encode())
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
