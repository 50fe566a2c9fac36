"""mm run: split -> train -> forecast under one lock, reusing what is still valid."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..console import Terminal
from ..runner.options import RunOptions
from ..runner.session import open_session
from .forecast import ForecastResult, forecast
from .split import SplitResult, split
from .train import TrainResult, train


@dataclass
class RunResult:
    split: SplitResult
    train: TrainResult
    forecast: ForecastResult

    @property
    def exit_code(self) -> int:
        return max(self.train.exit_code, self.forecast.exit_code)

    def to_dict(self) -> dict:
        return {"split": self.split.to_dict(), "train": self.train.to_dict(), "forecast": self.forecast.to_dict(), "exit_code": self.exit_code}


def run(config: Config, terminal: Terminal | None = None, *, on_step=None, options: RunOptions | None = None, **option_fields) -> RunResult:
    """The nightly job: every step, one process pool, one datastore lock.

    ``on_step(name, result)`` is called after each step (the CLI prints its summary).
    ``options`` (or its fields as keywords, see RunOptions) say how the steps run.
    """
    results = {}
    with open_session(config, terminal, RunOptions.of(options, **option_fields)) as s:
        for name, step in (("split", split), ("train", train), ("forecast", forecast)):
            results[name] = step(config, session=s)
            if on_step:
                on_step(name, results[name])
    return RunResult(**results)
