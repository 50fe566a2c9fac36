"""The scheduling loop: every step's batches run through ``run_batches``.

One loop, whatever executes the batches (serial, local pool, Dask; see
engine.py): the executors only submit a batch and collect finished ones, and
everything else is decided here, once:

- in-flight limit: at most ``IN_FLIGHT_PER_WORKER`` batches per worker are
  submitted at a time, pulled lazily from ``batches``, so the caller can stream
  groups from disk and memory stays flat however many there are;
- failures are results: a batch whose function raised, or whose worker died
  (or was lost with a dying one), is rerun group by group, one group at a time
  with nothing else running, so a crash is charged to exactly its group; a
  group that still fails is reported with ``crash_result(item, reason)``
  (``engine.WORKER_DIED`` when its worker died, else the error) and the step
  goes on. A batch of one group whose function raised is reported at once:
  running it alone again would raise the same;
- what is sent is checked before the first submit: a function or a batch
  context the executor cannot send stops the step with one clear error rather
  than failing every group with it.

Progress and the interrupted-run record are the session's (``Session.execute``),
around this loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from itertools import chain

from ..errors import MMError
from .engine import WORKER_DIED, Batch, CrashResult, Executor, describe_error

IN_FLIGHT_PER_WORKER = 3  # batches submitted per worker: one running, the next ones already sent


def run_batches(executor: Executor, fn: Callable, batches: Iterable[Batch], crash_result: CrashResult) -> Iterator[tuple[Batch, list]]:
    """Run ``fn`` on every batch; yield ``(batch, results)`` in completion order, one result per group."""
    pending = iter(batches)
    first = next(pending, None)
    if first is None:
        return
    check_sendable(executor, fn, first)
    pending = chain([first], pending)
    exhausted = False
    limit = max(1, executor.jobs * IN_FLIGHT_PER_WORKER)
    running: dict[Hashable, tuple[Batch, bool]] = {}  # handle -> (batch, run alone to isolate a failure)
    suspects: deque[Batch] = deque()  # single groups of failed batches, waiting to run alone
    while True:
        if suspects:
            if not running:
                batch = suspects.popleft()
                running[executor.submit(fn, batch)] = (batch, True)
        else:
            while not exhausted and len(running) < limit:
                batch = next(pending, None)
                if batch is None:
                    exhausted = True
                    break
                running[executor.submit(fn, batch)] = (batch, False)
        if not running:
            return
        for done in executor.collect(list(running)):
            batch, alone = running.pop(done.handle)
            if done.error is None:
                yield batch, done.results
            elif alone or (len(batch.items) == 1 and not done.died):
                reason = WORKER_DIED if done.died else describe_error(done.error)
                yield batch, [crash_result(item, reason) for item in batch.items]
            else:
                suspects.extend(batch.singles())


def check_sendable(executor: Executor, fn: Callable, batch: Batch) -> None:
    try:
        executor.check_sendable(fn, batch)
    except Exception as exc:
        what = getattr(fn, "__name__", repr(fn))
        raise MMError(
            f"cannot send {what} and its batch ({type(batch.context).__name__}) to the {executor.name} engine's workers: {describe_error(exc)}",
            "this is a bug in mm (a batch must carry plain data: paths, specs, numbers); please report it. "
            "Meanwhile --engine serial runs the step in this process",
        ) from exc
