"""mm run: split -> train -> forecast under one lock, reusing what is still valid."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .console import Terminal
from .forecast import ForecastResult, _forecast
from .session import open_session
from .split import SplitResult, _split
from .train import TrainResult, _train


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


def run(
    config: Config,
    terminal: Terminal | None = None,
    *,
    allow_reuse: bool | None = None,
    jobs: int | None = None,
    engine: str | None = None,
    scheduler: str | None = None,
    wait: float = 0.0,
    on_step=None,
) -> RunResult:
    """The nightly job: every step, one process pool, one datastore lock.

    ``on_step(name, result)`` is called after each step (the CLI prints its summary).
    """
    with open_session(config, terminal, allow_reuse, jobs, engine, scheduler, wait) as s:
        split_result = _split(s)
        if on_step:
            on_step("split", split_result)
        train_result = _train(s, [], False)
        if on_step:
            on_step("train", train_result)
        forecast_result = _forecast(s, None)
        if on_step:
            on_step("forecast", forecast_result)
    return RunResult(split_result, train_result, forecast_result)
