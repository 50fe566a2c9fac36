"""mm run: split -> train -> forecast under one lock, reusing what is still valid.

With ``accuracy.enabled``, the stored forecasts are scored right after the split
(the split is what brings new actuals), so that train sees the drift flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..console import Terminal
from ..runner.options import RunOptions
from ..runner.session import open_session
from .accuracy import AccuracyResult, accuracy
from .forecast import ForecastResult, forecast
from .split import SplitResult, split
from .train import TrainResult, train


@dataclass
class RunResult:
    split: SplitResult
    train: TrainResult
    forecast: ForecastResult
    accuracy: AccuracyResult | None = None  # None: accuracy.enabled is false

    @property
    def exit_code(self) -> int:
        return max(self.train.exit_code, self.forecast.exit_code)

    def to_dict(self) -> dict:
        scored = {"accuracy": self.accuracy.to_dict()} if self.accuracy is not None else {}
        return {"split": self.split.to_dict(), **scored, "train": self.train.to_dict(), "forecast": self.forecast.to_dict(), "exit_code": self.exit_code}


def run(config: Config, terminal: Terminal | None = None, *, on_step=None, options: RunOptions | None = None, **option_fields) -> RunResult:
    """The nightly job: every step, one process pool, one datastore lock.

    ``on_step(name, result)`` is called after each step (the CLI prints its summary).
    ``options`` (or its fields as keywords, see RunOptions) say how the steps run.
    """
    results = {}
    with open_session(config, terminal, RunOptions.of(options, **option_fields)) as s:
        steps = (("split", split), ("accuracy", accuracy), ("train", train), ("forecast", forecast))
        for name, step in steps:
            if name == "accuracy" and not config.accuracy.enabled:
                continue
            results[name] = step(config, session=s)
            if on_step:
                on_step(name, results[name])
    return RunResult(**results)
