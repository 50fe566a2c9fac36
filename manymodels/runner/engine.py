"""Executors: where the batches of a step run.

The scheduling loop (``scheduling.run_batches``) decides what runs when; an
executor only runs what it is given: ``submit(fn, batch)`` returns a handle at
once, ``collect(handles)`` waits until at least one of them is finished and
returns every finished one as a ``Finished`` (the function's results, or the
error it raised, or that its worker died). Three executors:

- ``serial``: in this process, one batch at a time (debugging, tiny jobs);
- ``local``: a pool of worker processes on this machine (the default);
- ``dask``: an existing Dask cluster (see dask_engine).

A batch is a list of groups sharing one context; ``fn(batch)`` returns one
result per group, in the batch's order.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol


@dataclass
class Batch:
    context: Any
    items: list

    def singles(self) -> list[Batch]:
        return [Batch(self.context, [item]) for item in self.items]


CrashResult = Callable[[Any, str], Any]
WORKER_DIED = "worker process died while fitting this group (killed, out of memory, or crashed)"


MAX_BATCH = 32  # groups per task: amortises the per-task cost, small enough to balance load


def batch_size(n_items: int, jobs: int, max_size: int = MAX_BATCH) -> int:
    """Enough batches to keep every worker busy (4 per worker at least), at most ``max_size`` groups each."""
    return max(1, min(max_size, -(-n_items // (jobs * 4))))


def make_batches(context: Any, items: Iterable, jobs: int, n_items: int | None = None, max_size: int = MAX_BATCH) -> Iterator[Batch]:
    """Batches of ``items`` (an iterable of ``n_items``, streamed), sized by ``batch_size``."""
    if n_items is None:
        items = list(items)
        n_items = len(items)
    per = batch_size(n_items, jobs, max_size)
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == per:
            yield Batch(context, chunk)
            chunk = []
    if chunk:
        yield Batch(context, chunk)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the executor contract -----------------------------------------------------------

@dataclass
class Finished:
    """A submitted batch that is done: its results, or why there are none."""

    handle: Hashable
    results: list | None = None  # one per group, when the function returned
    error: BaseException | None = None  # what it raised, or how its worker was lost
    died: bool = False  # the worker running it died (or the batch was lost with it), rather than the function raising


class Executor(Protocol):
    name: str
    jobs: int  # batches it runs at the same time

    def check_sendable(self, fn: Callable, batch: Batch) -> None:
        """Raise if ``fn`` or ``batch`` cannot be sent to where the batches run."""

    def submit(self, fn: Callable, batch: Batch) -> Hashable:
        """Start ``fn(batch)`` (or queue it) and return at once."""

    def collect(self, handles: Sequence[Hashable]) -> list[Finished]:
        """Wait until at least one of ``handles`` is finished; every finished one."""

    def close(self, abort: bool = False) -> None:
        """Release the workers: after what they run now finishes, or at once when ``abort``
        (the step was interrupted: nobody will read their results)."""

    def threads_for(self, n_tasks: int) -> int:
        """Threads each of ``n_tasks`` big tasks (pooled fits) may use while they run together."""
        ...


def share_threads(jobs: int, n_tasks: int) -> int:
    return max(1, jobs // max(1, min(n_tasks, jobs)))


class SerialEngine:
    """In this process: a batch runs when it is collected, in the order submitted."""

    name = "serial"
    jobs = 1

    def __init__(self) -> None:
        self._queued: dict[int, tuple[Callable, Batch]] = {}
        self._ids = itertools.count()

    def check_sendable(self, fn: Callable, batch: Batch) -> None:
        pass  # nothing leaves the process

    def submit(self, fn: Callable, batch: Batch) -> int:
        handle = next(self._ids)
        self._queued[handle] = (fn, batch)
        return handle

    def collect(self, handles: Sequence[int]) -> list[Finished]:
        handle = min(handles)  # the oldest
        fn, batch = self._queued.pop(handle)
        try:
            return [Finished(handle, fn(batch))]
        except Exception as exc:
            return [Finished(handle, error=exc)]

    def close(self, abort: bool = False) -> None:
        self._queued.clear()

    def threads_for(self, n_tasks: int) -> int:
        return cpu_count()  # one task at a time, in this process: it has the machine


def _init_worker() -> None:
    # One OpenMP thread per worker: the pool is the parallelism. Measured on a
    # 2-core machine, default-threaded LightGBM fits in a pool ran 4.7x slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    # The modules the forkserver preloaded are shared with it, copy-on-write.
    # A full garbage collection writes to every object's header and so copies
    # them all (+14 MB a worker, measured); frozen objects are never visited.
    gc.freeze()
    from ..store.memory import use_system_allocator

    use_system_allocator()
    _exit_with_parent()


def _exit_with_parent() -> None:
    """End this worker as soon as the mm process that started it is gone.

    A worker only notices a dead parent when it asks for its next batch, which
    can be many minutes of fitting later: mm killed by cron's timeout, by
    SIGKILL or by the OOM killer would leave its workers computing for nobody
    (and holding the cores the rerun needs). The parent's sentinel becomes
    ready when that process exits, whatever killed it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="mm-exit-with-parent", daemon=True).start()


# Imported once by the fork server, so every worker starts with them loaded (pandas, LightGBM,
# the kernels) instead of importing them itself. The fork server skips a name it cannot import
# without a word: tests/test_scheduling.py imports each.
FORKSERVER_PRELOAD = ("manymodels.runner.tasks",)


class LocalEngine:
    """A pool of worker processes on this machine.

    A worker that dies breaks the whole pool: every batch in it is reported
    lost (``died``) and the pool is started again for what comes next.
    """

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs or cpu_count()
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the workers
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_init_worker)
        return self._pool

    def check_sendable(self, fn: Callable, batch: Batch) -> None:
        ForkingPickler.dumps((fn, batch))  # what the pool does to send them

    def submit(self, fn: Callable, batch: Batch):
        return self._start().submit(fn, batch)

    def threads_for(self, n_tasks: int) -> int:
        return share_threads(self.jobs, n_tasks)

    def collect(self, handles: Sequence) -> list[Finished]:
        done, waiting = wait(handles, return_when=FIRST_COMPLETED)
        finished = []
        broken: BrokenProcessPool | None = None
        for future in done:
            try:
                finished.append(Finished(future, future.result()))
            except BrokenProcessPool as exc:
                broken = exc
                finished.append(Finished(future, error=exc, died=True))
            except Exception as exc:
                finished.append(Finished(future, error=exc))
        if broken is not None:
            # every batch still in the dead pool is lost with it
            finished.extend(Finished(future, error=broken, died=True) for future in waiting)
            self._restart()
        return finished

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self, abort: bool = False) -> None:
        if self._pool is None:
            return
        if abort:
            _terminate_workers(self._pool)
        self._pool.shutdown(wait=not abort, cancel_futures=True)
        self._pool = None


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers mid-batch (shutdown alone waits for their running batches)."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


ENGINES = ("serial", "local", "dask")


def make_engine(kind: str, jobs: int | None, scheduler: str | None = None, connect_timeout: float | None = None) -> Executor:
    if kind == "serial":
        return SerialEngine()
    if kind == "dask":
        from .dask_engine import DaskEngine

        return DaskEngine(scheduler, connect_timeout)
    return LocalEngine(jobs)
