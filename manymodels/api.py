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
from .forecast import forecast as _forecast
from .pipeline import run as _run
from .report import report
from .split import split
from .train import train as _train


def _tracked(step, finished_runs):
    """``step`` with tracking: MLflow checked before it starts, its finished runs logged after."""

    @functools.wraps(step)
    def tracked(config, terminal=None, **options):
        tracking.check(config)
        result = step(config, terminal, **options)
        tracking.log_runs(config, terminal, finished_runs(result))
        return result

    return tracked


train = _tracked(_train, lambda r: [("train", r)])
forecast = _tracked(_forecast, lambda r: [("forecast", r)])
run = _tracked(_run, lambda r: [("train", r.train), ("forecast", r.forecast)])

__all__ = ["clean", "config_from_dict", "export", "forecast", "load_config", "report", "run", "split", "train"]
