"""The dask engine: the same per-batch functions, on an existing Dask cluster.

``mm`` connects to a running scheduler (``--scheduler tcp://HOST:PORT``) and
submits one task per batch of groups: the functions of ``tasks.py``, exactly
as the local process pool runs them. At most ``3 x worker threads`` batches are
in flight, so memory stays flat on both sides however many groups there are.
Workers read partitions and write models and forecasts themselves: the
datastore must be a folder they all see (a shared file system) or an
object-store URL (``s3://bucket/prefix``), and every worker needs the same
manymodels installed (checked when connecting).

The engine contract holds:

- a worker that dies (killed, out of memory, machine lost): the scheduler
  reruns its tasks on other workers, up to
  ``distributed.scheduler.allowed-failures`` times (3 by default). The task
  functions are idempotent, so a rerun gives the same result;
- a batch the scheduler gives up on (``KilledWorker``), or whose function
  raised, is rerun group by group, one group at a time, and a group that
  still fails is reported failed (``engine.WORKER_DIED``, or the error)
  without stopping the step.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Iterator

from ._version import __version__
from .engine import WORKER_DIED, Batch, CrashResult, describe_error, fail_batch
from .errors import MMError

CONNECT_TIMEOUT_S = 20
IN_FLIGHT_PER_THREAD = 3


class DaskEngine:
    name = "dask"

    def __init__(self, scheduler: str | None):
        if not scheduler:
            raise MMError("the dask engine needs the address of a running Dask scheduler", "pass --scheduler tcp://HOST:PORT, or set engine.scheduler in the config")
        try:
            from distributed import Client
        except ImportError:
            raise MMError("the dask engine needs dask.distributed, which is not installed", "pip install 'manymodels[dask]'") from None
        try:
            self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
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

    def _check_workers(self, scheduler: str) -> None:
        import importlib.metadata

        if not self.client.nthreads():
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        found = self.client.run(importlib.metadata.version, "manymodels", on_error="return")
        wrong = {worker: version for worker, version in found.items() if version != __version__}
        if wrong:
            worker, version = next(iter(wrong.items()))
            what = f"manymodels {version}" if isinstance(version, str) else f"no manymodels ({type(version).__name__})"
            raise MMError(
                f"Dask worker {worker} of {scheduler} has {what}; this mm is {__version__}",
                "install the same manymodels on every worker (they run its functions)",
            )

    def map(self, fn, batches: Iterable[Batch], crash_result: CrashResult) -> Iterator[tuple[Batch, list]]:
        from distributed import as_completed

        pending = iter(batches)
        running: dict[str, tuple[Batch, bool]] = {}  # task key -> (batch, is an isolated single group)
        suspects: deque[Batch] = deque()  # groups of a batch that failed: rerun alone
        completed = as_completed(loop=self.client.loop)

        def submit(batch: Batch, single: bool) -> None:
            future = self.client.submit(fn, batch, key=f"mm-{fn.__name__}-{uuid.uuid4().hex}", pure=False)
            running[future.key] = (batch, single)
            completed.add(future)

        def refill() -> None:
            if suspects:
                # isolation: one group at a time with nothing else of ours running, so a
                # worker's death is charged to exactly its group (Dask charges every task
                # assigned to a dead worker, not only the one that killed it)
                if not running:
                    submit(suspects.popleft(), True)
                return
            while len(running) < self.jobs * IN_FLIGHT_PER_THREAD:
                batch = next(pending, None)
                if batch is None:
                    return
                submit(batch, False)

        refill()
        for future in completed:
            batch, single = running.pop(future.key)
            try:
                results = future.result()
            except Exception as exc:
                _fail_if_disconnected(exc)
                if single:
                    reason = WORKER_DIED if _worker_died(exc) else describe_error(exc)
                    yield batch, fail_batch(batch, crash_result, reason)
                else:
                    suspects.extend(batch.singles())
            else:
                yield batch, results
            finally:
                future.release()
            refill()

    def close(self) -> None:
        self.client.close()


def _worker_died(exc: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _fail_if_disconnected(exc: BaseException) -> None:
    from concurrent.futures import CancelledError

    if isinstance(exc, CancelledError):
        raise MMError(f"lost the Dask scheduler: {describe_error(exc)}", "check the cluster, then run the step again: finished groups are kept") from exc
