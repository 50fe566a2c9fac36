"""The model registry: which model version each group has, run by run.

Models are files in the datastore (``models/<k2>/<key>/v<N>.json`` plus the
LightGBM text); a train run's ``groups`` table maps every group to the version
it ended with, whether trained in that run or reused. That table is what
``mm forecast`` reads, so a forecast always uses one train run's models and
says which version each group used. A run that was interrupted leaves the model
files it finished, each stamped with the fingerprint of its inputs; the next run
adopts them instead of refitting.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .datastore import Datastore
from .runs import effective_status, latest_run


def train_state(store: Datastore) -> tuple[dict | None, dict[str, dict]]:
    """The latest usable train run and what it recorded for each group.

    Groups finished by a later, interrupted run are not listed here: their model
    files carry the fingerprint they were fitted from, and a worker adopts such
    a file instead of fitting again (see ``tasks.train_one``).
    """
    latest = latest_run(store, "train")
    state: dict[str, dict] = {}
    if latest is not None:
        for row in store.read_run_groups(latest["id"]).to_dict("records"):
            state[row["key"]] = decode_row(row)
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
