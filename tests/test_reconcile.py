"""manymodels.core.reconcile on small generated hierarchies: real numbers, no mocks.

Every method must be coherent on every level (with and without nonnegative), and
each must satisfy its own identities; the projections are also checked against
the textbook dense formula S (S' W^-1 S)^-1 S' W^-1 and a hand computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from manymodels.core import reconcile as rc

PROJECTIONS = ("ols", "wls_struct", "wls_var", "mint_shrink")


def _nested_table():
    """total -> 3 states -> 2, 3 and 4 regions (9 bottom series), rows deliberately unsorted."""
    regions = [("B", "b1"), ("A", "a2"), ("C", "c3"), ("A", "a1"), ("B", "b3"), ("C", "c1"), ("B", "b2"), ("C", "c4"), ("C", "c2")]
    return {"state": [s for s, _ in regions], "region": [r for _, r in regions]}, [[], ["state"]]


def _grouped_table():
    """Tourism's shape in small: region x purpose bottom (7 regions in 3 states, 2 purposes),
    levels total, state, region, purpose, state x purpose."""
    regions = [("A", "a1"), ("A", "a2"), ("B", "b1"), ("B", "b2"), ("B", "b3"), ("C", "c1"), ("C", "c2")]
    rows = [(s, r, p) for s, r in regions for p in ("business", "holiday")]
    table = {"state": [s for s, _, _ in rows], "region": [r for _, r, _ in rows], "purpose": [p for _, _, p in rows]}
    return table, [[], ["state"], ["region"], ["purpose"], ["state", "purpose"]]


def _problem(kind: str, seed: int = 0, h: int = 4, T: int = 30):
    """A hierarchy, incoherent base forecasts (some negative), residuals correlated through
    the structure, and a bottom history."""
    table, levels = _nested_table() if kind == "nested" else _grouped_table()
    hier = rc.build_hierarchy(table, levels, bottom=["state", "region"] if kind == "nested" else ["region", "purpose"])
    rng = np.random.default_rng(seed)
    truth = rng.gamma(2.0, 3.0, size=(hier.n_bottom, h))
    base = np.asarray(hier.S @ truth) + rng.normal(0, 2.0, size=(hier.n_nodes, h))
    base[hier.n_aggregate] = -1.5  # a negative bottom forecast, for nonnegative
    residuals = np.asarray(hier.S @ rng.normal(0, 1.0, size=(hier.n_bottom, T))) + rng.normal(0, 0.5, size=(hier.n_nodes, T))
    history = rng.gamma(2.0, 3.0, size=(hier.n_bottom, T))
    return hier, base, residuals, history


def _options(method: str, residuals, history) -> dict:
    return {"residuals": residuals, "history": history, "level": 1}


def _assert_coherent_on_every_level(hier, y):
    """Each node of each level equals the sum of the bottom series inside it."""
    bottom = y[hier.n_aggregate:]
    for k, nodes in enumerate(hier.level_nodes):
        sums = np.zeros((len(nodes), y.shape[1]))
        np.add.at(sums, hier.members[k] - nodes[0], bottom)
        np.testing.assert_allclose(y[nodes], sums, rtol=1e-10, atol=1e-9, err_msg=f"level {k} {hier.levels[k]}")


def _dense_projection(hier, base, W):
    S = hier.S.toarray()
    Wi = np.linalg.inv(W)
    return S @ np.linalg.solve(S.T @ Wi @ S, S.T @ Wi @ base)


# ------------------------------------------------------------------ the structure


def test_nested_structure_orders_aggregates_first_then_the_bottom_in_table_order():
    table, levels = _nested_table()
    hier = rc.build_hierarchy(table, levels)
    assert hier.levels == ((), ("state",), ("state", "region"))
    assert (hier.n_nodes, hier.n_aggregate, hier.n_bottom) == (13, 4, 9)
    assert hier.node_key[:4] == ((), ("A",), ("B",), ("C",))  # sorted within a level
    assert hier.node_key[4:] == tuple(zip(table["state"], table["region"], strict=True))  # table order
    assert [hier.label(n) for n in (0, 2, 4)] == ["total", "state=B", "state=B/region=b1"]
    assert [list(n) for n in hier.level_nodes] == [[0], [1, 2, 3], list(range(4, 13))]
    assert hier.node_level.tolist() == [0, 1, 1, 1] + [2] * 9
    S = hier.S.toarray()
    assert S.shape == (13, 9) and hier.S.format == "csr"
    np.testing.assert_array_equal(S[4:], np.eye(9))
    np.testing.assert_array_equal(S[0], np.ones(9))
    np.testing.assert_array_equal(S[2], [s == "B" for s in table["state"]])
    assert hier.sizes.tolist() == [9, 2, 3, 4] + [1] * 9


def test_grouped_levels_each_partition_the_bottom():
    hier, *_ = _problem("grouped")
    counts = [len(n) for n in hier.level_nodes]
    assert counts == [1, 3, 7, 2, 6, 14]
    S = hier.S.toarray()
    for nodes in hier.level_nodes:  # every bottom series is in exactly one node of every level
        np.testing.assert_array_equal(S[nodes].sum(axis=0), np.ones(hier.n_bottom))
    purpose_holiday = hier.level_nodes[3][1]
    assert hier.node_key[purpose_holiday] == ("holiday",) and S[purpose_holiday].sum() == 7


@pytest.mark.parametrize(("levels", "bottom", "message"), [
    ([[], ["stat"]], None, r"level 1 \['stat'\]: unknown column 'stat'\. Did you mean 'state'\?"),
    ([[], ["state"], ["state"]], None, r"level 2 \['state'\] repeats level 1 \['state'\]"),
    ([["state", "purpose"], ["purpose", "state"]], None, r"level 1 \['purpose', 'state'\] repeats level 0"),
    ([[], ["region", "purpose"]], ["region", "purpose"], r"the bottom \['region', 'purpose'\] repeats level 1"),
    ([[], ["state", "state"]], None, r"level 1 \['state', 'state'\]: a column appears twice"),
    ([[]], ["state", "purpose"], r"the bottom \['state', 'purpose'\] does not identify the series: rows \[0, 2\]"),
    ([[], ["purpose"]], ["region", "purpos"], r"bottom \['region', 'purpos'\]: unknown column 'purpos'"),
    ("state", None, r"level 0 's': a level is a list of columns"),
])
def test_a_bad_hierarchy_is_a_value_error_naming_the_level_and_column(levels, bottom, message):
    table, _ = _grouped_table()
    with pytest.raises(ValueError, match=message):
        rc.build_hierarchy(table, levels, bottom=bottom)


def test_a_bottom_series_without_a_value_is_refused():
    table, levels = _nested_table()
    table["state"][3] = None
    with pytest.raises(ValueError, match=r"column 'state' has no value in bottom rows \[3\]"):
        rc.build_hierarchy(table, levels)


def test_a_dataframe_is_a_bottom_table():
    import pandas as pd

    table, levels = _grouped_table()
    from_frame = rc.build_hierarchy(pd.DataFrame(table), levels, bottom=["region", "purpose"])
    from_dict = rc.build_hierarchy(table, levels, bottom=["region", "purpose"])
    assert (from_frame.S != from_dict.S).nnz == 0 and from_frame.node_key == from_dict.node_key


# ------------------------------------------------------- coherence, every method


@pytest.mark.parametrize("kind", ["nested", "grouped"])
@pytest.mark.parametrize("nonnegative", [False, True])
@pytest.mark.parametrize("method", [*rc.METHODS, "top_down:average_proportions", "top_down:proportion_averages"])
def test_every_method_is_coherent_on_every_level(kind, nonnegative, method):
    hier, base, residuals, history = _problem(kind)
    method, _, rule = method.partition(":")
    y = rc.reconcile(hier, base, method, nonnegative=nonnegative, rule=rule or "forecast_proportions",
                     **_options(method, residuals, history))
    assert y.shape == base.shape and np.isfinite(y).all()
    _assert_coherent_on_every_level(hier, y)
    assert rc.coherence_gap(hier, y) < 1e-9
    if nonnegative:
        assert (y >= 0).all()
    else:
        assert rc.coherence_gap(hier, base) > 0.1  # the base really was incoherent


def test_bottom_up_reproduces_the_sums_of_the_bottom():
    hier, base, *_ = _problem("grouped")
    y = rc.bottom_up(hier, base)
    np.testing.assert_array_equal(y[hier.n_aggregate:], base[hier.n_aggregate:])
    np.testing.assert_allclose(y[0], base[hier.n_aggregate:].sum(axis=0))
    assert rc.bottom_up(hier, base, nonnegative=True)[hier.n_aggregate].tolist() == [0.0] * base.shape[1]


# ------------------------------------------------------------ the projections


@pytest.mark.parametrize("kind", ["nested", "grouped"])
@pytest.mark.parametrize("method", PROJECTIONS)
def test_a_projection_applied_twice_changes_nothing(kind, method):
    hier, base, residuals, history = _problem(kind)
    once = rc.reconcile(hier, base, method, residuals=residuals)
    twice = rc.reconcile(hier, once, method, residuals=residuals)
    np.testing.assert_allclose(twice, once, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kind", ["nested", "grouped"])
@pytest.mark.parametrize("method", [*PROJECTIONS, "bottom_up", "top_down", "middle_out"])
def test_coherent_base_forecasts_are_left_unchanged(kind, method):
    hier, _, residuals, _ = _problem(kind)
    coherent = np.asarray(hier.S @ np.random.default_rng(5).gamma(2.0, 3.0, size=(hier.n_bottom, 3)))
    y = rc.reconcile(hier, coherent, method, residuals=residuals, level=1)
    np.testing.assert_allclose(y, coherent, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kind", ["nested", "grouped"])
def test_the_projections_equal_the_dense_textbook_formula(kind):
    hier, base, residuals, _ = _problem(kind)
    n = hier.n_nodes
    np.testing.assert_allclose(rc.ols(hier, base), _dense_projection(hier, base, np.eye(n)), rtol=1e-9, atol=1e-9)
    structural = np.diag(hier.S.toarray().sum(axis=1))
    np.testing.assert_allclose(rc.wls_struct(hier, base), _dense_projection(hier, base, structural), rtol=1e-9, atol=1e-9)
    variances = np.diag(np.mean(residuals**2, axis=1))
    np.testing.assert_allclose(rc.wls_var(hier, base, residuals), _dense_projection(hier, base, variances), rtol=1e-9, atol=1e-9)
    W, lam = rc.shrunk_covariance(residuals)
    assert 0 < lam < 1  # correlated residuals: a real shrinkage, not the diagonal
    np.testing.assert_allclose(rc.mint_shrink(hier, base, residuals), _dense_projection(hier, base, W), rtol=1e-8, atol=1e-8)


def _shrinkage_by_loops(r: np.ndarray) -> tuple[np.ndarray, float]:
    """Schaefer-Strimmer towards the diagonal, entry by entry (pairwise-complete periods)."""
    n = len(r)
    cov, corr, var = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            both = ~np.isnan(r[i]) & ~np.isnan(r[j])
            cov[i, j] = np.mean(r[i, both] * r[j, both])
    sd = np.sqrt(np.diag(cov))
    for i in range(n):
        for j in range(n):
            both = ~np.isnan(r[i]) & ~np.isnan(r[j])
            w = (r[i, both] / sd[i]) * (r[j, both] / sd[j])
            m = both.sum()
            corr[i, j] = w.mean()
            var[i, j] = m / (m - 1) ** 3 * np.sum((w - w.mean()) ** 2)
    off = ~np.eye(n, dtype=bool)
    lam = float(np.clip(var[off].sum() / np.sum(corr[off] ** 2), 0, 1))
    shrunk = (1 - lam) * cov
    shrunk[np.diag_indices(n)] = np.diag(cov)
    return shrunk, lam


def test_shrunk_covariance_matches_the_formula_entry_by_entry_with_missing_residuals():
    hier, _, residuals, _ = _problem("nested", T=12)
    residuals = residuals.copy()
    residuals[2, :3] = np.nan
    residuals[7, 5] = np.nan
    W, lam = rc.shrunk_covariance(residuals)
    W_ref, lam_ref = _shrinkage_by_loops(residuals)
    assert lam == pytest.approx(lam_ref, rel=1e-10) and 0 < lam < 1
    np.testing.assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)
    assert np.isfinite(rc.mint_shrink(hier, _problem("nested")[1], residuals)).all()


def test_a_two_level_toy_by_hand():
    """total = 10, bottoms 3 and 5 (they sum to 8)."""
    hier = rc.build_hierarchy({"item": ["x", "y"]}, [[]])
    base = np.array([[10.0], [3.0], [5.0]])
    # OLS: b = (S'S)^-1 S'y with S'S = [[2, 1], [1, 2]], S'y = [13, 15]: b = [11/3, 17/3]
    np.testing.assert_allclose(rc.ols(hier, base).ravel(), [28 / 3, 11 / 3, 17 / 3])
    # WLS structural, W = diag(2, 1, 1): the gap of 2 goes half to the total, a quarter to each bottom
    np.testing.assert_allclose(rc.wls_struct(hier, base).ravel(), [9.0, 3.5, 5.5])
    # residual variances 4, 1, 1 (residuals +-2, +-1, +-1): U'WU = 4 + 1 + 1, lambda = 2/6;
    # the total moves by -4/3, each bottom by +1/3
    residuals = np.array([[2.0, -2.0], [1.0, -1.0], [-1.0, 1.0]])
    np.testing.assert_allclose(rc.wls_var(hier, base, residuals).ravel(), [26 / 3, 10 / 3, 16 / 3])
    np.testing.assert_allclose(rc.bottom_up(hier, base).ravel(), [8.0, 3.0, 5.0])
    # forecast proportions: 10 split 3:5
    np.testing.assert_allclose(rc.top_down(hier, base).ravel(), [10.0, 3.75, 6.25])
    history = np.array([[1.0, 1.0], [3.0, 9.0]])  # shares 1/4 then 1/10; means 1 and 6
    np.testing.assert_allclose(rc.top_down(hier, base, rule="average_proportions", history=history).ravel(),
                               [10.0, 1.75, 8.25])
    np.testing.assert_allclose(rc.top_down(hier, base, rule="proportion_averages", history=history).ravel(),
                               [10.0, 10 / 7, 60 / 7])
    # nonnegative: OLS gives [5/3, -11/3, 16/3]; x is held at 0 and the rest projected
    # again: minimise (2 - b)^2 + (-4 - 0)^2 + (5 - b)^2, b = 3.5 (clipping would say 16/3)
    negative = np.array([[2.0], [-4.0], [5.0]])
    np.testing.assert_allclose(rc.ols(hier, negative).ravel(), [5 / 3, -11 / 3, 16 / 3])
    np.testing.assert_allclose(rc.ols(hier, negative, nonnegative=True).ravel(), [3.5, 0.0, 3.5])
    np.testing.assert_allclose(rc.bottom_up(hier, negative, nonnegative=True).ravel(), [5.0, 0.0, 5.0])


def _metric(hier, method, residuals):
    if method == "ols":
        return np.eye(hier.n_nodes)
    if method == "wls_struct":
        return np.diag(hier.sizes.astype(float))
    if method == "wls_var":
        return np.diag(np.mean(residuals**2, axis=1))
    return rc.shrunk_covariance(residuals)[0]


@pytest.mark.parametrize("kind", ["nested", "grouped"])
@pytest.mark.parametrize("method", PROJECTIONS)
def test_nonnegative_projections_sit_between_the_exact_optimum_and_clipping(kind, method):
    """In the W^-1 norm, the held-at-zero projection is never farther from the base than
    clipping the projection, never nearer than the exact non-negative least squares
    (scipy's nnls on the whitened problem), and here it reaches the exact optimum."""
    from scipy.optimize import nnls

    hier, base, residuals, _ = _problem(kind, seed=3)
    base = base - 3.0  # plenty of negative bottoms
    W = _metric(hier, method, residuals)
    whiten = np.linalg.cholesky(np.linalg.inv(W)).T  # whiten' whiten = W^-1
    S = hier.S.toarray()
    ours = rc.reconcile(hier, base, method, nonnegative=True, residuals=residuals)
    clipped = S @ np.maximum(rc.reconcile(hier, base, method, residuals=residuals)[hier.n_aggregate:], 0)
    assert (ours >= 0).all() and (clipped[hier.n_aggregate:] == 0).any()
    _assert_coherent_on_every_level(hier, ours)
    for step in range(base.shape[1]):
        exact, _ = nnls(whiten @ S, whiten @ base[:, step])
        distance = [np.linalg.norm(whiten @ (base[:, step] - y)) for y in (S @ exact, ours[:, step], clipped[:, step])]
        assert distance[0] - 1e-9 <= distance[1] <= distance[2] + 1e-9, distance
        np.testing.assert_allclose(ours[:, step], S @ exact, atol=1e-7)


def test_nonnegative_changes_nothing_when_nothing_is_negative():
    hier, base, residuals, _ = _problem("grouped")
    base = np.abs(base) + 5.0
    for method in PROJECTIONS:
        plain = rc.reconcile(hier, base, method, residuals=residuals)
        assert (plain >= 0).all()
        np.testing.assert_array_equal(rc.reconcile(hier, base, method, nonnegative=True, residuals=residuals), plain)


# --------------------------------------------------- top-down and middle-out


def test_historical_proportions_sum_to_one_with_missing_history():
    _, _, _, history = _problem("grouped")
    history = history.copy()
    history[0, :10] = np.nan
    history[3] = np.nan  # never observed: no share
    for rule in ("average_proportions", "proportion_averages"):
        p = rc.historical_proportions(history, rule)
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all() and p[3] == 0
    means = np.nansum(history, axis=1) / np.maximum((~np.isnan(history)).sum(axis=1), 1)
    np.testing.assert_allclose(rc.historical_proportions(history, "proportion_averages"), means / means.sum())
    with pytest.raises(ValueError, match="no proportions"):
        rc.historical_proportions(np.zeros((3, 4)), "average_proportions")


@pytest.mark.parametrize("kind", ["nested", "grouped"])
@pytest.mark.parametrize("rule", rc.TOP_DOWN_RULES)
def test_top_down_reproduces_the_top(kind, rule):
    hier, base, _, history = _problem(kind)
    base = np.abs(base)
    y = rc.top_down(hier, base, rule=rule, history=history)
    np.testing.assert_allclose(y[0], base[0])
    shares = y[hier.n_aggregate:] / y[0]
    np.testing.assert_allclose(shares.sum(axis=0), 1.0)


def test_forecast_proportions_go_down_a_nested_path_in_a_grouped_hierarchy():
    hier, base, _, _ = _problem("grouped")
    base = np.abs(base)
    assert rc.nested_path(hier, 0) == [0, 1, 2, 5]  # total, state, region, bottom: purpose crosses
    assert rc.nested_path(hier, 3) == [3, 4, 5]  # from purpose: state x purpose, bottom
    y = rc.top_down(hier, base)
    state, region = hier.level_nodes[1], hier.level_nodes[2]
    np.testing.assert_allclose(y[state], base[0] * base[state] / base[state].sum(axis=0))
    # a region's share of its state, times the state's value
    a1, a2 = region[:2]
    np.testing.assert_allclose(y[a1], y[state[0]] * base[a1] / (base[a1] + base[a2]))
    # an explicit path through the crossed level
    y2 = rc.top_down(hier, base, path=[0, 3, 4, 5])
    purpose = hier.level_nodes[3]
    np.testing.assert_allclose(y2[purpose], base[0] * base[purpose] / base[purpose].sum(axis=0))
    with pytest.raises(ValueError, match=r"level 3 \['purpose'\] does not nest in level 1 \['state'\]"):
        rc.top_down(hier, base, path=[0, 1, 3, 5])
    with pytest.raises(ValueError, match="from level 0 to the bottom"):
        rc.top_down(hier, base, path=[0, 1])


def test_middle_out_keeps_its_level_and_is_bottom_up_above_it():
    hier, base, _, _ = _problem("grouped")
    base = np.abs(base)
    y = rc.middle_out(hier, base, 1)  # from state
    state = hier.level_nodes[1]
    np.testing.assert_allclose(y[state], base[state])
    np.testing.assert_allclose(y[0], base[state].sum(axis=0))  # the total: the states summed up
    _assert_coherent_on_every_level(hier, y)
    with pytest.raises(ValueError, match="starts at an aggregate level"):
        rc.middle_out(hier, base, hier.bottom_level)


@pytest.mark.parametrize("rule", ["average_proportions", "proportion_averages"])
def test_from_level_keeps_its_level_sums_above_and_splits_below_by_shares_within_each_node(rule):
    hier, base, _, history = _problem("grouped")
    history[2, :5] = np.nan  # missing history is left out, not counted as 0
    base = np.abs(base)
    state = 1
    shares = rc.level_shares(hier, state, history, rule)
    parent = hier.members[state] - hier.level_nodes[state][0]
    np.testing.assert_allclose(np.bincount(parent, weights=shares), 1.0)  # a state's series share all of it
    one = hier.members[state] == hier.members[state][0]  # the first series' state, by hand
    x = history[one]
    if rule == "proportion_averages":
        expected = np.nanmean(x, axis=1) / np.nanmean(x, axis=1).sum()
    else:
        expected = np.nanmean(x / np.nansum(x, axis=0), axis=1)
        expected /= expected.sum()
    np.testing.assert_allclose(shares[one], expected)
    y = rc.from_level(hier, base, state, history, rule)
    np.testing.assert_allclose(y[hier.level_nodes[state]], base[hier.level_nodes[state]])  # the trained level is kept
    np.testing.assert_allclose(y[0], base[hier.level_nodes[state]].sum(axis=0))  # the total: their sum
    _assert_coherent_on_every_level(hier, y)
    np.testing.assert_allclose(rc.from_level(hier, base, hier.bottom_level, history, rule), rc.bottom_up(hier, base))
    with pytest.raises(ValueError, match="unknown proportions rule"):
        rc.level_shares(hier, state, history, "forecast_proportions")


def test_methods_refuse_what_they_cannot_do():
    hier = rc.build_hierarchy({"state": ["A", "A", "B"], "region": ["a1", "a2", "b1"]}, [["state"]])
    base = np.ones((hier.n_nodes, 2))
    with pytest.raises(ValueError, match="needs a total level"):
        rc.top_down(hier, base)
    with pytest.raises(ValueError, match="unknown reconciliation method 'mint'"):
        rc.reconcile(hier, base, "mint")
    with pytest.raises(ValueError, match="needs the nodes' residuals"):
        rc.reconcile(hier, base, "wls_var")
    residuals = np.ones((hier.n_nodes, 4))
    residuals[1] = np.nan
    with pytest.raises(ValueError, match=r"1 nodes have no residuals \(first: \[1\]\)"):
        rc.wls_var(hier, base, residuals)
    with pytest.raises(ValueError, match="base forecasts have 2 rows for 5 nodes"):
        rc.ols(hier, base[:2])


# --------------------------------------------------------------- mint's size limit


def test_mint_shrink_beyond_its_size_limit_raises_an_exception_to_fall_back_on():
    hier, base, residuals, _ = _problem("grouped")
    with pytest.raises(rc.CovarianceTooLarge) as raised:
        rc.mint_shrink(hier, base, residuals, max_nodes=hier.n_nodes - 1)
    assert isinstance(raised.value, ValueError)
    assert (raised.value.n_nodes, raised.value.limit) == (hier.n_nodes, hier.n_nodes - 1)
    assert "use wls_var" in str(raised.value) and "MINT_MAX_NODES" in str(raised.value)
    assert rc.MINT_MAX_NODES >= 10_000
    try:  # what a caller does
        y = rc.reconcile(hier, base, "mint_shrink", residuals=residuals, max_nodes=10)
    except rc.CovarianceTooLarge:
        y = rc.reconcile(hier, base, "wls_var", residuals=residuals)
    np.testing.assert_allclose(y, rc.wls_var(hier, base, residuals))


# --------------------------------------------------------------------- failed nodes


@pytest.mark.parametrize("method", rc.METHODS)
def test_a_failed_aggregate_falls_back_to_bottom_up_for_its_branch(method):
    hier, base, residuals, history = _problem("nested")
    base = np.abs(base)
    state_b = hier.level_nodes[1][1]
    broken = base.copy()
    broken[state_b, 2] = np.nan  # one missing step is a failed forecast
    result = rc.reconcile_failed(hier, broken, method, residuals=residuals, history=history, level=1)
    in_b = hier.n_aggregate + np.flatnonzero(hier.members[1] == state_b)
    assert result.failed.tolist() == [state_b]
    assert result.fallback.tolist() == [state_b, *in_b.tolist()]
    assert len(result.filled) == 0 and len(result.unfilled) == 0
    np.testing.assert_allclose(result.forecasts[in_b], base[in_b])  # the branch: bottom-up
    np.testing.assert_allclose(result.forecasts[state_b], base[in_b].sum(axis=0))
    _assert_coherent_on_every_level(hier, result.forecasts)
    # the rest: the method on the hierarchy without that branch, its sum taken off the total
    rest = np.setdiff1d(np.arange(hier.n_bottom), in_b - hier.n_aggregate)
    sub, old = rc._restrict(hier, rest)
    sub_base = base[old].copy()
    sub_base[0] -= base[in_b].sum(axis=0)
    expected = rc.reconcile(sub, sub_base, method, residuals=residuals[old], history=history[rest], level=1)
    np.testing.assert_allclose(result.forecasts[hier.n_aggregate + rest], expected[sub.n_aggregate:], rtol=1e-10)


def test_a_failed_total_makes_everything_bottom_up():
    hier, base, residuals, _ = _problem("grouped")
    broken = base.copy()
    broken[0] = np.nan
    result = rc.reconcile_failed(hier, broken, "mint_shrink", residuals=residuals, nonnegative=True)
    np.testing.assert_allclose(result.forecasts, rc.bottom_up(hier, base, nonnegative=True))
    assert result.fallback.tolist() == list(range(hier.n_nodes))


def test_a_failed_bottom_series_takes_its_share_of_its_nearest_forecasted_ancestor():
    hier, base, residuals, history = _problem("nested")
    base = np.abs(base)
    lost = hier.n_aggregate + 2  # C/c3: state C has 4 regions
    state_c = hier.level_nodes[1][2]
    broken = base.copy()
    broken[lost] = np.nan
    result = rc.reconcile_failed(hier, broken, "wls_struct", history=history)
    assert result.filled.tolist() == [lost] and result.fallback.tolist() == [lost]
    means = history.mean(axis=1)
    share = means[2] / means[hier.members[1] == state_c].sum()
    np.testing.assert_allclose(result.forecasts[lost], share * base[state_c])
    _assert_coherent_on_every_level(hier, result.forecasts)
    # without a history: an equal share of the state
    plain = rc.reconcile_failed(hier, broken, "bottom_up")
    np.testing.assert_allclose(plain.forecasts[lost], base[state_c] / 4)
    # the state failed too: the total is the nearest forecasted ancestor
    broken[state_c] = np.nan
    up = rc.reconcile_failed(hier, broken, "ols", history=history)
    np.testing.assert_allclose(up.forecasts[lost], means[2] / means.sum() * base[0])
    assert up.failed.tolist() == [state_c, lost] and up.filled.tolist() == [lost]


def test_a_bottom_series_with_no_forecasted_ancestor_stays_nan_and_is_reported():
    hier, base, residuals, _ = _problem("nested")
    lost = hier.n_aggregate  # B/b1
    state_b = hier.level_nodes[1][1]
    broken = base.copy()
    broken[[0, state_b, lost]] = np.nan
    result = rc.reconcile_failed(hier, broken, "ols")
    assert result.unfilled.tolist() == [lost] and len(result.filled) == 0
    assert np.isnan(result.forecasts[[0, state_b, lost]]).all()
    others = np.setdiff1d(np.arange(hier.n_nodes), [0, state_b, lost])
    assert np.isfinite(result.forecasts[others]).all()


def test_without_failures_reconcile_failed_is_reconcile():
    hier, base, residuals, _ = _problem("grouped")
    result = rc.reconcile_failed(hier, base, "mint_shrink", residuals=residuals)
    np.testing.assert_array_equal(result.forecasts, rc.mint_shrink(hier, base, residuals))
    assert len(result.failed) == len(result.fallback) == 0


# ------------------------------------------------------------------------ quantiles


def test_quantiles_shift_with_the_point_forecast():
    hier, base, residuals, _ = _problem("nested")
    quantiles = base[:, :, None] + np.array([-2.0, 0.0, 3.0])
    y = rc.mint_shrink(hier, base, residuals)
    shifted = rc.shift_quantiles(base, y, quantiles)
    np.testing.assert_allclose(shifted[:, :, 1], y)
    np.testing.assert_allclose(shifted[:, :, 2] - shifted[:, :, 0], 5.0)
    clipped = rc.shift_quantiles(base, y, quantiles, nonnegative=True)
    assert (clipped >= 0).all() and (np.diff(clipped, axis=2) >= 0).all()
    with pytest.raises(ValueError, match="do not match"):
        rc.shift_quantiles(base, y, quantiles[:3])


# ------------------------------------------------------- an independent implementation


@pytest.mark.parametrize("kind", ["nested", "grouped"])
def test_the_diagonal_projections_agree_with_hierarchicalforecast(kind):
    """Nixtla's hierarchicalforecast, where it is installed (not a dependency of mm: run
    this file in a venv that has it). Its mint_shrink shrinks with other conventions
    and its nonnegative solves a QP on base forecasts clipped at 0 first, so those two
    are not compared; ours are checked against their formulas above."""
    methods = pytest.importorskip("hierarchicalforecast.methods", reason="hierarchicalforecast is not installed")
    hier, base, residuals, _ = _problem(kind)
    for method, atol in (("ols", 1e-9), ("wls_struct", 1e-9), ("wls_var", 1e-6)):
        theirs = methods.MinTrace(method=method).fit_predict(
            S=hier.S.toarray(), y_hat=base, y_insample=residuals, y_hat_insample=np.zeros_like(residuals), tags={})["mean"]
        np.testing.assert_allclose(rc.reconcile(hier, base, method, residuals=residuals), theirs, atol=atol, err_msg=method)
