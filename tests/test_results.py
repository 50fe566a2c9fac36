"""The typed group rows: one field per groups-table column, one way to and from files."""

import ast
import json
from pathlib import Path

import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core import automl, kernels, models
from manymodels.core.results import ForecastRow, Reason, Status, TrainRow
from manymodels.steps.forecast import GROUPS_SCHEMA as FORECAST_GROUPS
from manymodels.steps.train import GROUPS_SCHEMA as TRAIN_GROUPS
from manymodels.store.datastore import Datastore
from manymodels.store.registry import run_rows

from .conftest import small_config, small_table


@pytest.mark.parametrize("row_type, schema", [(TrainRow, TRAIN_GROUPS), (ForecastRow, FORECAST_GROUPS)])
def test_every_row_field_is_a_groups_table_column(row_type, schema):
    """A field added to a row but not to its table (or the reverse) would be dropped silently."""
    row = row_type(key="k", label="g=a", values=["a"], status=Status.FAILED)
    assert set(row.to_dict()) == set(schema.names)


def test_rows_read_back_the_same_from_the_journal_and_the_groups_table(tmp_path: Path):
    """A worker's row, as JSON in the journal and as parquet in the run's table, is one row."""
    path = tmp_path / "t.csv"
    frame = small_table(groups=("a", "b", "c"), weeks=30)
    frame[(frame["g"] != "c") | (frame.index % 32 < 3) | frame["y"].isna()].to_csv(path, index=False)  # c: 3 weeks of history
    config = load_config(small_config(tmp_path, str(path), forecast={"quantiles": [0.1, 0.9]}))
    result = mm.run(config)
    assert (result.train.trained, result.train.failed, result.forecast.no_model) == (2, 1, 1)
    store = Datastore(config.datastore)
    journal = {r.key: r for r in map(TrainRow.from_dict, store.read_journal(result.train.run_id))}
    table = {r.key: r for r in run_rows(store, result.train.run_id, TrainRow)}
    assert journal == table and len(table) == 3
    by_label = {r.label: r for r in table.values()}
    assert by_label["g=c"].status is Status.FAILED and by_label["g=c"].reason is Reason.TOO_SHORT and not by_label["g=c"].has_model
    assert by_label["g=a"].status is Status.TRAINED and by_label["g=a"].model_version == 1 and by_label["g=a"].trained_in_run == result.train.run_id
    for row in table.values():
        assert TrainRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row

    forecasts = {r.label: r for r in run_rows(store, result.forecast.run_id, ForecastRow)}
    assert forecasts["g=c"].status is Status.NO_MODEL and forecasts["g=c"].reason is Reason.NO_MODEL
    assert forecasts["g=a"].has_forecast and forecasts["g=a"].n_actual == 0 and forecasts["g=a"].metrics == {}  # future rows: no actuals


def test_an_older_groups_table_row_reads_with_defaults():
    """A row of a table written before a field existed, as pandas hands it (NaN for null ints)."""
    row = ForecastRow.from_dict({"key": "k", "label": "g=a", "values": '["a"]', "status": "reused", "reason": None, "model_version": 3.0, "n_missing_prediction": float("nan")})
    assert row == ForecastRow(key="k", label="g=a", values=["a"], status=Status.REUSED, model_version=3)
    assert row.metrics == {} and row.n_actual == 0 and row.to_dict()["status"] == "reused"


def test_every_failure_code_of_the_kernels_is_a_reason():
    """The kernels name a group's failure with GroupFailure(code, ...); the worker turns the code into a Reason."""
    codes = set()
    for module in (kernels, models, automl):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "GroupFailure" and isinstance(node.args[0], ast.Constant):
                codes.add(node.args[0].value)
    assert codes >= {"too_short", "negative_target"}
    assert codes <= {r.value for r in Reason}, "add the new code to results.Reason"
