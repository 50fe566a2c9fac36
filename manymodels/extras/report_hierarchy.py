"""The report's hierarchy section: accuracy per level and a node picker (history, base and
reconciled forecast), from the latest forecast run's record and outputs/hierarchy_forecast.csv."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..core.identity import group_label
from ..core.timeindex import TimeAxis, parse_times
from ..errors import MMError
from ..steps.reconcile import BASE_SUFFIX, HIERARCHY_OUTPUT
from ..store.datastore import Datastore

MAX_NODES = 20_000  # nodes the picker lists (every aggregate first); the CSV has them all


def hierarchy_section(store: Datastore, config: Config, manifest: dict | None, forecast_record: dict | None) -> dict | None:
    """The section's data, or None when the latest forecast run reconciled nothing."""
    h = (forecast_record or {}).get("hierarchy") or {}
    if not h or "error" in h or manifest is None:
        return None
    try:
        frame = pd.read_csv(io.BytesIO(store.read_output(HIERARCHY_OUTPUT)), keep_default_na=False, na_values=[""])
    except (FileNotFoundError, MMError, ValueError):
        return None
    time, p = manifest["time_column"], config.forecast.prediction_column
    groups = list(manifest["group_columns"])
    if frame.empty or not {time, p, p + BASE_SUFFIX, *groups} <= set(frame.columns):
        return None
    axis = TimeAxis.from_dict(manifest["axis"])
    frame["_period"] = axis.to_periods(parse_times(frame[time], time, HIERARCHY_OUTPUT, config.data.time_format))
    frame["_bottom"] = frame["level"] == "bottom"
    frame = frame.sort_values(["_bottom", "level", "node", "_period"], kind="stable")
    nodes: list[dict[str, Any]] = []
    target = manifest["target_column"]
    for (level, node), rows in frame.groupby(["level", "node"], sort=False):
        if len(nodes) == MAX_NODES:
            break
        period = rows["_period"].to_numpy(dtype=np.int64)
        first = int(period.min())
        span = int(period.max()) - first + 1
        entry = {"level": level, "node": node, "group": group_label(groups, [str(v) for v in rows[groups].iloc[0]]), "f0": first}
        for name, column in (("r", p), ("b", p + BASE_SUFFIX), ("a", target)):
            if column in rows:
                grid = np.full(span, np.nan)
                grid[period - first] = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64)
                entry[name] = [None if not np.isfinite(v) else float(f"{v:.6g}") for v in grid]
        nodes.append(entry)
    return {
        "method": h.get("method"),
        "nonnegative": h.get("nonnegative"),
        "levels": h.get("levels", {}),
        "level_order": [lvl for lvl in h.get("level_order", sorted(h.get("accuracy", {}))) if lvl in h.get("accuracy", {})],
        "accuracy": h.get("accuracy", {}),
        "failed": h.get("failed_nodes", {}),
        "note": h.get("note", ""),
        "n_nodes": h.get("n_nodes", len(nodes)),
        "nodes": nodes,
    }
