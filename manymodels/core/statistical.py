"""Per-series statistical forecasting candidates (ETS, Theta, ARIMA, MSTL, the Croston family).

Pure functions: numpy arrays in, numpy arrays and JSON-ready dicts out. No
files, no console, no pandas of our own (statsforecast imports pandas for
itself; it is an optional dependency, ``pip install manymodels[stats]``, and it
is imported lazily, so ``demand_class`` and ``auto_candidates`` work without it).

The models are statsforecast's (compiled, no JIT):

==========  ===============================================================
kind        model
==========  ===============================================================
ets         AutoETS: error/trend/season by AICc, damped trend allowed;
            seasonal only for 1 < season_length <= 24 (as R's forecast::ets)
theta       dynamic optimised Theta (DOTM, through AutoTheta), classical
            seasonal decomposition when the seasonality test says so
arima       AutoARIMA (stepwise); seasonal terms only for season_length <= 12
            (a seasonal search at 24 or 52 takes 10-30 s per series)
mstl        MSTL over several season lengths (STL decompositions), trend and
            remainder by AutoETS (no season)
croston     CrostonSBA (Croston with the Syntetos-Boylan correction)
tsb         TSB, its two smoothing constants chosen on a small grid by
            in-sample one-step MSE
adida       ADIDA (aggregate, SES, disaggregate)
imapa       IMAPA (ADIDA over every aggregation level, averaged)
==========  ===============================================================

``fit_series`` returns the state (only dicts, lists, strs, ints, floats,
bools and None: ``json.dumps(state, allow_nan=False)`` works, no pickle).
``forecast_series(state, y, h, levels)`` forecasts from it. What is stored and
what is recomputed, per kind:

- ets: the chosen specification (``components``, e.g. ``MAMD`` = ETS(M,Ad,M)),
  the smoothing parameters, the *initial* states and the fit-time final state.
  Forecasting runs statsforecast's ``forward`` path: the exponential-smoothing
  filter with the stored parameters over the history given (no optimisation,
  no model search), then the forecast from the last filtered state.
- theta: the model type (DOTM) and its three parameters (initial level,
  alpha, theta). Forecasting runs ``forward``: the seasonality test and the classical
  decomposition are recomputed on the history given (deterministic, cheap),
  the theta line is filtered with the stored parameters; nothing is optimised.
- arima: orders and coefficients (and sigma2). Forecasting runs ``forward``:
  the Kalman filter with every coefficient fixed (no optimisation, no search).
- mstl: the season lengths and the trend model's ETS state. Forecasting
  re-runs the STL decomposition on the history given (deterministic, no
  search) and filters the deseasonalised series with the stored ETS.
- croston, adida, imapa: statsforecast takes no parameters back for these,
  and they have none worth storing (SBA's alpha is fixed at 0.1; ADIDA's
  aggregation level is the mean inter-demand interval of the history; SES
  constants are re-optimised on the aggregated history in microseconds).
  Forecasting re-runs the method on the history given; the state records the
  fit-time diagnostics (ADI, CV2, aggregation level, fit-time forecast) for
  inspection.
- tsb: the two smoothing constants chosen at fit; forecasting runs TSB with
  them on the history given (the grid is not searched again).

History at forecast time. ``y`` is the series' history from its first
observation, as at fit time, possibly with newer observations appended (mm's
refit-free nightly path). The filters start from the stored initial states at
the same first observation, so the seasonal phase only holds when ``y`` starts
where the fit-time history started. With the same ``y`` the forecast is the
fit-time forecast, identical after a JSON round trip. A longer ``y`` is
filtered with the stored parameters, and the forecast starts after its last
value. Long histories are fitted on their last observations only (ets, theta,
arima: ``max(FIT_WINDOW, 10 seasons)``, mstl: ``max(MSTL_WINDOW, 6 cycles of
its longest season)``; a 17,520-value hourly series costs AutoTheta 60 s and
seasonal AutoETS 12 s in full); the state stores the offset of that window and
forecasting uses ``y[offset:]``.

Missing values (NaN). Leading NaN are dropped (a series starts at its first
observation). For ets/theta/arima/mstl, interior gaps are filled by linear
interpolation and trailing NaN by the last observed value, so the time index
and the seasonal phase are kept. For the Croston family every NaN is
dropped: interpolating a mostly-zero series would invent demand. ``inf`` is
rejected.

Awkward series. Every kind either returns finite forecasts or raises
``CandidateUnfit`` (its ``code`` says why: ``too_short``, ``no_data``,
``bad_input``, ``negative``, ``stale_state``, ``non_finite``, ``failed``).
A constant history (all zeros included) fits every continuous kind as the
"constant" specification: a flat forecast at that value with zero-width
intervals, which is the limit of each of these models; if a longer history is
no longer constant, forecasting raises ``stale_state`` (refit). The Croston
family refuses negative values (``negative``). Nothing prints; library
warnings are silenced inside the calls.

Intervals. ``levels`` are central coverages in percent (80, 95). ets, theta,
arima and mstl use statsforecast's own intervals. The Croston family has
none: their interval is the quantile of a zero-inflated distribution whose
non-zero part is the empirical distribution of the history's non-zero values
and whose probability of demand is set so that its mean is the point forecast
(``p = min(1, f / mean(nonzero))``; when ``f`` exceeds the mean size the sizes
are scaled up instead). It is flat over the horizon, like the point forecast.
For a history with no negative value, the forecast and every bound are
clipped at 0.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np

KINDS = ("ets", "theta", "arima", "mstl", "croston", "tsb", "adida", "imapa")
INTERMITTENT_KINDS = ("croston", "tsb", "adida", "imapa")
CONTINUOUS_KINDS = ("ets", "theta", "arima", "mstl")
STATE_VERSION = 1

# fewest observations (after cleaning) a kind fits on; below, CandidateUnfit('too_short').
# ets, theta: statsforecast's own minimum ("tiny datasets" below it); arima: a guard
# (with 1-3 values it is a mean); mstl: besides, two full cycles of at least one of its
# seasons (seasons without two full cycles are left out of the decomposition).
MIN_OBS = {"ets": 7, "theta": 4, "arima": 4, "mstl": 4, "croston": 1, "tsb": 1, "adida": 1, "imapa": 1}
ETS_MAX_SEASON = 24  # as R's forecast::ets: longer seasons are fitted without a seasonal state
ARIMA_MAX_SEASON = 12  # a seasonal ARIMA search at 24 takes ~10 s per series, at 52 ~30 s
FIT_WINDOW = 500  # ets/theta/arima fit on at most max(FIT_WINDOW, 10 seasons) recent observations
MSTL_WINDOW = 1000  # mstl: at most max(MSTL_WINDOW, 6 cycles of its longest season)
# theta's model: DOTM alone beat AutoTheta's in-sample-MSE choice among STM/OTM/DSTM/DOTM
# on 200 M3 monthly series (sMAPE 13.75 vs 15.17, MASE 0.846 vs 0.857) at 6 vs 13 ms per series
THETA_MODEL = "DOTM"
TSB_ALPHA_D = (0.05, 0.1, 0.2, 0.3)
TSB_ALPHA_P = (0.02, 0.05, 0.1, 0.2, 0.3)

# demand classes (Syntetos, Boylan & Croston 2005 cut-offs)
ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
SHORT_OBS = 10
DEMAND_CLASSES = ("smooth", "erratic", "intermittent", "lumpy", "short", "constant")

# multiple season lengths by the main one, for mstl
MULTI_SEASONS = {24: (24, 168), 168: (24, 168), 48: (48, 336), 336: (48, 336), 96: (96, 672), 7: (7, 365)}

# every candidate name auto_candidates may return, in the order it returns them
CANDIDATE_ORDER = (
    "ets", "theta", "mstl", "arima", "croston", "tsb", "adida", "imapa",
    "lightgbm", "linear", "ensemble", "naive", "seasonal_naive", "mean", "moving_average",
)


class CandidateUnfit(Exception):
    """A candidate cannot be fitted or forecast for this series: record it as dropped.

    ``code`` is a short machine-readable reason, ``reason`` the human one.
    """

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


# -- public API -----------------------------------------------------------------

def available() -> bool:
    """True when statsforecast is installed (the ``stats`` extra). Looked up, not imported:
    the import costs 1.7 s per worker, paid only when a statistical model is fitted."""
    global _AVAILABLE
    if _AVAILABLE is None:
        import importlib.util

        _AVAILABLE = importlib.util.find_spec("statsforecast") is not None
    return _AVAILABLE


_AVAILABLE: bool | None = None


def fit_series(kind: str, y: np.ndarray, season_length: int | None = None, seasons: tuple[int, ...] = ()) -> dict:
    """Fit one candidate on one series; return its JSON-ready state.

    ``season_length`` is the main season (12 monthly, 7 daily, 24 hourly; None or
    1: none). ``seasons`` are mstl's season lengths (default: ``default_seasons``
    of ``season_length``). Raises ``CandidateUnfit`` when the kind cannot model
    this series, ``ImportError`` when statsforecast is not installed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown statistical kind {kind!r}; expected one of {', '.join(KINDS)}")
    sf = _sf()
    x = _clean(y, kind)
    m = int(season_length) if season_length and int(season_length) > 1 else 1
    chosen: tuple[int, ...] = ()
    if kind == "mstl":
        chosen = _mstl_seasons(seasons or default_seasons(m), len(x))
        if not chosen:
            wanted = tuple(seasons or default_seasons(m))
            raise CandidateUnfit("too_short", f"mstl needs two full cycles of a season in {wanted or '(none)'}; the history has {len(x)} observations")
    if len(x) < MIN_OBS[kind]:
        raise CandidateUnfit("too_short", f"{kind} needs at least {MIN_OBS[kind]} observations; the history has {len(x)}")
    if kind in INTERMITTENT_KINDS and np.any(x < 0):
        raise CandidateUnfit("negative", f"{kind} models non-negative demand; the history has negative values")
    window = _fit_window(kind, len(x), m, chosen)
    offset = len(x) - window
    x = x[offset:]
    state: dict[str, Any] = {
        "kind": kind,
        "version": STATE_VERSION,
        "library": f"statsforecast {_sf_version()}",
        "season_length": m,
        "n_obs": int(len(x)),
        "offset": int(offset),
    }
    if kind in CONTINUOUS_KINDS and _is_constant(x):
        state["spec"] = "constant"
        state["value"] = float(x[-1])
        return _jsonable(state)
    with _quiet():
        try:
            if kind == "ets":
                state.update(_fit_ets(sf, x, m))
            elif kind == "theta":
                state.update(_fit_theta(sf, x, m))
            elif kind == "arima":
                state.update(_fit_arima(sf, x, m))
            elif kind == "mstl":
                state.update(_fit_mstl(sf, x, chosen))
            else:
                state.update(_fit_intermittent(sf, kind, x))
        except CandidateUnfit:
            raise
        except Exception as exc:  # the library's own refusals: record the candidate as dropped
            raise CandidateUnfit("failed", f"{kind}: {type(exc).__name__}: {exc}") from exc
    return _jsonable(state)


def forecast_series(state: dict, y: np.ndarray, h: int, levels: Iterable[float] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Forecast ``h`` steps after the end of ``y`` from a stored state.

    ``y`` is the series' history from its first observation (the fit-time
    history, possibly with newer values appended; see the module docstring).
    Returns ``(mean, intervals)``: ``intervals`` maps ``lo-80``/``hi-80`` (one
    pair per level, named with ``f"{level:g}"``) to arrays of length ``h``.
    Raises ``CandidateUnfit`` rather than returning a non-finite value.
    """
    kind = state.get("kind")
    if kind not in KINDS:
        raise ValueError(f"not a statistical state (kind {kind!r})")
    if int(state.get("version", 0)) != STATE_VERSION:
        raise CandidateUnfit("stale_state", f"state version {state.get('version')} is not {STATE_VERSION}: refit")
    h = int(h)
    if h < 1:
        raise ValueError(f"horizon must be at least 1, got {h}")
    levels = _levels(levels)
    x = _clean(y, kind)[int(state.get("offset", 0)):]
    if len(x) < 1:
        raise CandidateUnfit("too_short", "no observation after the stored offset: refit")
    if kind in INTERMITTENT_KINDS and np.any(x < 0):
        raise CandidateUnfit("negative", f"{kind} models non-negative demand; the history has negative values")
    with _quiet():
        try:
            if state.get("spec") == "constant":
                mean, bounds = _forecast_constant(state, x, h, levels)
            elif kind in INTERMITTENT_KINDS:
                mean, bounds = _forecast_intermittent(_sf(), state, x, h, levels)
            else:
                mean, bounds = _forecast_continuous(_sf(), state, x, h, levels)
        except CandidateUnfit:
            raise
        except Exception as exc:
            raise CandidateUnfit("failed", f"{kind}: {type(exc).__name__}: {exc}") from exc
    mean = np.asarray(mean, dtype=np.float64)[:h]
    out: dict[str, np.ndarray] = {}
    for lv in levels:
        lo, hi = (np.asarray(b, dtype=np.float64)[:h] for b in bounds[lv])
        out[f"lo-{lv:g}"], out[f"hi-{lv:g}"] = np.minimum(lo, hi), np.maximum(lo, hi)
    if np.min(x) >= 0:
        mean = np.maximum(mean, 0.0)
        out = {k: np.maximum(v, 0.0) for k, v in out.items()}
    if mean.shape != (h,) or not np.all(np.isfinite(mean)) or not all(np.all(np.isfinite(v)) for v in out.values()):
        raise CandidateUnfit("non_finite", f"{kind} ({state.get('spec', '?')}) gave a non-finite forecast on this history")
    return mean, out


def forecast_quantiles(state: dict, y: np.ndarray, h: int, quantiles: Iterable[float]) -> dict[float, np.ndarray]:
    """Quantile forecasts (mm's ``forecast.quantiles``) from the central intervals.

    A quantile q < 0.5 is the lower bound of the (100 - 200q)% interval, q > 0.5
    the upper bound of the (200q - 100)% interval; q = 0.5 is the point forecast
    for ets/theta/arima/mstl (their intervals are symmetric) and the
    zero-inflated rule's median for the Croston family.
    """
    qs = [float(q) for q in quantiles]
    for q in qs:
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantiles must be in (0, 1), got {q}")
    levels = sorted({round(abs(200.0 * q - 100.0), 10) for q in qs if q != 0.5})
    mean, intervals = forecast_series(state, y, h, levels)
    out: dict[float, np.ndarray] = {}
    for q in qs:
        if q == 0.5:
            if state["kind"] in INTERMITTENT_KINDS and state.get("spec") != "constant":
                x = _clean(y, state["kind"])[int(state.get("offset", 0)):]
                out[q] = np.full(h, _zero_inflated_quantiles(x, float(mean[0]), [0.5])[0])
            else:
                out[q] = mean
        else:
            lv = round(abs(200.0 * q - 100.0), 10)
            out[q] = intervals[f"{'lo' if q < 0.5 else 'hi'}-{lv:g}"]
    return out


def demand_stats(y: np.ndarray) -> dict:
    """The numbers behind ``demand_class``: n_obs, n_nonzero, adi, cv2, class.

    Computed on the observed values (NaN dropped). ``adi`` is the average
    inter-demand interval, n_obs / n_nonzero (periods per non-zero period,
    trailing zeros included; None without demand). ``cv2`` is the squared
    coefficient of variation of the non-zero values (population variance over
    squared mean, of their magnitudes; 0 with one non-zero value; None
    without demand).
    """
    v = np.asarray(y, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    n = int(len(v))
    nonzero = v[v != 0]
    k = int(len(nonzero))
    adi = n / k if k else None
    if k:
        size = np.abs(nonzero)
        cv2 = float(np.var(size) / np.mean(size) ** 2)
    else:
        cv2 = None
    return {"n_obs": n, "n_nonzero": k, "adi": adi, "cv2": cv2, "class": _classify(v, adi, cv2)}


def demand_class(y: np.ndarray) -> str:
    """smooth, erratic, intermittent, lumpy, short or constant; the rule, in order:

    1. ``short``: fewer than ``SHORT_OBS`` (10) observed values (NaN dropped).
    2. ``constant``: every observed value equal (all zeros included).
    3. With ADI = n_obs / n_nonzero and CV2 of the non-zero values
       (Syntetos-Boylan-Croston cut-offs, ADI 1.32 and CV2 0.49):
       ``smooth`` ADI < 1.32 and CV2 < 0.49; ``erratic`` ADI < 1.32 and
       CV2 >= 0.49; ``intermittent`` ADI >= 1.32 and CV2 < 0.49; ``lumpy``
       ADI >= 1.32 and CV2 >= 0.49.
    4. A series with negative values is not demand: it is ``smooth`` or
       ``erratic`` by the CV2 of its non-zero magnitudes, whatever its ADI
       (the Croston family refuses it).
    """
    return demand_stats(y)["class"]


def default_seasons(season_length: int | None) -> tuple[int, ...]:
    """mstl's season lengths for a main season: 24 -> (24, 168), 7 -> (7, 365)...

    (48, 336) half-hourly, (96, 672) quarter-hourly; any other season length
    > 1 gives itself alone, and none gives ().
    """
    m = int(season_length) if season_length and int(season_length) > 1 else 1
    if m in MULTI_SEASONS:
        return MULTI_SEASONS[m]
    return (m,) if m > 1 else ()


def auto_candidates(demand_class: str, n_obs: int, season_length: int | None, has_known_future: bool, seasons: tuple[int, ...] | None = None) -> list[str]:
    """The candidate set of ``candidates: auto`` for one series; the rule:

    - ``constant``: naive.
    - ``short``: naive, seasonal_naive (when the history is longer than one
      season), mean, moving_average; plus linear when known-future columns exist.
    - ``intermittent``, ``lumpy``: croston, tsb, adida, imapa, ensemble (their
      average), naive, mean, moving_average.
    - ``smooth``, ``erratic``: ets, theta; mstl when at least two of the season
      lengths (``seasons``, default ``default_seasons(season_length)``: hourly and
      daily data) have two full cycles in the history; lightgbm and linear when
      known-future columns exist; ensemble (lightgbm + linear with known-future
      columns, else the statistical models' average); naive, seasonal_naive
      (when the history is longer than one season), mean and moving_average
      (the mean is what wins on noisy promotional series: one Dominick's brand).
    - arima is never chosen by default (the most expensive; available by name).
    """
    if demand_class not in DEMAND_CLASSES:
        raise ValueError(f"unknown demand class {demand_class!r}; expected one of {', '.join(DEMAND_CLASSES)}")
    m = int(season_length) if season_length and int(season_length) > 1 else 1
    seasonal_naive = ["seasonal_naive"] if m > 1 and n_obs > m else []
    if demand_class == "constant":
        return ["naive"]
    if demand_class == "short":
        return ["naive", *seasonal_naive, "mean", "moving_average"] + (["linear"] if has_known_future else [])
    if demand_class in ("intermittent", "lumpy"):
        return ["croston", "tsb", "adida", "imapa", "ensemble", "naive", "mean", "moving_average"]
    out = ["ets", "theta"]
    if len(_mstl_seasons(default_seasons(m) if seasons is None else seasons, n_obs)) >= 2:
        out.append("mstl")
    if has_known_future:
        out += ["lightgbm", "linear"]
    return out + ["ensemble", "naive", *seasonal_naive, "mean", "moving_average"]


def union_candidates(candidate_lists: Iterable[Iterable[str]]) -> list[str]:
    """The union of several series' candidate sets (a group's), in ``CANDIDATE_ORDER``."""
    seen = {c for lst in candidate_lists for c in lst}
    unknown = seen - set(CANDIDATE_ORDER)
    return [c for c in CANDIDATE_ORDER if c in seen] + sorted(unknown)


# -- cleaning and guards ----------------------------------------------------------

def _sf():
    """statsforecast.models, imported on first use (1.5-2 s: it loads statsmodels)."""
    global _SF_MODELS
    if _SF_MODELS is None:
        try:
            import statsforecast.models as models
        except ImportError as exc:
            raise ImportError("the statistical candidates need statsforecast: pip install 'manymodels[stats]'") from exc
        _SF_MODELS = models
    return _SF_MODELS


_SF_MODELS = None


def _sf_version() -> str:
    import statsforecast

    return str(getattr(statsforecast, "__version__", "?"))


class _quiet:
    """Silence the library's warnings and numpy's floating-point complaints."""

    def __enter__(self):
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._err = np.errstate(all="ignore")
        self._err.__enter__()
        return self

    def __exit__(self, *exc):
        self._err.__exit__(*exc)
        self._warnings.__exit__(*exc)
        return False


def _clean(y: np.ndarray, kind: str) -> np.ndarray:
    x = np.asarray(y, dtype=np.float64).ravel()
    if np.any(np.isinf(x)):
        raise CandidateUnfit("bad_input", "the history has infinite values")
    seen = ~np.isnan(x)
    if not seen.any():
        raise CandidateUnfit("no_data", "the history has no observed value")
    if kind in INTERMITTENT_KINDS:
        return x[seen]
    x = x[int(np.argmax(seen)):]
    seen = ~np.isnan(x)
    if seen.all():
        return x
    idx = np.arange(len(x))
    return np.interp(idx, idx[seen], x[seen])  # interior: linear; trailing: the last observed value


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def _fit_window(kind: str, n: int, m: int, seasons: tuple[int, ...]) -> int:
    if kind in INTERMITTENT_KINDS:
        return n
    if kind == "mstl":
        return min(n, max(MSTL_WINDOW, 6 * max(seasons)))
    return min(n, max(FIT_WINDOW, 10 * m))


def _mstl_seasons(seasons: Iterable[int], n: int) -> tuple[int, ...]:
    """The season lengths with two full cycles in ``n`` observations, sorted."""
    return tuple(sorted({int(p) for p in seasons if int(p) >= 2 and n >= 2 * int(p)}))


def _levels(levels: Iterable[float]) -> list[float]:
    out = []
    for lv in levels:
        lv = float(lv)
        if not 0.0 < lv < 100.0:
            raise ValueError(f"interval levels are percentages in (0, 100), got {lv}")
        out.append(int(lv) if lv.is_integer() else lv)
    return sorted(set(out))


def _classify(v: np.ndarray, adi: float | None, cv2: float | None) -> str:
    if len(v) < SHORT_OBS:
        return "short"
    if np.all(v == v[0]):
        return "constant"
    variable = cv2 is not None and cv2 >= CV2_CUTOFF
    if np.any(v < 0) or adi < ADI_CUTOFF:
        return "erratic" if variable else "smooth"
    return "lumpy" if variable else "intermittent"


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _jsonable(obj):
    """Plain Python types only; NaN becomes None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            raise CandidateUnfit("non_finite", "a fitted parameter is infinite")
        return f
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a statistical state")


# -- ets ---------------------------------------------------------------------------

def _fit_ets(sf, x: np.ndarray, m: int) -> dict:
    season = m if 1 < m <= ETS_MAX_SEASON else 1
    model = sf.AutoETS(season_length=season).fit(x).model_
    return {"spec": model["components"], **_ets_params(model)}


def _ets_params(model: dict) -> dict:
    comps = model["components"]  # error, trend, season, damped ('D'/'N'): 'MAMD' is ETS(M,Ad,M)
    par = np.asarray(model["par"], dtype=np.float64)
    return {
        "method": _ets_name(comps),
        "components": comps,
        "m": int(model["m"]),
        "alpha": par[0],
        "beta": par[1],
        "gamma": par[2],
        "phi": par[3],
        "initial_states": par[4:],
        "final_states": np.asarray(model["states"])[-1],
        "n_params": int(model["n_params"]),
        "sigma2": float(model["sigma2"]),
        "aicc": float(model["aicc"]),
    }


def _ets_name(comps: str) -> str:
    trend = comps[1] + ("d" if comps[3] == "D" else "")
    return f"ETS({comps[0]},{trend},{comps[2]})"


def _ets_model(p: dict) -> dict:
    """statsforecast's fitted-model dict, as much of it as its ``forward`` reads."""
    par = [_num(p["alpha"]), _num(p["beta"]), _num(p["gamma"]), _num(p["phi"]), *(_num(v) for v in p["initial_states"])]
    return {"m": int(p["m"]), "components": p["components"], "par": np.array(par), "n_params": int(p["n_params"]), "fit": None}


def _ets_forward(sf, p: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    comps = p["components"]
    if "M" in comps[:3] and np.min(x) <= 0:
        raise CandidateUnfit("stale_state", f"the stored {_ets_name(comps)} is multiplicative and the history now has values <= 0: refit")
    obj = sf.AutoETS(season_length=int(p["m"]), model=comps[:3], damped=comps[3] == "D")
    obj.model_ = _ets_model(p)
    return _unpack(obj.forward(y=x, h=h, level=levels or None), levels)


# -- theta -------------------------------------------------------------------------

def _fit_theta(sf, x: np.ndarray, m: int) -> dict:
    model = sf.AutoTheta(season_length=m, model=THETA_MODEL).fit(x).model_
    par = model["par"]
    seasonal = (model.get("seas_forecast") or {}).get("mean")
    return {
        "spec": model["modeltype"],
        "m": int(model["m"]),
        "initial_smoothed": float(par["initial_smoothed"]),
        "alpha": float(par["alpha"]),
        "theta": float(par["theta"]),
        "decomposition": model.get("decomposition_type") if model.get("decompose") else "none",
        "seasonal_indices": [] if seasonal is None else np.asarray(seasonal, dtype=np.float64),
        "mse": float(model["mse"]),
    }


def _theta_forward(sf, p: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    if len(x) < MIN_OBS["theta"]:
        raise CandidateUnfit("too_short", f"theta needs at least {MIN_OBS['theta']} observations; the history has {len(x)}")
    obj = sf.AutoTheta(season_length=int(p["m"]), model=p["spec"])
    obj.model_ = {
        "m": int(p["m"]),
        "modeltype": p["spec"],
        "par": {"initial_smoothed": float(p["initial_smoothed"]), "alpha": float(p["alpha"]), "theta": float(p["theta"])},
    }
    return _unpack(obj.forward(y=x, h=h, level=levels or None), levels)


# -- arima -------------------------------------------------------------------------

def _fit_arima(sf, x: np.ndarray, m: int) -> dict:
    season = m if 1 < m <= ARIMA_MAX_SEASON else 1
    model = sf.AutoARIMA(season_length=season).fit(x).model_
    p, q, P, Q, period, d, D = (int(v) for v in model["arma"])
    coef = {str(k): float(v) for k, v in model["coef"].items()}
    seasonal = f"({P},{D},{Q})[{period}]" if period > 1 and P + D + Q > 0 else ""
    extra = " with drift" if "drift" in coef else (" with non-zero mean" if "intercept" in coef else "")
    return {
        "spec": f"ARIMA({p},{d},{q}){seasonal}{extra}",
        "order": [p, d, q],
        "seasonal_order": [P, D, Q],
        "period": period,
        "coef_names": list(coef),  # the order statsforecast's fixed-coefficient refit expects
        "coef": [coef[k] for k in coef],
        "sigma2": float(model["sigma2"]),
        "aicc": _num(model.get("aicc")) if model.get("aicc") is not None else None,
    }


def _arima_forward(sf, p: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    order, sorder, period = p["order"], p["seasonal_order"], int(p["period"])
    if len(x) <= order[1] + sorder[1] * period + 1:
        raise CandidateUnfit("too_short", f"{p['spec']} needs more than {order[1] + sorder[1] * period + 1} observations; the history has {len(x)}")
    coef = {name: float(v) for name, v in zip(p["coef_names"], p["coef"])}
    n_fit = int(p.get("n_obs", len(x)))
    drift = "drift" in coef
    obj = sf.AutoARIMA(season_length=period, method="CSS-ML")
    obj.model_ = {
        # (p, q, P, Q, period, d, D): statsforecast's arma tuple
        "arma": (order[0], order[2], sorder[0], sorder[2], period, order[1], sorder[1]),
        "coef": coef,
        "sigma2": float(p["sigma2"]),
        # the refit reads only the fit-time length of the series and its drift column
        "x": np.zeros(n_fit),
        "xreg": np.arange(1.0, n_fit + 1.0).reshape(-1, 1) if drift else None,
        "lambda": None,
    }
    return _unpack(obj.forward(y=x, h=h, level=levels or None), levels)


# -- mstl --------------------------------------------------------------------------

def _fit_mstl(sf, x: np.ndarray, seasons: tuple[int, ...]) -> dict:
    obj = sf.MSTL(season_length=list(seasons), trend_forecaster=sf.AutoETS(model="ZZN")).fit(x)
    trend = obj.trend_forecaster.model_
    return {"spec": "MSTL(" + ",".join(str(s) for s in seasons) + ")+" + _ets_name(trend["components"]), "seasons": list(seasons), "trend": _ets_params(trend)}


def _mstl_forward(sf, p: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    seasons = [int(s) for s in p["seasons"]]
    if len(x) < 2 * max(seasons):
        raise CandidateUnfit("too_short", f"mstl with seasons {seasons} needs {2 * max(seasons)} observations; the history has {len(x)}")
    trend = p["trend"]
    if "M" in trend["components"][:3] and np.min(x) <= 0:
        raise CandidateUnfit("stale_state", "the stored trend model is multiplicative and the history now has values <= 0: refit")
    obj = sf.MSTL(season_length=seasons, trend_forecaster=sf.AutoETS(model="ZZN"))
    obj.trend_forecaster.model_ = _ets_model(trend)
    return _unpack(obj.forward(y=x, h=h, level=levels or None), levels)


def _forecast_continuous(sf, state: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    kind = state["kind"]
    if kind == "ets":
        if len(x) < 2:
            raise CandidateUnfit("too_short", "ets needs at least 2 observations to filter")
        return _ets_forward(sf, state, x, h, levels)
    if kind == "theta":
        return _theta_forward(sf, state, x, h, levels)
    if kind == "arima":
        return _arima_forward(sf, state, x, h, levels)
    return _mstl_forward(sf, state, x, h, levels)


def _forecast_constant(state: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    if not _is_constant(x):
        raise CandidateUnfit("stale_state", f"{state['kind']} was fitted on a constant history that is no longer constant: refit")
    mean = np.full(h, float(x[-1]))
    return mean, {lv: (mean, mean) for lv in levels}


def _unpack(res: dict, levels: list) -> tuple[np.ndarray, dict]:
    return np.asarray(res["mean"], dtype=np.float64), {lv: (np.asarray(res[f"lo-{lv}"]), np.asarray(res[f"hi-{lv}"])) for lv in levels}


# -- the Croston family ------------------------------------------------------------

def _intermittent_model(sf, kind: str, params: dict):
    if kind == "croston":
        return sf.CrostonSBA()
    if kind == "tsb":
        return sf.TSB(alpha_d=float(params["alpha_d"]), alpha_p=float(params["alpha_p"]))
    if kind == "adida":
        return sf.ADIDA()
    return sf.IMAPA()


def _fit_intermittent(sf, kind: str, x: np.ndarray) -> dict:
    stats = demand_stats(x)
    params: dict[str, Any] = {}
    if kind == "tsb":
        params = _tsb_grid(sf, x)
    diagnostics: dict[str, Any] = {"adi": stats["adi"], "cv2": stats["cv2"], "n_nonzero": stats["n_nonzero"]}
    if kind in ("adida", "imapa") and stats["n_nonzero"]:
        nz = np.flatnonzero(x)
        # the library's own rule: the mean gap between demands (counted from the start), rounded
        diagnostics["aggregation_level"] = int(round(float(np.mean(np.diff(nz + 1, prepend=0)))))
    fit_forecast = float(_intermittent_model(sf, kind, params).forecast(y=x, h=1)["mean"][0])
    names = {"croston": "CrostonSBA", "tsb": "TSB", "adida": "ADIDA", "imapa": "IMAPA"}
    return {"spec": names[kind], "params": params, "diagnostics": diagnostics, "fit_forecast": fit_forecast}


def _tsb_grid(sf, x: np.ndarray) -> dict:
    """TSB's smoothing constants by in-sample one-step MSE on a small grid (ties: the first)."""
    best, best_mse = {"alpha_d": 0.1, "alpha_p": 0.1}, math.inf
    if len(x) < 3 or not np.any(x):
        return best
    for a_d in TSB_ALPHA_D:
        for a_p in TSB_ALPHA_P:
            fitted = sf.TSB(alpha_d=a_d, alpha_p=a_p).forecast(y=x, h=1, fitted=True)["fitted"]
            ok = ~np.isnan(fitted)
            if not ok.any():
                continue
            mse = float(np.mean((x[ok] - fitted[ok]) ** 2))
            if mse < best_mse - 1e-12:
                best, best_mse = {"alpha_d": a_d, "alpha_p": a_p}, mse
    return best


def _forecast_intermittent(sf, state: dict, x: np.ndarray, h: int, levels: list) -> tuple[np.ndarray, dict]:
    kind = state["kind"]
    level = float(_intermittent_model(sf, kind, state.get("params") or {}).forecast(y=x, h=1)["mean"][0])
    mean = np.full(h, level)
    bounds = {}
    for lv in levels:
        lo, hi = _zero_inflated_quantiles(x, level, [(1 - lv / 100) / 2, (1 + lv / 100) / 2])
        bounds[lv] = (np.full(h, lo), np.full(h, hi))
    return mean, bounds


def _zero_inflated_quantiles(x: np.ndarray, forecast: float, qs: list[float]) -> list[float]:
    """Quantiles of the zero-inflated rule (see the module docstring) with mean ``forecast``."""
    sizes = x[x > 0]
    if len(sizes) == 0 or forecast <= 0:
        return [0.0 for _ in qs]
    mu = float(np.mean(sizes))
    p = min(1.0, forecast / mu)
    scale = max(1.0, forecast / mu)
    out = []
    for q in qs:
        if q <= 1.0 - p:
            out.append(0.0)
        else:
            out.append(float(np.quantile(sizes * scale, min(1.0, (q - (1.0 - p)) / p))))
    return out
