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
        ({"levels": [[]], "errors": "insample"}, "hierarchy.errors: Input should be"),
        ({"levels": [[], ["state"]], "train_level": ["region"], "top_down_rule": "average_proportions"}, "hierarchy.train_level: ['region'] is not one of hierarchy.levels"),
        ({"levels": [[], ["state"]], "train_level": ["state"]}, "hierarchy.top_down_rule: with train_level ['state'] the levels below it have no forecasts"),
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
    # the defaults (README, 'Hierarchical forecasting': measured on tourism_au and Dominick's)
    assert config.hierarchy.method == "mint_shrink" and config.hierarchy.top_down_rule == "forecast_proportions"


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


# -- train, forecast, reconcile -------------------------------------------------------------

TOTAL = f"state={ALL_NODES},region={ALL_NODES},purpose={ALL_NODES}"


def run_all(path: Path, *extra: str) -> dict:
    import json

    result = run_cli("run", "-c", str(path), "--json", *extra)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def assert_coherent(store: Datastore, prediction: str = "Prediction", nonnegative: bool = False) -> pd.DataFrame:
    """Every aggregate node of every level equals the sum of its bottom series, period by period."""
    frame = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    bottom = frame[frame["level"] == "bottom"]
    assert len(bottom) and bottom[prediction].notna().all()
    levels = {"total": [], "state": ["state"], "state x region": ["state", "region"], "purpose": ["purpose"], "state x purpose": ["state", "purpose"]}
    for name, columns in levels.items():
        nodes = frame[frame["level"] == name]
        assert len(nodes), name
        sums = bottom.groupby([*columns, "t"])[prediction].sum() if columns else bottom.groupby("t")[prediction].sum()
        got = nodes.set_index([*columns, "t"])[prediction] if columns else nodes.set_index("t")[prediction]
        assert np.allclose(got.sort_index().to_numpy(), sums.loc[got.sort_index().index].to_numpy(), rtol=1e-9, atol=1e-6), name
        base_sums = bottom.groupby([*columns, "t"])[prediction + "_base"].sum() if columns else bottom.groupby("t")[prediction + "_base"].sum()
        assert not np.allclose(nodes.set_index([*columns, "t"] if columns else "t")[prediction + "_base"].sort_index().to_numpy(), base_sums.sort_index().to_numpy()), "base forecasts are not coherent: the test proves nothing"
    if nonnegative:
        assert (frame[prediction] >= 0).all()
    return frame


@pytest.mark.parametrize("method", ["wls_var", "mint_shrink", "ols", "top_down", "middle_out"])
def test_reconciled_forecasts_add_up_on_every_level(tmp_path: Path, method: str):
    middle = {"middle_level": ["state"]} if method == "middle_out" else {}
    path = hier_config(tmp_path, tourism_like(), method=method, **middle)
    out = run_all(path, "--set", "forecast.quantiles=[0.1, 0.9]")
    store = Datastore(load_config(path).datastore)
    frame = assert_coherent(store)
    assert out["forecast"]["hierarchy"]["method"] == method
    assert out["forecast"]["hierarchy"]["coherence_gap"] < 1e-6
    # quantiles move with the point forecast
    shift = frame["Prediction"] - frame["Prediction_base"]
    assert np.allclose(frame["Prediction_q90"] - frame["Prediction_base_q90"], shift)
    # forecasting_output.csv: one row per bottom inference row, the reconciled value and the base
    output = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(output) == 6 * 4 and not (output[GROUPS] == ALL_NODES).any().any()
    bottom = frame[frame["level"] == "bottom"][[*GROUPS, "t", "Prediction"]]
    merged = output.merge(bottom, on=[*GROUPS, "t"], suffixes=("", "_h"), validate="one_to_one")
    assert len(merged) == len(output) and np.allclose(merged["Prediction"], merged["Prediction_h"]) and "Prediction_base" in output.columns


def test_nonnegative_keeps_every_level_at_or_above_zero_and_coherent(tmp_path: Path):
    table = tourism_like()
    small = table["region"] == "c"
    table.loc[small & table["y"].notna(), "y"] = np.round(np.random.default_rng(3).uniform(0, 0.3, int((small & table["y"].notna()).sum())), 2)
    path = hier_config(tmp_path, table, method="ols", nonnegative=True)
    out = run_all(path)
    assert out["forecast"]["hierarchy"]["nonnegative"] is True
    store = Datastore(load_config(path).datastore)
    assert_coherent(store, nonnegative=True)
    # without it, ols sends some small series below zero here: the option is what keeps them at 0
    result = run_cli("forecast", "-c", str(path), "--set", "hierarchy.nonnegative=false")
    assert result.returncode == 0, result.stderr
    assert (assert_coherent(store)["Prediction"] < 0).any()


def test_a_failed_node_falls_back_to_bottom_up_for_its_branch_and_is_named(tmp_path: Path):
    path = hier_config(tmp_path, tourism_like(), method="wls_var")
    run_all(path)
    store = Datastore(load_config(path).datastore)
    groups = store.read_split_groups().set_index("label")
    for label in (f"state=N,region=a,purpose={ALL_NODES}", "state=S,region=c,purpose=bus"):
        key = groups.loc[label, "key"]
        for version in store.model_versions(key):
            store.remove_model(key, version)  # its forecast fails: the model is gone
    import json

    result = run_cli("forecast", "-c", str(path), "--json", "--no-allow-reuse")
    assert result.returncode == 3, result.stderr
    hierarchy = json.loads(result.stdout)["hierarchy"]
    assert hierarchy["failed_nodes"]["n"] == 2
    assert set(hierarchy["failed_nodes"]["examples"]) == {"state=N/region=a", "state=S/region=c/purpose=bus"}
    assert "state=N/region=a" in hierarchy["fallback_nodes"]["examples"]
    assert hierarchy["filled_bottom"]["examples"] == ["state=S/region=c/purpose=bus"]
    frame = assert_coherent(store)
    # the failed region node is the sum of its bottom series' base forecasts (bottom-up for its branch)
    a = frame[(frame["level"] == "bottom") & (frame["region"] == "a")]
    node = frame[(frame["level"] == "state x region") & (frame["region"] == "a")].set_index("t")["Prediction"]
    assert np.allclose(node.sort_index(), a.groupby("t")["Prediction_base"].sum().sort_index())
    record = store.read_run(json.loads(result.stdout)["run_id"])
    assert record["hierarchy"]["failed_nodes"]["n"] == 2


def test_rerun_reuses_every_node_and_one_changed_series_retrains_only_it_and_its_ancestors(tmp_path: Path):
    table = tourism_like()
    path = hier_config(tmp_path, table)
    run_all(path)
    again = run_all(path)
    assert again["train"]["reused"] == 18 and again["train"]["trained"] == 0
    changed = (table["state"] == "N") & (table["region"] == "a") & (table["purpose"] == "hol") & (table["t"] == "2016-01-01")
    table.loc[changed, "y"] += 5.0
    table.to_csv(tmp_path / "d.csv", index=False)
    third = run_all(path)
    store = Datastore(load_config(path).datastore)
    output = pd.read_csv(store.output_path("training_output.csv"), keep_default_na=False)
    trained = set(output.loc[output["status"] == "trained", GROUPS].apply(lambda r: ",".join(r), axis=1))
    a = ALL_NODES
    assert trained == {"N,a,hol", f"N,a,{a}", f"N,{a},hol", f"N,{a},{a}", f"{a},{a},hol", f"{a},{a},{a}"}, trained
    assert third["train"]["reused"] == 12


def test_accuracy_per_level_base_and_reconciled_with_a_holdout(tmp_path: Path):
    table = tourism_like(future=0)
    path = hier_config(tmp_path, table)
    out = run_all(path, "--set", "split.holdout=4")
    accuracy = out["forecast"]["hierarchy"]["accuracy"]
    assert list(accuracy) == ["total", "state", "state x region", "purpose", "state x purpose", "bottom"]
    frame = pd.read_csv(Datastore(load_config(path).datastore).output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    total = frame[frame["level"] == "total"]
    err = np.abs(total["Prediction"] - total["y"]) * 2 / (total["y"].abs() + total["Prediction"].abs())
    assert np.isclose(accuracy["total"]["reconciled"]["smape"], 100 * err.mean())
    assert accuracy["bottom"]["n_rows"] == 6 * 4 and accuracy["total"]["base"]["mase"] > 0
    assert accuracy["bottom"]["base"] != accuracy["bottom"]["reconciled"]


def test_mint_weighs_nodes_by_the_backtest_errors_train_kept(tmp_path: Path):
    """Each node's decision keeps its winner's out-of-sample errors per period (every fold's
    model fitted before its origin); mint_shrink and wls_var weigh the nodes by them."""
    import json

    path = hier_config(tmp_path, tourism_like(), method="mint_shrink")
    raw = yaml.safe_load(path.read_text())
    raw["train"]["automl"] = {"enabled": True, "candidates": ["seasonal_naive"], "folds": 2, "calibrate": False}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = run_all(path)
    assert out["forecast"]["hierarchy"]["residuals"] == {"backtest": 18, "in_sample": 0, "backtest_rmse": 0}
    root = Path(load_config(path).datastore)
    assert not (root / "hierarchy" / "errors").exists()  # nothing forecast again at forecast time
    store = Datastore(load_config(path).datastore)
    groups = store.read_split_groups().set_index("label")
    key = groups.loc[TOTAL, "key"]
    kept = store.read_model_meta(key, store.model_versions(key)[-1])["tuning"]["backtest_errors"]
    history = node_rows(store, TOTAL).set_index("_mm_period")["y"]
    last = int(history.index.max())
    assert kept["periods"] == list(range(last - 7, last + 1))  # 2 folds of horizon 4, the newest last
    # seasonal naive from each origin: the value 4 quarters back, all inside the fold's training part
    expected = [history[p] - history[p - 4] for p in kept["periods"]]
    assert np.allclose(kept["errors"], expected)
    assert json.loads(run_cli("forecast", "-c", str(path), "--json").stdout)["hierarchy"]["residuals"]["backtest"] == 18
    # hierarchy.errors: in_sample weighs them by their models' in-sample errors instead
    again = json.loads(run_cli("forecast", "-c", str(path), "--json", "--set", "hierarchy.errors=in_sample").stdout)["hierarchy"]
    assert again["residuals"] == {"backtest": 0, "in_sample": 18, "backtest_rmse": 0} and again["coherence_gap"] < 1e-6


def test_a_node_without_kept_errors_gets_in_sample_errors_stored_and_read_back(tmp_path: Path):
    """A model whose decision has no backtest errors (trained by an older mm, or a pooled one)
    forecasts its own history from earlier origins instead; they are stored per node."""
    import json

    path = hier_config(tmp_path, tourism_like(), method="mint_shrink")
    run_all(path)
    store = Datastore(load_config(path).datastore)
    _strip_kept_errors(store)
    result = run_cli("forecast", "-c", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hierarchy"]["residuals"] == {"backtest": 0, "in_sample": 18, "backtest_rmse": 0}
    root = Path(load_config(path).datastore)
    files = sorted((root / "hierarchy" / "errors").rglob("*.parquet"))
    assert len(files) == 18  # one per node: its model's in-sample errors
    import pyarrow.parquet as pq

    assert all(pq.read_table(f).num_rows > 0 for f in files)
    stamps = [f.stat().st_mtime_ns for f in files]
    result = run_cli("forecast", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, not forecast again
    assert_coherent(store)
    clean = run_cli("clean", "-c", str(path), "--step", "forecast", "--yes")
    assert clean.returncode == 0, clean.stderr
    assert not (root / "hierarchy").exists() and not (root / "outputs" / "hierarchy_forecast.csv").exists()


def _strip_kept_errors(store: Datastore) -> None:
    """Every node's model as an older mm wrote it: a decision without backtest errors."""
    import json

    for key in store.read_split_groups()["key"]:
        meta_path = Path(store.model_meta_path(key, store.model_versions(key)[-1]))
        meta = json.loads(meta_path.read_text())
        meta["tuning"].pop("backtest_errors")
        meta_path.write_text(json.dumps(meta))


def test_in_sample_errors_on_the_engine_equal_the_serial_ones(tmp_path: Path):
    """The in-sample errors run on the engine's workers (a per-node kernel in batches, like the
    forecast step); two local workers give the same errors, file by file, as the serial engine."""
    import json

    import pyarrow.parquet as pq

    path = hier_config(tmp_path, tourism_like(), method="wls_var")
    run_all(path)
    store = Datastore(load_config(path).datastore)
    _strip_kept_errors(store)
    root = Path(load_config(path).datastore)
    got = {}
    for engine in ("serial", "local"):
        if (root / "hierarchy").exists():
            import shutil

            shutil.rmtree(root / "hierarchy")
        result = run_cli("forecast", "-c", str(path), "--json", "--set", f"engine.kind={engine}", "--set", "engine.jobs=2")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["hierarchy"]["residuals"]["in_sample"] == 18
        got[engine] = {f.relative_to(root): pq.read_table(f).to_pydict() for f in sorted((root / "hierarchy" / "errors").rglob("*.parquet"))}
        got[engine + "_output"] = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    assert len(got["serial"]) == 18 and got["serial"] == got["local"]
    assert all(len(t["error"]) > 0 for t in got["serial"].values())
    pd.testing.assert_frame_equal(got["serial_output"], got["local_output"])


@pytest.mark.parametrize("rule", ["average_proportions", "proportion_averages"])
def test_train_level_trains_one_level_and_derives_every_other_coherently(tmp_path: Path, rule: str):
    """Azure's cheaper mode: only the state nodes train; the total is their sum, the levels
    below split down by historical proportions, crossed levels (purpose) sums of the split."""
    table = tourism_like(future=0)
    path = hier_config(tmp_path, table, train_level=["state"], top_down_rule=rule)
    out = run_all(path, "--set", "split.holdout=4", "--set", "forecast.quantiles=[0.9]")
    assert out["train"]["trained"] == 2 and out["forecast"]["forecast"] == 2  # state N and S, nothing else
    h = out["forecast"]["hierarchy"]
    assert h["method"] == "train_level" and h["train_level"] == "state" and h["coherence_gap"] < 1e-6
    store = Datastore(load_config(path).datastore)
    trained = pd.read_csv(store.output_path("training_output.csv"), keep_default_na=False)
    assert sorted(trained["state"]) == ["N", "S"] and set(trained["region"]) == {ALL_NODES}
    frame = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    bottom = frame[frame["level"] == "bottom"]
    levels = {"total": [], "state": ["state"], "state x region": ["state", "region"], "purpose": ["purpose"], "state x purpose": ["state", "purpose"]}
    for name, columns in levels.items():
        for q in ("Prediction", "Prediction_q90"):
            nodes = frame[frame["level"] == name].set_index([*columns, "t"] if columns else "t")[q].sort_index()
            sums = (bottom.groupby([*columns, "t"]) if columns else bottom.groupby("t"))[q].sum().loc[nodes.index]
            assert len(nodes) == 4 * len(frame[frame["level"] == name]["node"].unique()) and np.allclose(nodes, sums), (name, q)
    states = frame[frame["level"] == "state"]
    assert np.allclose(states["Prediction"], states["Prediction_base"])  # the trained level is kept as forecast
    assert frame[frame["level"] != "state"]["Prediction_base"].isna().all()  # every other node is derived
    # each bottom series' share of its state, from the training history by the rule
    known = table.dropna(subset=["y"])
    known = known[known["t"] < sorted(known["t"].unique())[-4]]  # split.holdout=4: the training part
    state_sum = known.groupby(["state", "t"])["y"].transform("sum")
    if rule == "average_proportions":
        share = (known["y"] / state_sum).groupby([known["state"], known["region"], known["purpose"]]).mean()
    else:
        means = known.groupby(["state", "region", "purpose"])["y"].mean()
        share = means / means.groupby(level="state").transform("sum")
    got = bottom.merge(states[["state", "t", "Prediction"]], on=["state", "t"], suffixes=("", "_state"))
    got["share"] = got["Prediction"] / got["Prediction_state"]
    for (state, region, purpose), expected in share.items():
        assert np.allclose(got[(got["state"] == state) & (got["region"] == region) & (got["purpose"] == purpose)]["share"], expected), (state, region, purpose)
    # forecasting_output.csv: one row per bottom inference row, with the derived forecast
    output = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(output) == 6 * 4 and not (output[GROUPS] == ALL_NODES).any().any()
    merged = output.merge(bottom[[*GROUPS, "t", "Prediction", "Prediction_q90"]], on=[*GROUPS, "t"], suffixes=("", "_h"), validate="one_to_one")
    assert np.allclose(merged["Prediction"], merged["Prediction_h"]) and np.allclose(merged["Prediction_q90"], merged["Prediction_q90_h"])
    # accuracy on every level, the derived ones without a base forecast to compare with
    accuracy = h["accuracy"]
    assert list(accuracy) == ["total", "state", "state x region", "purpose", "state x purpose", "bottom"]
    assert accuracy["bottom"]["base"] is None and accuracy["bottom"]["n_rows"] == 6 * 4
    assert accuracy["state"]["base"] == pytest.approx(accuracy["state"]["reconciled"])


def test_train_level_with_a_failed_node_names_it_and_keeps_the_rest(tmp_path: Path):
    import json

    path = hier_config(tmp_path, tourism_like(), train_level=["state"], top_down_rule="proportion_averages")
    run_all(path)
    store = Datastore(load_config(path).datastore)
    key = store.read_split_groups().set_index("label").loc[f"state=S,region={ALL_NODES},purpose={ALL_NODES}", "key"]
    for version in store.model_versions(key):
        store.remove_model(key, version)
    result = run_cli("forecast", "-c", str(path), "--json", "--no-allow-reuse")
    assert result.returncode == 3, result.stderr
    h = json.loads(result.stdout)["hierarchy"]
    assert h["failed_nodes"]["examples"] == ["state=S"]
    assert sorted(h["unfilled_bottom"]["examples"]) == ["state=S/region=c/purpose=bus", "state=S/region=c/purpose=hol"]
    frame = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    north = frame[(frame["state"] == "N") & (frame["level"] == "bottom")].groupby("t")["Prediction"].sum().sort_index()
    state_n = frame[(frame["level"] == "state") & (frame["state"] == "N")].set_index("t")["Prediction"].sort_index()
    assert north.notna().all() and np.allclose(north, state_n)  # the other state is split down as before
    assert frame[frame["level"] == "total"]["Prediction"].isna().all()  # never a silent 0 for the failed state
    output = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(output[output["state"] == "N"]) == 4 * 4 and output[output["state"] == "N"]["Prediction"].notna().all()


def test_train_level_bottom_trains_only_the_bottom_and_sums_it_up(tmp_path: Path):
    path = hier_config(tmp_path, tourism_like(), train_level=GROUPS)
    out = run_all(path)
    assert out["train"]["trained"] == 6 and out["forecast"]["forecast"] == 6
    store = Datastore(load_config(path).datastore)
    frame = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    bottom = frame[frame["level"] == "bottom"]
    assert np.allclose(bottom["Prediction"], bottom["Prediction_base"])
    total = frame[frame["level"] == "total"].set_index("t")["Prediction"].sort_index()
    assert np.allclose(total, bottom.groupby("t")["Prediction"].sum().sort_index())
    output = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(output) == 6 * 4 and output["model_version"].notna().all()


def test_report_shows_accuracy_per_level_and_a_node_picker_in_chromium(tmp_path: Path):
    from .conftest import chromium_page

    path = hier_config(tmp_path, tourism_like(future=0))
    run_all(path, "--set", "split.holdout=4")
    result = run_cli("report", "-c", str(path), "--output", str(tmp_path / "report.html"))
    assert result.returncode == 0, result.stderr
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert page.is_visible("#hierarchy")
        rows = page.locator("#hier-accuracy tbody tr")
        assert rows.count() == 6 and "total" in rows.nth(0).text_content()
        page.select_option("#hier-level", "state")
        assert page.locator("#hier-node option").count() == 2
        page.select_option("#hier-node", label="state=S")
        assert page.get_attribute("#hier-chart", "data-node") == "state=S"
        for line in ("history", "forecast", "base", "actual"):
            assert page.locator(f"#hier-chart svg path.{line}").count() == 1, line
        assert "reconciled" in page.text_content("#hier-chart svg g.legend")
        assert not errors, errors


def test_mint_shrink_beyond_its_node_limit_falls_back_to_wls_var_and_says_so(tmp_path: Path, monkeypatch):
    import manymodels as mm
    from manymodels.console import Terminal
    from manymodels.core import reconcile

    config = load_config(hier_config(tmp_path, tourism_like(), method="mint_shrink"))
    mm.run(config, Terminal(quiet=True))
    monkeypatch.setattr(reconcile, "MINT_MAX_NODES", 10)  # this hierarchy has 18 nodes
    result = mm.forecast(config, Terminal(quiet=True))
    h = result.hierarchy
    assert h["method"] == "wls_var" and "18 nodes is above the limit of 10" in h["note"] and "wls_var instead" in h["note"]
    assert h["coherence_gap"] < 1e-6
    assert Datastore(config.datastore).read_run(result.run_id)["hierarchy"]["note"] == h["note"]
