"""The model registry: which model version each group has, run by run.

Models are files in the datastore (``models/<k2>/<key>/v<N>.json`` plus the
LightGBM text); a train run's ``groups`` table maps every group to the version
it ended with, whether trained in that run or reused. That table is what
``mm forecast`` reads, so a forecast always uses one train run's models and
says which version each group used. Runs that were interrupted leave a journal
of the groups they finished; the next run picks those up instead of refitting.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .datastore import Datastore
from .runs import effective_status, latest_run


def train_state(store: Datastore) -> tuple[dict | None, dict[str, dict]]:
    """The latest usable train run and, per group, what the newest runs know of it.

    Groups finished by a later interrupted run (its journal) override the
    completed run's entries, so a crashed run's work is not redone.
    """
    latest = latest_run(store, "train")
    state: dict[str, dict] = {}
    if latest is not None:
        table = store.read_run_groups(latest["id"])
        for row in table.to_dict("records"):
            state[row["key"]] = decode_row(row)
    for record in store.list_runs():
        if record.get("step") != "train" or (latest and record["started"] <= latest["started"]):
            continue
        if effective_status(record) != "interrupted" and record.get("status") != "failed":
            continue
        for entry in store.read_journal(record["id"]):
            if entry.get("status") == "trained":
                state[entry["key"]] = entry
    return latest, state


def run_models(store: Datastore, run_id: str | None) -> tuple[dict, pd.DataFrame]:
    """The train run to forecast with (``run_id`` or the latest usable) and its groups."""
    from .errors import UpstreamMissing

    if run_id:
        record = store.read_run(run_id)
        if record.get("step") != "train":
            raise UpstreamMissing(f"run {run_id} is a {record.get('step')} run, not a train run", "pass the id of a train run (see 'mm runs')")
        if record.get("status") not in ("completed", "partial"):
            raise UpstreamMissing(f"train run {run_id} did not finish (status {effective_status(record)})", "pick a finished train run from 'mm runs'")
    else:
        record = latest_run(store, "train")
        if record is None:
            raise UpstreamMissing(f"no finished train run in datastore {store.root}", "run 'mm train -c CONFIG' first")
    return record, store.read_run_groups(record["id"])


JSON_COLUMNS = frozenset({"values", "parts", "scores", "metrics", "below_quantile"})


def decode_row(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k in JSON_COLUMNS and isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[k] = v
    return out


def list_models(store: Datastore, group_filter=None) -> list[dict[str, Any]]:
    """Every stored model version (newest first per group), with its tags."""
    root = store.root / "models"
    out = []
    if not root.is_dir():
        return out
    for prefix in sorted(p for p in root.iterdir() if p.is_dir()):
        for group_dir in sorted(p for p in prefix.iterdir() if p.is_dir()):
            key = group_dir.name
            for version in reversed(store.model_versions(key)):
                try:
                    meta = store.read_model_meta(key, version)
                except (OSError, ValueError):
                    continue
                if group_filter and not group_filter(meta.get("group", {})):
                    continue
                out.append(
                    {
                        "group": meta.get("group", {}),
                        "key": key,
                        "version": version,
                        "model": meta.get("kind"),
                        "run_id": meta.get("run_id"),
                        "created": meta.get("created"),
                        "train_end": meta.get("train_end"),
                        **{m: meta.get("metrics", {}).get(m) for m in ("mape", "smape", "wape", "rmse")},
                    }
                )
    return out
