"""Drivers of a forecast (``forecast.explain: K``) and each model's feature importance.

Every model's forecast is first split into additive contributions *in the
model's own space* plus a base value:

- LightGBM: its own per-feature contributions (``pred_contrib``, TreeSHAP) of
  each recursive step, on the raw score (for a log1p target: log space; for a
  poisson or tweedie objective: the log of the mean). They sum, with the base
  (the model's expected raw score), to the raw prediction exactly.
- linear: coefficient x (value - training mean) per standardised column,
  summed back to the user's column (a price and its log are one driver, the
  Fourier terms are ``season``, the series intercepts ``series``); the base is
  the intercept (the mean of the training target, transformed).
- ensemble: its members' drivers, each member's contributions mapped into the
  ensemble's space (exactly when the member's space is the ensemble's, else
  proportionally, as below) and divided by the number of members, merged by
  name: the ensemble is the average of its members in that space.
- baselines: the rule (``naive: last value``...) carries the whole forecast.
- ETS: its own ``level``, ``trend`` and ``season`` components, from the final
  states stored with the model (level l, trend b (phi + phi^2 + ...), season s
  added, or (l + trend)(s - 1) when multiplicative), used only where they
  reproduce the model's forecast (to 1e-6): the states are those of the fit,
  so a forecast from a history that has grown since, a damped trend whose
  states do not reproduce it, or a forecast clipped at 0 falls back to:
- the other statistical models (Theta, ARIMA, MSTL, the Croston family):
  ``level`` (the mean of the series' last season of history) and ``trend and
  season`` (the rest), a decomposition by rule, not the model's own.

In target units the contributions are then **scaled proportionally** so that
they sum to (shipped prediction - base in target units): with a log target a
contribution c in log space is a factor exp(c), and factors do not add; the
proportional share keeps each driver's sign and relative size and makes the
drivers plus the base reproduce the shipped prediction (after calibration
and any cap) exactly. The model-space contributions stay available
(``Explanation.contrib``) for those who want the exact additive attribution
on the model's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from . import statistical
from .features import design_matrix
from .kernels import GroupSpec, group_data
from .models import Fitted, GroupData, ensemble_members, forward, inverse, predict
from .pooling import is_blend
from .timeindex import calendar_names

# Objectives whose raw score is the log of the prediction (LightGBM's predict applies exp).
LOG_LINK = ("poisson", "tweedie", "gamma")
SEASON_WORDS = {52: "same week last year", 12: "same month last year", 7: "same day last week", 24: "same hour yesterday"}
RULES = {
    "naive": "naive: last value",
    "seasonal_naive": "seasonal naive: one season ago",
    "mean": "mean of history",
    "moving_average": "moving average of the last values",
}


@dataclass
class Explanation:
    names: list[str]  # one per column of contrib / effects
    contrib: np.ndarray  # (rows, drivers) in the model's space
    base_raw: np.ndarray  # (rows,) the model's base value in its space
    effects: np.ndarray  # (rows, drivers) in target units: base + effects = prediction
    base: np.ndarray  # (rows,) in target units

    def top(self, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Per row: the ``k`` drivers of largest |effect|, their names and effects (ties: first listed)."""
        order = np.argsort(-np.abs(self.effects), axis=1, kind="stable")[:, :k]
        names = np.asarray(self.names, dtype=object)
        return [list(names[o]) for o in order], np.take_along_axis(self.effects, order, axis=1)


def friendly_names(raw: list[str], season_length: int | None) -> list[str]:
    """Feature names as a planner reads them: ``lag_52 (same week last year)``, ``rolling mean of 4``."""
    out = []
    for name in raw:
        kind, _, n = name.partition("_")
        if kind == "lag" and n.isdigit():
            k = int(n)
            words = "last period" if k == 1 else SEASON_WORDS.get(k, "one season ago") if k == season_length else f"{k} periods ago"
            out.append(f"{name} ({words})")
        elif kind == "rmean" and n.isdigit():
            out.append(f"rolling mean of {n}")
        elif kind == "rstd" and n.isdigit():
            out.append(f"rolling std of {n}")
        else:
            out.append(name)
    return out


def explain_forecast(history: pd.DataFrame, future: pd.DataFrame, meta: dict, fitted: Fitted, spec: GroupSpec, prediction: np.ndarray) -> Explanation:
    """The drivers of the shipped point forecast ``prediction`` of ``future``'s rows."""
    if is_blend(meta["kind"]):  # its parts read the rows differently (a pool's series codes, statics)
        raise ValueError("a blend of a local model and pooled models has no drivers of its own")
    data, known, rows = _forecast_data(history, future, meta, spec)
    names, contrib, base_raw = _model_space(fitted, data, known, rows, history, spec)
    factor = float((meta.get("calibration") or {}).get("factor", 1.0))
    effects, base = _in_target_units(contrib, base_raw, prediction, _to_target(fitted, data, factor))
    return Explanation(names, contrib, base_raw, effects, base)


def _forecast_data(history, future, meta, spec):
    """The group's data as forecast_fitted builds it (history known, future rows to explain)."""
    frame = pd.concat([history, future], ignore_index=True)
    n_hist = len(history)
    y = np.concatenate([history[spec.target_column].to_numpy(dtype=np.float64), np.full(len(future), np.nan)])
    data = group_data(frame, spec, meta["info"], y)
    known = np.zeros(len(frame), dtype=bool)
    known[:n_hist] = True
    return data, known, np.arange(n_hist, len(frame))


def _model_space(fitted: Fitted, data: GroupData, known, rows, history, spec) -> tuple[list[str], np.ndarray, np.ndarray]:
    if fitted.kind == "lightgbm":
        return _lightgbm(fitted, data, known, rows)
    if fitted.kind == "linear":
        return _linear(fitted, data, rows)
    transform = fitted.state.get("transform", "none")
    if fitted.kind == "ensemble":
        return _ensemble(fitted, data, known, rows, history, spec)
    point = forward(predict(fitted, data, known, rows), transform)
    if fitted.kind in statistical.KINDS:
        own = _ets_components(fitted, data, known, rows, point) if fitted.kind == "ets" else None
        if own is not None:
            return ["level", "trend", "season"], own, np.zeros(len(rows))
        level = forward(_recent_level(data, known, rows), transform)
        return ["level", "trend and season"], np.column_stack([level, point - level]), np.zeros(len(rows))
    return [RULES.get(fitted.kind, fitted.kind)], point[:, None], np.zeros(len(rows))


def _ensemble(fitted: Fitted, data: GroupData, known, rows, history, spec) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The members' drivers in the ensemble's space, averaged and merged by name."""
    transform = fitted.state.get("transform", "none")
    members = ensemble_members(fitted)
    merged: dict[str, np.ndarray] = {}
    base = np.zeros(len(rows))
    for member in members:
        names, contrib, base_raw = _model_space(member, data, known, rows, history, spec)
        point = forward(predict(member, data, known, rows), transform)  # what the ensemble averages
        start = forward(_to_target(member, data, 1.0)(base_raw), transform)
        total = contrib.sum(axis=1)
        ok = np.abs(total) > 1e-12
        scaled = contrib * np.where(ok, (point - start) / np.where(ok, total, 1.0), 0.0)[:, None]
        # what the scaled contributions leave out (none unless they were all 0) stays in the base: exact sums
        base += (start + (point - start - scaled.sum(axis=1))) / len(members)
        for j, name in enumerate(names):
            merged[name] = merged.get(name, 0.0) + scaled[:, j] / len(members)
    names = list(merged)
    return names, (np.column_stack([merged[n] for n in names]) if names else np.empty((len(rows), 0))), base


def _lightgbm(fitted: Fitted, data: GroupData, known, rows) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The recursive forecast again, step by step, with each step's TreeSHAP contributions."""
    panel = data.panel
    grid = data.grid(known, forward(panel.y, fitted.state["transform"]))
    iteration = fitted.state.get("num_boost_round")
    n_features = len(data.spec.names(panel.calendar_names, data.with_series))
    contrib = np.empty((len(rows), n_features + 1))
    periods = panel.period[rows]
    for p in np.unique(periods):
        at = np.flatnonzero(periods == p)
        idx = rows[at]
        X = design_matrix(panel, idx, grid, data.first, data.spec, data.with_series)
        contrib[at] = fitted.booster.predict(X, num_iteration=iteration, num_threads=1, pred_contrib=True)
        # the value fed back as a lag is what predict_lightgbm feeds back: the model's output
        grid[panel.series[idx], p - data.first] = fitted.booster.predict(X, num_iteration=iteration, num_threads=1)
    names = friendly_names(data.spec.names(panel.calendar_names, data.with_series), data.spec.season_length)
    return names, contrib[:, :-1], contrib[:, -1]


def _linear(fitted: Fitted, data: GroupData, rows) -> tuple[list[str], np.ndarray, np.ndarray]:
    from .models import linear_features

    state = fitted.state
    X = linear_features(data, rows, state)
    coef = np.asarray(state["coef"])
    parts = ((X - np.asarray(state["mean_x"])) / np.asarray(state["scale_x"])) * coef if len(coef) else np.empty((len(rows), 0))
    owners = _linear_owners(data, state)
    names = list(dict.fromkeys(owners))
    summed = np.column_stack([parts[:, [i for i, o in enumerate(owners) if o == n]].sum(axis=1) for n in names]) if names else np.empty((len(rows), 0))
    return names, summed, np.full(len(rows), float(state["intercept"]))


def _linear_owners(data: GroupData, state: dict) -> list[str]:
    """The user's name of each column ``linear_features`` builds, in its order."""
    exog = list(data.spec.numeric_exog) + list(data.spec.categorical_exog)
    owners: list[str] = []
    for name, use_log in zip(exog, state["exog_log"]):
        owners += [name, name] if use_log else [name]
    if state["fourier_period"] and state["fourier_terms"]:
        owners += ["season"] * (2 * state["fourier_terms"])
    if state["n_series"] > 1:
        owners += ["series"] * state["n_series"]
    return owners


def _ets_components(fitted: Fitted, data: GroupData, known, rows, point: np.ndarray) -> np.ndarray | None:
    """(rows, 3): each row's level, trend and season from its series' stored ETS final states;
    None unless they reproduce ``point`` for every row (see the module)."""
    grid = data.grid(known)
    states = fitted.state["series"]
    out = np.full((len(rows), 3), np.nan)
    for s in np.unique(data.panel.series[rows]):
        state = states[s] if s < len(states) else None
        seen = np.flatnonzero(~np.isnan(grid[s]))
        if not state or state.get("components") is None or state.get("final_states") is None or not len(seen):
            return None
        at = np.flatnonzero(data.panel.series[rows] == s)
        h = data.panel.period[rows[at]] - (data.first + int(seen[-1]))
        if (h < 1).any():
            return None
        out[at] = _ets_parts(state, h)
    ok = bool(np.all(np.isfinite(out))) and np.allclose(out.sum(axis=1), point, rtol=1e-6, atol=1e-9)
    return out if ok else None


def _ets_parts(state: dict, h: np.ndarray) -> np.ndarray:
    final = np.asarray(state["final_states"], dtype=np.float64)
    comps, m = state["components"], int(state["m"])
    has_trend = comps[1] != "N"
    level, slope = final[0], (final[1] if has_trend else 0.0)
    seasons = final[2:] if has_trend else final[1:]
    phi = float(state["phi"]) if comps[3] == "D" and state.get("phi") is not None else 1.0
    trend = slope * np.array([np.sum(phi ** np.arange(1, k + 1)) for k in h])
    if comps[2] == "N" or not len(seasons):
        season = np.zeros(len(h))
    else:
        s = seasons[m - 1 - ((h - 1) % m)]  # statsforecast keeps the newest season state first
        season = (level + trend) * (s - 1.0) if comps[2] == "M" else s
    return np.column_stack([np.full(len(h), level), trend, season])


def _recent_level(data: GroupData, known, rows) -> np.ndarray:
    """Per row: the mean of its series' last season (or 4 periods) of known values."""
    grid = data.grid(known)
    m = data.spec.season_length if data.spec.season_length and data.spec.season_length > 1 else 4
    levels = np.full(grid.shape[0], np.nan)
    for s in range(grid.shape[0]):
        seen = grid[s][~np.isnan(grid[s])]
        if len(seen):
            levels[s] = float(np.mean(seen[-m:]))
    return levels[data.panel.series[rows]]


def _to_target(fitted: Fitted, data: GroupData, factor: float):
    """The map from the model's space to target units: link, inverse transform, calibration ``factor``, clip."""
    transform = fitted.state.get("transform", "none")
    objective = str((fitted.state.get("params") or {}).get("objective", "l2")) if fitted.kind == "lightgbm" else ""

    def to_target(raw: np.ndarray) -> np.ndarray:
        out = np.exp(raw) if objective in LOG_LINK else raw
        out = inverse(out, transform) * factor
        return np.maximum(out, 0.0) if data.nonnegative else out

    return to_target


def _in_target_units(contrib: np.ndarray, base_raw: np.ndarray, prediction: np.ndarray, to_target) -> tuple[np.ndarray, np.ndarray]:
    """Contributions scaled so that base + effects = prediction in target units (see the module)."""
    base = to_target(base_raw)
    total = contrib.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(np.abs(total) > 1e-12, (prediction - base) / np.where(np.abs(total) > 1e-12, total, 1.0), 0.0)
    return contrib * scale[:, None], base


def importance(meta: dict, model_text: str | None, frame: pd.DataFrame, spec: GroupSpec, gain: list[float] | None = None) -> dict[str, float]:
    """A model's feature importance, as shares summing to 1 (empty for models without features):
    LightGBM's total gain per feature; for the linear model, |coefficient| on the
    standardised columns (the effect of one standard deviation), summed per user column.
    ``gain``: the booster's gain per feature when the caller still has the booster (the train
    step's fit), so that ``model_text`` is not parsed into a booster again."""
    kind = meta["kind"]
    members = meta["state"].get("members") or []
    if kind == "lightgbm" or (kind == "ensemble" and any(m["kind"] == "lightgbm" for m in members)):
        if gain is None:
            if model_text is None:
                return {}
            gain = lgb.Booster(model_str=model_text).feature_importance(importance_type="gain")
        names = friendly_names(_feature_names(meta, spec), (meta["info"]["features"] or {}).get("season_length"))
        return _shares(dict(zip(names, gain)))
    if kind == "linear":
        data = group_data(frame.head(1), spec, meta["info"], np.full(1, np.nan))
        owners = _linear_owners(data, meta["state"])
        weights: dict[str, float] = {}
        for owner, c in zip(owners, meta["state"]["coef"]):
            weights[owner] = weights.get(owner, 0.0) + abs(float(c))
        return _shares(weights)
    return {}


def _feature_names(meta: dict, spec: GroupSpec) -> list[str]:
    features = meta["info"]["features"]
    calendar = list(calendar_names(spec.time_axis)) if features.get("calendar") else []
    from .features import FeatureSpec

    return FeatureSpec(**features).names(calendar, len(meta["info"]["series"]) > 1)


def _shares(weights: dict[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    if total <= 0:
        return {}
    return {k: round(v / total, 6) for k, v in sorted(weights.items(), key=lambda kv: -kv[1]) if v > 0}
