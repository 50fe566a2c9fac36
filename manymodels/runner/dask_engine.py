"""The dask engine: the same per-batch functions, on an existing Dask cluster.

``mm`` connects to a running scheduler (``--scheduler tcp://HOST:PORT``) and
submits one task per batch of groups: the functions of ``tasks.py``, exactly
as the local process pool runs them, on the same scheduling loop
(``scheduling.run_batches``: a few batches per worker thread in flight, so
memory stays flat on both sides however many groups there are).
Workers read partitions and write models and forecasts themselves: the
datastore must be a folder they all see (a shared file system) or an
object-store URL (``s3://bucket/prefix``), and every worker needs the same
manymodels installed (checked when connecting).

A worker that dies (killed, out of memory, machine lost): the Dask scheduler
reruns its tasks on other workers, up to ``distributed.scheduler.allowed-failures``
times (3 by default); the task functions are idempotent, so a rerun gives the
same result. A batch the scheduler gives up on (``KilledWorker``) is reported
to the loop as ``died``, which reruns it group by group alone, since Dask
charges every task assigned to a dead worker, not only the one that killed it;
a group that kills its worker every time is reported ``engine.WORKER_DIED``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from .._version import __version__
from ..errors import MMError
from .engine import Batch, Finished, describe_error, share_threads

CONNECT_TIMEOUT_S = 20.0  # engine.connect_timeout's default


class DaskEngine:
    name = "dask"

    def __init__(self, scheduler: str | None, connect_timeout: float | None = None):
        if not scheduler:
            raise MMError("the dask engine needs the address of a running Dask scheduler", "pass --scheduler tcp://HOST:PORT, or set engine.scheduler in the config")
        try:
            from distributed import Client
        except ImportError:
            raise MMError("the dask engine needs dask.distributed, which is not installed", "pip install 'manymodels[dask]'") from None
        try:
            self.connect_timeout = connect_timeout or CONNECT_TIMEOUT_S
            self.client = Client(scheduler, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise MMError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                "start one with 'dask scheduler' and workers with 'dask worker ADDRESS' (see README), or check the address",
            ) from None
        try:
            self._check_workers(scheduler)
        except BaseException:
            self.client.close()
            raise
        self.jobs = max(1, sum(self.client.nthreads().values()))
        self._completed = None  # distributed.as_completed of every submitted future, made on the first submit

    def _check_workers(self, scheduler: str) -> None:
        import importlib.metadata

        if not self.client.nthreads():
            self.client.wait_for_workers(1, timeout=self.connect_timeout)
        found = self.client.run(importlib.metadata.version, "manymodels", on_error="return")
        wrong = {worker: version for worker, version in found.items() if version != __version__}
        if wrong:
            worker, version = next(iter(wrong.items()))
            what = f"manymodels {version}" if isinstance(version, str) else f"no manymodels ({type(version).__name__})"
            raise MMError(
                f"Dask worker {worker} of {scheduler} has {what}; this mm is {__version__}",
                "install the same manymodels on every worker (they run its functions)",
            )

    def check_sendable(self, fn: Callable, batch: Batch) -> None:
        from distributed.protocol.pickle import dumps

        dumps(fn)  # what the client does to send them (pickle, else cloudpickle)
        dumps(batch)

    def submit(self, fn: Callable, batch: Batch):
        future = self.client.submit(fn, batch, key=f"mm-{getattr(fn, '__name__', 'batch')}-{uuid.uuid4().hex}", pure=False)
        if self._completed is None:
            from distributed import as_completed

            self._completed = as_completed(loop=self.client.loop)
        self._completed.add(future)
        return future

    def collect(self, handles: Sequence) -> list[Finished]:
        wanted = {future.key for future in handles}
        while True:
            future = next(self._completed)
            if future.key in wanted:
                break
            future.release()  # left by a loop that stopped early (the step failed): nobody waits for it
        try:
            return [Finished(future, future.result())]
        except Exception as exc:
            _fail_if_disconnected(exc)
            return [Finished(future, error=exc, died=_worker_died(exc))]
        finally:
            future.release()

    def close(self, abort: bool = False) -> None:
        # the cluster is the user's: closing the client releases this run's futures, and the
        # scheduler drops what nobody holds (a running task finishes on its worker either way)
        self.client.close()

    def threads_for(self, n_tasks: int) -> int:
        """A big task runs on one worker: at most that worker's threads (LightGBM's own
        distributed training is not used: a pool that fits in one worker's memory trains there)."""
        per_worker = max(self.client.nthreads().values(), default=1)
        return max(1, min(per_worker, share_threads(self.jobs, n_tasks)))


def _worker_died(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _fail_if_disconnected(exc: BaseException) -> None:
    from concurrent.futures import CancelledError

    if isinstance(exc, CancelledError):
        raise MMError(f"lost the Dask scheduler: {describe_error(exc)}", "check the cluster, then run the step again: finished groups are kept") from exc
