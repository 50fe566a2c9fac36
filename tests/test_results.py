"""The typed group rows: one field per groups-table column, one way to and from files."""

import ast
from pathlib import Path

from manymodels import automl, kernels, models
from manymodels.results import ForecastRow, Reason, Status


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
