"""mm export's MLflow half: models registered where deployment teams look.

With ``tracking.mlflow.uri`` and ``tracking.mlflow.registered_model`` set,
``mm export --format onnx`` logs one MLflow run (``export-<train run id>``) with

- each group's ONNX model with MLflow's ``onnx`` flavor, its input and output
  signature read from the graph, the group's ``.json`` description beside it,
  registered as ``<registered_model>-<group key>`` with tags for the group's
  values, the model version and the train run;
- one pyfunc model, registered as ``<registered_model>``, that forecasts any
  group of that train run by routing to its model through mm serve's
  ``Forecaster`` (``mlflow_router.py``, logged as code: nothing is pickled), so
  ``mlflow models serve -m models:/<registered_model>/<version>`` works for
  teams that deploy through MLflow. It reads the datastore where it is, so it
  must run where the datastore is reachable.

Like run tracking, this never fails the export: the export is written first,
and a registry that cannot be reached is a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .._version import __version__
from ..config import Config
from ..console import Terminal
from ..core.identity import jsonable
from . import tracking

ROUTER_CODE = Path(__file__).with_name("mlflow_router.py")


def enabled(config: Config) -> bool:
    settings = config.tracking.mlflow
    return bool(settings.uri and settings.registered_model)


def log_export(config: Config, terminal: Terminal | None, result) -> dict:
    """Log and register an ``ExportResult``'s ONNX models and the router; what was registered
    (``{}`` and a warning when MLflow could not be reached)."""
    if not enabled(config) or result.format != "onnx":
        return {}
    terminal = terminal or Terminal(quiet=True)
    try:
        return _log(config, result)
    except Exception as exc:  # tracking never fails a step
        terminal.warn(f"the export is written, but registering it in MLflow ({config.tracking.mlflow.uri}) failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return {}


def _log(config: Config, result) -> dict:
    import mlflow
    import onnx
    from mlflow.tracking import MlflowClient

    settings = config.tracking.mlflow
    uri = tracking.resolved_uri(settings.uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
    folder = Path(result.output)
    index = pd.read_csv(folder / "index.csv", dtype={"key": str})
    prefix = settings.registered_model
    groups = config.data.group_columns
    registered = []
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"export-{result.train_run_id}") as run:
        mlflow.set_tags({"mm.step": "export", "mm.train_run_id": result.train_run_id, "mm.version": __version__})
        for row in index.loc[index["status"] == "onnx"].to_dict("records"):
            model = onnx.load(str(folder / row["file"]))
            tags = {**{f"group.{c}": str(jsonable(row[c])) for c in groups}, "mm.key": row["key"], "mm.label": row["label"], "mm.model": row["model"], "mm.model_version": str(int(row["model_version"])), "mm.train_run_id": result.train_run_id}
            info = mlflow.onnx.log_model(model, name=f"group-{row['key']}", signature=onnx_signature(model), registered_model_name=f"{prefix}-{row['key']}", metadata=tags)
            mlflow.log_artifact(str(folder / row["metadata_file"]), artifact_path=f"group-{row['key']}-description")
            for k, v in tags.items():
                client.set_model_version_tag(f"{prefix}-{row['key']}", info.registered_model_version, k, v)
            registered.append(f"{prefix}-{row['key']}")
        router = mlflow.pyfunc.log_model(
            name="router",
            python_model=str(ROUTER_CODE),
            model_config={"config": json.dumps(config.model_dump(mode="json")), "train_run_id": result.train_run_id},
            registered_model_name=prefix,
            signature=router_signature(),
            pip_requirements=[f"manymodels[serve]=={__version__}"],
        )
        client.set_model_version_tag(prefix, router.registered_model_version, "mm.train_run_id", result.train_run_id)
    return {"run_id": run.info.run_id, "groups": len(registered), "router": f"models:/{prefix}/{router.registered_model_version}"}


def onnx_signature(model):
    """The graph's inputs and outputs as an MLflow tensor signature (dtype and shape, -1 where free)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec
    from onnx import helper

    def spec(value) -> TensorSpec:
        kind = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim)
        return TensorSpec(helper.tensor_dtype_to_np_dtype(kind.elem_type), shape, value.name)

    return ModelSignature(inputs=Schema([spec(v) for v in model.graph.input]), outputs=Schema([spec(v) for v in model.graph.output]))


def router_signature():
    """No input schema (a row per group, its group columns, whatever their types), and the one
    parameter ``horizon``: MLflow drops params a signature does not declare."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, params=ParamSchema([ParamSpec("horizon", "long", 0)]))
