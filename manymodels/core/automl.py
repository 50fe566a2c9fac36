"""AutoML per group: backtest candidates, tune LightGBM with Optuna, choose, calibrate.

Candidates are scored on rolling-origin backtest folds (see
``kernels.backtest_folds``) by the configured metric, pooled over all folds.

- Calibration: each candidate's forecasts are scaled by the factor that
  minimises the metric (see ``calibration``), cross-fitted over folds so that no
  fold is scored with a factor fitted on itself.
- Choice: the ``reference`` candidate (by default the ensemble of LightGBM and
  the linear model) is kept unless another one beats it by ``evidence``
  standard errors of the paired backtest difference. With a few weeks of
  backtest per series, the plain best score mostly picks noise: on Dominick's
  orange juice it cost 5 MAPE points against always using the ensemble.
- Metric: the configured one, unless it cannot score most of a group's
  backtest (``selection_metric``: MAPE on mostly-zero actuals, WAPE on all-zero
  ones, MASE on a constant history); then the group is chosen, tuned and
  calibrated by the next metric that can, and its note says so.
- LightGBM's search covers leaves, learning rate, rounds (early stopping on the
  fold's one-step-ahead error, as ``lightgbm.cv`` does), min data in leaf,
  feature and bagging fractions, L1/L2, the objective and a log target. Hopeless
  trials are pruned after their first fold, and the search stops after
  ``patience`` trials in a row that did not beat its best. The first trial is
  always the default parameters, so tuning can only improve on them in backtest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import calibration
from .metrics import scores, unscored
from .models import (
    Fitted,
    GroupData,
    average,
    fit_baseline,
    fit_lightgbm,
    fit_statistical,
    forward,
    predict,
)
from .statistical import CandidateUnfit

MAX_TUNED_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 30
# With no backtest fold (very short history), prefer the simplest sound model.
NO_BACKTEST_PREFERENCE = ("moving_average", "mean", "naive", "linear", "seasonal_naive", "lightgbm")


@dataclass
class Evaluation:
    """A candidate's backtest: its parameters and its predictions on every fold."""

    kind: str
    params: dict[str, Any]
    mase_scale: float | None = None
    actual: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    series: list[np.ndarray] = field(default_factory=list)  # each test row's series code, per fold

    def add(self, actual: np.ndarray, predicted: np.ndarray, series: np.ndarray | None = None) -> None:
        self.actual.append(actual)
        self.predicted.append(predicted)
        self.series.append(np.zeros(len(actual), dtype=np.int64) if series is None else np.asarray(series))

    def add_rows(self, data: GroupData, rows: np.ndarray, predicted: np.ndarray) -> None:
        """One fold's test ``rows``: their actuals, the predictions and their series."""
        self.add(data.panel.y[rows], predicted, data.panel.series[rows])

    def like(self, predicted: list[np.ndarray], kind: str | None = None, params: dict | None = None) -> Evaluation:
        """The same folds and rows with other predictions."""
        return Evaluation(kind or self.kind, self.params if params is None else params, self.mase_scale, list(self.actual), list(predicted), list(self.series))

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.actual:
            return np.empty(0), np.empty(0)
        return np.concatenate(self.actual), np.concatenate(self.predicted)

    def metrics(self) -> dict[str, float]:
        a, p = self._pooled()
        return scores(a, p, self.mase_scale)

    def unscored(self) -> dict[str, int]:
        """Per metric, the backtest rows it could not score (see ``metrics``)."""
        a, p = self._pooled()
        return unscored(a, p, self.mase_scale)

    def n_rows(self) -> int:
        """Backtest rows (over all folds) with an actual and a prediction: what ``metrics`` are computed over."""
        a, p = self._pooled()
        return int(np.sum(~(np.isnan(a) | np.isnan(p))))

    def score(self, metric: str) -> float:
        """The selection score: NaN without folds, inf when the folds gave no usable value."""
        value = self.metrics()[metric]
        return value if not math.isnan(value) else math.inf if self.actual else math.nan

    def point_losses(self, metric: str) -> np.ndarray:
        """Each backtest point's contribution to ``metric`` (NaN where undefined)."""
        a, p = self._pooled()
        err = np.abs(p - a)
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "mape":
                return np.where(a != 0, err / np.abs(a), np.nan)
            if metric == "smape":
                denom = np.abs(a) + np.abs(p)
                return np.where(denom > 0, 2 * err / np.where(denom > 0, denom, 1), 0.0)
            if metric == "rmse":
                return err**2
        return err  # wape, mase: absolute errors (their scale is the same for every candidate)

    def fold_score(self, metric: str, fold: int) -> float:
        """``metric`` on one fold's rows alone (NaN where it cannot score them)."""
        return scores(self.actual[fold], self.predicted[fold], self.mase_scale)[metric]

    def block_losses(self, metric: str) -> np.ndarray:
        """The mean point loss of each (fold, series) block, NaN where none is defined.

        Errors of one series from one forecast origin are not independent draws (they
        share that origin's level error), so the paired test of ``pick_winner`` counts
        each block once: one series with one fold gives one observation, not h."""
        losses = self.point_losses(metric)
        if not len(losses):
            return losses
        fold = np.concatenate([np.full(len(a), i) for i, a in enumerate(self.actual)])
        block = fold * (int(np.concatenate(self.series).max()) + 1) + np.concatenate(self.series)
        ok = ~np.isnan(losses)
        keys, inverse = np.unique(block, return_inverse=True)
        total = np.bincount(inverse, weights=np.where(ok, losses, 0.0), minlength=len(keys))
        count = np.bincount(inverse, weights=ok.astype(float), minlength=len(keys))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)

    def factor(self, metric: str, exclude: int | None = None, prior: float = 1.0) -> float:
        """The calibration factor fitted on every fold but ``exclude``, shrunk towards ``prior``."""
        kept = [i for i in range(len(self.actual)) if i != exclude]
        if not kept:
            return prior
        a = np.concatenate([self.actual[i] for i in kept])
        p = np.concatenate([self.predicted[i] for i in kept])
        return calibration.factor(a, p, metric, prior)

    def calibrated(self, metric: str, priors: Sequence[float] | None = None) -> Evaluation:
        """This backtest with each fold scaled by the factor fitted on the other folds.

        Cross-fitting keeps the score honest: no fold is scored with a factor
        fitted on itself (``priors``, one per fold, must not have seen it either).
        With a single fold there is nothing to cross-fit with.
        """
        if len(self.actual) < 2:
            return self
        priors = priors or [1.0] * len(self.predicted)
        return self.like([p * self.factor(metric, exclude=i, prior=priors[i]) for i, p in enumerate(self.predicted)])

    def residual_quantiles(self, quantiles, transform: str) -> dict[str, float]:
        """Empirical quantiles of backtest residuals (in log space for log models)."""
        a, p = self._pooled()
        ok = ~(np.isnan(a) | np.isnan(p))
        if not quantiles or ok.sum() < 2:
            return {}
        a, p = a[ok], p[ok]
        resid = forward(a, transform) - forward(p, transform) if transform == "log1p" else a - p
        return {f"{q:g}": float(np.quantile(resid, q)) for q in quantiles}


def _clearly_better(candidate: Evaluation, reference: Evaluation, metric: str, evidence: float) -> bool:
    diff = candidate.block_losses(metric) - reference.block_losses(metric)
    diff = diff[~np.isnan(diff)]
    if len(diff) < 2:
        return False
    if evidence <= 0:
        return bool(diff.mean() < 0)
    return bool(-diff.mean() > _threshold(evidence, len(diff)) * diff.std(ddof=1) / math.sqrt(len(diff)))


def spread_quantiles(y: np.ndarray, quantiles, transform: str) -> dict[str, float]:
    """Quantile shifts from the spread of the history around its mean, for a group too short
    for a backtest fold: wide, but a band where the backtest gives none."""
    v = y[~np.isnan(y)]
    if not quantiles or len(v) < 2:
        return {}
    z = forward(v, transform)
    return {f"{q:g}": float(np.quantile(z - z.mean(), q)) for q in quantiles}


def apply_residual(point: np.ndarray, shift: float, transform: str) -> np.ndarray:
    if transform == "log1p":
        return np.expm1(np.log1p(np.maximum(point, 0.0)) + shift)
    return point + shift


# When the configured metric cannot score a group's backtest, the first of these that can.
FALLBACKS = {"mape": ("wape", "mase", "rmse"), "smape": ("wape", "mase", "rmse"), "wape": ("mase", "rmse"), "mase": ("wape", "rmse"), "rmse": ()}
# A metric that scores less than this share of the backtest chooses on a few rows and
# ignores the rest: MAPE on mostly-zero demand never sees a forecast of 5 in a week that sold 0.
MIN_SCORED_SHARE = 0.5


def fold_actuals(data: GroupData, folds) -> np.ndarray:
    """The backtest's actuals, pooled over the folds (what every candidate is scored against)."""
    if not folds:
        return np.empty(0)
    return np.concatenate([data.panel.y[np.flatnonzero(test)] for _, test in folds])


def selection_metric(metric: str, actual: np.ndarray, mase_scale: float | None) -> tuple[str, str]:
    """The metric to choose, tune and calibrate a group by, and a note when it is not ``metric``.

    Which rows a metric can score depends on the actuals and the scale only, so this is
    decided once per group, before any candidate is fitted, and is the same for all of them.
    """
    chain = (metric, *FALLBACKS.get(metric, ()))
    n = int(np.sum(~np.isnan(actual)))
    missed = unscored(actual, None, mase_scale)
    usable = [m for m in chain if n - missed[m] >= MIN_SCORED_SHARE * n]
    if not n or not usable or usable[0] == metric:
        return metric, ""  # no backtest (nothing scores anything), or the configured metric can score it
    chosen = usable[0]
    why = {"mape": f"{missed['mape']} have actual 0", "wape": "every actual is 0", "mase": "the history is constant: no scale"}.get(metric, "undefined")
    passed = chain[1 : chain.index(chosen)]
    either = f" ({' and '.join(passed)} cannot score it either)" if passed else ""
    return chosen, f"{metric} could score {n - missed[metric]} of the {n} backtest rows ({why}): chosen and calibrated by {chosen} instead{either}"


def pick_winner(evaluated: dict[str, Evaluation], metric: str, order: list[str], reference: str | None = None, evidence: float = 0.0) -> str:
    """The candidate to use: the reference, unless another is clearly better.

    Clearly better: a paired test over (fold, series) blocks (``block_losses``) says
    its mean loss is lower by more than ``evidence`` standard errors (``_threshold``:
    as Student's t, for few blocks). A single block (one series, one fold) is no
    evidence: the reference stays. With ``evidence`` 0 (or no usable reference)
    this is the best score, ties to the earlier candidate in ``order``. Without a
    finite score (no backtest fold: the history is too short) it is the first of
    ``NO_BACKTEST_PREFERENCE``; a backtest whose actuals ``metric`` cannot score
    never gets here, because ``selection_metric`` chose one that can.
    """
    scored = {k: e.score(metric) for k, e in evaluated.items()}
    finite = {k: v for k, v in scored.items() if not math.isnan(v) and not math.isinf(v)}
    if not finite:
        for kind in NO_BACKTEST_PREFERENCE:
            if kind in evaluated:
                return kind
        return order[0]
    ranked = sorted(finite, key=lambda k: (finite[k], order.index(k) if k in order else len(order)))
    if reference not in finite or evidence <= 0:
        return ranked[0]
    for kind in ranked:
        if kind == reference:
            return reference
        if _clearly_better(evaluated[kind], evaluated[reference], metric, evidence):
            return kind
    return reference


def _threshold(evidence: float, n: int) -> float:
    """``evidence`` standard errors as a z-score, turned into Student's t with n - 1 degrees of
    freedom at the same one-sided level: 3 blocks need 4.3 standard errors for evidence 2, 30
    need 2.1. With few blocks the standard error itself is a guess, and a guess that is too
    small would let noise win."""
    from scipy import stats

    return float(stats.t.ppf(stats.norm.cdf(evidence), n - 1))


def combine(members: list[Evaluation], transform: str) -> Evaluation:
    """The backtest of the members' average (in the transform space), fold by fold."""
    predicted = [average([m.predicted[i] for m in members], transform) for i in range(len(members[0].actual))]
    return members[0].like(predicted, "ensemble", {"members": [m.kind for m in members]})


def evaluate_baseline(kind: str, data: GroupData, folds, params: dict) -> Evaluation:
    evaluation = Evaluation(kind, params, data.mase_scale)
    for train, test in folds:
        rows = np.flatnonzero(test)
        fitted = fit_baseline(kind, data, train, params)
        evaluation.add_rows(data, rows, predict(fitted, data, train, rows))
    return evaluation


@dataclass(frozen=True)
class PruneBar:
    """A candidate scoring above ``limit`` on the newest fold is not fitted on the older ones."""

    metric: str
    limit: float
    best: str  # the candidate the limit comes from, and its score
    best_score: float


class CandidatePruned(CandidateUnfit):
    def __init__(self, kind: str, bar: PruneBar, score: float):
        super().__init__("pruned", f"after the newest backtest window: {bar.metric} {score:.4g} against {bar.best_score:.4g} for {bar.best}")


def evaluate_statistical(kind: str, data: GroupData, folds, params: dict, prune: PruneBar | None = None) -> Evaluation:
    """Backtest a statistical kind: on each fold, each series fitted on its values up to the
    cutoff and forecast over the fold's test rows. ``CandidateUnfit`` (from any series) propagates;
    ``CandidatePruned`` when the newest fold scores above ``prune``."""
    evaluation = Evaluation(kind, params, data.mase_scale)
    for i, (train, test) in enumerate(folds):
        rows = np.flatnonzero(test)
        fitted = fit_statistical(kind, data, train, params)
        predicted = predict(fitted, data, train, rows)
        if np.any(np.isnan(predicted)):
            raise CandidateUnfit("no_data", f"{kind}: a series has test rows in a backtest fold but no value before its cutoff")
        evaluation.add_rows(data, rows, predicted)
        if i == 0 and prune is not None and evaluation.fold_score(prune.metric, 0) > prune.limit:
            raise CandidatePruned(kind, prune, evaluation.fold_score(prune.metric, 0))
    return evaluation


def evaluate_lightgbm(data: GroupData, folds, params: dict, transform: str, spec, trained: list[Fitted] | None = None) -> Evaluation:
    """Backtest fixed LightGBM parameters (``_num_boost_round``/``_transform`` included).

    ``trained``: the search's fits of these parameters on the same folds (``Search.fold_models``),
    stopped early at or after the fixed number of rounds. The first N trees of a booster are the
    trees an N-round fit grows (the same rows, parameters and seed, one thread, deterministic;
    validation rows never change a tree), so such a fold is predicted from them at N trees
    instead of being fitted again: the same predictions, one fit less per fold."""
    lgb_params = {k: v for k, v in params.items() if not k.startswith("_")}
    rounds = int(params.get("_num_boost_round", spec.num_boost_round))
    transform = params.get("_transform", transform)
    evaluation = Evaluation("lightgbm", params, data.mase_scale)
    for i, (train, test) in enumerate(folds):
        rows = np.flatnonzero(test)
        fitted = _truncated(trained[i], rounds) if trained and i < len(trained) else None
        if fitted is None:
            fitted = fit_lightgbm(data, train, lgb_params, rounds, transform)
        evaluation.add_rows(data, rows, predict(fitted, data, train, rows))
    return evaluation


def _truncated(fitted: Fitted, rounds: int) -> Fitted | None:
    """``fitted``'s first ``rounds`` trees as a model of its own, if it grew that many."""
    if fitted.booster is None or fitted.booster.current_iteration() < rounds:
        return None
    return Fitted("lightgbm", {**fitted.state, "num_boost_round": int(rounds)}, fitted.booster)


@dataclass
class Search:
    """What a LightGBM search found: the best parameters, trials run, and trials that failed."""

    best: dict[str, Any]
    n_trials: int
    n_failed: int = 0
    first_failure: str = ""
    fold_models: list[Fitted] = field(default_factory=list)  # the best trial's fits, fold by fold (see evaluate_lightgbm)


def tune_lightgbm(data: GroupData, folds, base: dict, transform: str, spec, n_trials: int, timeout: float | None, seeds: tuple[dict, ...] = (), patience: int | None = None) -> Search:
    """Optuna search over the folds; ``seeds`` (parameters that won for similar groups) are
    tried right after the defaults (a warm start). ``patience``: the search stops once that many
    trials in a row have not beaten the best so far (None: all ``n_trials``).

    A trial whose fit raises (LightGBM refuses its parameters on some fold) is
    pruned and counted, never an error of the group: the others go on.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, _ = selection_metric(spec.automl.metric, fold_actuals(data, folds), data.mase_scale)  # as the choice will be
    calibrate = spec.automl.calibrate and len(folds) >= 2
    n_rows = int(np.sum(~np.isnan(data.panel.y)))
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=max(3, min(8, n_trials // 3)), multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    evaluations: dict[int, Evaluation] = {}
    failures: list[str] = []
    kept: dict[str, Any] = {"value": math.inf, "models": []}  # the best completed trial's fold models so far
    # poisson and tweedie refuse a training window whose targets sum to zero (a new or
    # intermittent item's early folds): propose them only where every fold can take them
    positive = data.nonnegative and all(np.nansum(data.panel.y[train]) > 0 for train, _ in folds)

    def run(trial: optuna.Trial, params: dict[str, Any], trans: str) -> float:
        evaluation = Evaluation("lightgbm", {}, data.mase_scale)
        best_rounds = []
        models = []
        for i, (train, test) in enumerate(folds):
            rows = np.flatnonzero(test)
            try:
                fitted = fit_lightgbm(data, train, params, MAX_TUNED_ROUNDS, trans, valid=test, early_stopping_rounds=EARLY_STOPPING_ROUNDS)
                predicted = predict(fitted, data, train, rows)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                raise optuna.TrialPruned() from None
            best_rounds.append(fitted.state["num_boost_round"])
            models.append(fitted)
            evaluation.add_rows(data, rows, predicted)
            # for pruning: the folds so far, calibrated on themselves (optimistic alike for every trial)
            value = _scaled(evaluation, evaluation.factor(metric) if calibrate else 1.0).score(metric)
            trial.report(value if math.isfinite(value) else 1e12, i)
            if i < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        # the refit sees all folds' data: give it the typical number of rounds found
        evaluation.params = {**params, "_num_boost_round": int(max(1, np.mean(best_rounds))), "_transform": trans}
        evaluations[trial.number] = evaluation
        score = (evaluation.calibrated(metric) if calibrate else evaluation).score(metric)
        value = score if math.isfinite(score) else 1e12
        if value < kept["value"]:  # strictly: the best is the earliest of equal trials, as below
            kept.update(value=value, models=models)
        return value

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, base, n_rows, data.nonnegative, positive)
        trans = params.pop("_transform")
        return run(trial, params, trans)

    study.enqueue_trial(_default_trial(base, transform, n_rows, data.nonnegative, positive), skip_if_exists=True)
    for seed in seeds:
        study.enqueue_trial(_default_trial({**base, **seed}, seed.get("_transform", transform), n_rows, data.nonnegative, positive), skip_if_exists=True)
    callbacks = [_stop_when_stale(patience)] if patience else None
    study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=False, show_progress_bar=False, callbacks=callbacks)
    found = Search(dict(base), len(study.trials), len(failures), failures[0] if failures else "")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.number in evaluations]
    if completed:
        best = min(completed, key=lambda t: (t.value, t.number))
        # The trials stopped early on the folds that scored them: optimistic. The caller
        # backtests the winner again at its fixed number of rounds, as it will be refit.
        found.best = dict(evaluations[best.number].params)
        found.fold_models = kept["models"] if kept["value"] == best.value else []
    return found


def _stop_when_stale(patience: int):
    """An Optuna callback that stops the study after ``patience`` finished trials (pruned or
    failed ones count) since the best completed one. On about a hundred rows per group, most
    late trials only refit the same folds' noise; they are most of a first train's time."""
    import optuna

    def callback(study, trial) -> None:
        # no deep copies: study.trials copies every trial, after every trial
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None]
        if not done:
            since = trial.number + 1  # nothing completed yet: every trial so far counts
        else:
            since = trial.number - min(done, key=lambda t: (t.value, t.number)).number
        if since >= patience:
            study.stop()

    return callback


def _scaled(evaluation: Evaluation, factor: float) -> Evaluation:
    return evaluation.like([p * factor for p in evaluation.predicted])


def _default_trial(base: dict, transform: str, n_rows: int, nonnegative: bool, positive: bool) -> dict[str, Any]:
    """The default parameters expressed as a point of the search space (clipped into it)."""
    objective = base.get("objective", "l2")
    if objective not in _objectives(nonnegative, positive):
        objective = "l2"
    trial = {
        "objective": objective,
        "num_leaves": int(min(64, max(4, base.get("num_leaves", 15)))),
        "learning_rate": float(min(0.3, max(0.01, base.get("learning_rate", 0.05)))),
        "min_data_in_leaf": int(min(_max_leaf_data(n_rows), max(2, base.get("min_data_in_leaf", 5)))),
        "feature_fraction": float(min(1.0, max(0.5, base.get("feature_fraction", 1.0)))),
        "bagging_fraction": float(min(1.0, max(0.5, base.get("bagging_fraction", 1.0)))),
        "lambda_l1": float(min(10.0, max(1e-8, base.get("lambda_l1", 1e-8)))),
        "lambda_l2": float(min(10.0, max(1e-8, base.get("lambda_l2", 1e-8)))),
    }
    if nonnegative and objective in ("l2", "l1"):
        trial["log_target"] = transform == "log1p"
    return trial


def _objectives(nonnegative: bool, positive: bool) -> list[str]:
    """LightGBM objectives to search: poisson and tweedie need targets >= 0 whose sum is > 0."""
    if not nonnegative:
        return ["l2", "l1", "huber"]
    return ["l2", "l1", "mape", "poisson", "tweedie"] if positive else ["l2", "l1", "mape"]


# Bump when the search space itself changes, so stored parameters are retuned
# (it enters cache.search_space_fingerprint, with the AutoML settings).
SEARCH_SPACE_VERSION = 2


def _max_leaf_data(n_rows: int) -> int:
    return max(3, min(50, n_rows // 4))


def suggest(trial, base: dict, n_rows: int, nonnegative: bool, positive: bool) -> dict[str, Any]:
    """One point of the LightGBM search space (define-by-run, so it may be conditional)."""
    objective = trial.suggest_categorical("objective", _objectives(nonnegative, positive))
    log_target = nonnegative and objective in ("l2", "l1") and trial.suggest_categorical("log_target", [True, False])
    params = {
        **{k: v for k, v in base.items() if not k.startswith("_")},
        "objective": objective,
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 2, _max_leaf_data(n_rows), log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "_transform": "log1p" if log_target else "none",
    }
    if objective == "tweedie":
        params["tweedie_variance_power"] = trial.suggest_float("tweedie_variance_power", 1.1, 1.9)
    return params
