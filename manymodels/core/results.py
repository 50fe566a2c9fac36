"""One group's row in a step's groups table, typed.

A ``TrainRow`` or ``ForecastRow`` is made once, by the worker that ran the
group (``tasks``) or by the step for a group it did not send to a worker
(reused, kept, nothing to do), and then read unchanged by the step, its spool
and journal, the output writers (training_output.csv, the run's groups table),
the report and export. Between processes and in files a row is a plain dict,
through one method pair: ``to_dict`` (enums as their words, which is what the
files hold) and ``from_dict`` (which also reads a groups table row straight
from parquet, JSON text and all, and one written by an older mm, whose missing
fields take their defaults).

Adding a field is one line in the dataclass, and one in the step's
``GROUPS_SCHEMA`` (a test checks that the two agree).

Pure: imports nothing from the rest of mm.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from functools import cache
from typing import Any, Self


class Status(StrEnum):
    """What happened to a group in a step."""

    TRAINED = "trained"  # train: fitted by this run
    REUSED = "reused"  # train: the group's model is kept; forecast: its forecast file is
    FAILED = "failed"
    FORECAST = "forecast"  # forecast: predicted by this run
    NO_MODEL = "no_model"  # forecast: the train run has no model for the group


class Reason(StrEnum):
    """Why a group failed, in one word (its ``error`` says the rest)."""

    NONE = ""  # it did not fail
    TOO_SHORT = "too_short"  # less history than train.min_history
    NEGATIVE_TARGET = "negative_target"  # the transform or objective needs targets >= 0
    NO_HISTORY = "no_history"  # no train rows at all
    NO_CANDIDATE = "no_candidate"  # AutoML: every candidate failed (each one's reason in ``error``)
    PARTITION_MISSING = "partition_missing"  # the split's file of the group is gone
    MODEL_MISSING = "model_missing"
    MODEL_UNREADABLE = "model_unreadable"
    NO_MODEL = "no_model"  # forecast: training failed, or the group is not in the train run
    NO_PREDICTION = "no_prediction"  # forecast: some rows got no finite prediction
    WORKER_DIED = "worker_died"
    ERROR = "error"  # an unexpected exception, with its text in ``error``


@dataclass(frozen=True, kw_only=True)
class GroupRow:
    """What every step's groups table starts with: who the group is, then what happened to it."""

    key: str
    label: str
    values: list
    status: Status
    decision: str = ""  # why the group was run or reused ("trained: no previous model")
    reason: Reason = Reason.NONE
    error: str = ""
    fingerprint: str | None = None  # of the inputs of the group's artefact (model, forecast)
    parts: dict | None = None  # what the fingerprint was made of, to say what changed next time

    @classmethod
    def of_item(cls, item: Mapping, **outcome: Any) -> Self:
        """The row of a work item's group: the fields the item shares with the row (who the
        group is, the decision and fingerprint of the plan), then the ``outcome``."""
        return cls.from_dict({**item, **outcome})

    def to_dict(self) -> dict[str, Any]:
        """The row as plain values: enums as their words, the rest as it is."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, doc: Mapping) -> Self:
        """A row from ``to_dict``'s dict or a groups table row; keys that are not fields are
        ignored, and a field that is absent or null takes its default."""
        kinds = _field_kinds(cls)
        values = {name: _coerce(kinds[name], doc[name]) for name in kinds if name in doc and not _missing(doc[name])}
        return cls(**{name: v for name, v in values.items() if v is not None})

    def __getitem__(self, name: str) -> Any:
        """``row["status"]``: the engines' scheduling loop counts failures the same way over
        every step's results, split's plain dicts included."""
        if name not in _field_kinds(type(self)):
            raise KeyError(name)
        return getattr(self, name)

    def failure(self) -> dict[str, str]:
        """The row as an entry of a step result's ``failures``."""
        return {"group": self.label, "reason": str(self.reason), "error": self.error}


@dataclass(frozen=True, kw_only=True)
class TrainRow(GroupRow):
    """A group's row in a train run: training_output.csv's line, and what forecast reads."""

    n_train_rows: int | None = None
    train_start: str | None = None
    train_end: str | None = None
    run_id: str = ""  # the train run the row belongs to
    trained_in_run: str | None = None  # the run that fitted the model (an earlier one when reused)
    duration_s: float = 0.0
    model: str | None = None  # the kind of model: lightgbm, naive, ensemble...
    model_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the winner's backtest
    n_backtest: int = 0  # backtest rows the metrics are computed over (all folds)
    unscored: dict[str, int] = field(default_factory=dict)  # per metric, the backtest rows it could not score (metrics.unscored)
    selection_metric: str = ""  # what the candidates were chosen by: train.automl.metric, or its fallback for this group
    scores: dict[str, float] = field(default_factory=dict)  # every candidate's, by the selection metric
    n_trials: int = 0  # Optuna trials run for this fit (0: a stored decision was refit)
    tuning: str = ""  # where the fit's parameters came from
    note: str = ""
    candidate_errors: dict[str, str] = field(default_factory=dict)  # candidates dropped from the choice, and why
    demand_class: str = ""  # smooth, erratic, intermittent, lumpy, short, constant (statistical.demand_class)
    pool: str = ""  # a pooled model's pool version ("<pool key>/v<N>"): kept while a row points to it

    @property
    def has_model(self) -> bool:
        """The group ends the run with a model, fitted by the run or kept from an earlier one."""
        return self.status in (Status.TRAINED, Status.REUSED) and self.model_version is not None


@dataclass(frozen=True, kw_only=True)
class ForecastRow(GroupRow):
    """A group's row in a forecast run, with the forecast measured against any actuals
    among its inference rows (a holdout, or a backfill of known outcomes)."""

    n_rows: int = 0  # inference rows
    model_version: int | None = None
    n_missing_prediction: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # mape, smape, wape... over the rows with an actual
    n_actual: int = 0  # rows with an actual (and a prediction)
    unscored: dict[str, int] = field(default_factory=dict)  # per metric, of those rows, the ones it could not score
    below_quantile: dict[str, int] = field(default_factory=dict)  # per quantile column: actuals at or below it
    n_out_of_range: int = 0  # known-future values outside their series' training range
    n_capped: int = 0  # rows capped by forecast.cap_factor
    checks: dict[str, list[str]] = field(default_factory=dict)  # the first cases of both, named

    @property
    def has_forecast(self) -> bool:
        return self.status in (Status.FORECAST, Status.REUSED)


def json_fields(*row_types: type) -> frozenset[str]:
    """The fields of these row classes that a groups table stores as JSON text (dicts, lists)."""
    return frozenset(name for cls in row_types for name, kind in _field_kinds(cls).items() if kind in (dict, list))


# -- plain values and back ------------------------------------------------------

def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@cache
def _field_kinds(cls: type) -> dict[str, type]:
    """Each field's class, without ``| None`` and type arguments (``int | None``: int)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[f.name] = typing.get_origin(hint) or hint
    return out


def _coerce(kind: type, value: Any) -> Any:
    """``value`` as a ``kind``: a word as its enum, JSON text (a parquet column) as its dict or
    list, a float as an int (pandas reads a nullable int column as floats). None: unreadable."""
    if isinstance(value, kind):
        return value
    if kind in (dict, list) and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
        return value if isinstance(value, kind) else None
    return kind(value)
