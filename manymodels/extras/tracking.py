"""Optional run tracking: every train and forecast run logged to MLflow.

Set ``tracking.mlflow.uri`` (a folder for a local file store, relative to the
config file; or ``http://host:5000``, ``sqlite:///mlflow.db``...) and install
the extra (``pip install 'manymodels[mlflow]'``). After a step finishes, the API
layer calls ``log_runs`` once: one MLflow run per mm run, named by the mm run
id, with the config as parameters, the run's aggregate numbers as metrics, and
the run record, ``training_output.csv`` and the HTML report as artefacts.

Tracking never changes a model and never fails a step: if MLflow is missing
the step refuses to start (so a long run is not wasted), and if logging fails
afterwards (server down) the step's result stands and a warning says why.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Config
from ..console import Terminal
from ..errors import MMError
from ..store.datastore import Datastore

INSTALL_HINT = "pip install 'manymodels[mlflow]' (or remove tracking.mlflow.uri from the config)"
PARAM_CHARS = 500  # MLflow's historical limit for a parameter value
BATCH = 100  # parameters per log_batch call (MLflow's limit)


def enabled(config: Config) -> bool:
    return bool(config.tracking.mlflow.uri)


def check(config: Config) -> None:
    """Before a step starts: tracking is configured, so MLflow must be importable."""
    if not enabled(config):
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise MMError(f"tracking.mlflow.uri is set ({config.tracking.mlflow.uri}) but MLflow is not installed", INSTALL_HINT) from None


def log_runs(config: Config, terminal: Terminal | None, steps: list[tuple[str, Any]]) -> dict[str, str]:
    """Log finished steps (``[("train", TrainResult), ("forecast", ForecastResult)]``).

    Returns ``{mm run id: MLflow run id}``; on any failure, warns and returns what was logged.
    """
    if not enabled(config) or not steps:
        return {}
    terminal = terminal or Terminal(quiet=True)
    settings = config.tracking.mlflow
    logged: dict[str, str] = {}
    try:
        client = _client(settings.uri)
        experiment = client.get_experiment_by_name(settings.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
        store = Datastore(config.datastore)
        report = _report(config, terminal) if settings.log_report else None
        for step, result in steps:
            logged[result.run_id] = _log_step(client, experiment_id, store, config, step, result, report)
            terminal.info(f"tracking: {step} run {result.run_id} logged to MLflow ({settings.uri}, experiment {settings.experiment!r}, run {logged[result.run_id]})")
    except Exception as exc:  # the step is done and recorded in the datastore; tracking is best effort
        names = ", ".join(f"{step} run {result.run_id}" for step, result in steps if result.run_id not in logged)
        terminal.warn(f"tracking: could not log {names} to MLflow at {settings.uri}: {type(exc).__name__}: {_first_line(exc)}; the run itself finished and is recorded in the datastore")
    return logged


def resolved_uri(uri: str) -> str:
    """``tracking.mlflow.uri`` as MLflow takes it (a folder becomes a file: URI, which MLflow 3
    opens only with MLFLOW_ALLOW_FILE_STORE, set here: the user asked, by configuring a folder)."""
    if "://" not in uri and uri != "databricks":
        uri = Path(uri).resolve().as_uri()  # a folder: MLflow's local file store
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolved_uri(uri))


def _report(config: Config, terminal: Terminal) -> Path | None:
    from .report import report

    try:
        return Path(report(config).path)
    except Exception as exc:
        terminal.warn(f"tracking: the HTML report could not be built for MLflow: {type(exc).__name__}: {_first_line(exc)}")
        return None


def _log_step(client, experiment_id: str, store: Datastore, config: Config, step: str, result, report: Path | None) -> str:
    from mlflow.entities import Metric, Param

    record = store.read_run(result.run_id)
    start, end = _ms(record.get("started")), _ms(record.get("ended"))
    tags = {
        "mm.step": step,
        "mm.run_id": result.run_id,
        "mm.status": result.status,
        "mm.datastore": str(store.root),
        "mm.config": config.source or "",
        "mm.version": __version__,
        "mm.host": str(record.get("host", "")),
    }
    if step == "forecast":
        tags["mm.train_run_id"] = result.train_run_id
    run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=result.run_id)
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in run_params(config).items()]
        metrics = [Metric(k, v, end or start or 0, 0) for k, v in run_metrics(step, result).items()]
        for i in range(0, max(len(params), len(metrics)), BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + BATCH], params=params[i : i + BATCH])
        artefacts = [store.run_path(result.run_id)]
        if step == "train":
            artefacts.append(Path(result.output))
        if report is not None:
            artefacts.append(report)
        for path in artefacts:
            if path.exists():
                client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, status="FAILED", end_time=end)
        raise
    client.set_terminated(run_id, status="FINISHED", end_time=end)
    return run_id


def run_params(config: Config) -> dict[str, str]:
    """The config as flat MLflow parameters (``train.automl.metric``: ``wape``), tracking itself excluded."""
    dumped = config.model_dump(mode="json", exclude={"tracking"})
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
            return
        text = ",".join(map(str, node)) if isinstance(node, list) else str(node)
        out[prefix] = text if len(text) <= PARAM_CHARS else text[: PARAM_CHARS - 3] + "..."

    walk("", dumped)
    return out


def run_metrics(step: str, result) -> dict[str, float]:
    """The aggregate numbers of a step result, under stable names."""
    counts = ("n_groups", "trained", "reused", "failed", "tuned") if step == "train" else ("n_groups", "forecast", "reused", "failed", "no_model", "n_rows", "rows_beyond_horizon")
    out = {name: float(getattr(result, name)) for name in (*counts, "duration_s")}
    if step == "train":
        out.update({f"backtest_median_{m}": v for m, v in result.median_backtest.items()})
        out.update({f"backtest_unscored_rows_{m}": u["rows"] for m, u in result.unscored.items() if u["rows"]})
        out.update({f"models_{kind}": float(n) for kind, n in result.winners.items()})
    else:
        out.update({f"accuracy_{m}": v for m, v in result.accuracy.items() if m != "n_rows"})
        out.update({f"accuracy_unscored_rows_{m}": u["rows"] for m, u in result.unscored.items() if u["rows"]})
        out.update({f"coverage_below_{name}": v for name, v in result.coverage.items()})
    return {k: float(v) for k, v in out.items() if v is not None and v == v}


def _ms(stamp: str | None) -> int | None:
    if not stamp:
        return None
    return int(dt.datetime.fromisoformat(stamp).timestamp() * 1000)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
