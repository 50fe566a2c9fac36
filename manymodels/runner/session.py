"""A session: what one command holds while it writes to a datastore.

The datastore lock, the output terminal, the run options (resolved against the
config) and the engine (a process pool, or a connection to a Dask cluster, is
started once and shared by the steps of ``mm run``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..config import Config
from ..console import Terminal
from ..store.datastore import Datastore
from .engine import MAX_BATCH, Executor, make_batches, make_engine
from .options import RunOptions
from .scheduling import run_batches


@dataclass
class Session:
    config: Config
    store: Datastore
    terminal: Terminal
    options: RunOptions  # resolved: no field left to the config
    _engine: Executor | None = field(default=None, repr=False)

    @property
    def allow_reuse(self) -> bool:
        return self.options.allow_reuse

    def engine(self) -> Executor:
        if self._engine is None:
            self._engine = make_engine(self.options.engine, self.options.jobs, self.options.scheduler, self.config.engine.connect_timeout)
        return self._engine

    @property
    def workers(self) -> int:
        """How many groups run at once: sizes the batches."""
        return self.engine().jobs

    def execute(self, run, fn, crash_result, context, items: Iterable, n: int, label: str, max_batch: int = MAX_BATCH) -> Iterator[list[tuple]]:
        """Run ``n`` items (streamed) on the engine in batches; yield each batch's (item, result) pairs.

        Every step's work goes through here and ``scheduling.run_batches``: items
        are batched (at most ``max_batch`` a batch) as workers free up, a progress
        bar counts them, and if the loop stops early (killed, Ctrl-C, an error)
        the run is recorded as interrupted.
        """
        done = 0
        finished = False
        try:
            with self.terminal.progress(label, total=n) as bar:
                if n:
                    batches = make_batches(context, items, self.workers, n, max_batch)
                    for batch, results in run_batches(self.engine(), fn, batches, crash_result):
                        yield list(zip(batch.items, results))
                        done += len(results)
                        bar.advance(len(results), failed=sum(_failed(r) for r in results))
            finished = True
        finally:
            if not finished:
                run.finish("interrupted", {"done": done})

    def close(self, abort: bool = False) -> None:
        if self._engine is not None:
            self._engine.close(abort)
            self._engine = None


def _failed(result) -> bool:
    return result["status"] == "failed"


@contextmanager
def open_session(config: Config, terminal: Terminal | None = None, options: RunOptions | None = None, session: Session | None = None) -> Iterator[Session]:
    """Lock the datastore and set up a session, or reuse the caller's ``session`` (its options stand)."""
    if session is not None:
        yield session
        return
    terminal = terminal or Terminal(quiet=True)
    options = (options or RunOptions()).resolved(config)
    store = Datastore(config.datastore)
    store.ensure()
    lock = store.lock(options.wait).acquire(on_wait=terminal.info)
    s = Session(config=config, store=store, terminal=terminal, options=options)
    aborted = True  # until the body returns: an error or an interrupt stops the workers at once
    try:
        if lock.recovered:  # the last writer was killed: remove what it left half-done
            store.sweep_temporary_files()
        yield s
        aborted = False
    finally:
        s.close(abort=aborted)
        lock.release()
        if lock.lost:
            terminal.warn(f"this mm stalled longer than the datastore lock's lease and another mm took the lock over; check {store.root}")
