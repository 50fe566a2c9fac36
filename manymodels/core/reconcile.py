"""Forecast reconciliation over a hierarchy: forecasts that add up at every level.

Pure numpy and scipy.sparse in and out (the config, split and forecast steps
build on it; none of that is here yet). A hierarchy is a table of bottom series
(one row each, its values for the hierarchy columns) and a list of aggregate
levels, each a list of columns (``[]`` is the total). Levels may be nested
(total -> state -> region) or grouped/crossed (purpose, state x purpose).

**Node order.** Nodes are integer indices into one axis: the aggregate levels
first, in the order given, each level's nodes sorted by their key (the tuple of
the level's column values); then the bottom, node ``n_aggregate + i`` being row
``i`` of the bottom table (its order, not sorted). ``S`` (``n_nodes x
n_bottom``, CSR) sums bottom values into every node: ``y = S @ b``.

**Methods** take base forecasts ``base`` (``n_nodes x h``) and return
reconciled ``n_nodes x h`` forecasts that are coherent (every aggregate is the
sum of its bottom series), always computed as ``S @ b`` of reconciled bottom
values ``b``: ``bottom_up``, ``top_down`` (rules ``average_proportions``,
``proportion_averages``, ``forecast_proportions``), ``middle_out``, and the
projections ``ols``, ``wls_struct``, ``wls_var``, ``mint_shrink``.

**Projections.** The textbook ``P = (S' W^-1 S)^-1 S' W^-1`` solves an
``n_bottom x n_bottom`` system, and that system is dense as soon as there is a
total (every pair of bottom series shares it): 30,000 bottom series make it
7 GB. We use the equivalent constraint form instead. With ``C`` the aggregate
rows of ``S`` and ``U' = [I, -C]`` (``U' y = 0`` exactly when ``y`` is
coherent), the same estimate is ``y~ = y^ - W U (U' W U)^-1 U' y^``, a solve on
the ``n_aggregate x n_aggregate`` system ``U' W U`` (331 x 331 for 30 regions x
10 stores), sparse for a diagonal ``W``. It also shows the projection
identities directly: a coherent ``y^`` has ``U' y^ = 0`` and is left unchanged,
so applying a projection twice changes nothing.

**nonnegative=True** (every method) keeps every reconciled forecast >= 0 and
exactly coherent, the result still being ``S @ b``. For the projections,
negative reconciled bottom values are held at 0 and the projection is solved
again with those constraints, until none is negative (set-negative-to-zero:
the W-projection onto the coherent forecasts with those series at 0; a held
series is never released, so it is a heuristic rather than a full
non-negative least squares, though on the tests' problems it reaches the exact
optimum). Clipping the projected bottom instead would be cheaper, but it raises
every aggregate by the negative mass removed (1.7% on the total in
bench/reconcile_scale.py). For bottom_up, top_down and middle_out the bottom
values are clipped at 0 and summed up: their bottoms are shares of base
forecasts, negative only where a base forecast is, and clipping there raises
the aggregates above by what it removes.

**Why not a library.** Nixtla's ``hierarchicalforecast`` implements these
methods. The issue assumed it pins pandas < 3 like statsforecast; version 1.5.3,
tried on 2026-12-01 in a scratch venv, does not (pandas >= 2.1; it installed
beside pandas 3.1), and it has sparse bottom-up, top-down, middle-out and
ols/wls_struct/wls_var (its mint_shrink is dense, as ours is). What kept us
from depending on it: it brings scikit-learn, matplotlib, qpsolvers with
clarabel and utilsforecast (about 90 MB) for what is here ~700 lines on numpy
and scipy, and mm needs around it what it does not do: the structure built and
validated from a bottom table, the failed-node fallback. Its ols, wls_struct and
wls_var agree with these (tests/test_reconcile.py, skipped where it is not
installed); its mint_shrink shrinks with other conventions, and its nonnegative
clips the base forecasts and solves a QP. The choice is worth revisiting if
probabilistic reconciliation is wanted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import did_you_mean

METHODS = ("bottom_up", "top_down", "middle_out", "ols", "wls_struct", "wls_var", "mint_shrink")
TOP_DOWN_RULES = ("forecast_proportions", "average_proportions", "proportion_averages")

# mint_shrink builds dense n_nodes x n_nodes matrices: the covariance, and the pair
# counts when residuals are missing (two at once, 16 bytes a pair). Measured by
# bench/reconcile_scale.py on this 2-core, 24 GiB machine (README, "Hierarchical
# reconciliation (core)"): 20,131 nodes took 15-48 s (by the machine's load) and
# 6.2 GiB; 30,000 would take ~14 GiB, too much beside training. Above the limit it
# raises CovarianceTooLarge; callers fall back to wls_var and say so.
MINT_MAX_NODES = 20_000


class CovarianceTooLarge(ValueError):
    """mint_shrink's dense covariance would exceed ``MINT_MAX_NODES``: use wls_var."""

    def __init__(self, n_nodes: int, limit: int):
        gib = 2 * n_nodes * n_nodes * 8 / 2**30
        super().__init__(f"mint_shrink needs dense {n_nodes:,} x {n_nodes:,} matrices (~{gib:,.1f} GiB): "
                         f"{n_nodes:,} nodes is above the limit of {limit:,} (MINT_MAX_NODES); use wls_var")
        self.n_nodes = n_nodes
        self.limit = limit


# ---------------------------------------------------------------- the structure


@dataclass(frozen=True)
class Hierarchy:
    """The summing matrix and who every node is (see the module for the order).

    ``levels[k]`` is the columns of level ``k``; the last level is the bottom.
    ``members[k][i]`` is the node of level ``k`` that bottom series ``i`` belongs to.
    """

    S: sp.csr_matrix
    levels: tuple[tuple[str, ...], ...]
    node_level: np.ndarray
    node_key: tuple[tuple, ...]
    level_nodes: tuple[np.ndarray, ...]
    members: tuple[np.ndarray, ...]

    @property
    def n_nodes(self) -> int:
        return self.S.shape[0]

    @property
    def n_bottom(self) -> int:
        return self.S.shape[1]

    @property
    def n_aggregate(self) -> int:
        return self.n_nodes - self.n_bottom

    @property
    def bottom_level(self) -> int:
        return len(self.levels) - 1

    @property
    def sizes(self) -> np.ndarray:
        """Number of bottom series under each node."""
        return np.diff(self.S.indptr)

    def label(self, node: int) -> str:
        columns = self.levels[self.node_level[node]]
        return "/".join(f"{c}={v}" for c, v in zip(columns, self.node_key[node], strict=True)) or "total"

    def total_level(self) -> int | None:
        return next((k for k, cols in enumerate(self.levels) if not cols), None)


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of a column, in sorted order of its values (first appearance if unsortable)."""
    try:
        return np.unique(values, return_inverse=True)[1].ravel()
    except TypeError:  # mixed types (1 and "a") do not sort
        index: dict = {}
        return np.array([index.setdefault(v, len(index)) for v in values.tolist()], dtype=np.int64)


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _check_levels(levels: Sequence[Sequence[str]], bottom: tuple[str, ...], columns: list[str]) -> list[tuple[str, ...]]:
    checked: list[tuple[str, ...]] = []
    seen: dict[frozenset, int] = {}
    for k, level in enumerate([*levels, bottom]):
        name = "bottom" if k == len(levels) else f"level {k}"
        if isinstance(level, str) or not isinstance(level, Sequence):
            raise ValueError(f"{name} {level!r}: a level is a list of columns ([] for the total)")
        level = tuple(level)
        for column in level:
            if column not in columns:
                raise ValueError(f"{name} {list(level)}: unknown column {column!r}.{did_you_mean(str(column), columns)}"
                                 f" The bottom table has {columns}")
        if len(set(level)) < len(level):
            raise ValueError(f"{name} {list(level)}: a column appears twice")
        if frozenset(level) in seen:
            other = seen[frozenset(level)]
            first = "the bottom" if k == len(levels) else f"level {k}"
            raise ValueError(f"{first} {list(level)} repeats level {other} {list(checked[other])}")
        seen[frozenset(level)] = k
        checked.append(level)
    return checked


def build_hierarchy(table: Mapping, levels: Sequence[Sequence[str]], bottom: Sequence[str] | None = None) -> Hierarchy:
    """The hierarchy of ``table`` (a mapping column -> values, a DataFrame works)
    aggregated by ``levels`` (aggregate levels, each a list of columns, ``[]`` the
    total); ``bottom`` names the columns identifying a bottom series (default: all
    of the table's columns). ValueError, naming the level and column, for an
    unknown column, a level given twice, or a bottom that does not identify the series."""
    columns = [str(c) for c in table.keys()]
    bottom = tuple(columns if bottom is None else bottom)
    all_levels = _check_levels(levels, bottom, columns)
    used = list(dict.fromkeys(c for level in all_levels for c in level))
    values = {c: np.asarray(table[c]) for c in used}
    lengths = {len(v) for v in values.values()}
    if len(lengths) > 1:
        raise ValueError(f"the bottom table's columns differ in length: {sorted(lengths)}")
    n_bottom = lengths.pop() if lengths else 0
    if n_bottom == 0:
        raise ValueError("the bottom table has no rows")
    for c, v in values.items():
        missing = [i for i, x in enumerate(v.tolist()) if x is None or x != x]  # x != x: NaN
        if missing:
            raise ValueError(f"column {c!r} has no value in bottom rows {missing[:5]}: every series needs one at every level")
    codes = {c: _codes(v) for c, v in values.items()}

    rows, node_level, node_key, level_nodes, members = [], [], [], [], []
    offset = 0
    for k, level in enumerate(all_levels):
        if k == len(all_levels) - 1:  # the bottom: table order, one node per row
            stacked = np.stack([codes[c] for c in level]) if level else np.zeros((1, n_bottom), np.int64)
            unique, first, counts = np.unique(stacked, axis=1, return_index=True, return_counts=True)
            if len(first) < n_bottom:
                dup = int(np.flatnonzero(counts > 1)[0])
                rows_of = np.flatnonzero((stacked == unique[:, [dup]]).all(axis=0))[:2].tolist()
                key = tuple(_scalar(values[c][rows_of[0]]) for c in level)
                raise ValueError(f"the bottom {list(level)} does not identify the series: rows {rows_of} "
                                 f"both have {key}; add the column that tells them apart")
            local = np.arange(n_bottom)
            first = local
        elif level:
            _, first, local = np.unique(np.stack([codes[c] for c in level]), axis=1, return_index=True, return_inverse=True)
            local = local.ravel()
        else:
            first, local = np.zeros(1, np.int64), np.zeros(n_bottom, np.int64)
        n = len(first)
        node_level.append(np.full(n, k))
        node_key.extend(tuple(_scalar(values[c][i]) for c in level) for i in first)
        level_nodes.append(np.arange(offset, offset + n))
        members.append(offset + local)
        rows.append(offset + local)
        offset += n
    row = np.concatenate(rows)
    col = np.tile(np.arange(n_bottom), len(all_levels))
    S = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(offset, n_bottom))
    return Hierarchy(S, tuple(all_levels), np.concatenate(node_level), tuple(node_key), tuple(level_nodes), tuple(members))


def _summing(structure: Hierarchy | sp.spmatrix) -> sp.csr_matrix:
    S = structure.S if isinstance(structure, Hierarchy) else sp.csr_matrix(structure)
    n_nodes, n_bottom = S.shape
    if n_nodes < n_bottom or (S[n_nodes - n_bottom:] != sp.identity(n_bottom, format="csr")).nnz:
        raise ValueError("a summing matrix has the bottom series as its last rows (an identity block)")
    return S


def _base(S: sp.csr_matrix, base: np.ndarray) -> np.ndarray:
    base = np.asarray(base, dtype=np.float64)
    if base.ndim == 1:
        base = base[:, None]
    if base.shape[0] != S.shape[0]:
        raise ValueError(f"base forecasts have {base.shape[0]} rows for {S.shape[0]} nodes")
    return base


def _finish(S: sp.csr_matrix, bottom: np.ndarray, nonnegative: bool) -> np.ndarray:
    """Reconciled bottom values -> every node, by summation (so exactly coherent)."""
    if nonnegative:
        bottom = np.maximum(bottom, 0.0)
    return np.asarray(S @ bottom)


def coherence_gap(structure: Hierarchy | sp.spmatrix, y: np.ndarray) -> float:
    """Largest |aggregate - sum of its bottom series| over every node and step."""
    S = _summing(structure)
    y = _base(S, y)
    n_agg = S.shape[0] - S.shape[1]
    return float(np.max(np.abs(S[:n_agg] @ y[n_agg:] - y[:n_agg]), initial=0.0))


# ------------------------------------------------------- bottom-up, top-down, middle-out


def bottom_up(structure: Hierarchy | sp.spmatrix, base: np.ndarray, *, nonnegative: bool = False) -> np.ndarray:
    """Every aggregate is the sum of its bottom series' base forecasts."""
    S = _summing(structure)
    base = _base(S, base)
    return _finish(S, base[S.shape[0] - S.shape[1]:], nonnegative)


def historical_proportions(history: np.ndarray, rule: str) -> np.ndarray:
    """Each bottom series' share of the total from ``history`` (``n_bottom x T`` actuals,
    NaN = missing, which is left out, not counted as 0). ``average_proportions``: the
    mean over periods of the series' share of that period's total (the sum of the
    series observed then; periods with a zero total are skipped); the means are
    rescaled to sum to 1, since missing values leave them short of it.
    ``proportion_averages``: each series' mean over its observed periods, divided by
    the sum of those means. A series never observed gets 0."""
    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 2:
        raise ValueError(f"history is n_bottom x T actuals, not shape {history.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "average_proportions":
            totals = np.nansum(history, axis=0)
            shares = np.where(totals != 0, history / np.where(totals != 0, totals, 1.0), np.nan)
            observed = ~np.isnan(shares)
            p = np.where(observed.any(axis=1), np.nansum(shares, axis=1) / np.maximum(observed.sum(axis=1), 1), 0.0)
        elif rule == "proportion_averages":
            seen = ~np.isnan(history).all(axis=1)
            p = np.where(seen, np.nanmean(np.where(seen[:, None], history, 0.0), axis=1), 0.0)
        else:
            raise ValueError(f"unknown proportions rule {rule!r}: one of average_proportions, proportion_averages")
    total = p.sum()
    if not np.isfinite(total) or total == 0:
        raise ValueError("the history gives no proportions: every total is 0 or missing")
    return p / total


def _nests(h: Hierarchy, finer: int, coarser: int) -> bool:
    """Every node of level ``finer`` lies inside one node of level ``coarser``."""
    pairs = np.unique(np.stack([h.members[finer], h.members[coarser]]), axis=1)
    return pairs.shape[1] == len(h.level_nodes[finer])


def nested_path(h: Hierarchy, start: int) -> list[int]:
    """The levels top-down and middle-out split through, from ``start`` to the bottom:
    the given levels in order, keeping each that nests in the last kept one. For a
    grouped structure (total, state, purpose, state x purpose) this skips the levels
    that cross the path (purpose); their forecasts are sums of the bottom like every node."""
    path = [start]
    for k in range(len(h.levels)):
        if k != start and k not in path and _nests(h, k, path[-1]) and len(h.level_nodes[k]) > len(h.level_nodes[path[-1]]):
            path.append(k)
    if path[-1] != h.bottom_level:
        path.append(h.bottom_level)
    return path


def _check_path(h: Hierarchy, path: Sequence[int], start: int) -> list[int]:
    path = [int(k) for k in path]
    if not path or path[0] != start or path[-1] != h.bottom_level:
        raise ValueError(f"a path of levels runs from level {start} to the bottom (level {h.bottom_level}), not {path}")
    for upper, lower in zip(path, path[1:], strict=False):
        if not _nests(h, lower, upper):
            raise ValueError(f"path {path}: level {lower} {list(h.levels[lower])} does not nest in level "
                             f"{upper} {list(h.levels[upper])} (a node of it spans several)")
    return path


def _split_down(h: Hierarchy, base: np.ndarray, path: list[int]) -> np.ndarray:
    """Forecast proportions down ``path``: a child gets its parent's value times its
    base forecast's share of its siblings' (equal shares where the siblings sum to 0)."""
    value = base[h.level_nodes[path[0]]]
    for upper, lower in zip(path, path[1:], strict=False):
        nodes = h.level_nodes[lower]
        first = np.unique(h.members[lower], return_index=True)[1]  # a bottom series of each node
        parent = h.members[upper][first] - h.level_nodes[upper][0]
        child = base[nodes]
        siblings = np.zeros_like(value)
        np.add.at(siblings, parent, child)
        count = np.bincount(parent, minlength=len(value))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(siblings[parent] != 0, child / siblings[parent], 1.0 / count[parent])
        value = value[parent] * share
    return value


def top_down(h: Hierarchy, base: np.ndarray, *, rule: str = "forecast_proportions", history: np.ndarray | None = None,
             path: Sequence[int] | None = None, nonnegative: bool = False) -> np.ndarray:
    """Split the total's base forecast down to the bottom.

    ``average_proportions`` / ``proportion_averages``: by each bottom series' historical
    share (``historical_proportions`` of ``history``, ``n_bottom x T``). ``forecast_proportions``
    (Hyndman's): level by level down a nested path (``nested_path`` from the total unless
    ``path`` is given), each node splitting by its children's base forecasts. Needs a total level."""
    S = _summing(h)
    base = _base(S, base)
    total = h.total_level()
    if total is None:
        raise ValueError("top_down splits the total: the hierarchy needs a total level ([])")
    if rule == "forecast_proportions":
        bottom = _split_down(h, base, _check_path(h, nested_path(h, total) if path is None else path, total))
    elif rule in TOP_DOWN_RULES:
        if history is None:
            raise ValueError(f"top_down with {rule} needs the bottom series' history (n_bottom x T)")
        if np.shape(history)[0] != h.n_bottom:
            raise ValueError(f"history has {np.shape(history)[0]} rows for {h.n_bottom} bottom series")
        bottom = historical_proportions(history, rule)[:, None] * base[h.level_nodes[total]]
    else:
        raise ValueError(f"unknown top_down rule {rule!r}: one of {', '.join(TOP_DOWN_RULES)}")
    return _finish(S, bottom, nonnegative)


def middle_out(h: Hierarchy, base: np.ndarray, level: int, *, path: Sequence[int] | None = None,
               nonnegative: bool = False) -> np.ndarray:
    """Keep ``level``'s base forecasts, split them down by forecast proportions (down
    ``nested_path(h, level)`` unless ``path`` is given), and sum every other node
    (levels above, and levels crossing the path) from the bottom."""
    S = _summing(h)
    base = _base(S, base)
    if not 0 <= level < h.bottom_level:
        raise ValueError(f"middle_out starts at an aggregate level, 0..{h.bottom_level - 1}, not {level}")
    bottom = _split_down(h, base, _check_path(h, nested_path(h, level) if path is None else path, level))
    return _finish(S, bottom, nonnegative)


def level_shares(h: Hierarchy, level: int, history: np.ndarray, rule: str) -> np.ndarray:
    """Each bottom series' share of its node of ``level``, from ``history`` (``n_bottom x T``,
    NaN = missing, left out). ``average_proportions``: the mean over periods of the series'
    share of its node's sum then (periods where that sum is 0 skipped); ``proportion_averages``:
    the series' mean over its observed periods over the sum of its node's series' means. The
    shares of a node's series sum to 1 (equal shares when its history gives none); at the
    bottom level every share is 1."""
    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 2 or history.shape[0] != h.n_bottom:
        raise ValueError(f"history is n_bottom x T ({h.n_bottom} rows), not shape {history.shape}")
    if level == h.bottom_level:
        return np.ones(h.n_bottom)
    n = len(h.level_nodes[level])
    parent = h.members[level] - h.level_nodes[level][0]
    observed = ~np.isnan(history)
    x = np.where(observed, history, 0.0)
    if rule == "proportion_averages":
        count = observed.sum(axis=1)
        value = np.where(count > 0, x.sum(axis=1) / np.maximum(count, 1), 0.0)
    elif rule == "average_proportions":
        totals = np.zeros((n, history.shape[1]))
        np.add.at(totals, parent, x)
        denominator = totals[parent]
        ok = observed & (denominator != 0)
        share = np.where(ok, x / np.where(ok, denominator, 1.0), 0.0)
        count = ok.sum(axis=1)
        value = np.where(count > 0, share.sum(axis=1) / np.maximum(count, 1), 0.0)
    else:
        raise ValueError(f"unknown proportions rule {rule!r}: one of average_proportions, proportion_averages")
    sums = np.bincount(parent, weights=value, minlength=n)[parent]
    sizes = np.bincount(parent, minlength=n)[parent]
    return np.where(sums > 0, value / np.where(sums > 0, sums, 1.0), 1.0 / sizes)


def from_level(h: Hierarchy, base: np.ndarray, level: int, history: np.ndarray, rule: str, *,
               nonnegative: bool = False) -> np.ndarray:
    """Forecasts of every node from ``level``'s alone (Azure's train-at-one-level mode):
    each bottom series gets its node's forecast times its ``level_shares``, and every node
    is the sum of its bottom series, so levels above are sums of ``level``'s forecasts and
    crossed levels sums of the split bottom. Rows of ``base`` outside ``level`` are not read."""
    S = _summing(h)
    base = _base(S, base)
    bottom = level_shares(h, level, history, rule)[:, None] * base[h.members[level]]
    return _finish(S, bottom, nonnegative)


# ------------------------------------------------------------------- projections


class _Projection:
    """``y~ = y^ - W A' (A W A')^-1 A y^``: the W-projection onto the forecasts with
    ``A y = 0``. A is U' (coherence: aggregates minus the sums of their bottom series)
    and, for nonnegative, rows holding some bottom series at 0. W is a vector (a
    diagonal: everything stays sparse) or a dense matrix (mint_shrink). With no series
    held, A W A' = U' W U is n_aggregate x n_aggregate; each held series adds one row."""

    def __init__(self, S: sp.csr_matrix, W: np.ndarray, keep_w: bool):
        self.n_agg = n_agg = S.shape[0] - S.shape[1]
        self.C = C = S[:n_agg]
        self.diagonal = W.ndim == 1
        if self.diagonal:
            self.w = W
            # W U with U = [I; -C']: diag(w_agg) on top, -w_bottom * C' below
            self.WU = sp.vstack([sp.diags(W[:n_agg]), -(C.T.multiply(W[n_agg:, None]))]).tocsr()
            self.M = (self.WU[:n_agg] - C @ self.WU[n_agg:]).tocsc()
        else:
            self.w = W if keep_w else None  # dense W is kept only when rows will be added
            self.WU = W[:, :n_agg] - np.asarray(C @ W[n_agg:]).T
            self.M = self.WU[:n_agg] - np.asarray(C @ self.WU[n_agg:])

    def _solve_m(self, rhs: np.ndarray) -> np.ndarray:
        """M^-1 rhs, M factored once (every forecast step and, for a dense W, every round reuses it)."""
        if not hasattr(self, "_factor"):
            self._factor = spla.splu(self.M) if self.diagonal else scipy.linalg.lu_factor(self.M)
        return self._factor.solve(rhs) if self.diagonal else scipy.linalg.lu_solve(self._factor, rhs)

    def bottom(self, base: np.ndarray, held: np.ndarray | None = None) -> np.ndarray:
        """Reconciled bottom values, with bottom series ``held`` (indices) at 0."""
        n_agg, C, WU = self.n_agg, self.C, self.WU
        gap = base[:n_agg] - C @ base[n_agg:]  # U' y^: zero when coherent
        if held is None or len(held) == 0:
            return base[n_agg:] - np.asarray(WU[n_agg:] @ self._solve_m(gap))
        if self.diagonal:
            # held at 0 = left out: the same projection on the other bottom series'
            # columns (their aggregates' system, n_aggregate x n_aggregate, factored afresh)
            free = np.ones(self.C.shape[1], dtype=bool)
            free[held] = False
            C_free, w_free = C[:, free], self.w[n_agg:][free]
            M = (C_free.multiply(w_free[None, :]) @ C_free.T + sp.diags(self.w[:n_agg])).tocsc()
            lam = spla.splu(M).solve(base[:n_agg] - C_free @ base[n_agg:][free])
            bottom = np.zeros_like(base[n_agg:])
            bottom[free] = base[n_agg:][free] + w_free[:, None] * np.asarray(C_free.T @ lam)
            return bottom
        # dense W: one more constraint row per held series, A W A' = [[M, B'], [B, D]] with
        # B = (W U)[held rows] and D = W[held, held], solved through M's factor and the
        # Schur complement D - B M^-1 B' (held x held)
        rows = n_agg + held
        B = WU[rows]
        X = self._solve_m(B.T)
        schur = self.w[np.ix_(rows, rows)] - B @ X
        first = self._solve_m(gap)
        lam_held = scipy.linalg.solve(schur, base[rows] - B @ first, assume_a="sym")
        bottom = base[n_agg:] - WU[n_agg:] @ (first - X @ lam_held)
        bottom -= self.w[rows, n_agg:].T @ lam_held  # W[bottom, held] = W[held, bottom]': rows gather faster
        bottom[held] = 0.0  # it is, up to rounding
        return bottom


def _hold_negatives_at_zero(projection: _Projection, base: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Set-negative-to-zero, per forecast step: hold the negative reconciled bottom series
    at 0 and project again, until none is negative. The held set only grows, so it ends
    (in a few rounds in practice). The result is the W-projection onto the coherent
    forecasts with those series at 0; a series is never released again, so it is a
    heuristic, not a full non-negative least squares (which may release some)."""
    tolerance = 1e-10 * max(1.0, float(np.abs(bottom).max(initial=0.0)))
    for step in np.flatnonzero((bottom < -tolerance).any(axis=0)):
        held = np.zeros(len(bottom), dtype=bool)
        column = bottom[:, step]
        while (column < -tolerance).any():
            held |= column < -tolerance
            column = projection.bottom(base[:, [step]], np.flatnonzero(held))[:, 0]
        bottom[:, step] = column
    return bottom


def _projected(S: sp.csr_matrix, base: np.ndarray, W: np.ndarray, nonnegative: bool) -> np.ndarray:
    if S.shape[0] == S.shape[1]:  # no aggregates: nothing to reconcile
        return _finish(S, base, nonnegative)
    projection = _Projection(S, W, keep_w=nonnegative)
    bottom = projection.bottom(base)
    if nonnegative:
        bottom = _hold_negatives_at_zero(projection, base, bottom)
    return _finish(S, bottom, nonnegative)


def ols(structure: Hierarchy | sp.spmatrix, base: np.ndarray, *, nonnegative: bool = False) -> np.ndarray:
    """Orthogonal projection onto the coherent forecasts (W = I)."""
    S = _summing(structure)
    base = _base(S, base)
    return _projected(S, base, np.ones(S.shape[0]), nonnegative)


def wls_struct(structure: Hierarchy | sp.spmatrix, base: np.ndarray, *, nonnegative: bool = False) -> np.ndarray:
    """Projection with W = diag(number of bottom series under each node)."""
    S = _summing(structure)
    base = _base(S, base)
    return _projected(S, base, np.diff(S.indptr).astype(np.float64), nonnegative)


def _residuals(S: sp.csr_matrix, residuals: np.ndarray) -> np.ndarray:
    r = np.asarray(residuals, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != S.shape[0]:
        raise ValueError(f"residuals are n_nodes x T ({S.shape[0]} rows), not shape {r.shape}")
    none = np.flatnonzero(np.isnan(r).all(axis=1))
    if len(none):
        raise ValueError(f"{len(none)} nodes have no residuals (first: {none[:5].tolist()}): every node needs some")
    return r


def wls_var(structure: Hierarchy | sp.spmatrix, base: np.ndarray, residuals: np.ndarray, *,
            nonnegative: bool = False) -> np.ndarray:
    """Projection with W = diag(each node's mean squared residual), from ``residuals``
    (``n_nodes x T`` in-sample or backtest errors, NaN = missing). Variances are floored
    at 1e-9 of the largest, so a perfectly forecast node does not make the system singular."""
    S = _summing(structure)
    base = _base(S, base)
    w = np.nanmean(_residuals(S, residuals) ** 2, axis=1)
    return _projected(S, base, np.maximum(w, 1e-9 * max(w.max(), 1e-300)), nonnegative)


def shrunk_covariance(residuals: np.ndarray) -> tuple[np.ndarray, float]:
    """Schaefer-Strimmer shrinkage of the residuals' covariance towards its diagonal:
    ``(1 - lambda) * Sigma + lambda * diag(Sigma)``, with lambda estimated from the data
    (the summed variance of the off-diagonal correlations over their summed squares,
    clipped to [0, 1]). Second moments are about zero, not the mean: these are forecast
    errors, whose bias is error too. NaN residuals are left out pairwise (each entry
    from the periods where both nodes have one). Returns (W, lambda); dense n x n."""
    r = np.asarray(residuals, dtype=np.float64)
    n = len(r)
    observed = ~np.isnan(r)
    x = np.where(observed, r, 0.0)
    cov = x @ x.T
    if observed.all():
        count = float(r.shape[1])  # a scalar: saves an n x n matrix of pair counts
    else:
        count = observed.astype(np.float64) @ observed.T.astype(np.float64)
        np.maximum(count, 1.0, out=count)
    cov /= count
    sd = np.sqrt(np.diag(cov).copy())
    inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)
    z2 = np.square(x * inv[:, None])
    # lambda's sums over i != j, a block of rows at a time: the correlations and their
    # variances are never whole n x n matrices (the covariance and the counts are)
    numerator = denominator = 0.0
    block = max(1, 4_000_000 // n)
    for first in range(0, n, block):
        rows = slice(first, min(first + block, n))
        c = count if np.isscalar(count) else count[rows]
        corr = cov[rows] * inv[rows, None] * inv[None, :]
        square = np.square(corr)
        var = z2[rows] @ z2.T  # sum over periods of (z_i z_j)^2 ...
        var -= c * square  # ... minus the mean's share: the spread of z_i z_j around corr_ij
        var *= c / np.maximum(c - 1.0, 1.0) ** 3
        diagonal = (np.arange(rows.stop - first), np.arange(first, rows.stop))
        square[diagonal] = 0.0
        var[diagonal] = 0.0
        numerator += float(var.sum())
        denominator += float(square.sum())
    lam = 1.0 if denominator <= 0 else float(np.clip(numerator / denominator, 0.0, 1.0))
    del count
    cov *= 1.0 - lam
    cov[np.diag_indices_from(cov)] = sd * sd
    return cov, lam


def mint_shrink(structure: Hierarchy | sp.spmatrix, base: np.ndarray, residuals: np.ndarray, *,
                nonnegative: bool = False, max_nodes: int = MINT_MAX_NODES) -> np.ndarray:
    """MinT: the projection with W the shrunk covariance of ``residuals`` (``n_nodes x T``,
    NaN allowed; ``shrunk_covariance``). W is dense, but never inverted: the solve is on
    U' W U (n_aggregate x n_aggregate). Above ``max_nodes`` nodes this raises
    CovarianceTooLarge before allocating anything (callers fall back to wls_var)."""
    S = _summing(structure)
    base = _base(S, base)
    if S.shape[0] > max_nodes:
        raise CovarianceTooLarge(S.shape[0], max_nodes)
    W, _ = shrunk_covariance(_residuals(S, residuals))
    return _projected(S, base, W, nonnegative)


# ------------------------------------------------------- one entry point, failed nodes


def reconcile(h: Hierarchy, base: np.ndarray, method: str, *, nonnegative: bool = False,
              history: np.ndarray | None = None, residuals: np.ndarray | None = None,
              rule: str = "forecast_proportions", level: int | None = None,
              path: Sequence[int] | None = None, max_nodes: int = MINT_MAX_NODES) -> np.ndarray:
    """``method`` (one of METHODS) with the options it uses: ``rule``, ``history`` and
    ``path`` for top_down, ``level`` and ``path`` for middle_out, ``residuals`` for
    wls_var and mint_shrink (and ``max_nodes``, which raises CovarianceTooLarge)."""
    if method == "bottom_up":
        return bottom_up(h, base, nonnegative=nonnegative)
    if method == "top_down":
        return top_down(h, base, rule=rule, history=history, path=path, nonnegative=nonnegative)
    if method == "middle_out":
        if level is None:
            raise ValueError("middle_out needs the level it starts from")
        return middle_out(h, base, level, path=path, nonnegative=nonnegative)
    if method in ("ols", "wls_struct"):
        return (ols if method == "ols" else wls_struct)(h, base, nonnegative=nonnegative)
    if method in ("wls_var", "mint_shrink"):
        if residuals is None:
            raise ValueError(f"{method} needs the nodes' residuals (n_nodes x T)")
        if method == "wls_var":
            return wls_var(h, base, residuals, nonnegative=nonnegative)
        return mint_shrink(h, base, residuals, nonnegative=nonnegative, max_nodes=max_nodes)
    raise ValueError(f"unknown reconciliation method {method!r}: one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Reconciled:
    """What ``reconcile_failed`` did. Node indices are sorted arrays.

    ``failed``: nodes whose base forecast was missing (a NaN anywhere in its row).
    ``fallback``: nodes whose reconciled forecast is bottom-up: every node all of whose
    bottom series lie in a failed node's branch (the failed nodes, their descendants,
    and crossed nodes inside such branches).
    ``filled``: failed bottom series given a base forecast from an ancestor.
    ``unfilled``: failed bottom series with no forecasted ancestor: NaN, like every node above them.
    """

    forecasts: np.ndarray
    failed: np.ndarray
    fallback: np.ndarray
    filled: np.ndarray
    unfilled: np.ndarray


def _restrict(h: Hierarchy, keep: np.ndarray) -> tuple[Hierarchy, np.ndarray]:
    """The hierarchy of the bottom series ``keep`` (sorted indices), and the old index of
    each of its nodes: every node holding at least one of them, with the same levels."""
    rows, node_level, node_key, level_nodes, members, old = [], [], [], [], [], []
    offset = 0
    for k in range(len(h.levels)):
        nodes, local = np.unique(h.members[k][keep], return_inverse=True)
        old.append(nodes)
        node_level.append(np.full(len(nodes), k))
        node_key.extend(h.node_key[n] for n in nodes)
        level_nodes.append(np.arange(offset, offset + len(nodes)))
        members.append(offset + local.ravel())
        rows.append(offset + local.ravel())
        offset += len(nodes)
    row = np.concatenate(rows)
    col = np.tile(np.arange(len(keep)), len(h.levels))
    S = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(offset, len(keep)))
    sub = Hierarchy(S, h.levels, np.concatenate(node_level), tuple(node_key), tuple(level_nodes), tuple(members))
    return sub, np.concatenate(old)


def _fill_bottom(h: Hierarchy, base: np.ndarray, failed: np.ndarray, history: np.ndarray | None) -> np.ndarray:
    """Base forecasts for failed bottom series (NaN rows of ``base``, changed in place):
    their nearest forecasted ancestor's (the one with the fewest bottom series; the
    later level on a tie) times their share of it: the proportion of historical averages
    among its bottom series with ``history``, an equal share without (or when the history
    gives none). Returns the filled bottom series' node indices."""
    n_agg = h.n_aggregate
    lost = np.flatnonzero(failed[n_agg:])
    if len(lost) == 0:
        return lost
    sizes = h.sizes
    best = np.full(len(lost), -1)
    for k in range(h.bottom_level):  # later levels win ties: <=
        ancestor = h.members[k][lost]
        better = ~failed[ancestor] & ((best < 0) | (sizes[ancestor] <= sizes[np.maximum(best, 0)]))
        best = np.where(better, ancestor, best)
    found = best >= 0
    lost, best = lost[found], best[found]
    share = 1.0 / sizes[best]
    if history is not None:
        history = np.asarray(history, dtype=np.float64)
        seen = np.maximum((~np.isnan(history)).sum(axis=1), 1)
        means = np.nansum(history, axis=1) / seen  # a series never observed: 0
        of_ancestor = np.asarray(h.S @ means)[best]
        usable = np.isfinite(of_ancestor) & (of_ancestor != 0)
        share = np.where(usable, means[lost] / np.where(usable, of_ancestor, 1.0), share)
    base[n_agg + lost] = share[:, None] * base[best]
    return n_agg + lost


def reconcile_failed(h: Hierarchy, base: np.ndarray, method: str, *, nonnegative: bool = False,
                     history: np.ndarray | None = None, residuals: np.ndarray | None = None,
                     **options) -> Reconciled:
    """``reconcile`` when some base forecasts are missing (NaN rows of ``base``).

    The rule: a failed node's branch falls back to bottom-up. Every bottom series under a
    failed node keeps its own base forecast, and every node made only of such series is
    their sum (``fallback``); the method reconciles the rest of the hierarchy, with those
    branches' sums taken off the aggregates above them. A failed total makes the whole
    hierarchy bottom-up. A failed bottom series first gets a base forecast from its
    nearest forecasted ancestor by proportions (``_fill_bottom``: historical with
    ``history``, else equal shares; reported as ``filled``); with no forecasted ancestor
    it stays NaN, and so does every node above it (``unfilled``): never a silent 0."""
    S = _summing(h)
    base = _base(S, base).copy()
    failed = np.isnan(base).any(axis=1)
    none = np.array([], dtype=np.int64)
    if not failed.any():
        forecasts = reconcile(h, base, method, nonnegative=nonnegative, history=history, residuals=residuals, **options)
        return Reconciled(forecasts, none, none, none, none)
    n_agg = h.n_aggregate
    base[failed] = np.nan  # a partly missing row is a failed one
    filled = _fill_bottom(h, base, failed, history)
    # the bottom series of every failed node's branch: held at their base forecasts
    held = np.asarray(S[failed].sum(axis=0)).ravel() > 0
    bottom = base[n_agg:].copy()
    free = np.flatnonzero(~held)
    if len(free):
        sub, old = _restrict(h, free)
        sub_base = base[old] - S[old][:, held] @ np.nan_to_num(bottom[held])
        sub_history = None if history is None else np.asarray(history)[free]
        sub_residuals = None if residuals is None else np.asarray(residuals)[old]
        result = reconcile(sub, sub_base, method, nonnegative=nonnegative, history=sub_history,
                           residuals=sub_residuals, **options)
        bottom[free] = result[sub.n_aggregate:]
    forecasts = _finish(S, bottom, nonnegative)  # NaN where an unfilled series sits
    in_branch = np.asarray(S @ held.astype(np.float64)).ravel()
    fallback = np.flatnonzero(in_branch == h.sizes)
    unfilled = np.setdiff1d(np.flatnonzero(failed[n_agg:]) + n_agg, filled)
    return Reconciled(forecasts, np.flatnonzero(failed), fallback, filled, unfilled)


# ------------------------------------------------------------------------ quantiles


def shift_quantiles(base: np.ndarray, reconciled: np.ndarray, quantiles: np.ndarray, *,
                    nonnegative: bool = False) -> np.ndarray:
    """Each node's base quantiles (``n_nodes x h x q``) moved by (reconciled - base)
    point forecast. An approximation, and stated as one: it keeps each node's base
    spread, and quantiles of a sum are not sums of quantiles, so the shifted quantiles
    are not coherent across levels (only the point forecasts are); proper probabilistic
    reconciliation (sampling from a reconciled distribution) is not done. With
    ``nonnegative`` they are clipped at 0 (their order is kept)."""
    base = np.asarray(base, dtype=np.float64)
    reconciled = np.asarray(reconciled, dtype=np.float64)
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape[:2] != reconciled.shape or base.shape != reconciled.shape:
        raise ValueError(f"quantiles {quantiles.shape} do not match the forecasts {reconciled.shape} (n_nodes x h x q)")
    shifted = quantiles + (reconciled - base)[:, :, None]
    return np.maximum(shifted, 0.0) if nonnegative else shifted
