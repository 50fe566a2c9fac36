"""Pure per-group kernels: ``fit_group`` and ``forecast_group``.

They take plain data (a partition frame and a ``GroupSpec``) and return plain
results: no file paths, no console, no globals. They run unchanged in the
serial engine, a process pool or a Dask worker. A group's failure is a result
(``status='failed'`` with a reason), never an exception that stops the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from .._version import __version__
from . import automl, pooling, statistical
from .features import FeatureSpec, build_panel, series_labels_of
from .metrics import mase_scale
from .models import (
    BASELINES,
    Fitted,
    GroupData,
    average,
    default_lightgbm_params,
    fit_baseline,
    fit_lightgbm,
    fit_statistical,
    make_ensemble,
    predict,
    predict_statistical,
)
from .timeindex import TimeAxis


@dataclass(frozen=True)
class GroupSpec:
    """Everything a kernel needs to know about the columns and the modelling config."""

    group_columns: tuple[str, ...]
    series_columns: tuple[str, ...]  # finer than the group (empty: one series per group)
    time_column: str
    target_column: str
    period_column: str
    known_future_columns: tuple[str, ...]
    axis: dict
    horizon: int
    min_history: int
    lags: Any
    windows: Any
    calendar: bool
    target_transform: str
    params: dict
    num_boost_round: int
    automl: AutoMLSpec
    quantiles: tuple[float, ...]
    seed: int

    @property
    def time_axis(self) -> TimeAxis:
        return TimeAxis.from_dict(self.axis)


@dataclass(frozen=True)
class AutoMLSpec:
    """train.automl as the kernels read it. No defaults here: every value comes resolved from the config."""

    enabled: bool
    candidates: tuple[str, ...] | str  # a tuple, or "auto"
    ensemble: tuple[str, ...] | str  # a tuple, or "auto"
    n_trials: int
    patience: int | None
    folds: int
    metric: str
    timeout_per_group: float | None
    reference: str | None
    evidence: float
    calibrate: bool
    space: str  # cache.search_space_fingerprint: a stored decision made under another one is searched again
    blend: bool  # train.automl.pooling.blend: a group with pools is scored on its blend too

    @classmethod
    def of(cls, settings: dict, space: str) -> AutoMLSpec:
        """From the config's train.automl values (``AutoMLConfig.model_dump()``); a missing one is a KeyError."""
        values = {f.name: settings[f.name] for f in fields(cls) if f.name not in ("space", "blend")}
        listed = {k: v if v == "auto" else tuple(v) for k, v in values.items() if k in ("candidates", "ensemble")}
        return cls(**{**values, **listed}, space=space, blend=bool(settings["pooling"]["blend"]))


class GroupFailure(Exception):
    """A group cannot be modelled; ``code`` is the short reason in training_output."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# -- preparing a group -------------------------------------------------------

def _exog_kinds(frame: pd.DataFrame, columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    numeric, categorical = [], []
    for c in columns:
        dtype = frame[c].dtype if c in frame else np.float64
        if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            numeric.append(c)
        else:
            categorical.append(c)
    return tuple(numeric), tuple(categorical)


def group_data(frame: pd.DataFrame, spec: GroupSpec, model_info: dict, target: np.ndarray) -> GroupData:
    axis = spec.time_axis
    fspec = FeatureSpec(**model_info["features"])
    panel = build_panel(
        frame,
        list(spec.series_columns),
        [tuple(s) for s in model_info["series"]],
        target,
        fspec.numeric_exog,
        fspec.categorical_exog,
        model_info["categories"],
        spec.time_column,
        spec.period_column,
        axis,
        fspec.calendar,
    )
    periods = panel.period
    return GroupData(
        panel=panel,
        spec=fspec,
        with_series=len(model_info["series"]) > 1,
        nonnegative=model_info["nonnegative"],
        first=int(periods.min()),
        last=int(periods.max()),
    )


def describe_group(frame: pd.DataFrame, spec: GroupSpec) -> dict:
    """What a model of this group is built on: its series, feature spec and categories."""
    numeric, categorical = _exog_kinds(frame, spec.known_future_columns)
    axis = spec.time_axis
    fspec = FeatureSpec.resolve(spec.lags, spec.windows, spec.calendar, numeric, categorical, axis.season_length)
    y = frame[spec.target_column].to_numpy(dtype=np.float64)
    categories = {c: sorted(frame[c].dropna().astype(str).unique().tolist()) for c in categorical}
    return {
        "series": [list(s) for s in series_labels_of(frame, list(spec.series_columns))],
        "features": {
            "lags": list(fspec.lags),
            "windows": list(fspec.windows),
            "calendar": fspec.calendar,
            "numeric_exog": list(fspec.numeric_exog),
            "categorical_exog": list(fspec.categorical_exog),
            "season_length": fspec.season_length,
        },
        "categories": categories,
        "nonnegative": bool(np.nanmin(y) >= 0) if np.any(~np.isnan(y)) else True,
    }


# -- fitting -----------------------------------------------------------------

def fit_group(frame: pd.DataFrame, spec: GroupSpec, stored: dict | None = None, tune: bool = True, deadline: float | None = None, pooled: dict[str, PoolInput] | None = None, seeds: Seeds | None = None) -> dict:
    """Fit one group's model.

    With AutoML, the *decision* (candidate chosen, LightGBM parameters,
    calibration) comes from a search over backtest folds when ``tune`` is True
    (or nothing is ``stored``); otherwise the ``stored`` decision of the
    group's previous model is refit on the current data: tune rarely, train
    often. ``deadline``: a ``time.time()`` after which no Optuna search starts.
    ``pooled``: the pools this group belongs to (``PoolInput``): a search scores each on the
    group's folds next to the local candidates (``meta['tuning']['pooled']``, for the step to
    choose with, see ``pooling``); a stored decision whose choice was a pool is that pool again.
    ``seeds``: a warm start for LightGBM's search (``Seeds``).
    Returns a plain dict; ``model_text`` holds the LightGBM booster, if any (``booster``: the
    same booster in memory).
    """
    started = time.perf_counter()
    profiles = series_profiles(frame, spec)
    klass = _main_class(profiles)
    try:
        result = _fit(frame, spec, stored, tune, deadline, profiles, pooled or {}, seeds)
        result["meta"]["demand_class"] = klass
        result["status"] = "trained"
        result["error"] = ""
    except GroupFailure as failure:
        result = {"status": "failed", "reason": failure.code, "error": str(failure)}
    except Exception as exc:  # one group's bug or bad data must not stop the others
        result = {"status": "failed", "reason": "error", "error": f"{type(exc).__name__}: {exc}"}
    result["demand_class"] = klass
    result["duration_s"] = round(time.perf_counter() - started, 4)
    return result


@dataclass(frozen=True)
class SeriesProfile:
    """What ``candidates: auto`` needs to know of one series: its demand class and length."""

    demand_class: str
    n_obs: int


def series_profiles(frame: pd.DataFrame, spec: GroupSpec) -> list[SeriesProfile]:
    """Each series' demand class (``statistical.demand_class``) and number of observed targets,
    in the order of first appearance; empty if it cannot be told (a label, never a failure)."""
    try:  # the class counts values, whatever their order: no sort needed
        y = frame[spec.target_column].to_numpy(dtype=np.float64)
        columns = list(spec.series_columns)
        if not columns:
            parts = [y]
        else:
            codes = frame.groupby(columns, sort=False, observed=True, dropna=False).ngroup().to_numpy()
            parts = [y[codes == c] for c in range(int(codes.max()) + 1)] if len(codes) else []
        return [SeriesProfile(statistical.demand_class(v), int(np.sum(~np.isnan(v)))) for v in parts]
    except Exception:
        return []


def _main_class(profiles: list[SeriesProfile]) -> str:
    """The group's demand class: its series' most common one (ties: the first series' order)."""
    classes = [p.demand_class for p in profiles]
    return max(dict.fromkeys(classes), key=classes.count) if classes else ""


def _fit(frame: pd.DataFrame, spec: GroupSpec, stored: dict | None, tune: bool, deadline: float | None, profiles: list[SeriesProfile], pooled: dict[str, PoolInput], seeds: Seeds | None = None) -> dict:
    y = frame[spec.target_column].to_numpy(dtype=np.float64)
    n_periods = int(frame.loc[~np.isnan(y), spec.period_column].nunique())
    if n_periods < spec.min_history:
        raise GroupFailure("too_short", f"too_short: {n_periods} periods with a target, train.min_history is {spec.min_history}")
    if np.sum(~np.isnan(y)) < 2 and not spec.automl.enabled:  # bagging would leave LightGBM no row at all
        raise GroupFailure("too_short", f"too_short: 1 row with a target; LightGBM needs at least 2 (train.min_history is {spec.min_history})")
    info = describe_group(frame, spec)
    data = group_data(frame, spec, info, y)
    all_rows = np.ones(len(y), dtype=bool)
    data.mase_scale = mase_scale(data.grid(all_rows), data.spec.season_length)
    candidates, choice_note = _candidates(spec, data, profiles)
    transform = target_transform(spec, data)
    out_of_time = deadline is not None and time.time() >= deadline
    if spec.automl.enabled and stored and stored.get("winner") in candidates and (not tune or out_of_time):
        decision = _stored_decision(stored, out_of_time)
        if decision.get("pooled_choice") in pooled:  # chosen a pool before: that pool's new fit, no local one
            return pooled_result(decision, decision["pooled_choice"], info, int(np.sum(~np.isnan(y))), choice_note)
        if not _blend_pools_present(decision, pooled):
            decision.pop("pooled_choice", None)  # its pool is gone (too few series now): the local model
    else:
        decision = _search(data, spec, candidates, transform, stored, tune and not out_of_time, deadline, seeds=seeds)
        local, folds = decision.pop(LOCAL)
        decision["pooled"] = _score_pools(pooled, decision, local, folds, data, spec, info, transform) if pooled else {}
    decision, final = _refit_or_fall_back(decision, data, all_rows, spec, candidates, transform, stored, deadline)
    note = "; ".join(n for n in (choice_note, decision.get("note", "")) if n)
    meta = {
        "kind": decision["winner"],
        "state": final.state,
        "info": info,
        "metrics": decision["metrics"],
        "candidate_scores": decision["scores"],
        "selection_metric": decision["metric"],
        "calibration": {"metric": decision["metric"], "factor": decision["calibration"]},
        "folds": decision["folds"],
        "residual_quantiles": decision["residual_quantiles"],
        "tuning": decision,
        "n_train_rows": int(np.sum(~np.isnan(y))),
        "mm_version": __version__,
        "lightgbm_version": lgb.__version__,
    }
    result = {
        "model": decision["winner"],
        "meta": meta,
        "model_text": final.booster.model_to_string() if final.booster is not None else None,
        # the booster's gain per feature, for the step's importance (which would parse model_text again)
        "gain": final.booster.feature_importance(importance_type="gain").tolist() if final.booster is not None else None,
        "booster": final.booster,  # the same, in memory, for the task's forecast of the group (tasks.stage_forecast)
        "metrics": decision["metrics"],
        "unscored": decision.get("unscored") or {},  # a decision stored by an older mm has none
        "n_backtest": decision.get("n_backtest", 0),
        "selection_metric": decision["metric"],
        "scores": decision["scores"],
        "n_trials": decision.get("n_trials", 0),
        "note": note,
        "candidate_errors": decision.get("candidate_errors") or {},
    }
    return as_blend(result) if decision.get("pooled_choice") == pooling.BLEND else result


def _blend_pools_present(decision: dict, pooled: dict) -> bool:
    """A stored blend is refit (its local model, averaged with its pools' new fits) while every
    pool it averages with still exists."""
    entry = (decision.get("pooled") or {}).get(pooling.BLEND)
    return decision.get("pooled_choice") == pooling.BLEND and entry is not None and all(m in pooled for m in entry["members"])


def as_blend(result: dict) -> dict:
    """A local fit's result as the blend of its decision (its local booster kept; the task, or the
    step's choice, adds the pools' refs: ``pooling.with_blend_refs``)."""
    entry = result["meta"]["tuning"]["pooled"][pooling.BLEND]
    meta = pooling.blend_record(result["meta"], entry)
    return {**result, "model": pooling.BLEND, "meta": meta, "metrics": meta["metrics"], "unscored": entry.get("unscored") or {}, "n_backtest": entry.get("n_backtest", 0)}


def _search(data: GroupData, spec: GroupSpec, candidates: list[str], transform: str, stored: dict | None, tune: bool, deadline: float | None, dropped: dict[str, str] | None = None, seeds: Seeds | None = None) -> dict:
    """Backtest every candidate, tune LightGBM, choose and calibrate: the decision to store.

    ``dropped``: candidates already known not to fit, with their reasons (left out)."""
    a = spec.automl
    folds = backtest_folds(data, spec.horizon, _n_folds(spec), _min_series_history(candidates))
    evaluated: dict[str, automl.Evaluation] = {}
    errors: dict[str, str] = dict(dropped or {})
    lightgbm: dict[str, Any] = {"n_trials": 0, "source": "config"}
    # without AutoML there is nothing to choose between: the metric only names the (one) score
    metric, metric_note = automl.selection_metric(a.metric, automl.fold_actuals(data, folds), data.mase_scale) if a.enabled else ("wape", "")
    members = ensemble_members(spec, candidates) if "ensemble" in candidates else []
    for kind in _evaluation_order(candidates):
        if kind == "ensemble" or kind in errors:
            continue
        try:  # a candidate that cannot fit is dropped from this group's choice, with its reason
            if kind == "lightgbm":
                params, lightgbm = _lightgbm_params(spec, data, folds, transform, stored, tune, deadline, seeds)
                evaluated[kind] = automl.evaluate_lightgbm(data, folds, params, transform, spec, lightgbm.pop("fold_models", None))
            elif kind in statistical.KINDS:
                if not statistical.available():
                    errors[kind] = STATS_MISSING
                    continue
                bar = _prune_bar(evaluated, metric, data, folds, kind in members) if kind in statistical.CONTINUOUS_KINDS else None
                evaluated[kind] = automl.evaluate_statistical(kind, data, folds, _statistical_params(data), bar)
            else:
                evaluated[kind] = automl.evaluate_baseline(kind, data, folds, _baseline_params(kind, spec, data, transform))
        except Exception as exc:
            if not a.enabled:
                raise  # no other candidate to fall back on: the group fails with this reason
            errors[kind] = _reason(exc)
    if "ensemble" in candidates and "ensemble" not in errors:
        lost = [m for m in members if m not in evaluated]
        if len(members) - len(lost) >= 2 and spec.automl.ensemble == "auto":
            members = [m for m in members if m in evaluated]  # auto: the average of the members that fit
        elif lost:
            errors["ensemble"] = f"its member {' and '.join(lost)} could not fit"
        if "ensemble" not in errors:
            evaluated["ensemble"] = automl.combine([evaluated[m] for m in members], ensemble_transform(members, transform))
    if not evaluated:
        raise GroupFailure("no_candidate", "no candidate could fit: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    calibrate = a.enabled and a.calibrate and len(folds) >= 2
    # calibration corrects the bias of a model fitted in the log space (it forecasts something
    # like the median, scored on the metric); on a raw-space model (the statistical ones) a factor
    # fitted on a few folds is noise: on M3 it scaled trending yearly forecasts by 0.7
    calibrated = {k: e.calibrated(metric) for k, e in evaluated.items() if calibrate and _forecast_space(k, e, members, transform) == "log1p"}
    judged = {k: calibrated.get(k, e) for k, e in evaluated.items()}
    order = [k for k in candidates if k in evaluated]
    winner = automl.pick_winner(judged, metric, order, _reference(spec, order), a.evidence if a.enabled else 0.0)
    chosen = evaluated[winner]
    chosen_members = members if winner == "ensemble" else [winner]
    return {
        "winner": winner,
        "members": chosen_members,
        "params": {m: evaluated[m].params for m in chosen_members if m in evaluated},
        "calibration": chosen.factor(metric) if winner in calibrated else 1.0,
        "metric": metric,
        "metrics": judged[winner].metrics(),
        "unscored": judged[winner].unscored(),  # backtest rows each metric could not score
        "n_backtest": judged[winner].n_rows(),
        "scores": {k: e.score(metric) for k, e in judged.items()},
        "residual_quantiles": _residual_quantiles(winner, chosen, members, transform, data, spec, folds),
        "backtest_errors": backtest_errors(judged[winner], folds, data),
        "folds": len(folds),
        "n_trials": lightgbm.get("n_trials", 0),
        "tuned": str(lightgbm.get("source", "")).startswith("tuned"),
        "source": SEARCHED + (f", LightGBM {lightgbm['source']}" if "lightgbm" in evaluated else ""),
        "space": a.space,
        "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "; ".join(n for n in (_search_note(folds, lightgbm), metric_note) if n),
        "candidate_errors": errors,
        LOCAL: (judged[winner], folds),  # what pools are scored against (_score_pools); never stored
    }


LOCAL = "_local"
SEARCHED = "searched"  # how a decision made in this fit starts its source (a row's tuning column)


@dataclass(frozen=True)
class PoolInput:
    """What a group's fit gets of one pool it belongs to: the pool's backtest rows of the group's
    series (None when the pool was refit without a backtest), with per pool series code the
    group's own label of that series, and the target transform the pool forecasts in."""

    backtest: pd.DataFrame | None
    own_labels: dict[int, tuple]
    transform: str
    calibration_prior: dict | None = None  # the pool's factor over all members (pooling.calibration_prior)


def _score_pools(pooled: dict[str, PoolInput], decision: dict, local: automl.Evaluation, folds: list, data: GroupData, spec: GroupSpec, info: dict, transform: str) -> dict:
    """Each pool scored on the group's own folds and rows: against its chosen local model (the
    relative block losses the step chooses by), and what the group's record needs if chosen;
    then the blend of the local model with every pool scored (``pooling.BLEND``)."""
    metric = decision["metric"]
    index = {tuple(label): i for i, label in enumerate(info["series"])}
    calibrate = spec.automl.calibrate and len(folds) >= 2
    origins = fold_origins(data, spec.horizon, len(folds))  # the cutoffs a pool's folds must meet
    out: dict[str, dict] = {}
    judged_pools: dict[str, automl.Evaluation] = {}
    for name, pool in pooled.items():
        if pool.backtest is None or not folds:
            decision["candidate_errors"][name] = "not scored: " + ("the group has no backtest fold" if not folds else "the pool was refit without a backtest")
            continue
        try:
            codes = {code: index[tuple(label)] for code, label in pool.own_labels.items() if tuple(label) in index}
            evaluation = pooling.pooled_evaluation(name, pool.backtest, data, folds, origins, codes)
        except ValueError as exc:
            decision["candidate_errors"][name] = str(exc)
            continue
        calibrated = calibrate and pool.transform == "log1p"  # as a local LightGBM in the log space
        priors, prior = pooling.member_priors(pool.calibration_prior, metric, origins)
        judged = evaluation.calibrated(metric, priors) if calibrated else evaluation
        judged_pools[name] = judged
        out[name] = _pooled_entry(judged, local, metric, spec, evaluation.factor(metric, prior=prior) if calibrated else 1.0, evaluation, pool.transform)
    scored = dict(judged_pools)
    if judged_pools and spec.automl.blend:
        space = pooling.blend_transform(_forecast_space(decision["winner"], local, decision.get("members") or [], transform), [pooled[n].transform for n in judged_pools], data.nonnegative)
        scored[pooling.BLEND] = blend = pooling.blend_evaluation(local, judged_pools, space)
        out[pooling.BLEND] = {**_pooled_entry(blend, local, metric, spec, 1.0, blend, space), "members": list(judged_pools), "pool_calibration": {n: out[n]["calibration"] for n in judged_pools}}
    decision["scores"].update({name: evaluation.score(metric) for name, evaluation in scored.items()})
    return out


def _pooled_entry(judged: automl.Evaluation, local: automl.Evaluation, metric: str, spec: GroupSpec, factor: float, raw: automl.Evaluation, transform: str) -> dict:
    """What a group's record keeps of a pooled candidate: its blocks against the local model
    (the choice), scores, calibration and quantile shifts (from the uncalibrated backtest)."""
    return {
        "diff": pooling.relative_block_losses(judged, local, metric).tolist(),
        "metrics": judged.metrics(),
        "unscored": judged.unscored(),
        "n_backtest": judged.n_rows(),
        "calibration": factor,
        "residual_quantiles": raw.residual_quantiles(spec.quantiles, transform),
        "transform": transform,
    }


def pooled_result(decision: dict, name: str, info: dict, n_train_rows: int, note: str = "") -> dict:
    """A group whose model is the pool ``name``: a record pointing to it (the task adds which
    version), with this group's own backtest scores, calibration and quantile shifts."""
    entry = (decision.get("pooled") or {}).get(name) or {}
    metric = decision["metric"]
    meta = {
        "kind": name,
        "state": {"pool": name, "transform": entry.get("transform", "none")},
        "info": info,
        "metrics": entry.get("metrics") or {},
        "candidate_scores": decision["scores"],
        "selection_metric": metric,
        "calibration": {"metric": metric, "factor": float(entry.get("calibration", 1.0))},
        "folds": decision["folds"],
        "residual_quantiles": entry.get("residual_quantiles") or {},
        "tuning": {**decision, "pooled_choice": name},
        "n_train_rows": n_train_rows,
        "mm_version": __version__,
        "lightgbm_version": lgb.__version__,
    }
    return {
        "model": name,
        "meta": meta,
        "model_text": None,
        "metrics": meta["metrics"],
        "unscored": entry.get("unscored") or {},
        "n_backtest": entry.get("n_backtest", 0),
        "selection_metric": metric,
        "scores": decision["scores"],
        "n_trials": 0,
        "note": "; ".join(n for n in (note, decision.get("note", "")) if n),
        "candidate_errors": decision.get("candidate_errors") or {},
    }


def _evaluation_order(candidates: list[str]) -> list[str]:
    """The others first, then the statistical models, which ``_prune_bar`` measures against them."""
    return [k for k in candidates if k not in statistical.KINDS] + [k for k in candidates if k in statistical.KINDS]


# A continuous statistical model (ets, theta, arima, mstl: the costly ones; the Croston family
# costs a fraction of a millisecond) more than PRUNE_RATIO times worse than the best model so far on the
# newest backtest window is not fitted on the older ones (dropped, with both scores) when that
# is safe: when the window covers at least PRUNE_MIN_SERIES series (over many series one window
# is evidence enough: on 7 of Dominick's 11 brands ETS scored 2.2-4.9 times the best MAPE there),
# or when the model is not a member of the group's ensemble (alone it must beat the reference
# by `evidence`, which one that far behind on the newest window almost never does). A member of
# the ensemble in a group of few series sees every window: one window of one series is noise.
PRUNE_RATIO = 1.5
PRUNE_MIN_SERIES = 10


def _prune_bar(evaluated: dict[str, automl.Evaluation], metric: str, data: GroupData, folds: list, ensemble_member: bool) -> automl.PruneBar | None:
    if len(folds) < 2:
        return None
    if ensemble_member and len(np.unique(data.panel.series[folds[0][1]])) < PRUNE_MIN_SERIES:
        return None
    # measured against models only: on intermittent demand a zero forecast (naive) can win WAPE
    # without being a forecast anyone could stock to, and must not prune the Croston family
    scored = {k: e.fold_score(metric, 0) for k, e in evaluated.items() if e.actual and k not in RULE_BASELINES}
    scored = {k: v for k, v in scored.items() if math.isfinite(v)}
    if not scored:
        return None
    best = min(scored, key=scored.get)
    return automl.PruneBar(metric, PRUNE_RATIO * scored[best], best, scored[best])


RULE_BASELINES = tuple(k for k in BASELINES if k != "linear")  # the baselines that are rules, not fitted models


def _residual_quantiles(winner: str, chosen: automl.Evaluation, members: list[str], transform: str, data: GroupData, spec: GroupSpec, folds: list) -> dict[str, float]:
    """The quantile shifts stored with the decision: none for a statistical model (its own
    intervals), the backtest residuals', or without a fold the history's spread."""
    if winner in statistical.KINDS:
        return {}
    space = _forecast_space(winner, chosen, members, transform)
    return chosen.residual_quantiles(spec.quantiles, space) if folds else automl.spread_quantiles(data.panel.y, spec.quantiles, space)


def backtest_errors(evaluation: automl.Evaluation, folds: list, data: GroupData) -> dict[str, list]:
    """The chosen candidate's out-of-sample errors per period (actual - prediction, summed over
    the group's series; a period where one of them has no prediction is left out), kept in the
    decision for hierarchical reconciliation: wls_var and mint_shrink weigh each node by the
    spread of these errors (steps/reconcile.py). Periods are the split's, so nodes line up."""
    periods, errors = [], []
    for (_, test), a, p in zip(folds, evaluation.actual, evaluation.predicted):
        period = data.panel.period[np.flatnonzero(test)]
        error = np.asarray(a, dtype=np.float64) - np.asarray(p, dtype=np.float64)
        unique, at = np.unique(period, return_inverse=True)
        total = np.bincount(at, weights=np.nan_to_num(error), minlength=len(unique))
        missing = np.bincount(at, weights=np.isnan(error).astype(float), minlength=len(unique))
        periods += unique[missing == 0].tolist()
        errors += total[missing == 0].tolist()
    order = np.argsort(periods, kind="stable")  # the folds come newest first
    return {"periods": [int(periods[i]) for i in order], "errors": [float(errors[i]) for i in order]}


def _search_note(folds: list, lightgbm: dict) -> str:
    notes = [] if folds else ["backtest skipped: history shorter than one horizon plus a minimal training window (quantiles from the history's spread)"]
    failed = lightgbm.get("failed_trials", 0)
    if failed:
        notes.append(f"{failed} of {lightgbm['n_trials']} LightGBM trials failed and were pruned (first: {lightgbm['first_failure']})")
    return "; ".join(notes)


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (GroupFailure, statistical.CandidateUnfit)) else f"{type(exc).__name__}: {exc}"


STATS_MISSING = "statsforecast is not installed: pip install 'manymodels[stats]'"


def _statistical_params(data: GroupData) -> dict:
    return {"season_length": data.spec.season_length}


def _refit_or_fall_back(decision: dict, data: GroupData, rows: np.ndarray, spec: GroupSpec, candidates: list[str], transform: str, stored: dict | None, deadline: float | None) -> tuple[dict, Fitted]:
    """The decided model fitted on every row; if that fit fails, the choice is made
    again without the candidate that failed (never tuning again), until one fits."""
    while True:
        try:
            return decision, _refit(decision, data, rows, spec, transform)
        except Exception as exc:
            if not spec.automl.enabled:
                raise
            errors = {**(decision.get("candidate_errors") or {}), decision["winner"]: f"fit on all rows: {_reason(exc)}"}
            decision = {**_search(data, spec, candidates, transform, stored, False, deadline, dropped=errors), "pooled": decision.get("pooled") or {}}
            decision.pop(LOCAL)


def _stored_decision(stored: dict, out_of_time: bool) -> dict:
    why = "step time budget used up" if out_of_time else "retune not due"
    return {**stored, "n_trials": 0, "tuned": False, "source": f"stored decision of {stored.get('tuned_at', '?')} ({why})"}


# candidates: auto's ensembles, in order of preference: the first family with two members in a group's
# candidates is averaged (with known-future columns lightgbm + linear, as before auto; without, ETS and
# Theta, whose combinations won the M competitions; for intermittent series the Croston family)
ENSEMBLE_FAMILIES = (("lightgbm", "linear"), statistical.CONTINUOUS_KINDS, statistical.INTERMITTENT_KINDS)
LEGACY_MEMBERS = ENSEMBLE_FAMILIES[0]  # what a stored ensemble decision without 'members' averaged


def ensemble_members(spec: GroupSpec, candidates: list[str]) -> list[str]:
    """What this group's ensemble averages: train.automl.ensemble, or under auto the first family
    (ENSEMBLE_FAMILIES) with at least two members among the candidates."""
    if spec.automl.ensemble != "auto":
        return list(spec.automl.ensemble)
    for family in ENSEMBLE_FAMILIES:
        present = [k for k in family if k in candidates]
        if len(present) >= 2:
            return present
    return []


def ensemble_transform(members, transform: str) -> str:
    """The space members are averaged in: the group's transform, but the raw target when a
    statistical model is among them (they forecast the raw target; a log mean would shrink them)."""
    return "none" if any(m in statistical.KINDS for m in members) else transform


def _decided_members(decision: dict) -> list[str]:
    if decision["winner"] != "ensemble":
        return [decision["winner"]]
    return list(decision.get("members") or LEGACY_MEMBERS)


def _forecast_space(kind: str, evaluation: automl.Evaluation, members: list[str], transform: str) -> str:
    """The space a candidate forecasts in: a LightGBM with a raw objective (mape, poisson) has no
    log; statistical models and ensembles with them forecast the raw target."""
    if kind == "lightgbm":
        return evaluation.params.get("_transform", transform)
    if kind in statistical.KINDS:
        return "none"
    return ensemble_transform(members, transform) if kind == "ensemble" else transform


def _reference(spec: GroupSpec, order: list[str]) -> str | None:
    """The candidate kept unless another is clearly better: train.automl.reference; under
    candidates: auto, a group without it (no ensemble) keeps the first of its own candidates."""
    a = spec.automl
    if a.candidates == "auto" and a.reference not in order and order:
        return order[0]
    return a.reference


def _n_folds(spec: GroupSpec) -> int:
    return spec.automl.folds if spec.automl.enabled else 1


def _candidates(spec: GroupSpec, data: GroupData, profiles: list[SeriesProfile]) -> tuple[list[str], str]:
    """The group's candidates, in order, and a note on how they were chosen (or '')."""
    if not spec.automl.enabled:
        return ["lightgbm"], ""
    note = ""
    if spec.automl.candidates != "auto":
        listed = list(spec.automl.candidates)
    elif not statistical.available():
        listed = list(AUTO_WITHOUT_STATS)
        note = "candidates auto without the statistical models: " + STATS_MISSING
    else:
        listed = auto_candidates(profiles, data, bool(spec.known_future_columns))
    out = []
    for kind in listed:
        if kind == "seasonal_naive" and not data.spec.season_length:
            continue  # no season length known: nothing to be seasonal about
        if kind == "linear" and data.panel.exog.shape[1] == 0 and not data.spec.season_length:
            continue  # nothing for a linear model to use but intercepts (that is 'mean')
        if kind == "lightgbm" and np.sum(~np.isnan(data.panel.y)) < 2:
            continue  # one row: LightGBM has nothing to split (and bagging leaves it no row at all)
        out.append(kind)
    if "ensemble" in out and len([m for m in ensemble_members(spec, out) if m in out]) < 2:
        out.remove("ensemble")  # fewer than two members left to average
    return out or ["naive"], note


# candidates: auto without statsforecast: the candidates of mm before auto (config.CANDIDATES, which
# core may not import: tests/test_architecture.py; tests/test_auto_candidates.py checks they agree)
AUTO_WITHOUT_STATS = ("ensemble", "lightgbm", "linear", "naive", "seasonal_naive", "mean", "moving_average")


def auto_candidates(profiles: list[SeriesProfile], data: GroupData, has_known_future: bool) -> list[str]:
    """candidates: auto for a group: the union of its series' sets (statistical.auto_candidates)."""
    season = data.spec.season_length
    if not profiles:
        return ["naive", "mean"]
    sets = [statistical.auto_candidates(p.demand_class, p.n_obs, season, has_known_future) for p in profiles]
    return statistical.union_candidates(sets)


def target_transform(spec: GroupSpec, data: GroupData) -> str:
    if spec.target_transform == "auto":
        return "log1p" if data.nonnegative else "none"
    if spec.target_transform == "log1p" and not data.nonnegative:
        raise GroupFailure("negative_target", "target_transform log1p needs targets >= 0; this group has negative values")
    return spec.target_transform


def linear_params(spec: GroupSpec, data: GroupData, transform: str) -> dict:
    """The ridge's parameters, as a group's linear candidate has them (a pool's too)."""
    return _baseline_params("linear", spec, data, transform)


def _baseline_params(kind: str, spec: GroupSpec, data: GroupData, transform: str) -> dict:
    params: dict[str, Any] = {"transform": transform}
    if kind == "seasonal_naive":
        params["season_length"] = data.spec.season_length
    if kind == "moving_average":
        params["window"] = min(4, data.spec.season_length or 4)
    return params


@dataclass(frozen=True)
class Seeds:
    """A warm start: LightGBM parameters that won the full searches of ``n_sampled`` sampled
    groups, tried first in a search of ``n_trials`` (train.automl.warm_start)."""

    params: tuple[dict, ...]
    n_trials: int
    n_sampled: int


def _lightgbm_params(spec, data, folds, transform, stored, tune, deadline, seeds: Seeds | None = None) -> tuple[dict, dict]:
    """LightGBM parameters to backtest: tuned now, tuned before (stored), or the defaults."""
    n_rows = int(np.sum(~np.isnan(data.panel.y)))
    base = {**default_lightgbm_params(n_rows, spec.seed), **spec.params, "_num_boost_round": spec.num_boost_round, "_transform": transform}
    a = spec.automl
    previous = ((stored or {}).get("params") or {}).get("lightgbm")
    if not a.enabled or a.n_trials == 0:
        return _target_fits_objective(base, data), {"n_trials": 0, "source": "config"}
    if not tune or not folds:
        if previous:
            return dict(previous), {"n_trials": 0, "source": "stored"}
        return _target_fits_objective(base, data), {"n_trials": 0, "source": "defaults (" + ("too short to tune" if not folds else "not tuned") + ")"}
    timeout = a.timeout_per_group
    if deadline is not None:
        remaining = max(deadline - time.time(), 0.1)
        timeout = min(timeout, remaining) if timeout else remaining
    n_trials, source = a.n_trials, "tuned"
    if seeds is not None and seeds.params:
        n_trials, source = min(a.n_trials, max(seeds.n_trials, len(seeds.params) + 1)), f"tuned, warm-started from {seeds.n_sampled} sampled groups"
    search = automl.tune_lightgbm(data, folds, base, transform, spec, n_trials, timeout, seeds.params if seeds else (), a.patience)
    return search.best, {"n_trials": search.n_trials, "source": source, "failed_trials": search.n_failed, "first_failure": search.first_failure, "fold_models": search.fold_models}


def _target_fits_objective(params: dict, data: GroupData) -> dict:
    """train.params' objective as LightGBM would take it: poisson/tweedie need targets >= 0, gamma > 0."""
    objective = next((str(params[k]) for k in ("objective", "objective_type", "app", "application", "loss") if k in params), "")
    y = data.panel.y[~np.isnan(data.panel.y)]
    bad = int(np.sum(y <= 0)) if objective == "gamma" else int(np.sum(y < 0)) if objective in ("poisson", "tweedie") else 0
    if bad:
        need = "> 0" if objective == "gamma" else ">= 0"
        raise GroupFailure("negative_target", f"objective {objective} (train.params) needs targets {need}; this group has {bad} that are not")
    return params


def _refit(decision: dict, data: GroupData, rows: np.ndarray, spec: GroupSpec, transform: str) -> Fitted:
    """The decided model, fitted on every row of the group."""
    winner = decision["winner"]
    kinds = _decided_members(decision)
    members = []
    for kind in kinds:
        if kind == "lightgbm":
            params = dict(decision["params"]["lightgbm"])
            rounds = int(params.pop("_num_boost_round"))
            lgb_transform = params.pop("_transform")
            fitted = fit_lightgbm(data, rows, params, rounds, lgb_transform)
            fitted.state["params"] = {**params, "_num_boost_round": rounds, "_transform": lgb_transform}
        elif kind in statistical.KINDS:
            fitted = fit_statistical(kind, data, rows, _statistical_params(data))
        else:
            fitted = fit_baseline(kind, data, rows, _baseline_params(kind, spec, data, transform))
        members.append(fitted)
    return make_ensemble(members, ensemble_transform(kinds, transform)) if winner == "ensemble" else members[0]


# -- backtest folds ----------------------------------------------------------

MIN_FOLD_TRAIN_ROWS = 5


def fold_origins(data: GroupData, horizon: int, n_folds: int) -> list[int]:
    """The cutoff of each fold ``backtest_folds`` makes, newest first: the group's last period
    with a target minus 1, 2, ... horizons (a pool's folds and its members' meet on these)."""
    last = int(data.panel.period[~np.isnan(data.panel.y)].max())
    return [last - f * horizon for f in range(1, n_folds + 1)]


def backtest_folds(data: GroupData, horizon: int, n_folds: int, min_series_rows: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rolling origins: (train mask, test mask) for each fold, newest first.

    Fold f trains on periods up to ``T - f * horizon`` and tests on the next
    ``horizon`` periods, where T is the group's last period with a target.
    Windows are counted in periods, so a gap never shifts them. A fold needs
    ``MIN_FOLD_TRAIN_ROWS`` training rows, and every fold but the newest needs,
    for each series tested in it, ``min_series_rows`` of its own (a statistical
    candidate's minimum history: an older fold too short for it would drop it
    from a choice the newer folds let it compete in).
    """
    panel = data.panel
    known = ~np.isnan(panel.y)
    folds = []
    for origin in fold_origins(data, horizon, n_folds):
        train = known & (panel.period <= origin)
        test = known & (panel.period > origin) & (panel.period <= origin + horizon)
        if train.sum() < MIN_FOLD_TRAIN_ROWS or not test.any() or (folds and not _long_enough(panel, train, test, min_series_rows)):
            break
        folds.append((train, test))
    return folds


def _long_enough(panel, train: np.ndarray, test: np.ndarray, min_rows: int) -> bool:
    if min_rows <= 0:
        return True
    counts = np.bincount(panel.series[train], minlength=panel.n_series)
    return bool(np.all(counts[np.unique(panel.series[test])] >= min_rows))


def _min_series_history(candidates: list[str]) -> int:
    """The longest minimum history among the statistical candidates (0 without any)."""
    return max((statistical.MIN_OBS[k] for k in candidates if k in statistical.KINDS), default=0)


# -- forecasting -------------------------------------------------------------

def has_booster(meta: dict) -> bool:
    """Whether a model's metadata comes with a LightGBM booster file."""
    if pooling.is_blend(meta["kind"]):
        return has_booster(pooling.local_part(meta))  # its local model's, kept with the group
    return meta["kind"] == "lightgbm" or any(m["kind"] == "lightgbm" for m in meta["state"].get("members", []))


def load_fitted(meta: dict, model_text: str | None) -> Fitted:
    """A stored model, ready to predict: its metadata's state, and its LightGBM booster parsed
    from ``model_text`` (lightgbm, or an ensemble with a lightgbm member). Parsing is the costly
    part, so a caller that forecasts one model many times (mm serve) keeps the result."""
    fitted = Fitted(meta["kind"], meta["state"])
    if model_text is not None:
        fitted.booster = lgb.Booster(model_str=model_text)
    return fitted


def forecast_group(history: pd.DataFrame, future: pd.DataFrame, meta: dict, model_text: str | None, spec: GroupSpec) -> np.ndarray:
    """Predictions (and quantiles) for the rows of ``future``; columns: point, q1, q2, ...

    ``history`` is the train partition; only its targets are ever used as
    known values. The targets of ``future`` (if present) are never read.
    """
    return forecast_fitted(history, future, meta, load_fitted(meta, model_text), spec)


def forecast_fitted(history: pd.DataFrame, future: pd.DataFrame, meta: dict, fitted: Fitted, spec: GroupSpec) -> np.ndarray:
    """``forecast_group`` with the model already loaded (``load_fitted``)."""
    if pooling.is_blend(meta["kind"]):
        return _blend_forecast(history, future, meta, fitted, spec)
    info = meta["info"]
    frame = pd.concat([history, future], ignore_index=True)
    n_hist = len(history)
    y = np.concatenate([history[spec.target_column].to_numpy(dtype=np.float64), np.full(len(future), np.nan)])
    data = group_data(frame, spec, info, y)
    known = np.zeros(len(frame), dtype=bool)
    known[:n_hist] = True
    rows = np.arange(n_hist, len(frame))
    own: dict[float, np.ndarray] | None = None
    if meta["kind"] in statistical.KINDS:  # the model's own quantiles, not backtest residual shifts
        median_like, own = predict_statistical(fitted, data, known, rows, spec.quantiles)
    else:
        median_like = predict(fitted, data, known, rows)
    return forecast_matrix(median_like, own, meta, spec, data.nonnegative)


def _blend_forecast(history: pd.DataFrame, future: pd.DataFrame, meta: dict, fitted: Fitted, spec: GroupSpec) -> np.ndarray:
    """A blend's forecast: each part's calibrated point forecast as that model gives it alone
    (a pool on its own view of the rows), averaged in the blend's space, with the blend's own
    quantile shifts."""
    points = []
    for part_meta, part in fitted.parts:
        part_spec, part_history, part_future = model_view(part_meta, spec, history, future)
        points.append(forecast_fitted(part_history, part_future, part_meta, part, part_spec)[:, 0])
    point = average(points, meta["state"]["transform"])
    nonnegative = bool(meta["info"].get("nonnegative", True))
    return forecast_matrix(point, None, meta, spec, nonnegative)


def forecast_matrix(median_like: np.ndarray, own: dict[float, np.ndarray] | None, meta: dict, spec: GroupSpec, nonnegative: bool) -> np.ndarray:
    """A model's predictions as the shipped columns: the calibrated point, then each quantile
    (the model's ``own`` bands, or its backtest residual shifts), never crossing.
    mm serve's what-if path (extras/whatif.py) predicts its own way and finishes here too."""
    # the point forecast is calibrated to the selection metric; quantiles stay quantiles
    out = [median_like * float((meta.get("calibration") or {}).get("factor", 1.0))]
    quantiles = meta.get("residual_quantiles") or {}
    transform = meta["state"].get("transform", "none")
    for q in spec.quantiles:
        if own is not None:
            band = own[float(q)]
            out.append(np.maximum(band, 0.0) if nonnegative else band)
            continue
        shift = quantiles.get(f"{q:g}")
        if shift is None:
            out.append(np.full(len(median_like), np.nan))
            continue
        band = automl.apply_residual(median_like, float(shift), transform)
        out.append(np.maximum(band, 0.0) if nonnegative else band)
    matrix = np.column_stack(out)
    if len(spec.quantiles) > 1:
        matrix[:, 1:] = np.sort(matrix[:, 1:], axis=1)  # quantiles never cross
    return matrix


def horizon_steps(history: pd.DataFrame, future: pd.DataFrame, spec: GroupSpec, series: SeriesCodes | None = None) -> np.ndarray:
    """How many periods after its series' last known value each future row is (NaN: a series
    without history). ``series``: the rows' series codes, when the caller has them already."""
    if series is None:
        series = SeriesCodes.of(history, future, spec)
    period = spec.period_column
    last = last_periods(series.history, history[period].to_numpy(dtype=np.float64), series.n)
    return steps_after(last, series.future, future[period].to_numpy(dtype=np.float64))


def last_periods(codes: np.ndarray, periods: np.ndarray, n: int) -> np.ndarray:
    """Each of ``n`` series' last period among rows of series ``codes`` (NaN: a series with none)."""
    last = np.full(n, np.nan)
    np.fmax.at(last, codes, np.asarray(periods, dtype=np.float64))
    return last


def steps_after(last: np.ndarray, codes: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Periods after its series' ``last`` period of each row (NaN: a series without history, or a
    code past ``last``: a series the history does not have). The forecast step, serve and what-if use it."""
    out = np.full(len(codes), np.nan)
    known = codes < len(last)
    out[known] = np.asarray(periods, dtype=np.float64)[known] - last[codes[known]]
    return out


# -- sanity checks on a group's forecast ---------------------------------------

EXAMPLES_PER_GROUP = 3  # messages kept per group and check (the counts are complete)


@dataclass
class ForecastChecks:
    """What the checks of one group's forecast found: counts, and the first few cases named."""

    n_out_of_range: int = 0
    out_of_range: list[str] = field(default_factory=list)
    n_capped: int = 0
    capped: list[str] = field(default_factory=list)


def check_forecast(history: pd.DataFrame, future: pd.DataFrame, matrix: np.ndarray, meta: dict, spec: GroupSpec, cap_factor: float | None, series: SeriesCodes | None = None) -> tuple[np.ndarray, ForecastChecks]:
    """Name known-future values the model never saw, and cap forecasts far outside a series' history.
    ``series``: the rows' series codes, when the caller has them already."""
    checks = ForecastChecks()
    if not len(future):
        return matrix, checks
    series = series or SeriesCodes.of(history, future, spec)
    checks.n_out_of_range, checks.out_of_range = known_future_out_of_range(history, future, meta["info"], spec, series)
    if cap_factor:
        matrix, checks.n_capped, checks.capped = cap_forecast(matrix, history, future, spec, float(cap_factor), series)
    return matrix, checks


@dataclass(frozen=True)
class CheckedForecast:
    """A group's forecast as mm ships it (``checked_forecast``)."""

    matrix: np.ndarray  # point, then quantiles; capped by the checks
    checks: ForecastChecks
    missing: np.ndarray  # rows without a finite point forecast: when any, the checks did not run
    series: SeriesCodes | None  # each row's series (None when the checks did not run)


def checked_forecast(history: pd.DataFrame, future: pd.DataFrame, meta: dict, fitted: Fitted, spec: GroupSpec, cap_factor: float | None) -> CheckedForecast:
    """The forecast of ``future`` and its checks (out-of-range drivers named, far-out values
    capped): the one path from a model to shipped numbers, for ``mm forecast`` and ``mm serve``
    alike, so that both give the same numbers for the same inputs."""
    spec, history, future = model_view(meta, spec, history, future)
    with np.errstate(all="ignore"):  # overflow on huge values is reported as missing rows, not printed
        matrix = forecast_fitted(history, future, meta, fitted, spec)
    return checked_matrix(matrix, history, future, meta, spec, cap_factor)


def checked_matrix(matrix: np.ndarray, history: pd.DataFrame, future: pd.DataFrame, meta: dict, spec: GroupSpec, cap_factor: float | None) -> CheckedForecast:
    """``checked_forecast``'s second half: the checks of a forecast ``matrix`` of ``future``'s rows."""
    missing = ~np.isfinite(matrix[:, 0])
    if missing.any():
        return CheckedForecast(matrix, ForecastChecks(), missing, None)
    series = SeriesCodes.of(history, future, spec)
    matrix, checks = check_forecast(history, future, matrix, meta, spec, cap_factor, series)
    return CheckedForecast(matrix, checks, missing, series)


def model_view(meta: dict, spec: GroupSpec, history: pd.DataFrame, future: pd.DataFrame) -> tuple[GroupSpec, pd.DataFrame, pd.DataFrame]:
    """The spec and rows a model reads: a pooled model (``tasks.pooled_model``) sees a group's
    rows as its pool does (the pool's series columns, the static columns)."""
    if "pool" not in meta:
        return spec, history, future
    level = tuple(meta["pool"]["level"])
    return pooling.pool_spec(spec, level), pooling.with_statics(history, level, spec.group_columns), pooling.with_statics(future, level, spec.group_columns)


@dataclass(frozen=True)
class SeriesCodes:
    """Each history and future row's series, as a code 0..n-1 (numpy: these checks run on every group)."""

    history: np.ndarray
    future: np.ndarray
    n: int

    @classmethod
    def of(cls, history: pd.DataFrame, future: pd.DataFrame, spec: GroupSpec) -> SeriesCodes:
        columns = list(spec.series_columns)
        if not columns:
            return cls(np.zeros(len(history), dtype=np.int64), np.zeros(len(future), dtype=np.int64), 1)
        both = pd.concat([history[columns], future[columns]], ignore_index=True)
        codes = both.groupby(columns, sort=False, observed=True, dropna=False).ngroup().to_numpy()
        return cls(codes[: len(history)], codes[len(history) :], int(codes.max()) + 1 if len(codes) else 0)

    def ranges(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per future row: the smallest and largest value of its series' history (NaN: none)."""
        ok = ~np.isnan(values)
        low, high = np.full(self.n, np.inf), np.full(self.n, -np.inf)
        np.minimum.at(low, self.history[ok], values[ok])
        np.maximum.at(high, self.history[ok], values[ok])
        low[np.isinf(low)], high[np.isinf(high)] = np.nan, np.nan
        return low[self.future], high[self.future]


def _label(future: pd.DataFrame, i: int, spec: GroupSpec) -> str:
    """Future row ``i``'s series as messages name it (``Store=2,Brand=x``)."""
    columns = [c for c in (*spec.group_columns, *spec.series_columns) if c in future.columns]
    return ",".join(f"{c}={future[c].iloc[i]}" for c in columns)


def _when(value) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    return str(value)


def _num(value: float) -> str:
    return f"{value:,.6g}"


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column]
    if values.dtype == np.float64:
        return values.to_numpy()  # NaN is already its missing value (the common case: no copy, no NA scan)
    if not pd.api.types.is_numeric_dtype(values.dtype):
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def known_future_out_of_range(history: pd.DataFrame, future: pd.DataFrame, info: dict, spec: GroupSpec, series: SeriesCodes | None = None) -> tuple[int, list[str]]:
    """Known-future values of ``future`` outside what the model was fitted on: a number
    below its series' training minimum or above its maximum, or a category never seen.
    Returns how many (value, row) cases, and the first few named."""
    features = info["features"]
    if not len(future) or not (features["numeric_exog"] or features["categorical_exog"]):
        return 0, []
    series = series or SeriesCodes.of(history, future, spec)
    count, examples = 0, []

    def name(i: int, what: str, why: str) -> None:
        if len(examples) < EXAMPLES_PER_GROUP:
            examples.append(f"{_label(future, i, spec)}: {what} in {_when(future[spec.time_column].iloc[i])} {why}")

    for column in features["numeric_exog"]:
        values = _numbers(future, column)
        low, high = series.ranges(_numbers(history, column))
        with np.errstate(invalid="ignore"):
            outside = (values < low) | (values > high)  # NaN (no value, no history) compares False
        count += int(outside.sum())
        for i in np.flatnonzero(outside)[:EXAMPLES_PER_GROUP]:
            name(i, f"{column} {_num(values[i])}", f"is outside its training range {_num(low[i])}..{_num(high[i])}")
    for column in features["categorical_exog"]:
        raw = future[column].to_numpy(dtype=object)
        present = ~pd.isna(raw)
        unseen = present & ~np.isin(raw.astype(str), np.asarray(info["categories"].get(column, []), dtype=str))
        count += int(unseen.sum())
        for i in np.flatnonzero(unseen)[:EXAMPLES_PER_GROUP]:
            name(i, f"{column} {raw[i]!r}", "was never seen in training")
    return count, examples


def cap_forecast(matrix: np.ndarray, history: pd.DataFrame, future: pd.DataFrame, spec: GroupSpec, factor: float, series: SeriesCodes | None = None) -> tuple[np.ndarray, int, list[str]]:
    """Forecasts (and quantiles) kept within ``factor`` times their series' history.

    A series whose training targets are all >= 0 is capped at ``factor`` x its
    largest training value (0 for a series that never sold: a forecast of demand
    it never had is not one to ship); a signed series is kept within its training
    range widened by ``factor - 1`` times that range on both sides (a signed
    constant: its absolute value). A series with no history is left alone.
    Returns the capped matrix, how many rows were capped, the first few named.
    """
    series = series or SeriesCodes.of(history, future, spec)
    low_y, high_y = series.ranges(_numbers(history, spec.target_column))
    with np.errstate(invalid="ignore"):
        nonnegative = low_y >= 0
    span = high_y - low_y
    span = np.where(span > 0, span, np.abs(high_y))
    upper = np.where(nonnegative, factor * high_y, high_y + (factor - 1) * span)
    lower = np.where(nonnegative, -np.inf, low_y - (factor - 1) * span)
    known = ~np.isnan(high_y)  # a series with no history has nothing to be measured against
    upper, lower = np.where(known, upper, np.inf), np.where(known, lower, -np.inf)
    capped = np.clip(matrix, lower[:, None], upper[:, None])
    changed = np.flatnonzero(np.any(capped != matrix, axis=1))
    examples = []
    for i in changed[:EXAMPLES_PER_GROUP]:
        if nonnegative[i]:
            rule = f"{factor:g} x its training maximum {_num(high_y[i])}"
        else:
            rule = f"its training range {_num(low_y[i])}..{_num(high_y[i])} widened by {factor - 1:g} x that range on each side"
        examples.append(f"{_label(future, i, spec)}: forecast {_num(matrix[i, 0])} in {_when(future[spec.time_column].iloc[i])} capped at {_num(capped[i, 0])} ({rule})")
    return capped, len(changed), examples
