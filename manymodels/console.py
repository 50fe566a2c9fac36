"""The only module that prints.

One ``Terminal`` object carries the output mode for a command: normal (rich
messages and progress bars on stderr, result tables on stdout), quiet (only
warnings and errors), JSON (one JSON document on stdout, nothing else there),
and verbose (details such as reuse decisions). Everything shown is also
appended to ``--log-file`` when given, with a timestamp, whatever the mode, so
a cron job keeps a full log while mailing nothing but errors.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

PIPE_WIDTH = 160


class Terminal:
    def __init__(
        self,
        quiet: bool = False,
        json_mode: bool = False,
        verbose: bool = False,
        log_file: str | Path | None = None,
    ):
        self.quiet = quiet
        self.json_mode = json_mode
        self.verbose = verbose
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)
        for console in (self.err, self.out):
            if not console.is_terminal:
                console.width = PIPE_WIDTH  # logs and pipes: do not wrap tables at 80 columns
        self._log = open(log_file, "a", encoding="utf-8") if log_file else None

    # -- messages (stderr) -------------------------------------------------
    def info(self, message: str) -> None:
        self._write_log("INFO", message)
        if not self.quiet:
            self.err.print(escape(message))

    def success(self, message: str) -> None:
        self._write_log("INFO", message)
        if not self.quiet:
            self.err.print(f"[green]{escape(message)}[/green]")

    def warn(self, message: str) -> None:
        self._write_log("WARN", message)
        self.err.print(f"[yellow]warning:[/yellow] {escape(message)}")

    def error(self, message: str) -> None:
        self._write_log("ERROR", message)
        self.err.print(f"[red]error:[/red] {escape(message)}")

    def detail(self, message: str) -> None:
        """Shown with --verbose/--explain only; always logged."""
        self._write_log("DETAIL", message)
        if self.verbose and not self.quiet:
            self.err.print(f"[dim]{escape(message)}[/dim]")

    def traceback(self) -> None:
        self.err.print_exception()

    # -- results (stdout) --------------------------------------------------
    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._write_log("TABLE", title + "\n" + "\n".join(" | ".join(map(str, r)) for r in rows))
        if self.quiet or self.json_mode:
            return
        table = Table(title=title, title_justify="left", show_edge=False)
        for name in columns:
            table.add_column(name, justify="right" if name[:1].isdigit() else "left")
        for row in rows:
            table.add_row(*(escape(_cell(v)) for v in row))
        self.out.print(table)

    def facts(self, title: str, pairs: Sequence[tuple[str, Any]]) -> None:
        """A short 'key: value' block, e.g. a step summary."""
        self._write_log("SUMMARY", title + ": " + "; ".join(f"{k}={_cell(v)}" for k, v in pairs))
        if self.quiet or self.json_mode:
            return
        width = max((len(k) for k, _ in pairs), default=0)
        self.out.print(f"[bold]{escape(title)}[/bold]")
        for key, value in pairs:
            self.out.print(f"  {escape(key.ljust(width))}  {escape(_cell(value))}")

    def emit_json(self, document: Any) -> None:
        """The machine-readable result of a command (--json)."""
        text = json.dumps(document, indent=2, default=str)
        self._write_log("JSON", text)
        if self.json_mode:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    # -- progress ----------------------------------------------------------
    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[ProgressHandle]:
        """A live bar on a terminal, periodic plain lines elsewhere (cron logs)."""
        handle = ProgressHandle(self, description, total)
        live = not self.quiet and self.err.is_terminal and total > 0
        if live:
            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.err,
                transient=False,
            )
            with bar:
                handle._bind(bar, bar.add_task(description, total=total, note=""))
                yield handle
        else:
            yield handle
        handle._finish()

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def _write_log(self, level: str, message: str) -> None:
        if self._log:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._log.write(f"{stamp} {level} {message}\n")
            self._log.flush()


class ProgressHandle:
    """Counts finished work; renders to a rich bar or to periodic log lines."""

    LINE_EVERY_S = 30.0

    def __init__(self, terminal: Terminal, description: str, total: int):
        self.terminal = terminal
        self.description = description
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar: Progress | None = None
        self._task = None
        self._started = time.monotonic()
        self._last_line = self._started

    def _bind(self, bar: Progress, task) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        note = f"{self.failed} failed" if self.failed else ""
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, note=note)
            return
        now = time.monotonic()
        if now - self._last_line >= self.LINE_EVERY_S:
            self._last_line = now
            self.terminal._write_log("PROGRESS", self._line())
            if not self.terminal.quiet:
                self.terminal.err.print(escape(self._line()))

    def _line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = time.monotonic() - self._started
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.description}: {self.done}/{self.total} ({pct:.0f}%){failed}, {elapsed:.0f}s elapsed"

    def _finish(self) -> None:
        self.terminal._write_log("PROGRESS", self._line())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    return str(value)
