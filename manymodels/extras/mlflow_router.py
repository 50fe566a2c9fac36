"""The pyfunc model ``mm export`` registers in MLflow: any group of one train run, forecast.

Logged as code (MLflow's models-from-code: this file is the model, nothing is
pickled). ``predict`` takes a DataFrame with one row per group (its group
columns) and returns one row per forecast period, through the same
``Forecaster`` as ``mm serve`` (the stored forecast, or the group's model via
``kernels.checked_forecast``), pinned to the exported train run. ``params``
may carry ``horizon``.
"""

from __future__ import annotations

import json

import pandas as pd

# absolute imports: MLflow runs this file by its path, outside the package
from manymodels.config import config_from_dict
from manymodels.core.identity import jsonable
from manymodels.errors import MMError
from manymodels.extras.serve import (
    Forecaster,
    ForecastRequest,
    GroupCache,
    GroupRequest,
    RequestError,
    ServedRuns,
    Stats,
)
from manymodels.store.datastore import Datastore

try:  # the mlflow extra; without it this module is importable and does nothing
    import mlflow
    import mlflow.models
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    mlflow = None
    PythonModel = object


class Router(PythonModel):
    def load_context(self, context) -> None:
        settings = context.model_config
        self.config = config_from_dict(json.loads(settings["config"]), base_dir="/")
        store = Datastore(self.config.datastore)
        runs = ServedRuns(store, self.config, pin=settings["train_run_id"])
        self.forecaster = Forecaster(store, self.config, runs, GroupCache(store, self.config.serve.cache_size, Stats()))

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        columns = self.config.data.group_columns
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise MMError(f"the input has no column {missing[0]!r}: give one row per group with its columns {', '.join(columns)}")
        groups = [GroupRequest(group={c: jsonable(v) for c, v in zip(columns, values)}) for values in frame[columns].itertuples(index=False)]
        horizon = (params or {}).get("horizon")
        try:
            answer = self.forecaster.forecast(ForecastRequest(groups=groups, horizon=int(horizon) if horizon else None))
        except RequestError as exc:
            raise MMError(exc.message) from None
        rows = []
        for f in answer["forecasts"]:
            for r in f["rows"]:
                quantiles = {f"{self.config.forecast.prediction_column}_q{float(q) * 100:g}": v for q, v in r["quantiles"].items()}
                rows.append({**f["group"], "time": r["time"], "step": r["step"], self.config.forecast.prediction_column: r["prediction"], **quantiles, "model": r["model"], "model_version": r["model_version"], "run_id": r["run_id"]})
        return pd.DataFrame(rows)


if mlflow is not None:
    mlflow.models.set_model(Router())
