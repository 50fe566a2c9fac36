"""mm train's pooled candidates: plan and fit the pools, then choose per group (core/pooling.py).

Three phases around the per-group fits of ``train``:

1. ``fit_pools``, before them: every pool of every level (train.automl.pooling)
   whose members' data or the config changed is fitted again, as one task
   with several LightGBM threads (a pool is one big fit; local candidates are
   many small ones on the process pool); an unchanged pool is reused. A pool is
   tuned when its search is due (as a group's: retune, the search space) and
   backtested when it is tuned or when a member is searched for the first time.
2. The groups' fits (``train._fit``) get the refs of their pools: a searched
   group scores each pool on its own folds next to its local candidates.
3. ``choose_pools``, after them: each pool's verdict over all of its searched
   members (``pooling.pool_verdict``), then each member's choice
   (``pooling.member_choice``); a member that takes a pool has its model record
   (same version) rewritten to point to the pool, and its local booster dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import Config
from ..core import pooling
from ..core.identity import digest, group_key, group_label
from ..core.kernels import SEARCHED, pooled_result
from ..core.results import Status, TrainRow
from ..runner.session import Session
from ..runner.tasks import PoolContext, pool_batch, pool_version_ref, pool_versions_text
from ..store import cache
from ..store.runs import Run
from ..store.spool import Spool


@dataclass
class PoolPlan:
    """The pools of this run: per level, pool values (JSON) -> the ref its members get."""

    levels: list[tuple[str, ...]]
    refs: dict[str, dict[str, dict]] = field(default_factory=dict)  # name -> values json -> ref
    fitted: int = 0
    reused: int = 0
    too_small: int = 0
    failed: list[dict] = field(default_factory=list)

    def refs_of(self, values: list, group_columns: list[str]) -> dict[str, dict]:
        """The pools a group with these values belongs to, by candidate name."""
        out = {}
        for level in self.levels:
            name = pooling.level_name(level)
            ref = self.refs.get(name, {}).get(_values_key(level, values, group_columns))
            if ref is not None:
                out[name] = ref
        return out

    def summary(self) -> dict:
        return {"fitted": self.fitted, "reused": self.reused, "too_small": self.too_small, "failed": self.failed}


def _values_key(level: tuple[str, ...], values: list, group_columns: list[str]) -> str:
    return json.dumps([values[group_columns.index(c)] for c in level])


def pooling_levels(config: Config) -> list[tuple[str, ...]]:
    automl = config.train.automl
    if not automl.enabled:
        return []
    return pooling.resolve_levels(automl.pooling.levels, tuple(config.data.group_columns))


def fit_pools(s: Session, spool: Spool, run: Run, spec, config_fp: str, axis_fp: str) -> PoolPlan:
    """Fit (or reuse) every pool; the plan says which version each member uses."""
    config = s.config
    plan = PoolPlan(pooling_levels(config))
    if not plan.levels:
        return plan
    settings = config.train.automl.pooling
    group_columns = list(config.data.group_columns)
    members = _members(s, plan.levels, group_columns)
    first_search = {item["key"] for item in spool.rows("fit") if not item.get("previous_version")}
    always = config.train.automl.retune == "always"
    items = []
    for (name, values_key), pool in members.items():
        if len(pool["keys"]) < settings.min_groups:
            plan.too_small += 1
            continue
        pool_id = group_key([name, *json.loads(values_key)])
        parts = cache.with_version({"data": digest(sorted(zip(pool["keys"], pool["hashes"]))), "config": config_fp, "axis": axis_fp})
        fingerprint = cache.fingerprint(parts)
        stored_version, stored = _newest(s, pool_id)
        tune = always or stored is None or (stored.get("tuning") or {}).get("space") != spec.automl.space
        backtest = tune or any(k in first_search for k in pool["keys"])
        ref = {"pool": pool_id, "level": list(pool["level"]), "label": pool["label"]}
        if stored is not None and s.allow_reuse and stored.get("fingerprint") == fingerprint and (not backtest or stored.get("origins")):
            plan.refs.setdefault(name, {})[values_key] = {**ref, "version": stored_version}
            plan.reused += 1
            continue
        items.append({**ref, "name": name, "values": json.loads(values_key), "members": pool["keys"], "fingerprint": fingerprint, "tune": tune, "backtest": backtest, "stored_version": stored_version, "_values_key": values_key})
    if items:
        threads = s.engine().threads_for(len(items))
        context = PoolContext(s.store.location, spec, pooling.PoolSettings(settings.n_trials, settings.timeout, threads, settings.linear), run.id, config.registry.keep_versions)
        for done in s.execute(run, pool_batch, context.crash, context, items, len(items), f"train: fitting {len(items)} pooled models", max_batch=1):
            for item, result in done:
                _record(s, plan, item, result)
    return plan


def _record(s: Session, plan: PoolPlan, item: dict, result: dict) -> None:
    if result["status"] != "trained":
        plan.failed.append({"pool": item["label"], "error": result.get("error", "")})
        s.terminal.warn(f"train: pooled model {item['label']} failed, its members keep their local candidates: {result.get('error', '')}")
        return
    plan.fitted += 1
    ref = {k: item[k] for k in ("pool", "level", "label")}
    plan.refs.setdefault(item["name"], {})[item["_values_key"]] = {**ref, "version": result["version"]}
    s.terminal.detail(f"{item['label']}: pooled model v{result['version']} fitted ({result.get('n_series')} series, LightGBM {result.get('source')}, {result.get('duration_s')} s)")


def _members(s: Session, levels: list[tuple[str, ...]], group_columns: list[str]) -> dict[tuple[str, str], dict]:
    """Every pool's member groups (keys and train hashes), from the split's groups table."""
    pools: dict[tuple[str, str], dict] = {}
    for batch in s.store.iter_split_groups(columns=["key", "values", "n_train", "train_hash"]):
        for g in batch.to_pylist():
            if not g["n_train"]:
                continue
            values = json.loads(g["values"])
            for level in levels:
                name = pooling.level_name(level)
                values_key = _values_key(level, values, group_columns)
                pool = pools.get((name, values_key))
                if pool is None:
                    label = group_label(level, json.loads(values_key)) if level else "all series"
                    pool = pools[(name, values_key)] = {"level": level, "keys": [], "hashes": [], "label": f"{name} ({label})"}
                pool["keys"].append(g["key"])
                pool["hashes"].append(g["train_hash"])
    return pools


def prune_pools(store, plan: PoolPlan, referenced: set[str], keep_versions: int) -> int:
    """Remove the versions of this run's pools that no row points to, beyond the newest
    ``keep_versions`` (registry.keep_versions). Returns how many were removed."""
    removed = 0
    for refs in plan.refs.values():
        for ref in refs.values():
            versions = store.pool_versions(ref["pool"])
            for version in versions[: max(0, len(versions) - keep_versions)]:
                if f"{ref['pool']}/v{version}" not in referenced:
                    store.remove_pool(ref["pool"], version)
                    removed += 1
    return removed


def _newest(s: Session, pool_id: str) -> tuple[int | None, dict | None]:
    versions = s.store.pool_versions(pool_id)
    if not versions:
        return None, None
    try:
        return versions[-1], s.store.read_pool_meta(pool_id, versions[-1])
    except (OSError, ValueError):
        return None, None


# -- the choice, after the groups' fits ---------------------------------------------------


def has_pool_scores(row: TrainRow) -> bool:
    """A group with pools among its scored candidates: its blocks count in the pools' verdicts, and
    when it was searched this run, its choice waits for them."""
    return row.status is Status.TRAINED and any(pooling.is_pooled(k) for k in row.scores)


def choose_pools(s: Session, spool: Spool, keep, evidence: float) -> dict:
    """Each pool's verdict, then each pending group's choice; rows go to ``keep`` as decided."""
    store = s.store
    differences: dict[str, list[np.ndarray]] = defaultdict(list)
    over_blend: dict[str, list[np.ndarray]] = defaultdict(list)  # pool minus blend, on the same blocks
    scored: dict[str, _Scored] = {}  # the searched members' block differences, kept for their choice
    for row in map(TrainRow.from_dict, spool.rows("pending")):
        meta = store.read_model_meta(row.key, row.model_version)
        own = _own_differences(meta)
        member = _Scored(own, _over_blend(own), {name: _judged_as(meta, name) for name in own})
        for name, d in member.own.items():
            differences[member.judged[name]].append(d)
        for name, d in member.over_blend.items():
            over_blend[member.judged[name]].append(d)
        if row.tuning.startswith(SEARCHED):
            scored[row.key] = member
    verdicts = {pool: pooling.pool_verdict(d, evidence) for pool, d in differences.items()}
    verdicts_over_blend = {pool: pooling.pool_verdict(d, evidence) for pool, d in over_blend.items()}
    chosen: dict[str, int] = defaultdict(int)
    for row in map(TrainRow.from_dict, spool.rows("pending")):
        member = scored.pop(row.key, None)
        if member is None:  # a stored choice refit: it counts in the verdicts, and stays
            keep(row)
            continue
        by_name = {name: verdicts[member.judged[name]] for name in member.own}
        by_name_over_blend = {name: verdicts_over_blend[member.judged[name]] for name in member.over_blend}
        name, why = pooling.member_choice(member.own, by_name, evidence, by_name_over_blend)
        if name is not None:
            meta = store.read_model_meta(row.key, row.model_version)  # read again only to rewrite it
            row = (_switch_to_blend if pooling.is_blend(name) else _switch)(store, row, meta, name, why)
            chosen[name] += 1
        elif why:
            row = replace(row, note="; ".join(n for n in (row.note, why) if n))
        keep(row)
    return {"verdicts": {pool: {"approved": v.approved, "blocks": v.n_blocks, "mean_relative_difference": v.mean} for pool, v in verdicts.items()}, "chosen": dict(chosen), "approved": sum(v.approved for v in verdicts.values()), "scored": len(verdicts)}


@dataclass
class _Scored:
    """A searched member's relative block losses per pooled candidate (``own``), each pool's
    minus the blend's (``over_blend``), and what each candidate's verdict is pooled over."""

    own: dict[str, np.ndarray]
    over_blend: dict[str, np.ndarray]
    judged: dict[str, str]


def _own_differences(meta: dict) -> dict[str, np.ndarray]:
    """A member's relative block losses, per pooled candidate (minus its local model's)."""
    pooled = (meta.get("tuning") or {}).get("pooled") or {}
    return {name: np.asarray(entry["diff"], dtype=float) for name, entry in pooled.items()}


def _over_blend(own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each pool's losses minus the blend's, where both scored the same blocks (same scale:
    both are relative to the local model's mean loss)."""
    blend = own.get(pooling.BLEND)
    if blend is None:
        return {}
    return {name: d - blend for name, d in own.items() if name != pooling.BLEND and len(d) == len(blend)}


def _judged_as(meta: dict, name: str) -> str:
    """What a candidate's verdict is pooled over: a pool's over its members; the blend's over
    every group that has one (it is a way of forecasting, the same for every group)."""
    return pooling.BLEND if pooling.is_blend(name) else meta["pools"][name]["pool"]


def _switch_to_blend(store, row: TrainRow, meta: dict, name: str, why: str) -> TrainRow:
    """The group's model record (same version) as the blend of its local model (booster kept)
    with its pools."""
    entry = meta["tuning"]["pooled"][name]
    new_meta = pooling.with_blend_refs(pooling.blend_record(meta, entry), meta["pools"])
    store.write_model(row.key, row.model_version, new_meta, None)  # the local booster stays
    return replace(
        row,
        model=name,
        metrics=new_meta["metrics"],
        n_backtest=entry.get("n_backtest", 0),
        unscored=entry.get("unscored") or {},
        tuning=pooling.tuning_text(new_meta),
        pool=pool_versions_text(new_meta),
        note="; ".join(n for n in (row.note, why) if n),
    )


def _switch(store, row: TrainRow, meta: dict, name: str, why: str) -> TrainRow:
    """The group's model record (same version) pointing to its pool instead of its local model."""
    ref = meta["pools"][name]
    result = pooled_result(meta["tuning"], name, meta["info"], int(meta.get("n_train_rows", 0)), why)
    keep = {k: meta[k] for k in ("group", "key", "version", "run_id", "fingerprint", "parts", "created", "train_start", "train_end", "duration_s", "pools", "demand_class") if k in meta}
    new_meta = {**result["meta"], **keep, "pool_ref": ref, "local": {"kind": meta["kind"]}}
    store.write_model(row.key, row.model_version, new_meta, None)
    store.drop_booster(row.key, row.model_version)
    return replace(
        row,
        model=name,
        metrics=result["metrics"],
        n_backtest=result["n_backtest"],
        unscored=result["unscored"],
        tuning=pooling.tuning_text(new_meta),
        pool=pool_version_ref(ref),
        note="; ".join(n for n in (row.note, why) if n),
    )
