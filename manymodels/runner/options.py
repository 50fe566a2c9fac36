"""How a step runs, as opposed to what it computes: the options every step shares.

A ``RunOptions`` is built once, by the ``mm`` command from its flags or by a
Python caller, and handed down unchanged to the session the step opens::

    mm.train(config, options=mm.RunOptions(jobs=4, allow_reuse=False))
    mm.train(config, jobs=4, allow_reuse=False)          # the same, as keywords

A field left ``None`` takes the config's value when the session starts
(``resolved``). A new shared option is one field here and one entry in
``cli.RUN_FLAGS``; the steps and the session need no change to pass it on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..config import Config
from ..errors import MMError
from .engine import ENGINES, cpu_count


@dataclass(frozen=True)
class RunOptions:
    allow_reuse: bool | None = None  # reuse unchanged outputs (None: the config's allow_reuse)
    jobs: int | None = None  # worker processes of the local engine (None: engine.jobs, else every core)
    engine: str | None = None  # serial | local | dask (None: engine.kind)
    scheduler: str | None = None  # the Dask scheduler, tcp://HOST:PORT (None: engine.scheduler)
    wait: float = 0.0  # seconds to wait for another mm holding the datastore

    @classmethod
    def of(cls, options: RunOptions | None = None, **changes) -> RunOptions:
        """``options`` (default: all defaults) with ``changes``: the keyword form of the Python API."""
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}; RunOptions has {', '.join(f.name for f in fields(cls))}")
        return replace(options or cls(), **changes)

    def resolved(self, config: Config) -> RunOptions:
        """Every ``None`` replaced by the config's value, and the engine checked (a usage error is said now,
        not when the first group needs a worker)."""
        kind = self.engine or config.engine.kind
        scheduler = self.scheduler or config.engine.scheduler
        if kind == "dask" and not scheduler:
            raise MMError("--engine dask needs the address of a running Dask scheduler", "pass --scheduler tcp://HOST:PORT, or set engine.scheduler in the config")
        if kind not in ENGINES:
            raise MMError(f"--engine {kind!r} is not an engine", f"use one of {', '.join(ENGINES)}")
        return replace(
            self,
            allow_reuse=config.allow_reuse if self.allow_reuse is None else self.allow_reuse,
            jobs=self.jobs or config.engine.jobs or cpu_count(),
            engine=kind,
            scheduler=scheduler,
        )
