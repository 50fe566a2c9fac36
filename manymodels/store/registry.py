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
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..core.results import ForecastRow, GroupRow, TrainRow, json_fields
from ..errors import DamagedFile, MMError
from .datastore import Datastore
from .runs import effective_status
from .spool import Spool

Row = TypeVar("Row", bound=GroupRow)

# After a damaged record or groups table of a train run, the next train decides
# each group from scratch; this is what makes that cheap.
ADOPTED = "a model that run finished is adopted, not fitted again, when its inputs did not change"


def load_run_groups(store: Datastore, run_id: str | None, spool: Spool, table: str, warn: Callable[[str], None] | None = None) -> int:
    """Stream a run's per-group rows into ``spool[table]``, keyed by group; how many.

    A damaged table raises DamagedFile; with ``warn``, it is a miss instead: the
    rows read before the damage are kept, and ``warn`` is told."""
    if run_id is None:
        return 0
    n = 0
    try:
        for batch in store.iter_run_groups(run_id):
            n += spool.put_many(table, (decode_row(row) for row in batch.to_pylist()))
    except DamagedFile as exc:
        if warn is None:
            raise
        warn(f"{exc.message}: {n:,} group(s) read from it" if n else exc.message)
    return n


def run_rows(store: Datastore, run_id: str, row_type: type[Row]) -> Iterator[Row]:
    """A run's groups table as typed rows (``TrainRow`` or ``ForecastRow``), streamed."""
    for batch in store.iter_run_groups(run_id):
        for doc in batch.to_pylist():
            yield row_type.from_dict(doc)


def latest_train_run(store: Datastore) -> tuple[dict | None, list[dict]]:
    """The latest usable train run (``runs.latest_run``), and the damaged train run
    records newer than it (``Datastore.list_runs``), oldest first."""
    latest, damaged = None, []
    for record in reversed(store.list_runs()):
        if record.get("step") != "train":
            continue
        if record.get("status") == "damaged":
            damaged.insert(0, record)
        elif record.get("status") in ("completed", "partial"):
            latest = record
            break
    return latest, damaged


def train_state(store: Datastore, spool: Spool, warn: Callable[[str], None], table: str = "previous") -> dict | None:
    """The latest usable train run; what it recorded for each group goes to ``spool[table]``.

    Groups finished by a later, interrupted run are not listed here: their model
    files carry the fingerprint they were fitted from, and a worker adopts such
    a file instead of fitting again (see ``tasks.train_one``). The same goes for
    a later run whose record is damaged, and for the groups of the latest run
    when its groups table is: ``warn`` is told, and they are decided afresh.
    """
    latest, damaged = latest_train_run(store)
    for record in damaged:
        warn(f"{record['error']}: that train run is ignored ({ADOPTED})")

    def groups_damaged(message: str) -> None:
        warn(f"{message}; the other groups are decided as if that train run had not happened ({ADOPTED})")

    load_run_groups(store, latest["id"] if latest else None, spool, table, groups_damaged)
    return latest


def run_models(store: Datastore, run_id: str | None) -> dict:
    """The train run to forecast with: ``run_id``, or the latest usable one.

    Not an older one when the latest train run's record is damaged: its models
    may be newer (DamagedFile, with how to go on)."""
    from ..errors import UpstreamMissing

    if run_id:
        record = store.read_run(run_id)
        if record.get("step") != "train":
            raise UpstreamMissing(f"run {run_id} is a {record.get('step')} run, not a train run", "pass the id of a train run (see 'mm runs')")
        if record.get("status") not in ("completed", "partial"):
            raise UpstreamMissing(f"train run {run_id} did not finish (status {effective_status(record)})", "pick a finished train run from 'mm runs'")
    else:
        record, damaged = latest_train_run(store)
        if damaged:
            raise MMError(
                f"{damaged[-1]['error']}: it is the record of the latest train run",
                f"run 'mm train' (or 'mm run') again: {ADOPTED}; or forecast with the models of an earlier train run: --run-id RUN (see 'mm runs')",
            )
        if record is None:
            raise UpstreamMissing(f"no finished train run in datastore {store.root}", "run 'mm train -c CONFIG' first")
    return record


JSON_COLUMNS = json_fields(TrainRow, ForecastRow)  # derived, so a new dict field is decoded too


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
                    **{m: meta.get("metrics", {}).get(m) for m in ("mape", "smape", "wape", "rmse", "mase")},
                }
            )
    return out
