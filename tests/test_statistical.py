"""manymodels.core.statistical: real statsforecast fits on small generated series.

The model tests skip when statsforecast (the ``stats`` extra) is not installed;
the demand-class and candidate-rule tests need only numpy.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from manymodels.core import statistical as st

H = 6
M = 12


@pytest.fixture(scope="module")
def sfm():
    if not os.environ.get("MM_REQUIRE_STATS"):  # .ci/run sets it in its pandas-2 venv: a missing library fails there
        pytest.importorskip("statsforecast", reason="statsforecast is not installed: pip install -e '.[stats]'")
    import statsforecast.models as models

    return models


def _seasonal(n=48, seed=0):
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (50 + 1.0 * t) * (1 + 0.3 * np.sin(2 * np.pi * t / M)) * rng.lognormal(0, 0.03, n)


def _trending(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return 20 + 2.5 * np.arange(n) + rng.normal(0, 1.5, n)


def _intermittent(n=48, seed=2):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.3) * rng.integers(1, 6, n).astype(float)


SERIES = {
    "seasonal": _seasonal(),
    "trending": _trending(),
    "intermittent": _intermittent(),
    "all_zero": np.zeros(30),
    "one_nonzero": np.r_[np.zeros(20), 7.0, np.zeros(9)],
    "constant": np.full(30, 4.0),
    "one_value": np.array([5.0]),
    "two_values": np.array([5.0, 6.0]),
    "three_values": np.array([5.0, 6.0, 4.0]),
}
SHORT = ("one_value", "two_values", "three_values")
# what every kind must do on every series: "ok" (finite forecast) or the CandidateUnfit code
EXPECTED = {
    (kind, name): ("too_short" if name in SHORT and kind in st.CONTINUOUS_KINDS else "ok")
    for kind in st.KINDS
    for name in SERIES
}
# mstl needs two full seasons: 30 values cover two cycles of 12, the trending 40 do too


def _walk_plain(obj, path="state"):
    """Every value in a state is a JSON type (dict, list, str, int, float, bool, None)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), f"{path}: key {k!r}"
            _walk_plain(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk_plain(v, f"{path}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool), f"{path} is a {type(obj).__name__}"
        if type(obj) is float:
            assert np.isfinite(obj), f"{path} is {obj}"


# -- every kind on every awkward series ----------------------------------------------

@pytest.mark.parametrize("name", list(SERIES))
@pytest.mark.parametrize("kind", st.KINDS)
def test_every_kind_fits_and_forecasts_or_says_why(sfm, kind, name):
    y = SERIES[name]
    expected = EXPECTED[(kind, name)]
    if expected != "ok":
        with pytest.raises(st.CandidateUnfit) as info:
            st.fit_series(kind, y, M)
        assert info.value.code == expected
        return
    state = st.fit_series(kind, y, M)
    assert state["kind"] == kind and state["n_obs"] == len(y)
    mean, intervals = st.forecast_series(state, y, H, (80, 95))
    assert mean.shape == (H,) and np.all(np.isfinite(mean))
    assert set(intervals) == {"lo-80", "hi-80", "lo-95", "hi-95"}
    for v in intervals.values():
        assert v.shape == (H,) and np.all(np.isfinite(v))
    assert np.all(intervals["lo-95"] <= intervals["lo-80"] + 1e-9)
    assert np.all(intervals["lo-80"] <= intervals["hi-80"])
    assert np.all(intervals["hi-80"] <= intervals["hi-95"] + 1e-9)
    # every series here is non-negative: so is every forecast and bound
    assert np.all(mean >= 0) and all(np.all(v >= 0) for v in intervals.values())
    if name == "all_zero":
        assert np.all(mean == 0) and all(np.all(v == 0) for v in intervals.values())
    if name == "constant" and kind in st.CONTINUOUS_KINDS:
        assert state["spec"] == "constant" and np.all(mean == 4.0)


def test_awkward_series_print_nothing(sfm, capfd):
    for kind in st.KINDS:
        for name, y in SERIES.items():
            try:
                st.forecast_series(st.fit_series(kind, y, M), y, H, (80,))
            except st.CandidateUnfit:
                pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- states: plain JSON, identical forecasts after reload --------------------------------

@pytest.mark.parametrize("kind", st.KINDS)
def test_state_round_trips_through_json_and_forecasts_identically(sfm, kind):
    y = _intermittent() if kind in st.INTERMITTENT_KINDS else _seasonal()
    state = st.fit_series(kind, y, M)
    _walk_plain(state)
    text = json.dumps(state, allow_nan=False)
    reloaded = json.loads(text)
    assert reloaded == state
    mean, intervals = st.forecast_series(state, y, H, (80, 95))
    mean2, intervals2 = st.forecast_series(reloaded, y, H, (80, 95))
    assert np.array_equal(mean, mean2)
    assert intervals.keys() == intervals2.keys()
    for k in intervals:
        assert np.array_equal(intervals[k], intervals2[k])


def test_states_are_inspectable(sfm):
    ets = st.fit_series("ets", _seasonal(), M)
    assert ets["method"].startswith("ETS(") and len(ets["components"]) == 4
    assert 0 < ets["alpha"] < 1 and len(ets["initial_states"]) == len(ets["final_states"])
    arima = st.fit_series("arima", _trending(), None)
    assert arima["spec"].startswith("ARIMA(") and len(arima["coef"]) == len(arima["coef_names"])
    theta = st.fit_series("theta", _seasonal(), M)
    assert theta["spec"] == "DOTM" and theta["theta"] >= 1 and 0 < theta["alpha"] < 1
    tsb = st.fit_series("tsb", _intermittent(), M)
    assert tsb["params"]["alpha_d"] in st.TSB_ALPHA_D and tsb["params"]["alpha_p"] in st.TSB_ALPHA_P
    adida = st.fit_series("adida", _intermittent(), M)
    assert adida["diagnostics"]["aggregation_level"] >= 1


# -- the stored state forecasts like statsforecast's own fitted model ----------------------

def _reference(sfm, kind, state):
    if kind == "ets":
        return sfm.AutoETS(season_length=M)
    if kind == "theta":
        return sfm.AutoTheta(season_length=M, model=state["spec"])
    if kind == "arima":
        return sfm.AutoARIMA(season_length=M)
    if kind == "mstl":
        return sfm.MSTL(season_length=[M], trend_forecaster=sfm.AutoETS(model="ZZN"))
    if kind == "croston":
        return sfm.CrostonSBA()
    if kind == "tsb":
        return sfm.TSB(**state["params"])
    return sfm.ADIDA() if kind == "adida" else sfm.IMAPA()


@pytest.mark.parametrize("kind", st.KINDS)
def test_forecast_from_state_equals_the_library_fit(sfm, kind):
    y = _intermittent() if kind in st.INTERMITTENT_KINDS else _seasonal()
    state = st.fit_series(kind, y, M)
    mean, intervals = st.forecast_series(state, y, H, (80,))
    ref = _reference(sfm, kind, state).fit(y)
    if kind in st.CONTINUOUS_KINDS:
        expected = ref.predict(h=H, level=[80])
        np.testing.assert_allclose(mean, expected["mean"], rtol=1e-9)
        np.testing.assert_allclose(intervals["hi-80"], np.asarray(expected["hi-80"]), rtol=1e-5)
    else:
        np.testing.assert_allclose(mean, ref.predict(h=H)["mean"], rtol=1e-9)


@pytest.mark.parametrize("kind", ["ets", "theta", "arima", "mstl"])
def test_longer_history_is_filtered_with_the_stored_parameters(sfm, kind):
    """The refit-free path: the state of y[:40] forecasts after y[:48] like the library's forward."""
    y = _seasonal()
    state = st.fit_series(kind, y[:40], M)
    mean_old, _ = st.forecast_series(state, y[:40], H)
    mean_new, _ = st.forecast_series(state, y, H)
    expected = _reference(sfm, kind, state).fit(y[:40]).forward(y=y, h=H)["mean"]
    np.testing.assert_allclose(mean_new, expected, rtol=1e-9)
    assert not np.allclose(mean_new, mean_old)
    assert st.fit_series(kind, y[:40], M) == state  # fitting again gives the same state


@pytest.mark.parametrize("kind", st.KINDS)
def test_no_leakage_values_after_the_cutoff_change_nothing(sfm, kind):
    y = _intermittent(60) if kind in st.INTERMITTENT_KINDS else _seasonal(60)
    other = y.copy()
    other[48:] = other[48:] * 3 + 10  # a different future
    cut = 48
    state, state_other = st.fit_series(kind, y[:cut], M), st.fit_series(kind, other[:cut], M)
    assert state == state_other
    a, ia = st.forecast_series(state, y[:cut], H, (80,))
    b, ib = st.forecast_series(state_other, other[:cut], H, (80,))
    assert np.array_equal(a, b) and np.array_equal(ia["hi-80"], ib["hi-80"])
    assert len(a) == H  # the horizon is respected


# -- missing values, negative values, stale states -------------------------------------------

def test_nan_leading_dropped_interior_interpolated_for_continuous_kinds(sfm):
    y = _seasonal()
    with_gaps = np.r_[np.nan, np.nan, y]
    a = st.forecast_series(st.fit_series("ets", with_gaps, M), with_gaps, H)[0]
    b = st.forecast_series(st.fit_series("ets", y, M), y, H)[0]
    np.testing.assert_array_equal(a, b)
    holed = y.copy()
    holed[[10, 11, 30]] = np.nan
    filled = y.copy()
    filled[10], filled[11] = y[9] + (y[12] - y[9]) / 3, y[9] + 2 * (y[12] - y[9]) / 3
    filled[30] = (y[29] + y[31]) / 2
    np.testing.assert_allclose(
        st.forecast_series(st.fit_series("theta", holed, M), holed, H)[0],
        st.forecast_series(st.fit_series("theta", filled, M), filled, H)[0],
    )


def test_nan_dropped_for_the_croston_family(sfm):
    y = _intermittent()
    holed = np.r_[np.nan, y[:20], np.nan, np.nan, y[20:], np.nan]
    for kind in st.INTERMITTENT_KINDS:
        a = st.forecast_series(st.fit_series(kind, holed, M), holed, H)[0]
        b = st.forecast_series(st.fit_series(kind, y, M), y, H)[0]
        np.testing.assert_array_equal(a, b)


def test_bad_and_empty_histories_raise_candidate_unfit(sfm):
    with pytest.raises(st.CandidateUnfit) as info:
        st.fit_series("ets", np.full(10, np.nan), M)
    assert info.value.code == "no_data"
    with pytest.raises(st.CandidateUnfit) as info:
        st.fit_series("croston", np.r_[np.ones(10), np.inf], M)
    assert info.value.code == "bad_input"
    with pytest.raises(ValueError):
        st.fit_series("prophet", np.ones(10), M)


def test_negative_values(sfm):
    y = 60 - _trending()  # falls through zero
    for kind in st.INTERMITTENT_KINDS:
        with pytest.raises(st.CandidateUnfit) as info:
            st.fit_series(kind, y, None)
        assert info.value.code == "negative"
    state = st.fit_series("ets", y, None)
    assert "M" not in state["components"][:3]  # additive only on data with values <= 0
    mean, intervals = st.forecast_series(state, y, H, (95,))
    assert np.all(np.isfinite(mean)) and np.all(mean < 0)  # not clipped: the series has negative values
    assert np.all(intervals["lo-95"] < mean)


def test_multiplicative_state_on_a_history_that_turned_nonpositive_is_stale(sfm):
    y = _seasonal()
    state = st.fit_series("ets", y, M)
    assert "M" in state["components"][:3]
    later = np.r_[y, 0.0, 3.0]
    with pytest.raises(st.CandidateUnfit) as info:
        st.forecast_series(state, later, H)
    assert info.value.code == "stale_state"


def test_constant_state_on_a_history_that_changed_is_stale(sfm):
    state = st.fit_series("theta", np.full(20, 3.0), M)
    assert st.forecast_series(state, np.full(25, 3.0), H)[0].tolist() == [3.0] * H
    with pytest.raises(st.CandidateUnfit) as info:
        st.forecast_series(state, np.r_[np.full(20, 3.0), 5.0], H)
    assert info.value.code == "stale_state"


def test_long_seasons_fall_back_as_documented(sfm):
    rng = np.random.default_rng(5)
    t = np.arange(120)
    weekly = 100 + 10 * np.sin(2 * np.pi * t / 52) + rng.normal(0, 1, 120)
    ets = st.fit_series("ets", weekly, 52)
    assert ets["components"][2] == "N"  # no seasonal state for a season above 24
    hourly = 50 + 10 * np.sin(2 * np.pi * np.arange(400) / 24) + 5 * np.sin(2 * np.pi * np.arange(400) / 168) + rng.normal(0, 1, 400)
    mstl = st.fit_series("mstl", hourly, 24)
    assert mstl["seasons"] == [24, 168]
    mean, _ = st.forecast_series(mstl, hourly, 48)
    assert mean.shape == (48,) and np.all(np.isfinite(mean))
    with pytest.raises(st.CandidateUnfit) as info:
        st.fit_series("mstl", hourly[:40], 24)
    assert info.value.code == "too_short"


def test_long_histories_are_fitted_on_a_window(sfm):
    y = 100 + np.random.default_rng(6).normal(0, 1, 700)
    state = st.fit_series("theta", y, None)
    assert state["offset"] == 200 and state["n_obs"] == 500
    a = st.forecast_series(state, y, H)[0]
    b = st.forecast_series(st.fit_series("theta", y[200:], None), y[200:], H)[0]
    np.testing.assert_array_equal(a, b)


# -- intervals and quantiles ------------------------------------------------------------------

def test_zero_inflated_intervals_of_the_croston_family(sfm):
    y = np.tile([0.0, 0.0, 0.0, 4.0], 10)  # demand 4 every 4th period: p = 0.25
    state = st.fit_series("tsb", y, None)
    mean, intervals = st.forecast_series(state, y, H, (80,))
    assert 0.5 < mean[0] < 1.5
    assert np.all(intervals["lo-80"] == 0) and np.all(intervals["hi-80"] == 4)
    q = st.forecast_quantiles(state, y, H, (0.1, 0.5, 0.9))
    assert np.all(q[0.1] == 0) and np.all(q[0.5] == 0) and np.all(q[0.9] == 4)


def test_quantiles_map_to_interval_bounds(sfm):
    y = _seasonal()
    state = st.fit_series("ets", y, M)
    q = st.forecast_quantiles(state, y, H, (0.05, 0.5, 0.9))
    mean, intervals = st.forecast_series(state, y, H, (80, 90))
    np.testing.assert_array_equal(q[0.05], intervals["lo-90"])
    np.testing.assert_array_equal(q[0.5], mean)
    np.testing.assert_array_equal(q[0.9], intervals["hi-80"])
    assert np.all(q[0.05] < q[0.5]) and np.all(q[0.5] < q[0.9])
    with pytest.raises(ValueError):
        st.forecast_series(state, y, H, (100,))
    with pytest.raises(ValueError):
        st.forecast_series(state, y, 0)


# -- demand classes and the candidate rule (numpy only) ------------------------------------------

@pytest.mark.parametrize(
    "values, expected",
    [
        ([10, 12, 11, 9, 10, 11, 12, 10, 9, 11, 10, 12], "smooth"),
        ([1, 20, 2, 30, 1, 25, 3, 40, 2, 1, 30, 2], "erratic"),
        ([0, 0, 5, 0, 0, 5, 0, 6, 0, 0, 5, 0, 4, 0, 0, 5], "intermittent"),
        ([0, 0, 1, 0, 0, 50, 0, 0, 2, 0, 0, 80, 0, 0, 1, 0], "lumpy"),
        ([3, 4, 5, 4, 3], "short"),
        ([7] * 12, "constant"),
        ([0] * 12, "constant"),
        ([np.nan] * 5 + [10, 12, 11, 9, 10, 11, 12, 10, 9, 11], "smooth"),  # NaN are not observations
        ([np.nan] * 8 + [1, 2], "short"),
        ([-5, 0, 0, 6, 0, 0, -4, 0, 0, 5, 0, 0], "smooth"),  # negative: not demand, classed by CV2 only
        ([-50, 0, 0, 1, 0, 0, -2, 0, 0, 90, 0, 0], "erratic"),
    ],
)
def test_demand_class_on_hand_made_series(values, expected):
    assert st.demand_class(np.array(values, dtype=float)) == expected


def test_demand_stats_and_cutoffs():
    s = st.demand_stats(np.array([0, 0, 5, 0, 0, 5, 0, 6, 0, 0, 5, 0, 4, 0, 0, 5], dtype=float))
    assert s["n_obs"] == 16 and s["n_nonzero"] == 6 and s["adi"] == pytest.approx(16 / 6)
    sizes = np.array([5, 5, 6, 5, 4, 5.0])
    assert s["cv2"] == pytest.approx(np.var(sizes) / np.mean(sizes) ** 2)
    # ADI exactly at the cut-off is intermittent (>= 1.32): 33 periods, 25 with demand
    at_cutoff = np.r_[np.full(25, 5.0), np.zeros(8)]
    assert st.demand_stats(at_cutoff)["adi"] == 1.32 and st.demand_class(at_cutoff) == "intermittent"
    assert st.demand_class(np.r_[np.full(26, 5.0), np.zeros(7)]) == "smooth"
    empty = st.demand_stats(np.zeros(12))
    assert empty["adi"] is None and empty["cv2"] is None and empty["class"] == "constant"
    json.dumps(s, allow_nan=False)


def test_auto_candidates_on_a_mixed_set():
    series = {
        "smooth_monthly": (np.array([10, 12, 11, 9, 10, 11, 12, 10, 9, 11, 10, 12] * 3, dtype=float), 12, False),
        "smooth_promo": (np.array([10, 12, 11, 9, 10, 11, 12, 10, 9, 11, 10, 12] * 3, dtype=float), 12, True),
        "lumpy_spare_part": (np.array([0, 0, 1, 0, 0, 50, 0, 0, 2, 0, 0, 80, 0, 0, 1, 0] * 2, dtype=float), 12, True),
        "intermittent": (np.array([0, 0, 5, 0, 0, 5, 0, 6, 0, 0, 5, 0, 4, 0, 0, 5], dtype=float), None, False),
        "new_item": (np.array([3, 4, 5], dtype=float), 12, True),
        "flat": (np.full(20, 2.0), 12, False),
        "hourly": (50 + 10 * np.sin(2 * np.pi * np.arange(400) / 24), 24, False),
    }
    chosen = {}
    for name, (y, m, known) in series.items():
        chosen[name] = st.auto_candidates(st.demand_class(y), int(np.sum(~np.isnan(y))), m, known)
    assert chosen["smooth_monthly"] == ["ets", "theta", "ensemble", "naive", "seasonal_naive", "mean", "moving_average"]
    assert chosen["smooth_promo"] == ["ets", "theta", "lightgbm", "linear", "ensemble", "naive", "seasonal_naive", "mean", "moving_average"]
    assert chosen["lumpy_spare_part"] == ["croston", "tsb", "adida", "imapa", "ensemble", "naive", "mean", "moving_average"]
    assert chosen["intermittent"] == chosen["lumpy_spare_part"]
    assert chosen["new_item"] == ["naive", "mean", "moving_average", "linear"]
    assert chosen["flat"] == ["naive"]
    assert chosen["hourly"] == ["ets", "theta", "mstl", "ensemble", "naive", "seasonal_naive", "mean", "moving_average"]
    assert all("arima" not in c for c in chosen.values())
    group = st.union_candidates(chosen.values())
    assert group == ["ets", "theta", "mstl", "croston", "tsb", "adida", "imapa", "lightgbm", "linear", "ensemble",
                     "naive", "seasonal_naive", "mean", "moving_average"]
    # mstl needs two seasons with two full cycles: 300 hourly values cover 24 but not 168
    assert "mstl" not in st.auto_candidates("smooth", 300, 24, False)
    assert "mstl" in st.auto_candidates("smooth", 800, 7, False, seasons=(7, 30))
    assert st.default_seasons(7) == (7, 365) and st.default_seasons(12) == (12,) and st.default_seasons(None) == ()
    with pytest.raises(ValueError):
        st.auto_candidates("seasonal", 10, 12, False)
