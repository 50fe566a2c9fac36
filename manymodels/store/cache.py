"""Content fingerprints and reuse decisions: the only place that decides reuse.

A step, or one group inside train and forecast, is reused only when everything
it depends on is unchanged: the config keys that affect it, the content of its
inputs, the upstream outputs it reads, and the package version. A fingerprint
is built from named *parts*, so a decision can say which part changed
(``retrained: train partition changed``); every decision carries that reason,
printed by ``--explain`` and kept in the run record, as DVC's run cache does.

Input files are hashed by content, but a file whose (size, mtime, inode) is the
one recorded last time keeps its recorded hash, so unchanged large inputs are
not re-read every night.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..core.automl import SEARCH_SPACE_VERSION
from ..core.identity import digest
from ..errors import input_read_error
from .datastore import Datastore
from .files import file_sha256

if TYPE_CHECKING:
    from ..config import Config

# -- which config keys a fingerprint covers --------------------------------------
#
# By exclusion, as DVC does: a fingerprint covers every key of the config
# sections its artefact is made from, except the keys listed in ``excluded``
# with the reason they change nothing in it. A key added to a covered section
# is covered without anyone having to remember it (forgetting costs a retrain,
# never a stale model); tests/test_fingerprints.py walks every field of the
# config model and fails on a key whose place nobody has decided.


@dataclass(frozen=True)
class Coverage:
    """The config an artefact is made from: whole ``sections`` minus the ``excluded`` keys."""

    sections: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # dotted key -> why it changes nothing


# The partitions and the time axis (and, with a hierarchy, the aggregate nodes' partitions).
_RECONCILED = "applied to the base forecasts by every forecast run (steps/reconcile.py): no partition, model or base forecast changes"
SPLIT = Coverage(
    ("data", "split", "hierarchy"),
    {
        "hierarchy.method": _RECONCILED,
        "hierarchy.top_down_rule": _RECONCILED,
        "hierarchy.middle_level": _RECONCILED,
        "hierarchy.nonnegative": _RECONCILED,
        "hierarchy.errors": _RECONCILED,
        "hierarchy.train_level": "which nodes train and forecast, not what any node's partition, model or forecast is: "
        "switching back to every level reuses the nodes already trained",
    },
)
# A group's model. split.* is not listed: it changes a model only through the rows
# of its train partition, whose content hash is a part of its own.
TRAIN = Coverage(
    ("data", "train", "forecast.quantiles"),
    {
        "data.path": "where the input is read from: the rows it holds enter as the train partition's hash",
        "train.automl.retune": "when to search again, not what is searched: a weekly cron entry with retune=always must not invalidate every model",
        "train.automl.timeout_per_group": "a time budget: giving tuning more time must not invalidate every model",
        "train.automl.timeout_total": "a time budget, as timeout_per_group",
        "train.automl.pooling.timeout": "a time budget for one pool's search, as timeout_per_group",
    },
)
# A group's forecast; the model it is made with is a part of its own.
FORECAST = Coverage(("forecast",))
# The AutoML search: with retune: if_changed, a stored decision (winner, LightGBM
# parameters, calibration) is refit unless this changes (README, 'Tune rarely').
SEARCH = Coverage(
    ("train.automl",),
    {
        "train.automl.enabled": "with AutoML off there is no search (and the model's fingerprint covers the switch)",
        "train.automl.retune": "when to search again, not what is searched",
        "train.automl.timeout_per_group": "a time budget, not a search setting",
        "train.automl.timeout_total": "a time budget, not a search setting",
        "train.automl.pooling.timeout": "a time budget, not a search setting",
    },
)
# Keys in no fingerprint: where and how mm runs, not what it computes.
UNCOVERED = {
    "datastore": "where artefacts are kept",
    "engine": "how groups are scheduled: serial, a process pool and Dask give the same models",
    "registry": "how many old model versions are kept",
    "tracking": "where runs are logged",
    "serve": "how forecasts are served over HTTP: mm serve reads the datastore and writes nothing",
    "allow_reuse": "whether fingerprints are consulted at all",
    "accuracy": "realised accuracy scores stored forecasts; its drift rule says when to search again (as train.automl.retune), not what is fitted",
}
FINGERPRINTS = {"split": SPLIT, "train": TRAIN, "forecast": FORECAST, "search": SEARCH}


def config_fingerprint(config: Config, coverage: Coverage) -> str:
    """The ``config`` part of a step's fingerprints (and of its run record)."""
    return config.section_fingerprint(*coverage.sections, exclude=coverage.excluded)


def search_space_fingerprint(config: Config) -> str:
    """Changes when a new AutoML search could choose differently (not on retune or the timeouts)."""
    settings = config.sections(*SEARCH.sections, exclude=SEARCH.excluded)
    return digest(SEARCH_SPACE_VERSION, settings["train.automl"])


# What a changed part means, per kind of artefact.
CHANGE_LABELS = {
    "inputs": "input files changed",
    "config": "config changed",
    "data": "train partition changed",
    "axis": "time axis changed",
    "model": "model changed",
    "inference": "inference partition changed",
    "history": "train partition changed",
    "version": "mm version changed",
}


@dataclass(frozen=True)
class Decision:
    reuse: bool
    reason: str


def fingerprint(parts: dict[str, Any]) -> str:
    return digest(parts)


def with_version(parts: dict[str, Any]) -> dict[str, Any]:
    return {**parts, "version": __version__}


def forecast_parts(model_fingerprint: str, model_version: int, inference_hash: str, history_hash: str, config_fp: str) -> dict[str, Any]:
    """What a group's forecast is made from: its model (the train fingerprint and the version),
    its inference and train partitions, the forecast config. The forecast step and the train
    task that stages a forecast (``tasks.stage_forecast``) name it by these same parts."""
    return with_version({"model": f"{model_fingerprint}:{model_version}", "inference": inference_hash, "history": history_hash, "config": config_fp})


def decide(previous: dict | None, parts: dict[str, Any], allow_reuse: bool, artefact_ok: bool, what: str) -> Decision:
    """Reuse ``what`` only if an artefact made from exactly these ``parts`` exists.

    ``artefact_ok``: the caller found an intact artefact for ``fingerprint(parts)``.
    ``previous`` (``{"fingerprint", "parts", "status"}`` of the last computation,
    or None) only serves to explain what changed.
    """
    if not allow_reuse:
        return Decision(False, "allow_reuse is off")
    if artefact_ok:
        return Decision(True, "unchanged")
    if previous is None:
        return Decision(False, f"no previous {what}")
    if previous.get("status") == "failed":
        return Decision(False, "failed last time")
    if previous.get("fingerprint") == fingerprint(parts):
        return Decision(False, f"{what} file missing")
    return Decision(False, explain_change(previous.get("parts") or {}, parts))


def decide_staged(staged: dict | None, model: str, allow_reuse: bool, train_run_id: str) -> Decision:
    """Adopt the forecast a train task staged (``tasks.stage_forecast``) for exactly these parts?

    ``staged``: what the staged forecast of this fingerprint says of itself (None: there is
    none). It is adopted only if it was made with ``model``, the model the train step kept:
    the step may switch a group to a pooled model after its task (steps/pools.py), and the
    staged forecast, made with the group's local model, is then not that model's."""
    if not allow_reuse:
        return Decision(False, "allow_reuse is off")
    if staged is None:
        return Decision(False, "nothing staged")
    if staged.get("model") != model:
        return Decision(False, f"staged with {staged.get('model')}, the train step kept {model}")
    return Decision(True, f"made by train run {train_run_id} with the model it had just fitted")


def explain_change(before: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [name for name in now if before.get(name) != now[name]]
    return ", ".join(CHANGE_LABELS.get(name, f"{name} changed") for name in changed) or "inputs changed"


# -- inputs ------------------------------------------------------------------

def input_hashes(store: Datastore, paths: tuple[str, ...]) -> dict[str, str]:
    """Content hash of each input file, re-reading only files whose stat changed."""
    state = store.read_input_state()
    fresh: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for path in paths:
        real = str(Path(path).resolve())
        try:
            st = os.stat(real)
            stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
            known = state.get(real)
            sha = known["sha256"] if known and known.get("stat") == stamp else file_sha256(real)
        except OSError as exc:  # vanished or unreadable: the same message the reader gives
            raise input_read_error(path, exc) from None
        fresh[real] = {"stat": stamp, "sha256": sha}
        hashes[path] = sha
    if any(state.get(k) != v for k, v in fresh.items()):
        store.write_input_state({**state, **fresh})
    return hashes
