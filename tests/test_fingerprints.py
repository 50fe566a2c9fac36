"""Which config keys enter which fingerprint: every key of the config model is decided.

Fingerprints cover whole config sections minus an explicit exclude list
(``cache.Coverage``), so a new key is covered by default. The walk below goes
through every field of the config model, changes it, and checks which
fingerprints move against DECIDED: a key nobody has decided about fails here,
with what to do, instead of silently retraining (or, with an inclusion list,
silently reusing) models.
"""

from __future__ import annotations

import pickle
import shutil
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest
from pydantic import BaseModel, create_model

import manymodels as mm
from manymodels.config import (
    AutoMLConfig,
    Config,
    TrainConfig,
    config_from_dict,
    load_config,
)
from manymodels.core.kernels import AutoMLSpec, GroupSpec
from manymodels.steps.train import group_spec
from manymodels.store import cache
from manymodels.store.datastore import Datastore

from .conftest import small_config, small_table

SPLIT, TRAIN, FORECAST, SEARCH = "split", "train", "forecast", "search"
DATA = {SPLIT, TRAIN}  # the split is made from data.*, and so is every model (columns, roles, time grid)
AUTOML = {TRAIN, SEARCH}  # a model is the outcome of its AutoML search, whose settings say when to search again

# Every config key, and the fingerprints a change to it must move. A key added to
# the config model must be added here too: if it changes what a step produces,
# list the fingerprints it now enters (it enters them by itself); if it does not,
# add it to the ``excluded`` keys of that step's cache.Coverage with the reason.
DECIDED: dict[str, set[str]] = {
    "datastore": set(),
    "data.path": {SPLIT},  # a model sees the rows, through its train partition's hash
    "data.time_column": DATA,
    "data.target_column": DATA,
    "data.group_columns": DATA,
    "data.series_columns": DATA,
    "data.known_future_columns": DATA,
    "data.drop_columns": DATA,
    "data.frequency": DATA,
    "data.time_format": DATA,
    "data.season_length": DATA,
    "split.train_end": {SPLIT},  # a model sees the cutoff through its partition and the time axis
    "split.holdout": {SPLIT},
    "train.horizon": {TRAIN},
    "train.min_history": {TRAIN},
    "train.params": {TRAIN},
    "train.num_boost_round": {TRAIN},
    "train.features.lags": {TRAIN},
    "train.features.windows": {TRAIN},
    "train.features.calendar": {TRAIN},
    "train.features.target_transform": {TRAIN},
    "train.automl.enabled": {TRAIN},
    "train.automl.candidates": AUTOML,
    "train.automl.ensemble": AUTOML,
    "train.automl.n_trials": AUTOML,
    "train.automl.patience": AUTOML,  # how long a search runs: it can end on another best
    "train.automl.folds": AUTOML,
    "train.automl.metric": AUTOML,
    "train.automl.timeout_per_group": set(),
    "train.automl.timeout_total": set(),
    "train.automl.retune": set(),
    "train.automl.reference": AUTOML,
    "train.automl.evidence": AUTOML,
    "train.automl.calibrate": AUTOML,
    "train.automl.pooling.levels": AUTOML,  # which pooled candidates a group is chosen among
    "train.automl.pooling.min_groups": AUTOML,
    "train.automl.pooling.n_trials": AUTOML,
    "train.automl.pooling.blend": AUTOML,
    "train.automl.pooling.linear": AUTOML,  # what a pool's model is  # whether the blend is among a group's candidates
    "train.automl.pooling.timeout": set(),  # a time budget, as timeout_per_group
    "train.automl.warm_start.sample": AUTOML,  # how local LightGBM parameters are searched
    "train.automl.warm_start.n_trials": AUTOML,
    "train.seed": {TRAIN},
    "forecast.prediction_column": {FORECAST},
    "forecast.quantiles": {TRAIN, FORECAST},  # a model stores its backtest residuals' quantiles
    "forecast.cap_factor": {FORECAST},
    "forecast.explain": {FORECAST},  # adds the driver columns to each forecast  # caps what is written, not what is fitted
    "engine.kind": set(),
    "engine.jobs": set(),
    "engine.scheduler": set(),
    "engine.connect_timeout": set(),
    "registry.keep_versions": set(),
    "tracking.mlflow.uri": set(),
    "tracking.mlflow.experiment": set(),
    "tracking.mlflow.log_report": set(),
    "tracking.mlflow.registered_model": set(),
    "serve.cache_size": set(),
    "serve.refresh_seconds": set(),
    "serve.max_body_bytes": set(),
    "serve.max_groups": set(),
    "accuracy.enabled": set(),
    "accuracy.drift_window": set(),
    "accuracy.drift_factor": set(),
    "hierarchy.levels": {SPLIT},  # the aggregate nodes' partitions; a model sees them through its partition's hash
    "hierarchy.aggregate": {SPLIT},
    "hierarchy.missing": {SPLIT},
    "hierarchy.method": set(),  # reconciliation reruns on every forecast run, from the stored base forecasts
    "hierarchy.top_down_rule": set(),
    "hierarchy.middle_level": set(),
    "hierarchy.nonnegative": set(),
    "hierarchy.errors": set(),  # which errors weigh the nodes when reconciling: no model or base forecast changes
    "hierarchy.train_level": set(),  # which nodes train, not what a node's model is: each node's own fingerprint decides its reuse
    "allow_reuse": set(),
}

# A value other than the default for keys the generic rule below cannot make up.
ALTERNATIVES: dict[str, Any] = {
    "data.path": "elsewhere.csv",
    "data.group_columns": ["g", "h"],
    "data.series_columns": ["g", "item"],
    "data.known_future_columns": [],
    "data.drop_columns": ["notes"],
    "split.train_end": "2021-03-04",
    "train.params": {"num_leaves": 7},
    "train.features.lags": [1, 2],
    "train.features.windows": [4],
    "train.automl.candidates": ["lightgbm", "naive"],
    "train.automl.ensemble": ["lightgbm", "linear"],
    "forecast.quantiles": [0.5],
    "tracking.mlflow.registered_model": "sales",
    "hierarchy.levels": [[]],
    "hierarchy.aggregate": {"price": "sum"},
    "hierarchy.middle_level": ["g"],
    "hierarchy.train_level": ["g"],
}

BASE = {
    "datastore": "store",
    "data": {"path": "d.csv", "time_column": "t", "target_column": "y", "group_columns": ["g"], "known_future_columns": ["price"]},
}


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config model of a section field (``train: TrainConfig``), or None for a value."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every key of the config model (dotted), with its type, through every section."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.exclude:  # not a user key (Config.source)
            continue
        section = _section(info.annotation)
        if section is not None:
            out.update(leaves(section, f"{prefix}{name}."))
        else:
            out[prefix + name] = info.annotation
    return out


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [c for arg in typing.get_args(annotation) for c in _literals(arg)]


def _alternative(key: str, value: Any, annotation: Any) -> Any:
    if key in ALTERNATIVES:
        return ALTERNATIVES[key]
    choices = [c for c in _literals(annotation) if c != value]
    if isinstance(value, bool):
        return not value
    if choices:
        return choices[0]
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        made_up = {int: 3, float: 1.5, str: "tcp://elsewhere:8786"}
        if kinds and kinds[0] in made_up:
            return made_up[kinds[0]]
    raise LookupError(f"no other value for {key} (now {value!r}): add one to ALTERNATIVES")


def _changed(raw: dict, key: str, value: Any) -> dict:
    import copy

    raw = copy.deepcopy(raw)
    *parents, name = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return raw


def fingerprints(config) -> dict[str, str]:
    out = {name: cache.config_fingerprint(config, coverage) for name, coverage in cache.FINGERPRINTS.items() if name != SEARCH}
    return {**out, SEARCH: cache.search_space_fingerprint(config)}


def undecided(model: type[BaseModel], decided: dict[str, set[str]], folder: Path) -> list[str]:
    """What is wrong with how ``model``'s keys enter the fingerprints (empty: all decided)."""
    problems: list[str] = []
    base = model.model_validate(config_from_dict(BASE, folder).model_dump(mode="json"))
    raw = base.model_dump(mode="json")
    before = fingerprints(base)
    excluded = {key: why for coverage in cache.FINGERPRINTS.values() for key, why in coverage.excluded.items()}
    all_keys = leaves(model)
    for key, annotation in all_keys.items():
        value = _alternative(key, _value(raw, key), annotation)
        try:
            changed = model.model_validate(_changed(raw, key, value))
        except Exception as exc:  # the test's own alternative is not a valid config
            problems.append(f"{key}: the alternative {value!r} is not valid ({exc}); fix ALTERNATIVES")
            continue
        after = fingerprints(changed)
        moved = {name for name in before if before[name] != after[name]}
        if key not in decided:
            where = ", ".join(sorted(moved)) or "no fingerprint"
            if key in excluded:
                todo = f"it is excluded in manymodels/cache.py: add it to DECIDED in tests/test_fingerprints.py with {sorted(moved) or 'set()'}"
            else:
                todo = (
                    "if a change to it must redo those steps, add it to DECIDED in tests/test_fingerprints.py; if it changes "
                    "nothing they produce, add it to the 'excluded' keys of its step's Coverage in manymodels/cache.py, with the reason"
                )
            problems.append(f"{key} is a new config key and nobody decided where it belongs: it enters {where} now. {todo}")
        elif moved != decided[key]:
            problems.append(f"{key}: a change moves the fingerprints {sorted(moved)}, DECIDED says {sorted(decided[key])}")
        if not moved and key not in excluded and not any(key == k or key.startswith(k + ".") for k in cache.UNCOVERED):
            problems.append(f"{key} enters no fingerprint and is neither excluded (cache.Coverage) nor listed in cache.UNCOVERED")
    problems += [f"DECIDED lists {key}, which the config does not have" for key in decided if key not in all_keys]
    problems += [f"cache excludes {key}, which the config does not have" for key in excluded if key not in all_keys]
    problems += [f"cache excludes {key} without a reason" for key, why in excluded.items() if not why.strip()]
    return problems


def _value(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def test_every_config_key_enters_the_fingerprints_decided_for_it_or_is_excluded_with_a_reason(tmp_path: Path):
    problems = undecided(Config, DECIDED, tmp_path)
    assert not problems, "\n".join(problems)


def test_a_new_train_key_nobody_decided_about_fails_the_walk(tmp_path: Path):
    # what adding 'foo: int = 0' to TrainConfig without deciding about it does
    train_with_foo = create_model("TrainWithFoo", __base__=TrainConfig, foo=(int, 0))
    config_with_foo = create_model("ConfigWithFoo", __base__=Config, train=(train_with_foo, train_with_foo()))
    problems = undecided(config_with_foo, DECIDED, tmp_path)
    assert len(problems) == 1 and problems[0].startswith("train.foo is a new config key") and "it enters train now" in problems[0]
    # decided: it enters the models' fingerprint (by itself: the section is covered, minus the exclusions)
    assert undecided(config_with_foo, {**DECIDED, "train.foo": {TRAIN}}, tmp_path) == []


def test_kernels_get_every_value_resolved_from_the_config_and_the_spec_pickles(tmp_path: Path):
    # defaults live in the config model only: the kernels' spec has none of its own to drift from it
    for spec_class in (GroupSpec, AutoMLSpec):
        with_default = [f.name for f in fields(spec_class) if f.default is not MISSING or f.default_factory is not MISSING]
        assert not with_default, f"{spec_class.__name__} has defaults for {with_default}: pass them from the config"
    config = config_from_dict(BASE, tmp_path)
    manifest = {"axis": {"kind": "fixed", "step": 7 * 86_400 * 10**9, "offset": 0, "label": "W-THU", "season_length": 52}}
    spec = group_spec(config, manifest)
    defaults = AutoMLConfig()
    assert spec.automl.evidence == defaults.evidence == 2.0 and spec.automl.reference == defaults.reference == "ensemble"
    assert spec.automl.blend is defaults.pooling.blend is True  # from train.automl.pooling
    assert {f.name: getattr(spec.automl, f.name) for f in fields(AutoMLSpec) if f.name not in ("space", "blend")} == {
        name: tuple(value) if isinstance(value, list) else value for name, value in defaults.model_dump().items() if name in {f.name for f in fields(AutoMLSpec)}
    }
    assert spec.automl.space == cache.search_space_fingerprint(config)
    assert pickle.loads(pickle.dumps(spec)) == spec  # sent to process pools and Dask workers
    with pytest.raises(KeyError):
        AutoMLSpec.of({"enabled": True}, space="x")  # no silent default for a value the config did not give


def _counts(result) -> tuple[int, int]:
    return result.trained, result.reused


def test_a_data_key_a_model_is_built_from_retrains_it_and_moving_the_input_does_not(tmp_path: Path):
    small_table(groups=("a", "b", "c")).to_csv(tmp_path / "d.csv", index=False)
    config = load_config(small_config(tmp_path, "d.csv"))
    assert _counts(mm.run(config).train) == (3, 0)
    # price stops being a known-future column: the partitions keep it, but every model used it as a feature
    without_price = config.with_overrides(["data.known_future_columns=[]"])
    result = mm.run(without_price)
    assert _counts(result.train) == (3, 0), "models fitted with price as a feature were reused without it"
    store = Datastore(config.datastore)
    key = store.read_split_groups()["key"][0]
    assert store.read_model_meta(key, 2)["info"]["features"]["numeric_exog"] == []
    # the same rows under another name: the split reads them again, and every model is reused
    shutil.copy(tmp_path / "d.csv", tmp_path / "moved.csv")
    moved = without_price.with_overrides([f"data.path={tmp_path / 'moved.csv'}"])
    result = mm.run(moved)
    assert not result.split.reused and _counts(result.train) == (0, 3)
    assert pd.read_csv(store.output_path("forecasting_output.csv"))["Prediction"].notna().all()


def test_switching_the_cutoff_to_per_series_splits_again_and_keeps_the_models_whose_rows_did_not_change(tmp_path: Path):
    from .test_split_per_series import ragged

    ragged().to_csv(tmp_path / "d.csv", index=False)  # a, b and d end before c; a and b have future rows
    config = load_config(small_config(tmp_path, "d.csv"))  # train_end: auto
    first = mm.run(config)
    assert first.exit_code == 0 and first.forecast.n_rows == 4  # one global cutoff: only c's future is forecast
    per_series = config.with_overrides(["split.train_end=per_series"])  # a new value of a decided key: no DECIDED entry
    assert cache.config_fingerprint(per_series, cache.SPLIT) != cache.config_fingerprint(config, cache.SPLIT)
    assert cache.config_fingerprint(per_series, cache.TRAIN) == cache.config_fingerprint(config, cache.TRAIN)
    result = mm.run(per_series)
    assert not result.split.reused and "config changed" in result.split.reason
    # every series trained on all its targets either way: same partitions, every model reused
    assert _counts(result.train) == (0, 4)
    # c's forecast is reused; a and b are forecast from their own ends; d has no row after its end
    assert (result.forecast.forecast, result.forecast.reused, result.forecast.n_rows) == (2, 1, 11)
    assert mm.run(per_series).split.reused
    back = mm.run(config)
    assert not back.split.reused and back.forecast.n_rows == 4
