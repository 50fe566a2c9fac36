"""Errors a user can act on.

Every error that reaches the command line is an ``MMError``: its message names
what is wrong (file, column, group, config key) and its ``hint`` says how to fix
it. The CLI prints both as one paragraph and exits with ``exit_code``; anything
else is a bug and shows a traceback only with ``--verbose``.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PARTIAL = 3


class MMError(Exception):
    """A problem the user can fix; the command could not run (exit 1)."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class ConfigError(MMError):
    """The config file or a --set override is invalid."""


class InputDataError(MMError):
    """The raw input table cannot be split as configured."""


class UpstreamMissing(MMError):
    """A step needs the output of an earlier step that is not in the datastore."""


class DatastoreLocked(MMError):
    """Another mm process holds the datastore lock."""


class DamagedFile(MMError):
    """A file mm wrote cannot be read back (cut short, overwritten by something else).

    Where a step can do again what the file records, it treats it as missing and
    warns; elsewhere this reaches the user (exit 1) with the file and the command
    that writes it again."""

    def __init__(self, path: object, problem: str, hint: str):
        super().__init__(f"{path} is damaged ({problem})", hint)
        self.path = str(path)


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice that looks most like ``name`` (for 'did you mean' hints)."""
    choices = [str(c) for c in choices]
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if match:
        return match[0]
    lowered = {c.lower(): c for c in choices}
    return lowered.get(name.lower())


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' or '' when nothing is close."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""


def examples(values: Iterable[object], limit: int = 5) -> str:
    """A short, readable list of example values for an error message."""
    items = []
    for value in values:
        if len(items) == limit:
            items.append("...")
            break
        items.append(repr(value) if isinstance(value, str) else str(value))
    return ", ".join(items)


def from_os_error(exc: OSError) -> MMError:
    """An OSError (a full disk, a permission, a vanished mount) as a message about the machine, not a bug."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = (
            "free some space (or point 'datastore' at a larger disk) and run the command again: groups already "
            "finished are kept, and every output it could not write is still the previous, complete one"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "check the permissions of that path: mm reads the input files and writes inside the datastore"
    elif exc.errno == errno.EROFS:
        hint = "the file system is read-only; point 'datastore' at a writable folder"
    else:
        hint = "check the disk and the path, then run the command again"
    return MMError(f"{what}{where}", hint)


def input_read_error(path: str, exc: BaseException) -> InputDataError:
    """The message for an input file that cannot be read (gone, forbidden, empty, not UTF-8, damaged)."""
    if isinstance(exc, FileNotFoundError):
        return InputDataError(f"input file disappeared while reading: {path}")
    if isinstance(exc, PermissionError):
        return InputDataError(f"cannot read input file {path}: permission denied", "check the file's permissions")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, InputDataError):
        return exc
    if "Empty CSV file" in text or "empty" in text.lower() and os.path.exists(path) and os.path.getsize(path) == 0:
        return InputDataError(f"input file {path} is empty", "remove it or fill it with a header row and data")
    if "invalid UTF8" in text or isinstance(exc, UnicodeError):
        return InputDataError(f"cannot read input file {path}: it is not UTF-8 text ({text})", "save it as UTF-8 (in Excel: 'CSV UTF-8')")
    return InputDataError(f"cannot read input file {path}: {text}", "check that the file is valid CSV/Parquet and not truncated")
