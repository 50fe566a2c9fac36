"""The library API: everything the ``mm`` command does, callable from Python.

``train``, ``forecast`` and ``run`` are the steps themselves plus optional run
tracking (``tracking.mlflow.uri``): MLflow is checked before a step starts and
each finished train or forecast run is logged after it, here and only here.
"""

from __future__ import annotations

import functools

from . import tracking
from .clean import clean
from .config import config_from_dict, load_config
from .export import export
from .forecast import ForecastResult
from .forecast import forecast as _forecast
from .pipeline import RunResult
from .pipeline import run as _run
from .report import report
from .split import split
from .train import TrainResult
from .train import train as _train


@functools.wraps(_train)
def train(config, terminal=None, **options) -> TrainResult:
    tracking.check(config)
    result = _train(config, terminal, **options)
    tracking.log_runs(config, terminal, [("train", result)])
    return result


@functools.wraps(_forecast)
def forecast(config, terminal=None, **options) -> ForecastResult:
    tracking.check(config)
    result = _forecast(config, terminal, **options)
    tracking.log_runs(config, terminal, [("forecast", result)])
    return result


@functools.wraps(_run)
def run(config, terminal=None, **options) -> RunResult:
    tracking.check(config)
    result = _run(config, terminal, **options)
    tracking.log_runs(config, terminal, [("train", result.train), ("forecast", result.forecast)])
    return result


__all__ = ["clean", "config_from_dict", "export", "forecast", "load_config", "report", "run", "split", "train"]
