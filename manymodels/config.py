"""YAML config -> validated, frozen objects.

Unknown keys, wrong types and impossible values fail here, at load time, with
the key path and a hint (``train.automl.metric: must be one of mape, smape, ...``),
not deep inside a step. Relative paths are relative to the config file, so a
config works from any working directory (and from cron).

A new key enters the fingerprints of the section it is added to by itself
(``cache.Coverage``: whole sections minus an explicit exclude list), so
changing it redoes what it may change; tests/test_fingerprints.py makes the
author decide whether that is right. Defaults are written here only: the
kernels receive resolved values (``kernels.GroupSpec``, ``kernels.AutoMLSpec``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, did_you_mean

CANDIDATES = ("ensemble", "lightgbm", "linear", "naive", "seasonal_naive", "mean", "moving_average")
# per-series statistical models (core/statistical.py, the 'stats' extra): chosen by 'candidates: auto', or by name
STATISTICAL_CANDIDATES = ("ets", "theta", "arima", "mstl", "croston", "tsb", "adida", "imapa")
ALL_CANDIDATES = CANDIDATES + STATISTICAL_CANDIDATES
# what an ensemble may average: every candidate but itself and the baselines (an average with naive is a
# shrinkage the calibration already does)
ENSEMBLE_MEMBERS = ("lightgbm", "linear") + STATISTICAL_CANDIDATES
METRICS = ("mape", "smape", "wape", "rmse", "mase")
TRAIN_END_MODES = ("auto", "per_series")
TRAIN_END_CHOICES = "use auto, per_series, an ISO date like 1992-05-28, or a period number"


def driver_columns(k: int) -> list[str]:
    """The columns forecast.explain adds: the base, then each driver's name and effect (target units)."""
    return ["driver_base", *[c for i in range(1, k + 1) for c in (f"driver_{i}", f"driver_{i}_effect")]] if k else []


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    path: str | list[str]
    time_column: str
    target_column: str
    group_columns: list[str] = Field(min_length=1)
    series_columns: list[str] | None = None
    known_future_columns: list[str] = []
    drop_columns: list[str] = []
    frequency: str | None = None
    time_format: str | None = None
    season_length: int | None = Field(default=None, ge=1)

    @field_validator("group_columns", "known_future_columns", "drop_columns")
    @classmethod
    def _no_duplicates(cls, columns: list[str]) -> list[str]:
        seen = [c for i, c in enumerate(columns) if c in columns[:i]]
        if seen:
            raise ValueError(f"column listed twice: {seen[0]!r}")
        return columns

    @model_validator(mode="after")
    def _roles_do_not_overlap(self) -> DataConfig:
        special = {self.time_column: "time_column", self.target_column: "target_column"}
        for role in ("group_columns", "known_future_columns", "drop_columns"):
            for column in getattr(self, role):
                if column in special:
                    raise ValueError(f"{role} contains {column!r}, which is the {special[column]}")
        for column in self.known_future_columns:
            if column in self.group_columns:
                raise ValueError(f"known_future_columns contains the group column {column!r}")
        for column in self.drop_columns:
            if column in self.group_columns or column in self.known_future_columns:
                raise ValueError(f"drop_columns contains {column!r}, which is used as a group or known-future column")
        if self.time_column == self.target_column:
            raise ValueError("time_column and target_column are the same column")
        return self

    @property
    def series_key(self) -> list[str]:
        """Columns identifying a series: the group columns plus any finer ones."""
        extra = [c for c in (self.series_columns or []) if c not in self.group_columns]
        return list(self.group_columns) + extra


class SplitConfig(_Section):
    # auto (one cutoff: the last time with a target anywhere), per_series (each series' own last
    # target), or an explicit date / period number; see steps/split.py
    train_end: str | int = "auto"
    holdout: int | None = Field(default=None, ge=1)

    @field_validator("train_end", mode="before")
    @classmethod
    def _parse_train_end(cls, value: Any) -> str | int:
        if isinstance(value, bool):
            raise ValueError(f"not a date or period: {value!r} ({TRAIN_END_CHOICES})")
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text in TRAIN_END_MODES:
                return text
            if text.lstrip("-").isdigit():
                return int(text)
            try:
                dt.datetime.fromisoformat(text)
            except ValueError:
                near = did_you_mean(text, TRAIN_END_MODES)  # 'per-series', 'Auto'
                raise ValueError(f"not a date: {value!r} ({TRAIN_END_CHOICES})" + (f".{near}" if near else "")) from None
            return text
        raise ValueError(f"not a date or period: {value!r} ({TRAIN_END_CHOICES})")

    @model_validator(mode="after")
    def _one_cutoff_mode(self) -> SplitConfig:
        if self.holdout is not None and self.train_end != "auto":
            raise ValueError("set either train_end or holdout, not both (holdout puts the last N periods of each series in inference)")
        return self


class FeaturesConfig(_Section):
    lags: Literal["auto"] | list[int] = "auto"
    windows: Literal["auto"] | list[int] = "auto"
    calendar: bool = True
    target_transform: Literal["auto", "none", "log1p"] = "auto"

    @field_validator("lags")
    @classmethod
    def _positive_lags(cls, lags: Any) -> Any:
        if isinstance(lags, list) and any(lag < 1 for lag in lags):
            raise ValueError("lags must be >= 1 (lag 0 would be the value being forecast)")
        return lags

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: Any) -> Any:
        if isinstance(windows, list) and any(w < 2 for w in windows):
            raise ValueError("rolling windows must be >= 2")
        return windows


POOLING_LEVEL_CHOICES = "write auto, none, or a list of levels, each a list of group columns ([] is one model over every series)"


class PoolingConfig(_Section):
    """Pooled candidates: one LightGBM model fitted on the rows of many groups' series together."""

    # auto (the default): each group column alone (when there are two or more) and [] (one model
    # over all series); none: local candidates only; or a list of levels, each a list of group
    # columns. Each group still chooses on its own backtest evidence, so a pool that does not help
    # is not chosen (Dominick's 12 rounds 34.08% against 37.27% local; M3 the same; hospital MASE
    # 0.757 against 0.760; README)
    levels: Literal["auto", "none"] | list[list[str]] = "auto"
    min_groups: int = Field(default=30, ge=2)  # a pool of fewer groups is not fitted (too few blocks to judge it by)
    # Optuna trials per pool (once, on the pool; retune decides when again). 0 (the default): LightGBM's
    # defaults, which a pool's thousands of rows suit; on Dominick's the 10-trial search cost 3x round 1's
    # time for a worse score, and on M3 5x the run's time for no pool chosen (README)
    n_trials: int = Field(default=0, ge=0)
    timeout: float | None = Field(default=300.0, gt=0)  # seconds for one pool's search
    # also score each group on the average of its local model and every pool it belongs to
    # (pooling.BLEND): the guard against one shared model misjudging a week for all its series
    blend: bool = True
    # a pool's model is its LightGBM averaged with a ridge over the same rows (as the local ensemble):
    # trees cannot extrapolate a price or promotion response the ridge carries
    linear: bool = True

    @field_validator("levels")
    @classmethod
    def _distinct_levels(cls, levels: Any) -> Any:
        if isinstance(levels, str):
            return levels
        out = []
        for level in levels:
            if len(set(level)) != len(level):
                raise ValueError(f"level {level} names a column twice")
            if sorted(level) not in [sorted(x) for x in out]:
                out.append(list(level))
        return out


class WarmStartConfig(_Section):
    """Shared tuning for local LightGBM: a sample of groups is searched in full first, and their
    winning parameters seed a short search of every other group (sample 0: each group alone)."""

    # groups searched in full when more than twice as many are searched; 0 (the default: on Dominick's
    # the seeded searches were 1.6x faster and 0.45 MAPE points worse, README) searches each group alone
    sample: int = Field(default=0, ge=0)
    n_trials: int = Field(default=5, ge=1)  # trials of every other group, its seeds among them


class AutoMLConfig(_Section):
    enabled: bool = True
    # auto: chosen per group from its series' demand class, length, season and known-future columns
    candidates: Literal["auto"] | list[Literal[ALL_CANDIDATES]] = "auto"  # type: ignore[valid-type]
    # auto: per group, the first family with two members among its candidates: lightgbm + linear,
    # else the continuous statistical models (ets, theta, arima, mstl), else the Croston family
    ensemble: Literal["auto"] | list[Literal[ENSEMBLE_MEMBERS]] = "auto"  # type: ignore[valid-type]
    n_trials: int = Field(default=20, ge=0)
    # the search of a group stops after this many trials in a row without a better backtest
    # than its best so far (null: every trial); on ~100 rows a group the late trials fit noise
    patience: int | None = Field(default=5, ge=1)
    folds: int = Field(default=3, ge=1)
    metric: Literal[METRICS] = "wape"  # type: ignore[valid-type]
    timeout_per_group: float | None = Field(default=10.0, gt=0)
    timeout_total: float | None = Field(default=None, gt=0)
    # on_drift: search again only the groups the realised accuracy flagged (accuracy.drift_*), refit the others' decision
    retune: Literal["always", "if_changed", "never", "on_drift"] = "if_changed"
    reference: Literal[ALL_CANDIDATES] | None = "ensemble"  # type: ignore[valid-type]
    evidence: float = Field(default=2.0, ge=0)
    calibrate: bool = True
    pooling: PoolingConfig = PoolingConfig()
    warm_start: WarmStartConfig = WarmStartConfig()

    @field_validator("candidates", "ensemble")
    @classmethod
    def _some_candidates(cls, candidates: str | list[str]) -> str | list[str]:
        if candidates == "auto":
            return candidates
        if not candidates:
            raise ValueError("list at least one candidate (or write auto)")
        return list(dict.fromkeys(candidates))

    @model_validator(mode="after")
    def _ensemble_has_members(self) -> AutoMLConfig:
        if self.ensemble != "auto" and len(self.ensemble) < 2:
            raise ValueError("ensemble averages at least two candidates: list two or more, or write auto")
        if self.candidates == "auto" or "ensemble" not in self.candidates:
            return self
        listed = [c for c in self.candidates if c in ENSEMBLE_MEMBERS]
        if self.ensemble != "auto":
            missing = [m for m in self.ensemble if m not in self.candidates]
            if missing:
                raise ValueError(f"ensemble averages {', '.join(self.ensemble)}: add {', '.join(missing)} to candidates, or drop ensemble")
        elif len(listed) < 2:
            raise ValueError("candidate ensemble averages two or more of lightgbm, linear and the statistical candidates (ets, theta...): list two, or drop ensemble")
        return self

    def candidate_names(self) -> list[str]:
        """Every candidate a group may be scored on: the list, or all of them under auto."""
        return list(ALL_CANDIDATES) if self.candidates == "auto" else list(self.candidates)


class TrainConfig(_Section):
    horizon: int = Field(default=20, ge=1)
    min_history: int = Field(default=4, ge=1)
    params: dict[str, Any] = {}
    num_boost_round: int = Field(default=300, ge=1)
    features: FeaturesConfig = FeaturesConfig()
    automl: AutoMLConfig = AutoMLConfig()
    seed: int = 0

    @field_validator("params")
    @classmethod
    def _known_lightgbm_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        known = _lightgbm_param_names()
        for name in params if known else ():
            if name not in known:
                raise ValueError(f"unknown LightGBM parameter {name!r}.{did_you_mean(name, known)}")
        return params


class ForecastConfig(_Section):
    prediction_column: str = Field(default="Prediction", min_length=1)
    quantiles: list[float] = []
    # forecasts above cap_factor x a series' largest training value (signed targets: outside
    # its training range widened by cap_factor - 1 ranges) are capped there and reported; null: off
    cap_factor: float | None = Field(default=10.0, gt=1.0)
    # top K drivers of each forecast row (driver_1, driver_1_effect, ... in target units); 0: none
    explain: int = Field(default=0, ge=0, le=20)

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, quantiles: list[float]) -> list[float]:
        for q in quantiles:
            if not 0.0 < q < 1.0:
                raise ValueError(f"quantile {q} is not between 0 and 1 (exclusive)")
        return sorted(set(quantiles))


class EngineConfig(_Section):
    kind: Literal["serial", "local", "dask"] = "local"
    jobs: int | None = Field(default=None, ge=1)
    scheduler: str | None = None
    # seconds the dask engine waits for its scheduler and a first worker before it gives up (a
    # nightly run against a cluster that is down fails after this long, naming the address)
    connect_timeout: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _dask_needs_scheduler(self) -> EngineConfig:
        if self.kind == "dask" and not self.scheduler:
            raise ValueError("kind dask needs scheduler: tcp://HOST:PORT of a running 'dask scheduler'")
        return self


class RegistryConfig(_Section):
    keep_versions: int = Field(default=5, ge=1)


class MlflowConfig(_Section):
    uri: str | None = None
    experiment: str = Field(default="manymodels", min_length=1)
    log_report: bool = True
    # mm export --format onnx registers each group's ONNX model as '<name>-<group key>' and a
    # router forecasting any group as '<name>' in MLflow's model registry; null: nothing registered
    registered_model: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")


class TrackingConfig(_Section):
    """Where runs are logged (optional; never part of any fingerprint: tracking changes no model)."""

    mlflow: MlflowConfig = MlflowConfig()


class ServeConfig(_Section):
    """mm serve (never part of any fingerprint: serving reads the datastore and writes nothing)."""

    # groups whose model (booster parsed), history and stored forecast stay in memory, least recently used out
    cache_size: int = Field(default=1000, ge=1)
    # how often the server looks for a newer finished train or forecast run (one folder listing)
    refresh_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # a larger request body gets 413
    max_groups: int = Field(default=1000, ge=1)  # groups in one request; more gets 413


class AccuracyConfig(_Section):
    """Realised accuracy (mm accuracy; in mm run after the split): never part of a fingerprint,
    it scores what was stored and decides only when train.automl.retune: on_drift searches again."""

    enabled: bool = True  # mm run scores the stored forecasts after each split
    # drift: the error over a group's last drift_window scored periods > drift_factor x its backtest error
    drift_window: int = Field(default=4, ge=1)
    drift_factor: float = Field(default=2.0, gt=1.0)


HIERARCHY_METHODS = ("bottom_up", "top_down", "middle_out", "ols", "wls_struct", "wls_var", "mint_shrink")  # core.reconcile.METHODS
TOP_DOWN_RULES = ("average_proportions", "proportion_averages", "forecast_proportions")  # core.reconcile.TOP_DOWN_RULES
AGGREGATION_RULES = ("sum", "mean", "max", "first")
ALL_NODES = "__all__"  # the value of a group column a node sums over (steps/aggregate.py)


class HierarchyConfig(_Section):
    """Forecasts that add up (steps/aggregate.py builds the nodes, steps/reconcile.py reconciles).

    ``levels: null`` (the default) is no hierarchy. Checked against ``data`` in Config."""

    # aggregate levels, each a list of group columns ([] the total); the bottom is data.group_columns
    levels: list[list[str]] | None = None
    # how each known-future column aggregates into a node (default mean; 'first' for text columns)
    aggregate: dict[str, Literal[AGGREGATION_RULES]] = {}  # type: ignore[valid-type]
    # a bottom series without a target in a period it spans makes its nodes' target missing there; zero: counts as 0
    missing: Literal["missing", "zero"] = "missing"
    # mint_shrink: the most even across tourism_au and Dominick's (README, 'Hierarchical forecasting')
    method: Literal[HIERARCHY_METHODS] = "mint_shrink"  # type: ignore[valid-type]
    top_down_rule: Literal[TOP_DOWN_RULES] = "forecast_proportions"  # type: ignore[valid-type]
    middle_level: list[str] | None = None  # middle_out: the level it starts from (one of levels)
    nonnegative: bool = False
    # Azure's cheaper mode: train and forecast only this level's nodes (one of levels, or the bottom);
    # levels above are sums, levels below split by top_down_rule's historical proportions
    train_level: list[str] | None = None
    # wls_var and mint_shrink weigh nodes by their backtest's out-of-sample errors (kept by train), or
    # by their models' in-sample errors (forecast again from the stored models): README, "Which method"
    errors: Literal["backtest", "in_sample"] = "backtest"

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: list[list[str]] | None) -> list[list[str]] | None:
        if levels is None:
            return None
        if not levels:
            raise ValueError("list at least one level ([] is the total), or write null for no hierarchy")
        seen: list[frozenset] = []
        for level in levels:
            if len(set(level)) < len(level):
                raise ValueError(f"level {level}: a column appears twice")
            if frozenset(level) in seen:
                raise ValueError(f"level {level} is listed twice")
            seen.append(frozenset(level))
        return levels

    def trains(self, group_columns: list[str], values) -> bool:
        """Whether the node with these group values (a list in group-column order, ALL_NODES
        where it sums over a column) is trained: every node, or only train_level's."""
        if self.levels is None or self.train_level is None:
            return True
        present = {c for c, v in zip(group_columns, values) if str(v) != ALL_NODES}
        return present == set(self.train_level)

    def aggregate_levels(self, group_columns: list[str]) -> list[list[str]]:
        """The levels above the bottom (the bottom, if listed, is dropped), in the order given."""
        return [list(level) for level in self.levels or [] if set(level) != set(group_columns)]


class Config(_Section):
    datastore: str
    data: DataConfig
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    forecast: ForecastConfig = ForecastConfig()
    engine: EngineConfig = EngineConfig()
    registry: RegistryConfig = RegistryConfig()
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig = ServeConfig()
    accuracy: AccuracyConfig = AccuracyConfig()
    hierarchy: HierarchyConfig = HierarchyConfig()
    allow_reuse: bool = True
    # Where the config was read from; not a user key.
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _prediction_column_is_new(self) -> Config:
        if self.forecast.prediction_column in (self.data.target_column, self.data.time_column):
            raise ValueError(
                f"forecast.prediction_column {self.forecast.prediction_column!r} would overwrite an input column"
            )
        return self

    @model_validator(mode="after")
    def _pooling_levels_are_group_columns(self) -> Config:
        levels = self.train.automl.pooling.levels
        for level in levels if isinstance(levels, list) else ():
            unknown = [c for c in level if c not in self.data.group_columns]
            if unknown:
                raise ValueError(
                    f"train.automl.pooling.levels: level {level} names {', '.join(unknown)}, which is not a group column "
                    f"(data.group_columns: {', '.join(self.data.group_columns)}); a pool is a set of whole groups"
                )
            if sorted(level) == sorted(self.data.group_columns):
                raise ValueError(f"train.automl.pooling.levels: level {level} is every group column: each pool would be one group (its own local model)")
        return self

    @model_validator(mode="after")
    def _hierarchy_fits_the_data(self) -> Config:
        h, d = self.hierarchy, self.data
        if h.levels is None:  # no hierarchy: the other keys are not used
            return self
        groups = list(d.group_columns)
        if d.series_key != groups:
            raise ValueError(
                f"hierarchy: the bottom level is data.group_columns {groups}, which does not identify the series "
                f"(data.series_columns adds {[c for c in d.series_key if c not in groups]}): add those columns to data.group_columns"
            )
        for i, level in enumerate(h.levels):
            for column in level:
                if column not in groups:
                    raise ValueError(
                        f"hierarchy.levels.{i}: unknown column {column!r}: a level sums over data.group_columns ({', '.join(groups)})."
                        f"{did_you_mean(column, groups)}"
                    )
        for column in h.aggregate:
            if column not in d.known_future_columns:
                raise ValueError(f"hierarchy.aggregate.{column}: not a known-future column ({', '.join(d.known_future_columns) or 'none'}).{did_you_mean(column, d.known_future_columns)}")
        aggregate = [sorted(level) for level in h.aggregate_levels(groups)]
        if h.middle_level is not None and sorted(h.middle_level) not in aggregate + [sorted(groups)]:
            raise ValueError(f"hierarchy.middle_level: {h.middle_level} is not one of hierarchy.levels")
        if h.method == "middle_out" and h.middle_level is None:
            raise ValueError("hierarchy.middle_level: method middle_out needs the level it starts from, e.g. middle_level: [State]")
        if h.method == "top_down" and [] not in aggregate:
            raise ValueError("hierarchy.method: top_down splits the total: add [] (the total) to hierarchy.levels")
        if h.train_level is not None:
            if sorted(h.train_level) not in aggregate + [sorted(groups)]:
                raise ValueError(f"hierarchy.train_level: {h.train_level} is not one of hierarchy.levels {h.levels} or the bottom {groups}")
            if sorted(h.train_level) != sorted(groups) and h.top_down_rule == "forecast_proportions":
                raise ValueError(
                    f"hierarchy.top_down_rule: with train_level {h.train_level} the levels below it have no forecasts to take "
                    "proportions from (forecast_proportions): set average_proportions or proportion_averages (from the histories)"
                )
        return self

    def added_output_columns(self) -> list[str]:
        """The columns mm adds to forecasting_output.csv: no input column may have one of these names."""
        p = self.forecast.prediction_column
        return [p, *(f"{p}_q{q * 100:g}" for q in self.forecast.quantiles), *driver_columns(self.forecast.explain), "model_version", "run_id"]

    def sections(self, *sections: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The named sections (``'data'``, ``'train.automl'``...) as plain values, keyed by name,
        without the ``exclude`` keys (dotted paths inside them, e.g. ``'train.automl.retune'``)."""
        dumped = self.model_dump(mode="json")
        picked = {dotted: _node(dumped, dotted) for dotted in sections}
        for dotted in exclude:
            section = next((s for s in sections if dotted.startswith(s + ".")), None)
            if section is None:
                raise KeyError(f"{dotted} is not inside any of {sections}")
            *parents, name = dotted[len(section) + 1 :].split(".")
            node = picked[section]
            for part in parents:
                node = node[part]
            del node[name]  # a KeyError for a key that does not exist: an exclusion cannot silently go stale
        return picked

    def section_fingerprint(self, *sections: str, exclude: Iterable[str] = ()) -> str:
        """A stable hash of the named config sections, minus the ``exclude`` keys (see ``sections``)."""
        blob = json.dumps(self.sections(*sections, exclude=exclude), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, overrides: list[str]) -> Config:
        """A new config with ``key.path=value`` overrides applied and validated."""
        raw = self.model_dump(mode="json")
        raw = apply_overrides(raw, overrides)
        return _validate(raw, self.source or "<config>", base_dir=None, source=self.source)


def _node(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file. Raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "pass the path of a YAML config with -c, e.g. -c configs/oj_sales.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (line {line})", "save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader: plain data only, never objects
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = "keep one of the two (YAML would silently use the last)" if "appears twice" in problem else "check indentation and quoting around that line"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}", hint) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of keys (datastore, data, split, train, ...), not a {type(raw).__name__}",
            "write 'key: value' lines, as in configs/oj_sales.yaml and README 'Config reference'",
        )
    raw = apply_overrides(raw, overrides or [])
    return _validate(raw, str(path), base_dir=path.resolve().parent, source=str(path))


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key written twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # '<<: *defaults' may be overridden by the keys beside it
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same section (first at line {seen[key].start_mark.line + 1})", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def config_from_dict(raw: dict[str, Any], base_dir: str | Path = ".", overrides: list[str] | None = None) -> Config:
    """A validated config from a mapping (paths relative to ``base_dir``), for scripts."""
    raw = apply_overrides(raw, overrides or [])
    return _validate(raw, "<dict config>", base_dir=Path(base_dir).resolve(), source=None)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; the value is parsed as YAML (``3``, ``[a, b]``, ``null``)."""
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, dates as strings
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.horizon=8")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if isinstance(value, (dt.date, dt.datetime)):
            value = value.isoformat()
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _validate(raw: dict[str, Any], origin: str, base_dir: Path | None, source: str | None) -> Config:
    if base_dir is not None:
        raw = _resolve_paths(raw, base_dir)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors()]
        raise ConfigError(
            f"{origin}: invalid config:\n  - " + "\n  - ".join(lines),
            "fix the keys above in the YAML file or the --set option; see README 'Config reference'",
        ) from None
    return config.model_copy(update={"source": source})


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or "://" in value:
            return value
        expanded = os.path.expanduser(value)
        return expanded if os.path.isabs(expanded) else os.path.normpath(str(base_dir / expanded))

    if "datastore" in raw:
        raw["datastore"] = resolve(raw["datastore"])
    tracking = raw.get("tracking")
    mlflow = tracking.get("mlflow") if isinstance(tracking, dict) else None
    if isinstance(mlflow, dict) and isinstance(mlflow.get("uri"), str) and mlflow["uri"] != "databricks":
        mlflow["uri"] = resolve(mlflow["uri"])  # a plain folder is a local MLflow file store
    data = raw.get("data")
    if isinstance(data, dict) and "path" in data:
        path = data["path"]
        data["path"] = [resolve(p) for p in path] if isinstance(path, list) else resolve(path)
    return raw


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    # pydantic reports which branch of a union failed ('str', 'int', 'literal[...]'); drop that noise
    loc = [p for p in loc if not (p in {"str", "int", "float", "list[int]", "bool"} or p.startswith("literal["))]
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        parent, name = loc[:-1], loc[-1]
        hint = did_you_mean(name, _allowed_keys(parent))
        return f"{key}: unknown key.{hint}"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    got = error.get("input")
    if kind != "value_error" and not isinstance(got, dict):
        message = f"{message} (got {got!r})"
    if not loc and message.split(":", 1)[0].replace(".", "").replace("_", "").isalnum():
        return message  # a check across sections names its own key path ('hierarchy.levels.0: ...')
    return f"{key}: {message}"


def _allowed_keys(parent: list[str]) -> list[str]:
    model: Any = Config
    for part in parent:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return [name for name in model.model_fields if name != "source"]


_LGB_PARAMS: frozenset[str] | None = None


def _lightgbm_param_names() -> frozenset[str]:
    """Every LightGBM parameter name and alias, as LightGBM's own C API lists them.

    Empty when this LightGBM does not expose the list (then names are not checked
    here and LightGBM itself warns about unknown ones)."""
    global _LGB_PARAMS
    if _LGB_PARAMS is None:
        names: set[str] = set()
        try:
            from lightgbm.basic import _ConfigAliases

            for main, aliases in _ConfigAliases._get_all_param_aliases().items():
                names.add(main)
                names.update(aliases)
        except Exception:  # private API: tolerate its absence in other LightGBM versions
            names = set()
        _LGB_PARAMS = frozenset(names)
    return _LGB_PARAMS
