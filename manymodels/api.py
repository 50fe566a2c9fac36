"""The library API: everything the ``mm`` command does, callable from Python.

``train``, ``forecast`` and ``run`` are the steps themselves plus optional run
tracking (``tracking.mlflow.uri``): MLflow is checked before a step starts and
each finished train or forecast run is logged after it, here and only here.
The steps take their run options as ``options=RunOptions(...)`` or as keywords.
``accuracy`` scores the stored forecasts against the actuals of the current split
(``mm accuracy``; ``mm run`` does it after its split).
``list_runs``, ``show_run`` and ``list_models`` read the datastore's records
(``mm runs``, ``mm runs show``, ``mm models``) without locking it.
"""

from __future__ import annotations

import functools

from .config import Config, config_from_dict, load_config
from .extras import mlflow_models, tracking
from .extras.export import export as _export
from .extras.report import report
from .runner.options import RunOptions
from .steps.accuracy import accuracy
from .steps.clean import clean
from .steps.forecast import forecast as _forecast
from .steps.pipeline import run as _run
from .steps.selection import GroupSelector
from .steps.split import split
from .steps.train import train as _train
from .store import registry, runs
from .store.datastore import Datastore


def _tracked(step, finished_runs):
    """``step`` with tracking: MLflow checked before it starts, its finished runs logged after."""

    @functools.wraps(step)
    def tracked(config, terminal=None, **arguments):
        tracking.check(config)
        result = step(config, terminal, **arguments)
        tracking.log_runs(config, terminal, finished_runs(result))
        return result

    return tracked


@functools.wraps(_export)
def export(config, terminal=None, **arguments):
    """``mm export``; with ``tracking.mlflow.registered_model`` (and ``uri``), its ONNX models and a
    router over them are then registered in MLflow (``extras/mlflow_models.py``)."""
    if mlflow_models.enabled(config):
        tracking.check(config)
    result = _export(config, terminal, **arguments)
    result.mlflow = mlflow_models.log_export(config, terminal, result)
    return result


train = _tracked(_train, lambda r: [("train", r)])
forecast = _tracked(_forecast, lambda r: [("forecast", r)])
run = _tracked(_run, lambda r: [("train", r.train), ("forecast", r.forecast)])



def serve(config: Config, *, host: str = "127.0.0.1", port: int = 8000, pin: str | None = None, api_key_file: str | None = None) -> None:
    """Serve every group's forecast over HTTP until interrupted (``mm serve``; the ``serve`` extra).
    ``pin``: serve this train run's models instead of following the latest one."""
    # FastAPI is imported only here, never by 'import manymodels'
    from .extras import serve as serving

    serving.serve(config, host=host, port=port, pin=pin, api_key_file=api_key_file)


def list_runs(config: Config, *, step: str | None = None, limit: int | None = None) -> list[dict]:
    """The datastore's run records (of ``step``), oldest first, the newest ``limit``; a record left
    ``running`` by a process that is gone says ``interrupted``."""
    return runs.list_runs(Datastore(config.datastore), step, limit)


def show_run(config: Config, run_id: str) -> runs.RunDetails:
    """One run's record and per-group rows (``.record``, ``.groups``, ``.to_dict()``)."""
    return runs.run_details(Datastore(config.datastore), run_id)


def list_models(config: Config, *, groups: list[str] | None = None) -> list[dict]:
    """Every stored model version, newest first per group, with its tags; ``groups`` as for ``train``."""
    selector = GroupSelector(groups or [], config.data.group_columns)
    return registry.list_models(Datastore(config.datastore), selector.matches if selector else None)


__all__ = [
    "RunOptions", "accuracy", "clean", "config_from_dict", "export", "forecast", "list_models", "list_runs",
    "load_config", "report", "run", "serve", "show_run", "split", "train",
]
