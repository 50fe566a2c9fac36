"""What the steps share: the modelling spec of a split's groups, the split they read, and how a result over groups ends."""

from __future__ import annotations

from dataclasses import asdict

from ..config import Config
from ..console import Terminal
from ..core.kernels import AutoMLSpec, GroupSpec
from ..core.partitioning import PERIOD
from ..errors import EXIT_OK, EXIT_PARTIAL, UpstreamMissing
from ..store import cache
from ..store.datastore import Datastore


def group_spec(config: Config, manifest: dict) -> GroupSpec:
    d, t = config.data, config.train
    return GroupSpec(
        group_columns=tuple(d.group_columns),
        series_columns=tuple(c for c in d.series_key if c not in d.group_columns),
        time_column=d.time_column,
        target_column=d.target_column,
        period_column=PERIOD,
        known_future_columns=tuple(d.known_future_columns),
        axis=manifest["axis"],
        horizon=t.horizon,
        min_history=t.min_history,
        lags=t.features.lags,
        windows=t.features.windows,
        calendar=t.features.calendar,
        target_transform=t.features.target_transform,
        params=dict(t.params),
        num_boost_round=t.num_boost_round,
        automl=AutoMLSpec.of(t.automl.model_dump(mode="json"), cache.search_space_fingerprint(config)),
        quantiles=tuple(config.forecast.quantiles),
        seed=t.seed,
    )


def load_split(store: Datastore, config: Config, terminal: Terminal) -> dict:
    """The split's manifest (its groups are streamed with ``store.iter_split_groups``)."""
    manifest = store.read_split_manifest()
    if manifest is None or not store.has_split_groups():
        raise UpstreamMissing(f"no split in datastore {store.root}", "run 'mm split -c CONFIG' first (or 'mm run', which splits, trains and forecasts)")
    current = cache.config_fingerprint(config, cache.SPLIT)
    if (manifest.get("parts") or {}).get("config") != current:
        terminal.warn("the split was made with a different data/split config; run 'mm split' (or 'mm run') to redo it")
    return manifest


class GroupsResult:
    """The end of a step over groups (a dataclass's mixin): exit code 3 when some groups
    failed, and the ``--json`` document, every field plus that exit code."""

    def groups_failed(self) -> int:
        return self.failed

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.groups_failed() else EXIT_OK

    def to_dict(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}
