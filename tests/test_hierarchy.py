"""Hierarchical forecasting end to end: the config section, the aggregate nodes the split
writes, their training and forecasting as ordinary groups, reconciliation and its outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from manymodels.config import ALL_NODES, load_config
from manymodels.errors import ConfigError, InputDataError
from manymodels.steps.split import split
from manymodels.store.datastore import Datastore

from .conftest import run_cli

LEVELS = [[], ["state"], ["state", "region"], ["purpose"], ["state", "purpose"]]
GROUPS = ["state", "region", "purpose"]


def tourism_like(periods: int = 40, future: int = 4, seed: int = 0) -> pd.DataFrame:
    """Quarterly state x region x purpose series (6 bottom series, one state with one region),
    seasonal with noise; the last ``future`` quarters have no target; a known-future price."""
    rng = np.random.default_rng(seed)
    rows = []
    for state, regions in {"N": ["a", "b"], "S": ["c"]}.items():
        for region in regions:
            for purpose in ("hol", "bus"):
                level = rng.uniform(20, 60)
                for t in range(periods + future):
                    y = level + 10 * np.sin(2 * np.pi * t / 4) + rng.normal(0, 3)
                    when = (pd.Timestamp("2015-01-01") + pd.DateOffset(months=3 * t)).strftime("%Y-%m-%d")
                    rows.append({"state": state, "region": region, "purpose": purpose, "t": when,
                                 "y": round(max(y, 0.0), 2) if t < periods else np.nan, "price": round(float(rng.uniform(1, 2)), 2)})
    return pd.DataFrame(rows)


def hier_config(folder: Path, table: pd.DataFrame, **hierarchy) -> Path:
    table.to_csv(folder / "d.csv", index=False)
    raw = {
        "datastore": "store",
        "data": {"path": "d.csv", "time_column": "t", "target_column": "y", "group_columns": GROUPS, "known_future_columns": ["price"]},
        "train": {"horizon": 4, "min_history": 8, "num_boost_round": 20, "automl": {"enabled": False}},
        "engine": {"kind": "serial"},
        "hierarchy": {"levels": LEVELS, **hierarchy},
    }
    path = folder / "mm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def node_rows(store: Datastore, label: str, kind: str = "train") -> pd.DataFrame:
    groups = store.read_split_groups()
    key = groups.loc[groups["label"] == label, "key"]
    assert len(key) == 1, (label, groups["label"].tolist())
    return store.read_partition(kind, key.iloc[0])


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hierarchy, expected",
    [
        ({"levels": [["State"]]}, "hierarchy.levels.0: unknown column 'State'"),
        ({"levels": [[], ["state", "state"]]}, "hierarchy.levels: level ['state', 'state']: a column appears twice"),
        ({"levels": [[], ["state"], ["state"]]}, "level ['state'] is listed twice"),
        ({"levels": [[]], "method": "mint"}, "hierarchy.method: Input should be"),
        ({"levels": [[]], "aggregate": {"Price": "sum"}}, "hierarchy.aggregate.Price: not a known-future column"),
        ({"levels": [[]], "aggregate": {"price": "median"}}, "hierarchy.aggregate.price: Input should be"),
        ({"levels": [["state"]], "method": "top_down"}, "top_down splits the total"),
        ({"levels": [[]], "method": "middle_out"}, "hierarchy.middle_level: method middle_out needs"),
        ({"levels": [[], ["state"]], "method": "middle_out", "middle_level": ["region"]}, "hierarchy.middle_level: ['region'] is not one of"),
        ({"levels": [[]], "missing": "skip"}, "hierarchy.missing: Input should be"),
    ],
)
def test_bad_hierarchy_config_exits_1_with_the_key_path(tmp_path: Path, hierarchy: dict, expected: str):
    path = hier_config(tmp_path, tourism_like(periods=8), **{k: v for k, v in hierarchy.items() if k != "levels"})
    raw = yaml.safe_load(path.read_text())
    raw["hierarchy"]["levels"] = hierarchy["levels"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in err.value.message, err.value.message
    result = run_cli("split", "-c", str(path))
    assert result.returncode == 1 and expected in result.stderr, result.stderr


def test_the_bottom_level_must_identify_the_series(tmp_path: Path):
    path = hier_config(tmp_path, tourism_like(periods=8))
    with pytest.raises(ConfigError) as err:
        load_config(path, ["data.group_columns=[state, region]", "data.series_columns=[purpose]", "hierarchy.levels=[[], [state]]"])
    assert "which does not identify the series" in err.value.message and "purpose" in err.value.message


def test_the_bottom_level_may_be_listed_and_no_hierarchy_is_the_default(tmp_path: Path):
    path = hier_config(tmp_path, tourism_like(periods=8))
    config = load_config(path, ["hierarchy.levels=[[], [state], [region, state, purpose]]"])
    assert config.hierarchy.aggregate_levels(GROUPS) == [[], ["state"]]
    assert load_config(path, ["hierarchy.levels=null"]).hierarchy.levels is None


# -- split -----------------------------------------------------------------------------


def test_split_writes_every_node_as_a_group_summing_its_bottom_series(tmp_path: Path):
    table = tourism_like()
    config = load_config(hier_config(tmp_path, table, aggregate={"price": "max"}))
    result = split(config)
    # 6 bottom; total 1, states 2, state x region 3, purposes 2, state x purpose 4
    assert result.n_aggregate_nodes == 12 and result.n_groups == 18
    store = Datastore(config.datastore)
    total = node_rows(store, f"state={ALL_NODES},region={ALL_NODES},purpose={ALL_NODES}")
    history = table.dropna(subset=["y"])
    expected = history.groupby("t")["y"].sum()
    got = total.set_index(total["t"].dt.strftime("%Y-%m-%d"))["y"]
    assert np.allclose(got.loc[expected.index].to_numpy(), expected.to_numpy())
    north_hol = node_rows(store, f"state=N,region={ALL_NODES},purpose=hol", "inference")
    rows = table[(table["state"] == "N") & (table["purpose"] == "hol") & table["y"].isna()]
    assert np.allclose(north_hol["price"].to_numpy(), rows.groupby("t")["price"].max().to_numpy())  # the max rule
    assert north_hol["y"].isna().all() and len(north_hol) == 4


def test_a_bottom_series_missing_a_period_makes_its_nodes_missing_unless_zero(tmp_path: Path):
    table = tourism_like()
    gap = (table["region"] == "a") & (table["purpose"] == "hol") & (table["t"] == "2017-04-01")
    config = load_config(hier_config(tmp_path, table[~gap]))
    split(config)
    store = Datastore(config.datastore)
    total = node_rows(store, f"state={ALL_NODES},region={ALL_NODES},purpose={ALL_NODES}")
    at = total["t"].dt.strftime("%Y-%m-%d") == "2017-04-01"
    assert total.loc[at, "y"].isna().all()
    south = node_rows(store, f"state=S,region={ALL_NODES},purpose={ALL_NODES}")  # not above the gap
    assert south.loc[south["t"].dt.strftime("%Y-%m-%d") == "2017-04-01", "y"].notna().all()
    split(config.with_overrides(["hierarchy.missing=zero"]))
    total = node_rows(store, f"state={ALL_NODES},region={ALL_NODES},purpose={ALL_NODES}")
    at = total["t"].dt.strftime("%Y-%m-%d") == "2017-04-01"
    others = table[~gap & (table["t"] == "2017-04-01")]["y"].sum()
    assert np.isclose(total.loc[at, "y"].iloc[0], others)


def test_a_group_value_equal_to_the_node_sentinel_is_refused(tmp_path: Path):
    table = tourism_like(periods=8)
    table.loc[table["region"] == "c", "region"] = ALL_NODES
    path = hier_config(tmp_path, table)
    with pytest.raises(InputDataError) as err:
        split(load_config(path))
    assert "group column 'region' has the value '__all__'" in err.value.message
    result = run_cli("split", "-c", str(path))
    assert result.returncode == 1 and "__all__" in result.stderr


def test_a_sum_of_a_text_column_is_refused_with_its_key(tmp_path: Path):
    table = tourism_like(periods=8)
    table["price"] = np.where(table.index % 2, "low", "high")
    path = hier_config(tmp_path, table, aggregate={"price": "sum"})
    with pytest.raises(InputDataError) as err:
        split(load_config(path))
    assert "hierarchy.aggregate.price: sum needs numbers" in err.value.message
