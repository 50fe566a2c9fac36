"""What mm report shows of drivers, feature importance and realised accuracy.

Per group (merged into its chart line, read when the group is selected):
``drv`` the mean effect of each driver over its forecast rows (``forecast.explain``),
``imp`` its model's feature importance (from the model's metadata), ``ra`` its
realised error per forecast run. For the page: feature importance across groups,
and realised accuracy over time, by horizon step and the most degraded groups
(from ``outputs/accuracy_history.parquet``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..core.accuracy import pooled_error
from ..core.results import TrainRow
from ..steps.accuracy import RUN_COLUMN, STEP, group_drift, labels_of, pooled_summary
from ..store.datastore import Datastore

DRIVERS_SHOWN = 8  # per group
FEATURES_SHOWN = 20  # across groups
DEGRADED_SHOWN = 10
DRIVER = re.compile(r"^driver_(\d+)$")


def _round(value) -> float | None:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(f"{value:.4g}")


def group_drivers(store: Datastore, keys: list[str], fingerprints: dict[str, str]) -> dict[str, list]:
    """Per group: [[driver, mean effect over its forecast rows], ...], largest |effect| first."""
    first = next((k for k in keys if k in fingerprints), None)
    schema = store.forecast_schema(first, fingerprints[first]) if first else None
    if schema is None:
        return {}
    names = [c for c in schema.names if DRIVER.match(c)]
    if not names:
        return {}
    table = store.scan_groups("forecast", keys, [*names, *(f"{n}_effect" for n in names)], fingerprints).to_pandas()
    long = pd.concat([pd.DataFrame({"key": table["_mm_key"], "row": np.arange(len(table)), "driver": table[n], "effect": pd.to_numeric(table[f"{n}_effect"], errors="coerce")}) for n in names], ignore_index=True)
    rows_per_key = table.groupby("_mm_key").size()
    long = long[long["driver"].notna()]
    sums = long.groupby(["key", "driver"])["effect"].sum().reset_index()
    out: dict[str, list] = {}
    for key, g in sums.groupby("key"):
        g = g.assign(mean=g["effect"] / rows_per_key[key]).reindex(g["effect"].abs().sort_values(ascending=False).index)
        out[key] = [[d, _round(m)] for d, m in zip(g["driver"].head(DRIVERS_SHOWN), g["mean"].head(DRIVERS_SHOWN))]
    return out


def group_importance(store: Datastore, train: list[TrainRow | None]) -> dict[str, dict[str, float]]:
    """Each group's model's feature importance, read from its metadata (models without features: none)."""
    out = {}
    for r in train:
        if r is None or not r.has_model or r.model not in ("lightgbm", "linear", "ensemble"):
            continue
        try:
            shares = store.read_model_meta(r.key, r.model_version).get("importance") or {}
        except (OSError, ValueError):
            continue
        shares = {k: v for k, v in shares.items() if not k.startswith("_") and isinstance(v, (int, float))}
        if shares:
            out[r.key] = shares
    return out


def importance_across(importance: dict[str, dict[str, float]]) -> list[dict]:
    """Per feature: the groups whose model ranks it first, the groups using it, its mean share."""
    top: dict[str, int] = {}
    used: dict[str, int] = {}
    total: dict[str, float] = {}
    for shares in importance.values():
        first = max(shares, key=shares.get)
        top[first] = top.get(first, 0) + 1
        for name, share in shares.items():
            used[name] = used.get(name, 0) + 1
            total[name] = total.get(name, 0.0) + share
    n = len(importance)
    ranked = sorted(used, key=lambda f: (-top.get(f, 0), -total[f]))
    return [{"feature": f, "top_groups": top.get(f, 0), "groups": used[f], "mean_share": _round(total[f] / n)} for f in ranked[:FEATURES_SHOWN]]


def realised(store: Datastore, config: Config) -> tuple[dict[str, list], dict | None]:
    """Per group: [[first period of the run, realised error], ...] by forecast run; and the page's
    summary: over time, by horizon step, the most degraded groups (None: nothing scored yet)."""
    rows = store.read_accuracy_history()
    if rows is None or not len(rows):
        return {}, None
    metric, time_column = config.train.automl.metric, config.data.time_column
    first = rows.groupby(RUN_COLUMN)[time_column].min()
    label = {run: (t.date().isoformat() if isinstance(t, pd.Timestamp) else str(t)) for run, t in first.items()}
    per_group: dict[str, list] = {}
    for (key, run), g in rows.groupby(["key", RUN_COLUMN], sort=True):
        value = pooled_error(metric, *(g[c].to_numpy(dtype=np.float64) for c in ("actual", "prediction", "mase_scale")))
        per_group.setdefault(key, []).append([label[run], _round(value)])
    flags = group_drift(store, config, rows)
    labels = labels_of(rows, [c for c in config.data.group_columns if c in rows.columns])
    ranked = flags[flags["ratio"].notna()].sort_values("ratio", ascending=False).head(DEGRADED_SHOWN)
    page: dict[str, Any] = {
        "metric": metric,
        "over_time": [{"run": run, "first_period": label[run], **_rounded(pooled_summary(metric, g))} for run, g in rows.groupby(RUN_COLUMN)],
        "by_step": [{"step": int(step), **_rounded(pooled_summary(metric, g))} for step, g in rows.groupby(STEP)],
        "degraded": [{"group": labels[k], "realised": _round(r.realised), "backtest": _round(r.backtest), "ratio": _round(r.ratio), "drift": bool(r.drift)} for k, r in ranked.iterrows()],
        "n_drift": int(flags["drift"].astype(bool).sum()),
        "rule": {"window": config.accuracy.drift_window, "factor": config.accuracy.drift_factor},
        "n_rows": int(len(rows)),
    }
    return per_group, page


def _rounded(summary: dict) -> dict:
    return {k: (_round(v) if isinstance(v, float) else v) for k, v in summary.items()}


def insights(store: Datastore, config: Config, keys: list[str], train: list[TrainRow | None], fingerprints: dict[str, str]) -> tuple[dict[str, dict], dict]:
    """(per group key: what its chart line gains, the page's document additions)."""
    drivers = group_drivers(store, keys, fingerprints)
    importance = group_importance(store, train)
    per_run, page = realised(store, config)
    per_key: dict[str, dict] = {}
    for key in keys:
        extra = {}
        if key in drivers:
            extra["drv"] = drivers[key]
        if key in importance:
            extra["imp"] = [[k, _round(v)] for k, v in list(importance[key].items())[:DRIVERS_SHOWN]]
        if key in per_run:
            extra["ra"] = per_run[key]
        if extra:
            per_key[key] = extra
    return per_key, {"importance": importance_across(importance), "realised": page}
