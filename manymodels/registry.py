"""The model registry: which model version each group has, run by run.

Models are files in the datastore (``models/<k2>/<key>/v<N>.json`` plus the
LightGBM text); a train run's ``groups`` table maps every group to the version
it ended with, whether trained in that run or reused. That table is what
``mm forecast`` reads, so a forecast always uses one train run's models and
says which version each group used. A run that was interrupted leaves the model
files it finished, each stamped with the fingerprint of its inputs; the next run
adopts them instead of refitting.

A run's groups table is streamed into a ``Spool`` (keyed by group) rather than
loaded into a dict, so looking groups up costs the same memory for 100 groups
as for 100,000.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, TypeVar

from .datastore import Datastore
from .results import GroupRow
from .runs import effective_status, latest_run
from .spool import Spool

Row = TypeVar("Row", bound=GroupRow)


def load_run_groups(store: Datastore, run_id: str | None, spool: Spool, table: str) -> int:
    """Stream a run's per-group rows into ``spool[table]``, keyed by group; how many."""
    if run_id is None:
        return 0
    n = 0
    for batch in store.iter_run_groups(run_id):
        n += spool.put_many(table, (decode_row(row) for row in batch.to_pylist()))
    return n


def run_rows(store: Datastore, run_id: str, row_type: type[Row]) -> Iterator[Row]:
    """A run's groups table as typed rows (``TrainRow`` or ``ForecastRow``), streamed."""
    for batch in store.iter_run_groups(run_id):
        for doc in batch.to_pylist():
            yield row_type.from_dict(doc)


def train_state(store: Datastore, spool: Spool, table: str = "previous") -> dict | None:
    """The latest usable train run; what it recorded for each group goes to ``spool[table]``.

    Groups finished by a later, interrupted run are not listed here: their model
    files carry the fingerprint they were fitted from, and a worker adopts such
    a file instead of fitting again (see ``tasks.train_one``).
    """
    latest = latest_run(store, "train")
    load_run_groups(store, latest["id"] if latest else None, spool, table)
    return latest


def run_models(store: Datastore, run_id: str | None) -> dict:
    """The train run to forecast with: ``run_id``, or the latest usable one."""
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
    return record


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
    out = []
    for key in store.model_keys():
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
