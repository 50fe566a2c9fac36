"""Pooled candidates: one LightGBM model over the series of many groups, chosen per group.

A *level* is a list of group columns; a *pool* is the set of groups sharing the
values of a level's columns (level ``[Brand]``: one pool per brand, holding that
brand's store series; level ``[]``: one pool of every series). A pool's model
is an ordinary multi-series LightGBM model, the one a group of several series
gets (lags and windows per series, the series' identity as a categorical
feature), plus each series' other group values as *static* categorical
features, so that a global model can learn what a brand or a store shares.

Pure, like the kernels: frames in, plain results out.

Honesty of the backtest: a pool scored on a fold is fitted on the rows before
that fold's cutoff only, with folds at the same cutoffs as its members' own
(``kernels.backtest_folds``: the last period minus multiples of the horizon);
a member whose own cutoffs differ (its series ends earlier) gets no pooled
score, and so no pooled model.

The choice between a group's local model and the pools it belongs to is made
in two steps (``pool_verdict``, ``member_choice``): a pool becomes its members'
default only when, over all of its members' backtest blocks together, it beats
their own chosen local models clearly (the same paired test as the local
choice, on losses relative to each member's local loss, so that a large series
does not outweigh a small one); a member then keeps its local model only if
that one is clearly better on its own blocks. Per series, a few blocks are
weak evidence either way; over a pool of hundreds of series they are not.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from . import automl
from .features import series_labels_of
from .models import (
    average,
    default_lightgbm_params,
    fit_baseline,
    fit_lightgbm,
    lightgbm_threads,
    make_ensemble,
)

POOL_PREFIX = "pooled_"
# A group's local model averaged with every pool it belongs to: one pool shared by hundreds of
# series misjudges some weeks for all of them at once (a promotion), and averaging it with models
# that fail elsewhere (the series' own, the other levels' pools) is what guards against that.
BLEND = "pooled_blend"
STATIC_PREFIX = "static:"  # a derived column holding a series' group value as a category


def level_name(level: tuple[str, ...] | list[str]) -> str:
    """The candidate name of a level: ``pooled_Brand``, ``pooled_Store_Brand``, ``pooled_all`` for []."""
    return POOL_PREFIX + ("_".join(level) if level else "all")


def is_pooled(kind: str) -> bool:
    """A pool's own model (the group's record points to one pool version); not the blend."""
    return kind.startswith(POOL_PREFIX) and kind != BLEND


def is_blend(kind: str) -> bool:
    return kind == BLEND


def is_local(kind: str) -> bool:
    """A group's own model (fitted on its rows alone): neither a pool's nor a blend with pools."""
    return not is_pooled(kind) and not is_blend(kind)


def resolve_levels(setting: Any, group_columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """train.automl.pooling.levels as tuples. ``auto``: each group column alone when there are
    two or more (a brand's stores, a store's brands), and ``[]``, one model over every series."""
    if setting == "none":
        return []
    if setting == "auto":
        singles = [(c,) for c in group_columns] if len(group_columns) >= 2 else []
        return [*singles, ()]
    return [tuple(level) for level in setting]


def outside(level: tuple[str, ...], group_columns) -> tuple[str, ...]:
    """The group columns a pool's series differ by: those not in the level, in group order."""
    return tuple(c for c in group_columns if c not in level)


def static_columns(level: tuple[str, ...], group_columns: tuple[str, ...]) -> tuple[str, ...]:
    """The group columns a pool's series differ by, when there are two or more of them (with one,
    the series identity feature is that column already)."""
    rest = outside(level, group_columns)
    return rest if len(rest) >= 2 else ()


def pool_spec(spec, level: tuple[str, ...]):
    """The ``GroupSpec`` a pool is modelled with: its series are the group columns outside the
    level (then the series columns), its known-future columns the group's plus the statics."""
    statics = tuple(STATIC_PREFIX + c for c in static_columns(level, spec.group_columns))
    return replace(spec, group_columns=tuple(level), series_columns=outside(level, spec.group_columns) + spec.series_columns, known_future_columns=spec.known_future_columns + statics)


def with_statics(frame: pd.DataFrame, level: tuple[str, ...], group_columns: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` with the static columns of ``level`` added (as text: categories, never numbers)."""
    statics = static_columns(level, group_columns)
    if not statics:
        return frame
    return frame.assign(**{STATIC_PREFIX + c: frame[c].astype("string") for c in statics})


# -- fitting a pool ------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettings:
    """train.automl.pooling as a pool fit reads it (resolved by the config)."""

    n_trials: int
    timeout: float | None
    threads: int  # LightGBM threads of this fit: a pool is one big fit, not one of many small ones
    linear: bool  # the pool's model is its LightGBM averaged with a ridge on the same rows (pooling.linear)


def fit_pool(frame: pd.DataFrame, spec, settings: PoolSettings, stored: dict | None, tune: bool, backtest: bool) -> dict:
    """Fit one pool: optionally tune it and backtest it on rolling origins, then fit it on every row.

    ``spec``: the pool's ``GroupSpec`` (``pool_spec``); ``frame``: its members' train rows,
    ``with_statics``. ``stored``: the pool's previous decision (its ``tuning``), refit when not
    ``tune``. Returns ``meta`` (JSON), ``model_text`` and ``backtest`` (a frame: series code,
    origin, period, prediction; None without folds).
    """
    from .kernels import (
        backtest_folds,
        describe_group,
        fold_origins,
        group_data,
        linear_params,
        target_transform,
    )

    started = time.perf_counter()
    y = frame[spec.target_column].to_numpy(dtype=np.float64)
    info = describe_group(frame, spec)
    data = group_data(frame, spec, info, y)
    transform = target_transform(spec, data)
    folds = backtest_folds(data, spec.horizon, spec.automl.folds) if (tune or backtest) else []
    n_rows = int(np.sum(~np.isnan(y)))
    with lightgbm_threads(settings.threads):
        params, source, n_trials = _pool_params(data, spec, settings, folds, transform, stored, tune, n_rows)
        evaluation = automl.evaluate_lightgbm(data, folds, params, transform, spec) if folds else None
        rounds = int(params["_num_boost_round"])
        lgb_params = {k: v for k, v in params.items() if not k.startswith("_")}
        every = np.ones(len(y), dtype=bool)
        final = fit_lightgbm(data, every, lgb_params, rounds, params["_transform"])
        final.state["params"] = params
    if settings.linear:  # a ridge on the same rows, averaged with the trees as a local ensemble is
        ridge = linear_params(spec, data, transform)
        if evaluation is not None:
            evaluation = automl.combine([evaluation, automl.evaluate_baseline("linear", data, folds, ridge)], transform)
        final = make_ensemble([final, fit_baseline("linear", data, every, ridge)], transform)
    origins = fold_origins(data, spec.horizon, len(folds))
    meta = {
        "kind": final.kind,
        "state": {**final.state, "params": params},
        "info": info,
        "origins": origins,
        "calibration_prior": calibration_prior(evaluation, data, folds, spec, transform, origins),
        "n_series": len(info["series"]),
        "n_train_rows": n_rows,
        "tuning": {"params": params, "source": source, "n_trials": n_trials, "space": spec.automl.space, "tuned_at": _now() if source == "tuned" else (stored or {}).get("tuned_at", _now())},
        "duration_s": round(time.perf_counter() - started, 3),
    }
    return {"meta": meta, "model_text": final.booster.model_to_string(), "backtest": _backtest_frame(data, folds, evaluation, meta["origins"])}


def calibration_prior(evaluation: automl.Evaluation | None, data, folds, spec, transform: str, origins: list[int]) -> dict | None:
    """The factor the pool's members shrink their own calibration towards: fitted over every
    member's backtest blocks at once, and once more without each origin (a member's fold is
    scored with a factor that saw neither its own rows nor any other member's at that origin).

    A member has a few weeks of backtest; alone, its factor is mostly shrunk back to 1 (on
    Dominick's, MAPE-optimal factors of 0.63-0.68 for some brands came out at 0.8 per member)."""
    if evaluation is None or not spec.automl.calibrate or transform != "log1p" or len(origins) < 2:
        return None
    metric = automl.selection_metric(spec.automl.metric, automl.fold_actuals(data, folds), data.mase_scale)[0]
    return {
        "metric": metric,
        "all": evaluation.factor(metric),
        "excluding": {str(origin): evaluation.factor(metric, exclude=i) for i, origin in enumerate(origins)},
    }


def member_priors(prior: dict | None, metric: str, origins: list[int]) -> tuple[list[float] | None, float]:
    """The pool's calibration priors for a member's folds (cutoffs ``origins``), and for its final factor."""
    if not prior or prior.get("metric") != metric:
        return None, 1.0
    return [float(prior["excluding"].get(str(o), prior["all"])) for o in origins], float(prior["all"])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _pool_params(data, spec, settings: PoolSettings, folds, transform: str, stored: dict | None, tune: bool, n_rows: int) -> tuple[dict, str, int]:
    base = {**default_lightgbm_params(n_rows, spec.seed), **spec.params, "_num_boost_round": spec.num_boost_round, "_transform": transform}
    previous = (stored or {}).get("params")
    if not tune and previous:
        return dict(previous), "stored", 0
    if not folds or settings.n_trials == 0:
        return base, "defaults", 0
    search = automl.tune_lightgbm(data, folds, base, transform, spec, settings.n_trials, settings.timeout)
    return search.best, "tuned", search.n_trials


def _backtest_frame(data, folds, evaluation, origins: list[int]) -> pd.DataFrame | None:
    if evaluation is None:
        return None
    parts = []
    for (_, test), predicted, origin in zip(folds, evaluation.predicted, origins):
        rows = np.flatnonzero(test)
        parts.append(pd.DataFrame({"series": data.panel.series[rows], "origin": np.full(len(rows), origin, dtype=np.int64), "period": data.panel.period[rows], "prediction": predicted}))
    return pd.concat(parts, ignore_index=True)


# -- a member's pooled candidate -----------------------------------------------------


def member_labels(frame: pd.DataFrame, level: tuple[str, ...], spec) -> list[tuple]:
    """A group's series as its pool names them (the pool's series columns' values)."""
    return series_labels_of(frame, [*outside(level, spec.group_columns), *spec.series_columns])


def pooled_evaluation(name: str, backtest: pd.DataFrame, data, folds, fold_cutoffs: list[int], series_of_code: dict[int, int]) -> automl.Evaluation:
    """The pool's backtest predictions on this group's own folds and rows, as a candidate.

    ``backtest``: the pool's rows of this group's series (``series``: the pool's codes);
    ``fold_cutoffs``: the group's fold origins (``kernels.fold_origins``), one per fold;
    ``series_of_code``: pool code -> the group's own series code. Raises ValueError when a
    fold of the group has no pooled fold at the same cutoff, or a row has no prediction."""
    panel = data.panel
    evaluation = automl.Evaluation(name, {"pool": name}, data.mase_scale)
    local = backtest["series"].map(series_of_code).to_numpy()
    lookup = dict(zip(zip(backtest["origin"].to_numpy().tolist(), local.tolist(), backtest["period"].to_numpy().tolist()), backtest["prediction"].to_numpy().tolist()))
    origins = set(backtest["origin"].tolist())
    for origin, (_, test) in zip(fold_cutoffs, folds):
        if origin not in origins:
            raise ValueError(f"the pool has no backtest fold with this group's cutoff (period {origin}): its series end earlier than the pool's")
        rows = np.flatnonzero(test)
        predicted = np.array([lookup.get((origin, int(panel.series[r]), int(panel.period[r])), math.nan) for r in rows])
        if np.isnan(predicted).any():
            raise ValueError(f"the pool's backtest has no prediction for {int(np.isnan(predicted).sum())} of this group's backtest rows")
        evaluation.add_rows(data, rows, predicted)
    return evaluation


def blend_transform(local_transform: str, pools: list[str], nonnegative: bool) -> str:
    """The space a blend averages in: as the local ensemble (``models.average``), log1p when every
    part forecasts a nonnegative target in it (a geometric-like mean), else the raw values."""
    return "log1p" if nonnegative and local_transform == "log1p" and all(t == "log1p" for t in pools) else "none"


def blend_evaluation(local: automl.Evaluation, pools: dict[str, automl.Evaluation], transform: str) -> automl.Evaluation:
    """The backtest of the average of the local model and the pools, fold by fold (the same rows)."""
    parts = [local, *pools.values()]
    predicted = [average([p.predicted[i] for p in parts], transform) for i in range(len(local.actual))]
    return local.like(predicted, BLEND, {"members": list(pools)})


def blend_record(local: dict, entry: dict) -> dict:
    """A group's model record (``meta``) as a blend: its local model kept whole under ``local``
    (its booster stays the group's), the pools it averages with and the group's own calibration
    of each (their refs: ``with_blend_refs``), and the blend's own backtest scores and quantile
    shifts (``entry``)."""
    return {
        **local,
        "kind": BLEND,
        "state": {"transform": entry["transform"], "local": {"kind": local["kind"], "state": local["state"], "calibration": local.get("calibration") or {}}},
        "blend": {"members": list(entry["members"]), "calibration": dict(entry["pool_calibration"])},
        "metrics": entry.get("metrics") or {},
        "calibration": {"metric": (local.get("calibration") or {}).get("metric"), "factor": 1.0},  # its parts are calibrated
        "residual_quantiles": entry.get("residual_quantiles") or {},
        "tuning": {**local.get("tuning", {}), "pooled_choice": BLEND},
        "local": {"kind": local["kind"]},
    }


def local_part(meta: dict) -> dict:
    """A blend's local model as its own record: what it forecasts with alone."""
    local = meta["state"]["local"]
    return {**meta, "kind": local["kind"], "state": local["state"], "calibration": local["calibration"]}


def with_blend_refs(meta: dict, refs: dict[str, dict]) -> dict:
    """A blend's record with the pool versions it averages with (``refs``: name -> pool ref)."""
    return {**meta, "blend": {**meta["blend"], "pools": {name: refs[name] for name in meta["blend"]["members"]}}}


def blend_refs(meta: dict) -> list[dict]:
    """The pool refs a record points to: its pool's, or a blend's pools'."""
    if "pool_ref" in meta:
        return [meta["pool_ref"]]
    return list(((meta.get("blend") or {}).get("pools") or {}).values())


def tuning_text(meta: dict) -> str:
    """A record's ``tuning`` column: where its parameters came from, and for a pooled model or a
    blend which pool versions it uses and what its local model is."""
    tuning = meta.get("tuning") or {}
    source, refs = tuning.get("source", ""), blend_refs(meta)
    if not refs:
        return source
    pools = ", ".join(f"{r['label']} v{r['version']}" for r in refs)
    local = f"local {tuning.get('winner', '')} {source}".strip()
    return f"{local}, averaged with {pools}" if is_blend(meta["kind"]) else f"{pools}; {local}"


def relative_block_losses(candidate: automl.Evaluation, local: automl.Evaluation, metric: str) -> np.ndarray:
    """Per (fold, series) block: candidate loss minus the local model's, divided by the local
    model's mean block loss (scale-free, so that blocks of many members can be pooled)."""
    local_blocks = local.block_losses(metric)
    diff = candidate.block_losses(metric) - local_blocks
    scale = np.nanmean(local_blocks) if np.any(~np.isnan(local_blocks)) else math.nan
    if not math.isfinite(scale) or scale <= 0:
        return np.empty(0)
    diff = diff / scale
    return diff[np.isfinite(diff)]


# -- the choice ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether a pool beat its members' local models: over all their blocks, relative losses."""

    approved: bool
    n_blocks: int
    mean: float  # mean relative loss difference, pooled minus local (negative: the pool is better)
    standard_error: float

    def describe(self, name: str) -> str:
        if not self.n_blocks:
            return f"{name}: no member could score it"
        sign = "better" if self.mean < 0 else "worse"
        return f"{name} {abs(self.mean):.1%} {sign} than its members' local models over {self.n_blocks} backtest blocks (standard error {self.standard_error:.1%})"


def pool_verdict(differences: list[np.ndarray], evidence: float) -> Verdict:
    d = np.concatenate(differences) if differences else np.empty(0)
    if len(d) < 2:
        return Verdict(False, len(d), float(d.mean()) if len(d) else math.nan, math.nan)
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    clear = -d.mean() > (automl._threshold(evidence, len(d)) if evidence > 0 else 0.0) * se
    return Verdict(bool(clear), len(d), float(d.mean()), se)


def member_choice(differences: dict[str, np.ndarray], verdicts: dict[str, Verdict], evidence: float, over_blend: dict[str, Verdict] | None = None) -> tuple[str | None, str]:
    """The pool a member uses (None: its local model) and why. Among the approved pools with a
    score for it, the one that beat its members by the most; kept unless the member's local model
    is clearly better than it on the member's own blocks.

    An approved blend comes first: it contains the member's local model and every pool, so it is
    the safe way to use them, and a single pool replaces it only when that pool beat the blend
    itself by ``evidence`` over its members (``over_blend``: the pool's verdict with the blend's
    losses in place of the local model's). Measured on Dominick's, a brand's pool that beat its
    members' local models by more than the blend did lost one week for all of them at once."""
    approved = [n for n in differences if verdicts.get(n) and verdicts[n].approved]
    if not approved:
        return None, ""
    if BLEND in approved:
        challengers = [n for n in approved if n != BLEND and (over_blend or {}).get(n) and over_blend[n].approved]
        best = min(challengers, key=lambda n: over_blend[n].mean) if challengers else BLEND
    else:
        best = min(approved, key=lambda n: verdicts[n].mean)
    own = differences[best]
    local_better = len(own) >= 2 and own.mean() > (automl._threshold(evidence, len(own)) if evidence > 0 else 0.0) * own.std(ddof=1) / math.sqrt(len(own))
    if local_better:
        return None, f"{best} kept out: this group's local model is clearly better on its own backtest"
    return best, verdicts[best].describe(best)
