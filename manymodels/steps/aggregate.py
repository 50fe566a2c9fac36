"""mm split with a ``hierarchy``: the series of every aggregate node, as ordinary groups.

A node of level ``[State]`` is a group whose other group columns hold
``config.ALL_NODES`` (``__all__``): its rows are, per period, the sum of its bottom
series' targets and its known-future columns by their ``hierarchy.aggregate`` rule.
The split then handles these rows like any input rows (scan, partitions, keys), so
train and forecast see one more group per node and nothing else changes.

Streamed like the rest of pass 1: each read batch is reduced to partial sums per
(node, period) and those are combined as they accumulate, so memory is bounded by
the node series (nodes x periods), not by the input. Whether a node's period is
complete needs every bottom series' span (first and last period with a target):
one row per series, kept until the input is read.

``missing: missing`` (the default): a node's target is missing in a period where one
of its bottom series has no target although its span covers it (a gap), instead of
a sum that silently drops that series; ``missing: zero`` sums what is there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import ALL_NODES, Config
from ..errors import InputDataError

_COMBINE_ROWS = 200_000  # partial rows held per level before they are combined
_N = "_mm_n"  # rows with a target (per node and period)
_FIRST, _LAST = "_mm_first", "_mm_last"


def known_future_rules(config: Config, text_columns: set[str]) -> dict[str, str]:
    """Each known-future column's rule: the configured one, else mean (first for text columns)."""
    rules = {}
    for column in config.data.known_future_columns:
        rule = config.hierarchy.aggregate.get(column)
        if rule is None:
            rule = "first" if column in text_columns else "mean"
        elif rule in ("sum", "mean") and column in text_columns:
            raise InputDataError(
                f"hierarchy.aggregate.{column}: {rule} needs numbers, but known-future column {column!r} holds text",
                f"use first or max for {column!r} in hierarchy.aggregate, or make the column numeric",
            )
        rules[column] = rule
    return rules


class NodeAggregator:
    """Partial sums of the bottom rows per (node, period), level by level, and the series' spans."""

    def __init__(self, config: Config, source: str):
        d = config.data
        self.config = config
        self.source = source
        self.groups = list(d.group_columns)
        self.time, self.target = d.time_column, d.target_column
        self.levels = config.hierarchy.aggregate_levels(self.groups)
        self.partials: list[list[pd.DataFrame]] = [[] for _ in self.levels]
        self.spans: list[pd.DataFrame] = []
        self.text_columns: set[str] = set()

    # -- reading ------------------------------------------------------------------

    def snapshot(self):
        return [list(p) for p in self.partials], list(self.spans), set(self.text_columns)

    def restore(self, snapshot) -> None:
        partials, spans, text = snapshot
        self.partials, self.spans, self.text_columns = [list(p) for p in partials], list(spans), set(text)

    def add(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Take one checked batch into the partial sums; the batch with its group columns as text
        (a node's ``__all__`` must share the column with the bottom values)."""
        frame = frame.copy()
        for column in self.groups:
            frame[column] = frame[column].astype(str)
            clash = frame[column] == ALL_NODES
            if clash.any():
                raise InputDataError(
                    f"{self.source}: group column {column!r} has the value {ALL_NODES!r} in {int(clash.sum())} row(s), the value mm gives "
                    "the nodes of hierarchy.levels that sum over that column",
                    "rename that value in the input (e.g. to 'all'), or remove hierarchy from the config",
                )
        for column in self.config.data.known_future_columns:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                self.text_columns.add(column)
        has = frame[self.target].notna()
        if has.any():
            span = frame.loc[has].groupby(self.groups, sort=False)[self.time].agg(["min", "max"])
            self.spans.append(span.rename(columns={"min": _FIRST, "max": _LAST}).reset_index())
            if sum(len(s) for s in self.spans) > _COMBINE_ROWS:
                self.spans = [self._combined_spans()]
        for k, level in enumerate(self.levels):
            self.partials[k].append(self._partial(frame, level))
            if sum(len(p) for p in self.partials[k]) > _COMBINE_ROWS:
                self.partials[k] = [self._combine(self.partials[k], level)]
        return frame

    def _keys(self, level: list[str]) -> list[str]:
        return [*level, self.time]

    def _partial(self, frame: pd.DataFrame, level: list[str]) -> pd.DataFrame:
        work = frame[[*self._keys(level), self.target, *self.config.data.known_future_columns]].copy()
        work[_N] = work[self.target].notna().astype(np.int64)
        for column in self.config.data.known_future_columns:
            if column not in self.text_columns:
                work[f"{column}{_N}"] = work[column].notna().astype(np.int64)
        return self._combine([work], level, first_pass=True)

    def _combine(self, parts: list[pd.DataFrame], level: list[str], first_pass: bool = False) -> pd.DataFrame:
        """Partials (or batch rows, ``first_pass``) of one level reduced to one row per (node, period)."""
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        how: dict[str, str] = {self.target: "sum", _N: "sum"}
        for column in self.config.data.known_future_columns:
            rule = self._rule(column)
            how[column] = "sum" if rule in ("sum", "mean") else rule
            if f"{column}{_N}" in frame.columns:
                how[f"{column}{_N}"] = "sum"
        # sum of no targets is 0 here; _N says whether there were any
        return frame.groupby(self._keys(level), sort=False, dropna=False).agg(how).reset_index()

    def _rule(self, column: str) -> str:
        rule = self.config.hierarchy.aggregate.get(column)
        return rule if rule is not None else ("first" if column in self.text_columns else "mean")

    def _combined_spans(self) -> pd.DataFrame:
        frame = pd.concat(self.spans, ignore_index=True)
        return frame.groupby(self.groups, sort=False).agg({_FIRST: "min", _LAST: "max"}).reset_index()

    # -- after the input is read ----------------------------------------------------

    def rows(self) -> pd.DataFrame:
        """Every aggregate node's rows: the level's columns, ``__all__`` in the other group
        columns, the period, the target (NaN where incomplete) and the known-future columns."""
        known_future_rules(self.config, self.text_columns)  # a sum of text fails here, naming the key
        spans = self._combined_spans() if self.spans else pd.DataFrame(columns=[*self.groups, _FIRST, _LAST])
        out = []
        for k, level in enumerate(self.levels):
            if not self.partials[k]:
                continue
            nodes = self._combine(self.partials[k], level)
            out.append(self._finish(nodes, level, spans))
        if not out:
            return pd.DataFrame(columns=[*self.groups, self.time, self.target])
        return pd.concat(out, ignore_index=True)

    def _finish(self, nodes: pd.DataFrame, level: list[str], spans: pd.DataFrame) -> pd.DataFrame:
        n = nodes[_N].to_numpy()
        complete = n > 0
        if self.config.hierarchy.missing == "missing":
            complete &= n >= self._expected(nodes, level, spans)
        nodes[self.target] = np.where(complete, nodes[self.target].to_numpy(dtype=np.float64), np.nan)
        for column in self.config.data.known_future_columns:
            counted = f"{column}{_N}"
            if counted not in nodes.columns:
                continue
            count = nodes[counted].to_numpy()
            values = nodes[column].to_numpy(dtype=np.float64)
            if self._rule(column) == "mean":
                values = np.divide(values, count, out=np.full(len(values), np.nan), where=count > 0)
            elif self._rule(column) == "sum":
                values = np.where(count > 0, values, np.nan)
            nodes[column] = values
        for column in self.groups:
            if column not in level:
                nodes[column] = ALL_NODES
        return nodes[[*self.groups, self.time, self.target, *self.config.data.known_future_columns]]

    def _expected(self, nodes: pd.DataFrame, level: list[str], spans: pd.DataFrame) -> np.ndarray:
        """For each (node, period) row: how many of the node's bottom series span that period."""
        if spans.empty:
            return np.zeros(len(nodes), dtype=np.int64)
        times = pd.concat([nodes[self.time], spans[_FIRST], spans[_LAST]], ignore_index=True)
        ranks = pd.Index(times.drop_duplicates().sort_values())
        width = len(ranks) + 1
        if level:
            codes = pd.concat([nodes[level], spans[level]], ignore_index=True).astype(str).groupby(level, sort=False).ngroup().to_numpy()
        else:
            codes = np.zeros(len(nodes) + len(spans), dtype=np.int64)
        node_code, span_code = codes[: len(nodes)], codes[len(nodes):]
        key = node_code * width + ranks.get_indexer(nodes[self.time])
        first = np.sort(span_code * width + ranks.get_indexer(spans[_FIRST]))
        last = np.sort(span_code * width + ranks.get_indexer(spans[_LAST]))
        node_start = node_code * width  # only series of the same node count: their keys lie in [code*width, key]
        started = np.searchsorted(first, key, side="right") - np.searchsorted(first, node_start, side="left")
        ended = np.searchsorted(last, key, side="left") - np.searchsorted(last, node_start, side="left")
        return started - ended


__all__ = ["NodeAggregator", "known_future_rules"]
