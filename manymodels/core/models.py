"""Forecasting candidates: LightGBM and fast baselines.

Every candidate fits on the rows of a group marked ``train`` and predicts rows
given only the values marked ``known`` (the history up to a cutoff). LightGBM
forecasts recursively, one period at a time, writing its predictions into the
grid its lags are read from, so a multi-step forecast never uses a value that
was not known at the cutoff. A fitted model is plain JSON state (plus, for
LightGBM, the booster in LightGBM's own text format): no pickle.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from . import statistical
from .features import (
    FeatureSpec,
    Panel,
    design_matrix,
    one_row_features,
    padded_grid,
    static_columns,
    step_features,
)

BASELINES = ("naive", "seasonal_naive", "mean", "moving_average", "linear")


@dataclass
class GroupData:
    """A group ready for modelling: its panel, feature spec and target facts."""

    panel: Panel
    spec: FeatureSpec
    with_series: bool  # more than one series in the group: add the series code feature
    nonnegative: bool  # every training target >= 0 (sales): log transform allowed, clip at 0
    first: int  # first period of the grid
    last: int  # last period of the grid
    mase_scale: float | None = None  # in-sample seasonal-naive MAE, for the mase metric

    def grid(self, known: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        panel = self.panel
        y = panel.y if values is None else values
        grid = np.full((panel.n_series, self.last - self.first + 1), np.nan)
        rows = known & ~np.isnan(y)
        grid[panel.series[rows], panel.period[rows] - self.first] = y[rows]
        return grid


@dataclass
class Fitted:
    kind: str
    state: dict[str, Any] = field(default_factory=dict)
    booster: lgb.Booster | None = None
    parts: list = field(default_factory=list)  # a blend's (meta, Fitted) parts (core/pooling.py)


# -- target transforms -------------------------------------------------------

def forward(y: np.ndarray, transform: str) -> np.ndarray:
    return np.log1p(np.maximum(y, 0.0)) if transform == "log1p" else y


def inverse(y: np.ndarray, transform: str) -> np.ndarray:
    return np.expm1(y) if transform == "log1p" else y


def finish(pred: np.ndarray, data: GroupData) -> np.ndarray:
    return np.maximum(pred, 0.0) if data.nonnegative else pred


# -- LightGBM ----------------------------------------------------------------

def default_lightgbm_params(n_rows: int, seed: int) -> dict[str, Any]:
    return {
        "objective": "l2",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": int(min(20, max(3, n_rows // 20))),
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "min_data_per_group": 5,
        "cat_smooth": 5.0,
        "max_cat_to_onehot": 8,
        "verbose": -1,
        "seed": seed,
    }


# Parameters mm always sets: one thread per fit (the process pool gives the
# parallelism; threads inside would fight it) and reproducible results.
FORCED_LGB = {"num_threads": 1, "deterministic": True, "force_col_wise": True, "verbose": -1}
_threads = [1]  # LightGBM threads of the fits of this process: 1, but a pooled fit uses all it is given


@contextmanager
def lightgbm_threads(n: int) -> Iterator[None]:
    """Fit and predict with ``n`` LightGBM threads inside (a pool: one big fit, run alone)."""
    before = _threads[0]
    _threads[0] = max(1, int(n))
    try:
        yield
    finally:
        _threads[0] = before


def fit_lightgbm(
    data: GroupData,
    train: np.ndarray,
    params: dict[str, Any],
    num_boost_round: int,
    transform: str,
    valid: np.ndarray | None = None,
    early_stopping_rounds: int | None = None,
) -> Fitted:
    """Fit on rows ``train``; with ``valid`` rows, stop early on their one-step error."""
    panel = data.panel
    y = forward(panel.y, transform)
    rows = np.flatnonzero(train & ~np.isnan(panel.y))
    grid = data.grid(train, y)
    X = design_matrix(panel, rows, grid, data.first, data.spec, data.with_series)
    categorical = categorical_columns(data)
    full = {**params, **FORCED_LGB, "num_threads": _threads[0]}
    full.setdefault("min_data_in_bin", 1)
    dataset = lgb.Dataset(X, y[rows], categorical_feature=categorical, params=full, free_raw_data=True)
    callbacks = []
    valid_sets = []
    if valid is not None and early_stopping_rounds:
        vrows = np.flatnonzero(valid & ~np.isnan(panel.y))
        if len(vrows):
            # one-step-ahead validation: lags of the validation rows from actual values
            vgrid = data.grid(train | valid, y)
            Xv = design_matrix(panel, vrows, vgrid, data.first, data.spec, data.with_series)
            valid_sets = [dataset.create_valid(Xv, y[vrows])]
            callbacks.append(EarlyStopping(early_stopping_rounds))
    # keep_training_booster: skip LightGBM's string round-trip on return (we never train further)
    booster = lgb.train(full, dataset, num_boost_round=num_boost_round, valid_sets=valid_sets or None, callbacks=callbacks, keep_training_booster=True)
    best = booster.best_iteration if valid_sets and booster.best_iteration > 0 else booster.current_iteration()
    state = {"params": params, "num_boost_round": int(best), "transform": transform}
    return Fitted("lightgbm", state, booster)


class EarlyStopping:
    """``lgb.early_stopping(rounds)`` for what mm passes (one validation set, one metric, no
    min_delta): the same best iteration, at a fraction of the cost of lightgbm's general
    callback, which runs after every boosting round of every search trial (its checks for cv,
    dart and training-set names cost more than the small groups' trees)."""

    order = 30  # lightgbm's own early stopping's place among callbacks
    before_iteration = False

    def __init__(self, rounds: int):
        self.rounds = rounds
        self.best_iter = 0
        self.best_score = math.nan
        self.best_results: list | None = None

    def __call__(self, env) -> None:
        result = env.evaluation_result_list[0]  # (data name, metric, value, higher is better)
        value = result[2]
        better = value > self.best_score if result[3] else value < self.best_score
        if self.best_results is None or better:
            self.best_score, self.best_iter, self.best_results = value, env.iteration, env.evaluation_result_list
        elif env.iteration - self.best_iter >= self.rounds:
            raise lgb.callback.EarlyStopException(self.best_iter, self.best_results)
        if env.iteration == env.end_iteration - 1:
            raise lgb.callback.EarlyStopException(self.best_iter, self.best_results)


def categorical_columns(data: GroupData) -> list[int]:
    spec = data.spec
    start = spec.n_history_columns + len(spec.numeric_exog)
    cols = list(range(start, start + len(spec.categorical_exog)))
    if data.with_series:
        n_cal = data.panel.calendar.shape[1] if spec.calendar else 0
        cols.append(start + len(spec.categorical_exog) + n_cal)
    return cols


def predict_lightgbm(fitted: Fitted, data: GroupData, known: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Recursive multi-step forecast of ``rows`` from the values marked ``known``.

    The rows' known-future, calendar and series columns are laid out once; ``step_forward``
    fills their lags and windows step by step."""
    panel, spec = data.panel, data.spec
    transform = fitted.state["transform"]
    padded, max_back = padded_grid(data.grid(known, forward(panel.y, transform)), spec)
    n_lag = spec.n_history_columns
    static = static_columns(panel, rows, spec, data.with_series)
    X = np.empty((len(rows), n_lag + static.shape[1]))
    X[:, n_lag:] = static
    booster = fitted.booster
    iteration = fitted.state.get("num_boost_round")
    one_row = None  # the single-row predictor, set up at the first step of one row

    def predict_row(x: np.ndarray) -> float:
        nonlocal one_row
        if one_row is None:  # Booster.predict's num_iteration=None: the best iteration (0: all trees)
            one_row = RowPredictor(booster, int(booster.best_iteration if iteration is None else iteration), len(x))
        return one_row.predict(x)

    def predict_rows(rows_X: np.ndarray) -> np.ndarray:
        return booster.predict(rows_X, num_iteration=iteration, num_threads=_threads[0])

    # the single-row predictor's output buffer holds one number: a booster of several outputs a row steps through predict
    single = predict_row if booster.num_model_per_iteration() == 1 else None
    out = step_forward(padded, X, panel.series[rows], panel.period[rows] - data.first + max_back, panel.period[rows], spec, single, predict_rows)
    return finish(inverse(out, transform), data)


def step_forward(padded: np.ndarray, X: np.ndarray, series: np.ndarray, pos: np.ndarray, periods: np.ndarray, spec: FeatureSpec,
                 predict_row, predict_rows) -> np.ndarray:
    """The recursive forecast of rows whose columns after the lags and windows are laid out in
    ``X``: period by period, each step fills its rows' lags and windows from the padded grid
    (``features.step_features``: the numbers ``lag_features`` gives), predicts them and writes
    the predictions into the grid, for the next steps to read. ``pos``: each row's column in
    ``padded``. ``predict_row(x) -> float`` predicts a step of one row (None: ``predict_rows``
    does), ``predict_rows(X) -> array`` a step of several. The batch forecast
    (``predict_lightgbm``) and the what-if path of ``mm serve`` (``extras.whatif``) step here."""
    lags = np.asarray(spec.lags, dtype=np.int64)
    windows = list(spec.windows)
    n_lag = spec.n_history_columns
    out = np.empty(len(series))
    steps = np.unique(periods)
    if predict_row is not None and len(steps) == len(periods):
        # one row a step (one series, say): the rows in period order, without grouping them per step
        for i in np.argsort(periods, kind="stable").tolist():
            s, at = int(series[i]), int(pos[i])
            X[i, :n_lag] = one_row_features(padded[s], at, lags, windows)
            out[i] = padded[s, at] = predict_row(X[i])
        return out
    backs = [np.arange(1, w + 1) for w in windows]
    for p in steps:
        at = np.flatnonzero(periods == p)
        X[at, :n_lag] = step_features(padded, series[at], pos[at], spec, lags, backs)
        step = np.array([predict_row(X[at[0]])]) if len(at) == 1 and predict_row is not None else predict_rows(X[at])
        padded[series[at], pos[at]] = step
        out[at] = step
    return out


C_API_PREDICT_NORMAL = 0  # LightGBM's c_api.h
C_API_DTYPE_FLOAT64 = 1


class RowPredictor:
    """``Booster.predict`` of one row, its setup done once: LightGBM's ``SingleRowFast`` C API
    (7 microseconds a row instead of 91 for a 150-tree booster: ``Booster.predict`` builds a
    predictor from its parameter string on every call). Same trees, same row: the same number.
    A recursive forecast of one series predicts one row a step (``predict_lightgbm``), and so
    does the what-if path of ``mm serve`` (``extras.whatif``)."""

    def __init__(self, booster: lgb.Booster, num_iteration: int, n_features: int):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._call, self._check = _LIB.LGBM_BoosterPredictForMatSingleRowFast, _safe_call
        self._free = _LIB.LGBM_FastConfigFree
        self.booster = booster  # kept alive: the fast config points into it
        self.handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(C_API_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(num_iteration),
            ctypes.c_int(C_API_DTYPE_FLOAT64), ctypes.c_int32(n_features), _c_str("num_threads=1"), ctypes.byref(self.handle),
        ))
        self.row = np.zeros(n_features)  # the input buffer and the output, their pointers taken once
        self.out = np.zeros(1)
        self._n = ctypes.c_int64(0)
        self._args = (self.handle, self.row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._n), self.out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
        self.lock = threading.Lock()  # one fast config, one row buffer: one caller at a time

    def predict(self, row: np.ndarray) -> float:
        self.row[:] = row
        self._check(self._call(*self._args))
        return float(self.out[0])

    def __del__(self):
        if getattr(self, "handle", None) is not None and self.handle.value:
            self._free(self.handle)


# -- baselines ---------------------------------------------------------------

def _last_known(grid: np.ndarray, k: int = 1) -> np.ndarray:
    """Per series: the mean of its last ``k`` known values (NaN if none)."""
    out = np.full(grid.shape[0], np.nan)
    for s in range(grid.shape[0]):
        values = grid[s][~np.isnan(grid[s])]
        if len(values):
            out[s] = values[-k:].mean()
    return out


def predict_baseline(fitted: Fitted, data: GroupData, known: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Baselines average in the target-transform space: a log1p model's mean is a geometric mean."""
    panel = data.panel
    series = panel.series[rows]
    kind = fitted.kind
    if kind == "linear":
        return predict_linear(fitted, data, rows)
    transform = fitted.state.get("transform", "none")
    grid = data.grid(known, forward(panel.y, transform))
    if kind == "naive":
        pred = _last_known(grid)[series]
    elif kind == "mean":
        with np.errstate(all="ignore"):
            means = np.array([np.nanmean(r) if np.any(~np.isnan(r)) else np.nan for r in grid])
        pred = means[series]
    elif kind == "moving_average":
        pred = _last_known(grid, int(fitted.state["window"]))[series]
    elif kind == "seasonal_naive":
        pred = _seasonal_naive(grid, data, series, panel.period[rows], int(fitted.state["season_length"]))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return finish(inverse(pred, transform), data)


def _seasonal_naive(grid: np.ndarray, data: GroupData, series: np.ndarray, periods: np.ndarray, m: int) -> np.ndarray:
    pred = np.full(len(series), np.nan)
    todo = np.ones(len(series), dtype=bool)
    pos = periods - data.first
    k = 1
    while todo.any():
        back = pos - k * m
        valid = todo & (back >= 0)
        if not valid.any():
            break
        value = np.full(len(series), np.nan)
        value[valid] = grid[series[valid], back[valid]]
        hit = valid & ~np.isnan(value)
        pred[hit] = value[hit]
        todo &= ~hit
        k += 1
    if todo.any():  # no value a whole number of seasons back: fall back to the last value
        pred[todo] = _last_known(grid)[series[todo]]
    return pred


def fit_baseline(kind: str, data: GroupData, train: np.ndarray, params: dict[str, Any]) -> Fitted:
    if kind == "linear":
        return fit_linear(data, train, params)
    state: dict[str, Any] = {"transform": params.get("transform", "none")}
    if kind == "moving_average":
        state["window"] = int(params.get("window", 4))
    if kind == "seasonal_naive":
        state["season_length"] = int(params["season_length"])
    return Fitted(kind, state)


# -- regularised linear model on known-future columns -----------------------

RIDGE_ALPHAS = tuple(10.0 ** np.arange(-3, 3.5, 0.5))


# With more series than this, the series intercepts are fitted as fixed effects (not penalised)
# instead of penalised one-hot columns: that solve is O(series^3) and its design rows x series,
# which a pool cannot afford (11,973 series x 1.2 M rows: 115 GB). With tens of rows a series the
# penalty on an intercept is small; the stored state has the same form either way.
DENSE_SERIES_LIMIT = 200


def linear_features(data: GroupData, rows: np.ndarray, state: dict[str, Any], series: bool = True) -> np.ndarray:
    """Known-future columns (and their logs when positive), seasonal terms, series intercepts
    (one-hot; ``series=False`` leaves them out: ``_series_term`` computes their part).

    Each known-future column is clamped to its training range before its
    transforms, so the model never extrapolates beyond the values it was fitted on.
    """
    panel = data.panel
    cols = []
    exog = panel.exog[rows]
    low, high = state.get("exog_min"), state.get("exog_max")  # absent in models of mm <= 0.1.0
    for j, use_log in enumerate(state["exog_log"]):
        x = exog[:, j]
        x = np.where(np.isnan(x), state["exog_fill"][j], x)
        if low is not None:
            # clamped to the training range: a price of 0 never seen in training must not be
            # extrapolated (through its log) into a forecast of billions
            x = np.clip(x, low[j], high[j])
        cols.append(x)
        if use_log:
            cols.append(np.log(np.maximum(x, 1e-9)))
    m, k = state["fourier_period"], state["fourier_terms"]
    if m and k:
        angle = 2 * math.pi * panel.period[rows] / m
        for i in range(1, k + 1):
            cols += [np.sin(i * angle), np.cos(i * angle)]
    n_series = state["n_series"]
    if n_series > 1 and series:
        onehot = np.zeros((len(rows), n_series))
        codes = panel.series[rows]
        seen = codes < n_series
        onehot[np.flatnonzero(seen), codes[seen]] = 1.0
        onehot[~seen] = 1.0 / n_series  # a series not seen in training: the average intercept
        cols.append(onehot)
    if not cols:
        return np.empty((len(rows), 0))
    return np.column_stack(cols)


def fit_linear(data: GroupData, train: np.ndarray, params: dict[str, Any]) -> Fitted:
    panel = data.panel
    transform = params.get("transform", "log1p" if data.nonnegative else "none")
    y = forward(panel.y, transform)
    rows = np.flatnonzero(train & ~np.isnan(panel.y))
    exog = panel.exog[rows]
    seen = [exog[:, j][~np.isnan(exog[:, j])] for j in range(exog.shape[1])]
    fill = [float(x.mean()) if len(x) else 0.0 for x in seen]
    exog_log = [bool(len(x) and x.min() > 0 and len(np.unique(x)) > 2) for x in seen]
    m = data.spec.season_length
    span = int(panel.period[rows].max() - panel.period[rows].min() + 1) if len(rows) else 0
    terms = min(3, m // 2) if m and m >= 4 and span >= m else 0
    state: dict[str, Any] = {
        "transform": transform,
        "exog_fill": fill,
        "exog_log": exog_log,
        "exog_min": [float(x.min()) if len(x) else 0.0 for x in seen],
        "exog_max": [float(x.max()) if len(x) else 0.0 for x in seen],
        "fourier_period": m or 0,
        "fourier_terms": terms,
        "n_series": int(panel.n_series),
    }
    target = y[rows]
    y_mean = float(target.mean()) if len(target) else 0.0
    alphas = params.get("alphas", RIDGE_ALPHAS)
    if state["n_series"] > DENSE_SERIES_LIMIT:
        mean_x, scale, coef, alpha = _fixed_effects_ridge(linear_features(data, rows, state, series=False), panel.series[rows], target, y_mean, state["n_series"], alphas)
    else:
        X = linear_features(data, rows, state)
        mean_x, scale = _standardisation(X)
        coef, alpha = _ridge_gcv((X - mean_x) / scale, target - y_mean, alphas)
    state.update({"mean_x": mean_x.tolist(), "scale_x": scale.tolist(), "coef": coef.tolist(), "intercept": y_mean, "alpha": alpha})
    return Fitted("linear", state)


def _standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not X.shape[1]:
        return np.empty(0), np.empty(0)
    scale = X.std(axis=0)
    return X.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


def _fixed_effects_ridge(X: np.ndarray, codes: np.ndarray, target: np.ndarray, y_mean: float, n_series: int, alphas) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The ridge with one unpenalised intercept per series (the within estimator), as the
    one-hot form's state: the dense columns standardised and their coefficients, then per
    series its intercept minus ``y_mean``, on columns of mean 0 and scale 1 (so a series never
    seen in training gets the average intercept, as in the one-hot form)."""
    mean_x, scale = _standardisation(X)
    Z = (X - mean_x) / scale
    counts = np.bincount(codes, minlength=n_series).astype(float)
    per_series = np.maximum(counts, 1.0)
    z_bar = np.column_stack([np.bincount(codes, weights=Z[:, j], minlength=n_series) / per_series for j in range(Z.shape[1])]) if Z.shape[1] else np.zeros((n_series, 0))
    t_bar = np.bincount(codes, weights=target, minlength=n_series) / per_series
    fitted = counts > 0
    coef, alpha = _ridge_gcv(Z - z_bar[codes], target - t_bar[codes], alphas, extra_dof=int(fitted.sum()))
    effect = t_bar - z_bar @ coef - y_mean
    effect[~fitted] = effect[fitted].mean() if fitted.any() else 0.0  # a series without rows: the average
    return np.concatenate([mean_x, np.zeros(n_series)]), np.concatenate([scale, np.ones(n_series)]), np.concatenate([coef, effect]), alpha


def _series_term(state: dict[str, Any], codes: np.ndarray, n_dense: int) -> np.ndarray:
    """The one-hot columns' part of a linear prediction without building them (rows x series):
    for series c, sum over s of (onehot_s - mean_s) / scale_s * coef_s = a_c - sum_s mean_s a_s,
    a = coef / scale; a series not seen in training (every one-hot 1/n): mean(a) - the same sum."""
    n = int(state["n_series"])
    a = np.asarray(state["coef"][n_dense:]) / np.asarray(state["scale_x"][n_dense:])
    offset = float(np.asarray(state["mean_x"][n_dense:]) @ a)
    out = np.full(len(codes), float(a.mean()) - offset)
    seen = codes < n
    out[seen] = a[codes[seen]] - offset
    return out


def predict_linear(fitted: Fitted, data: GroupData, rows: np.ndarray) -> np.ndarray:
    state = fitted.state
    X = linear_features(data, rows, state, series=False)
    d = X.shape[1]
    coef = np.asarray(state["coef"])
    pred = np.full(len(rows), state["intercept"])
    if d:
        pred = pred + ((X - np.asarray(state["mean_x"][:d])) / np.asarray(state["scale_x"][:d])) @ coef[:d]
    if state["n_series"] > 1 and len(coef) > d:
        pred = pred + _series_term(state, data.panel.series[rows], d)
    return finish(inverse(pred, state["transform"]), data)


def _ridge_gcv(Z: np.ndarray, y: np.ndarray, alphas, extra_dof: int = 0) -> tuple[np.ndarray, float]:
    """Ridge coefficients with the penalty chosen by generalised cross-validation.

    Works on the p x p Gram matrix (eigendecomposition) rather than an SVD of
    the n x p design: same path, no n x p factor, cheap for long groups.
    ``extra_dof``: unpenalised parameters fitted before (the fixed effects), in GCV's degrees of freedom.
    """
    n, p = Z.shape
    if p == 0 or n == 0:
        return np.zeros(p), 0.0
    eigval, V = np.linalg.eigh(Z.T @ Z)
    eigval = np.maximum(eigval, 0.0)
    Vty = V.T @ (Z.T @ y)
    yy = float(y @ y)
    best = (math.inf, np.zeros(p), 0.0)
    for alpha in alphas:
        shrink = 1.0 / (eigval + alpha)
        coef_v = shrink * Vty  # coefficients in the eigenbasis
        # ||y - Z b||^2 = y'y - 2 b'Z'y + b'Z'Z b, all in p-space
        rss = yy - 2.0 * float(coef_v @ Vty) + float(coef_v @ (eigval * coef_v))
        dof = float(np.sum(eigval * shrink)) + extra_dof
        denom = (1 - dof / n) ** 2 if n > dof else 1e-12
        gcv = max(rss, 0.0) / n / max(denom, 1e-12)
        if gcv < best[0]:
            best = (gcv, V @ coef_v, float(alpha))
    return best[1], best[2]


# -- ensemble ----------------------------------------------------------------

def make_ensemble(members: list[Fitted], transform: str) -> Fitted:
    """The average of fitted members (in the transform space); one booster at most."""
    booster = next((m.booster for m in members if m.booster is not None), None)
    state = {"members": [{"kind": m.kind, "state": m.state} for m in members], "transform": transform}
    return Fitted("ensemble", state, booster)


def ensemble_members(fitted: Fitted) -> list[Fitted]:
    return [Fitted(m["kind"], m["state"], fitted.booster if m["kind"] == "lightgbm" else None) for m in fitted.state["members"]]


def average(predictions: list[np.ndarray], transform: str) -> np.ndarray:
    """The members' mean in the transform space (a geometric-like mean for log1p models)."""
    return inverse(np.mean([forward(p, transform) for p in predictions], axis=0), transform)


def predict_ensemble(fitted: Fitted, data: GroupData, known: np.ndarray, rows: np.ndarray) -> np.ndarray:
    predictions = [predict(m, data, known, rows) for m in ensemble_members(fitted)]
    return finish(average(predictions, fitted.state["transform"]), data)


# -- statistical (per series, core/statistical.py on statsforecast) -----------

STATISTICAL = statistical.KINDS


def _series_history(grid: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """Series ``s``'s known values up to its last known one, and that one's grid column (-1: none)."""
    seen = np.flatnonzero(~np.isnan(grid[s]))
    if not len(seen):
        return grid[s][:0], -1
    return grid[s][: seen[-1] + 1], int(seen[-1])


def fit_statistical(kind: str, data: GroupData, train: np.ndarray, params: dict[str, Any]) -> Fitted:
    """One statistical model per series of the group, on its values in ``train`` (raw target space).

    A series without any value in ``train`` gets no state (its rows forecast NaN);
    ``statistical.CandidateUnfit`` on any other series propagates."""
    grid = data.grid(train)
    season = params.get("season_length")
    states = []
    for s in range(data.panel.n_series):
        y, last = _series_history(grid, s)
        states.append(statistical.fit_series(kind, y, season) if last >= 0 else None)
    return Fitted(kind, {"kind": kind, "transform": "none", "season_length": season, "series": states})


def predict_statistical(fitted: Fitted, data: GroupData, known: np.ndarray, rows: np.ndarray, quantiles=()) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Point forecasts (and the model's own ``quantiles``) of ``rows`` from each series' known values.

    Step k of a series' forecast is the period k after its last known value; a
    row at or before that period (or of a series with no state) gets NaN."""
    panel = data.panel
    grid = data.grid(known)
    point = np.full(len(rows), np.nan)
    bands = {float(q): np.full(len(rows), np.nan) for q in quantiles}
    states = fitted.state["series"]
    for s in np.unique(panel.series[rows]):
        at = np.flatnonzero(panel.series[rows] == s)
        state = states[s] if s < len(states) else None
        y, last = _series_history(grid, int(s))
        if state is None or last < 0:
            continue
        steps = panel.period[rows[at]] - (data.first + last)
        ok = steps >= 1
        if not ok.any():
            continue
        h = int(steps[ok].max())
        mean, _ = statistical.forecast_series(state, y, h)
        point[at[ok]] = mean[steps[ok] - 1]
        if bands:
            for q, values in statistical.forecast_quantiles(state, y, h, list(bands)).items():
                bands[float(q)][at[ok]] = values[steps[ok] - 1]
    return point, bands


# -- dispatch ----------------------------------------------------------------

def predict(fitted: Fitted, data: GroupData, known: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if fitted.kind == "lightgbm":
        return predict_lightgbm(fitted, data, known, rows)
    if fitted.kind == "ensemble":
        return predict_ensemble(fitted, data, known, rows)
    if fitted.kind in STATISTICAL:
        return predict_statistical(fitted, data, known, rows)[0]
    return predict_baseline(fitted, data, known, rows)
