"""Pooled candidates (train.automl.pooling): one LightGBM over many groups' series, chosen per group.

Real fits on generated data where the truth is known: many short store x brand
series sharing one price response, which no 24-week series can learn alone
and a pool of 36 can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import config_from_dict
from manymodels.core import pooling
from manymodels.core.kernels import GroupSpec
from manymodels.errors import ConfigError
from manymodels.steps.common import group_spec
from manymodels.store.datastore import Datastore

from .conftest import run_cli, write_config
from .test_staged_forecasts import ADOPTED, decisions_of, made_anew, output_of

STORES, BRANDS = 12, ("a", "b", "c")


def shared_price_response(weeks: int = 24, future: int = 4, seed: int = 0, stores: int = STORES) -> pd.DataFrame:
    """Store x brand weekly sales: a brand level times a strong shared price elasticity, little noise."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2022-01-06")
    rows = []
    for store in range(stores):
        for b, brand in enumerate(BRANDS):
            level = 40.0 * (1 + b) * (1 + 0.1 * store)
            for w in range(weeks + future):
                price = float(rng.choice([1.0, 1.5, 2.0, 3.0]))
                y = level * price**-2.0 * float(np.exp(rng.normal(0, 0.05)))
                rows.append({"Store": store, "Brand": brand, "WeekStarting": (start + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d"), "Quantity": round(y, 2) if w < weeks else np.nan, "Price": price, "Advert": 0, "Revenue": 0.0})
    return pd.DataFrame(rows)


def pooled_config(tmp_path, frame: pd.DataFrame, **pooling_settings):
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    automl = {"enabled": True, "candidates": ["lightgbm", "naive", "mean"], "n_trials": 0, "folds": 3, "metric": "wape", "pooling": {"levels": "auto", "n_trials": 0, "min_groups": 10, **pooling_settings}}
    return write_config(tmp_path, str(path), train={"horizon": 4, "min_history": 8, "num_boost_round": 60, "automl": automl}, forecast={"quantiles": [0.1, 0.9]})


def _training(config) -> pd.DataFrame:
    return pd.read_csv(Datastore(mm.load_config(config).datastore).output_path("training_output.csv"))


def _pool_dirs(store: Datastore) -> list[str]:
    root = store.root / "pools"
    return sorted(p.name for p in root.glob("*/*")) if root.exists() else []


# -- the choice rule ---------------------------------------------------------------


def test_auto_levels_are_each_group_column_and_all_series():
    assert pooling.resolve_levels("auto", ("Store", "Brand")) == [("Store",), ("Brand",), ()]
    assert pooling.resolve_levels("auto", ("SKU",)) == [()]
    assert pooling.resolve_levels("none", ("Store", "Brand")) == []
    assert pooling.resolve_levels([["Brand"]], ("Store", "Brand")) == [("Brand",)]


def test_a_pool_is_approved_only_on_clear_evidence_over_its_members():
    rng = np.random.default_rng(1)
    better = [rng.normal(-0.2, 0.3, 3) for _ in range(40)]  # 20% lower loss, 120 blocks
    noise = [rng.normal(0.0, 0.3, 3) for _ in range(40)]
    assert pooling.pool_verdict(better, 2.0).approved
    assert not pooling.pool_verdict(noise, 2.0).approved
    assert not pooling.pool_verdict([np.array([-0.5])], 2.0).approved  # one block is no evidence


def test_a_member_keeps_its_local_model_only_when_that_is_clearly_better_on_its_own_blocks():
    approved = pooling.Verdict(True, 120, -0.2, 0.03)
    rejected = pooling.Verdict(False, 120, 0.1, 0.03)
    assert pooling.member_choice({"pooled_all": np.array([0.1, -0.1, 0.05])}, {"pooled_all": approved}, 2.0)[0] == "pooled_all"
    name, why = pooling.member_choice({"pooled_all": np.array([0.9, 1.0, 1.1, 0.95])}, {"pooled_all": approved}, 2.0)
    assert name is None and "clearly better" in why
    assert pooling.member_choice({"pooled_all": np.array([-0.5, -0.4])}, {"pooled_all": rejected}, 2.0)[0] is None
    # of two approved pools, the one that beat its members by more
    both = {"pooled_all": approved, "pooled_Brand": pooling.Verdict(True, 40, -0.3, 0.05)}
    assert pooling.member_choice({"pooled_all": np.zeros(3), "pooled_Brand": np.zeros(3)}, both, 2.0)[0] == "pooled_Brand"


def test_an_approved_blend_is_taken_unless_a_pool_clearly_beats_the_blend_itself():
    blend = pooling.Verdict(True, 900, -0.12, 0.01)
    brand = pooling.Verdict(True, 300, -0.18, 0.02)  # beat its members' local models by more
    own = {pooling.BLEND: np.full(4, -0.1), "pooled_Brand": np.full(4, -0.2)}
    # only as good as the blend once measured against it: the blend, which also holds the local model
    unclear = {"pooled_Brand": pooling.Verdict(False, 300, -0.01, 0.02)}
    assert pooling.member_choice(own, {pooling.BLEND: blend, "pooled_Brand": brand}, 2.0, unclear)[0] == pooling.BLEND
    assert pooling.member_choice(own, {pooling.BLEND: blend, "pooled_Brand": brand}, 2.0, {})[0] == pooling.BLEND
    clear = {"pooled_Brand": pooling.Verdict(True, 300, -0.08, 0.01)}
    assert pooling.member_choice(own, {pooling.BLEND: blend, "pooled_Brand": brand}, 2.0, clear)[0] == "pooled_Brand"
    # without an approved blend, the pool that beat its members by the most, as before
    rejected_blend = pooling.Verdict(False, 900, 0.02, 0.01)
    assert pooling.member_choice(own, {pooling.BLEND: rejected_blend, "pooled_Brand": brand}, 2.0, unclear)[0] == "pooled_Brand"


# -- honesty of the pool's backtest ----------------------------------------------------


def _pool_fit(frame: pd.DataFrame, tmp_path) -> dict:
    """The global pool of ``frame``, fitted as mm train would (from the split's partitions)."""
    tmp_path.mkdir()
    config = mm.load_config(pooled_config(tmp_path, frame))
    mm.split(config)
    store = Datastore(config.datastore)
    spec: GroupSpec = group_spec(config, store.read_split_manifest())
    train = pd.concat([store.read_partition("train", key) for key in store.read_split_groups()["key"]], ignore_index=True)
    return pooling.fit_pool(pooling.with_statics(train, (), spec.group_columns), pooling.pool_spec(spec, ()), pooling.PoolSettings(0, None, 2, True), None, tune=False, backtest=True)


def test_a_pools_backtest_never_sees_the_rows_it_is_scored_on(tmp_path):
    frame = shared_price_response()
    changed = frame.copy()
    weeks = sorted(frame["WeekStarting"].unique())
    last_fold = changed["WeekStarting"].isin(weeks[20:24])  # the newest fold's test weeks
    changed.loc[last_fold, "Quantity"] = changed.loc[last_fold, "Quantity"] * 5
    a, b = _pool_fit(frame, tmp_path / "a"), _pool_fit(changed, tmp_path / "b")
    assert a["meta"]["origins"] == b["meta"]["origins"] and len(a["meta"]["origins"]) == 3
    pd.testing.assert_series_equal(a["backtest"]["prediction"], b["backtest"]["prediction"])  # fitted before each cutoff
    assert a["model_text"] != b["model_text"]  # the final fit does use every row


# -- end to end ------------------------------------------------------------------------


@pytest.fixture
def pooled_run(tmp_path):
    config = pooled_config(tmp_path, shared_price_response())
    mm.run(mm.load_config(config))
    return config


def test_groups_choose_the_pool_that_learns_their_shared_price_response(pooled_run):
    out = _training(pooled_run)
    pooled = out[out["model"].str.startswith("pooled_")]
    assert len(pooled) >= 30, out["model"].value_counts()  # of 36 short series
    assert {"score_pooled_all", "score_pooled_Brand", "score_pooled_Store"} <= set(out.columns)
    row = pooled.iloc[0]
    assert row["score_" + row["model"]] < row["score_lightgbm"]
    record = mm.load_config(pooled_run)
    store = Datastore(record.datastore)
    runs = json.loads(store.files.read(f"runs/{out['run_id'].iloc[0]}.json"))
    assert runs["pooling"]["approved"] >= 1 and sum(runs["pooling"]["chosen"].values()) == len(pooled)
    # the group's record points to its pool; the pool is stored once, not per group
    key = store.read_split_groups().set_index("label").loc[f"Store={row['Store']},Brand={row['Brand']}", "key"]
    meta = store.read_model_meta(key, int(row["model_version"]))
    assert meta["kind"] == row["model"] and meta["pool_ref"]["version"] >= 1
    assert not store.has_model(key, int(row["model_version"]), booster=True)
    assert len(_pool_dirs(store)) == 4  # all series, and each of the three brands (stores have 3 groups: too few)
    # the factor its members' calibration shrinks towards: over all of them, and without each origin
    pool = store.read_pool_meta(meta["pool_ref"]["pool"], int(meta["pool_ref"]["version"]))
    prior = pool["calibration_prior"]
    assert prior["metric"] == meta["calibration"]["metric"] and sorted(prior["excluding"]) == sorted(map(str, pool["origins"]))
    assert all(0.5 <= f <= 1.5 for f in [prior["all"], *prior["excluding"].values()])
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    assert len(forecast) == 36 * 4 and forecast["Prediction"].notna().all()
    mine = forecast[(forecast["Store"] == row["Store"]) & (forecast["Brand"] == row["Brand"])]
    assert (mine["Prediction_q10"] < mine["Prediction_q90"]).all()  # the group's own backtest residuals of the pool


def test_a_group_switched_to_its_pool_after_its_task_is_not_given_its_local_models_forecast(pooled_run):
    config = mm.load_config(pooled_run)
    store = Datastore(config.datastore)
    runs = store.list_runs()
    forecast_run = next(r for r in runs if r["step"] == "forecast")
    models = pd.read_csv(store.output_path("training_output.csv")).set_index(["Store", "Brand"])
    decisions = decisions_of(store, forecast_run["id"])
    switched = models["model"].str.startswith("pooled_").to_numpy()
    assert switched.sum() >= 30  # most groups chose a pool in the step, after their task staged a local forecast
    labels = [f"Store={s},Brand={b}" for s, b in models.index]
    adopted = decisions.loc[labels].str.startswith(ADOPTED).to_numpy()
    assert not (adopted & switched).any()
    assert adopted[~switched].all()
    ours = output_of(store)
    theirs, _ = made_anew(config)
    pd.testing.assert_frame_equal(ours, theirs)


def test_pooled_forecasts_follow_the_price(pooled_run):
    store = Datastore(mm.load_config(pooled_run).datastore)
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    frame = shared_price_response()
    future = frame[frame["Quantity"].isna()][["Store", "Brand", "WeekStarting", "Price"]]
    joined = forecast.merge(future, on=["Store", "Brand", "WeekStarting"], suffixes=("", "_in"))
    cheap, dear = joined[joined["Price"] == 1.0]["Prediction"].mean(), joined[joined["Price"] == 3.0]["Prediction"].mean()
    assert cheap > 3 * dear


def test_rerun_reuses_pools_and_groups_and_one_changed_group_changes_only_its_pools(pooled_run, tmp_path):
    config = mm.load_config(pooled_run)
    again = mm.train(config)
    assert again.trained == 0 and again.reused == 36
    store = Datastore(config.datastore)
    before = {d: store.pool_versions(d) for d in _pool_dirs(store)}
    frame = shared_price_response()
    frame.loc[(frame["Store"] == 3) & (frame["Brand"] == "b") & (frame["WeekStarting"] == "2022-01-06"), "Quantity"] += 1.0
    frame.to_csv(config.data.path, index=False)
    mm.split(config)
    changed = mm.train(config)
    assert changed.trained == 1 and changed.reused == 35
    assert changed.pooling["fitted"] == 2 and changed.pooling["reused"] == 2  # all series and brand b refit; a, c kept
    after = {d: store.pool_versions(d) for d in _pool_dirs(store)}
    assert sum(len(after[d]) > len(before[d]) for d in before) == 2
    result = mm.forecast(config)
    assert result.failed == 0  # the kept groups still forecast with the pool versions they point to


def test_a_nightly_refit_keeps_pooled_choices_without_a_search(pooled_run):
    config = mm.load_config(pooled_run)
    first = _training(pooled_run).set_index(["Store", "Brand"])
    frame = shared_price_response(weeks=26, seed=0)  # two more weeks of actuals for every group
    frame.to_csv(config.data.path, index=False)
    result = mm.run(config)
    out = _training(pooled_run).set_index(["Store", "Brand"])
    assert (out["status"] == "trained").all()
    kept = first["model"].str.startswith("pooled_")
    assert (out.loc[kept, "model"] == first.loc[kept, "model"]).all()
    assert "chosen before" in " ".join(out.loc[kept, "tuning"].astype(str)) or (out.loc[kept, "n_trials"] == 0).all()
    train = result.train
    assert train.pooling["fitted"] == 4
    store = Datastore(config.datastore)
    newest = [store.read_pool_meta(d, store.pool_versions(d)[-1]) for d in _pool_dirs(store)]
    assert all(m["tuning"]["source"] in ("stored", "defaults") for m in newest)
    assert all(not m["origins"] for m in newest)  # one fit each: no backtest when no member is searched


def test_pooling_none_fits_no_pool(tmp_path):
    config = pooled_config(tmp_path, shared_price_response(), levels="none")
    mm.run(mm.load_config(config))
    out = _training(config)
    assert not out["model"].str.startswith("pooled_").any()
    assert not [c for c in out.columns if c.startswith("score_pooled")]


@pytest.mark.parametrize(
    "levels, message",
    [
        ([["Region"]], "train.automl.pooling.levels: level ['Region'] names Region, which is not a group column"),
        ([["Store", "Brand"]], "is every group column"),
    ],
)
def test_pooling_levels_are_validated(tmp_path, levels, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(
            {
                "datastore": str(tmp_path / "s"),
                "data": {"path": "x.csv", "time_column": "t", "target_column": "y", "group_columns": ["Store", "Brand"]},
                "train": {"automl": {"pooling": {"levels": levels}}},
            }
        )


def test_cli_names_the_bad_pooling_level(tmp_path):
    config = pooled_config(tmp_path, shared_price_response(stores=2), levels=[["Region"]])
    done = run_cli("train", "-c", str(config))
    assert done.returncode == 1 and "train.automl.pooling.levels" in done.stderr and "Region" in done.stderr


# -- shared tuning: a sample's winners warm-start the others' searches -----------------


def _warm_config(tmp_path, sample: int):
    from .conftest import small_config, small_table

    path = tmp_path / "small.csv"
    small_table(groups=tuple("abcdefghij"), weeks=30).to_csv(path, index=False)
    automl = {"enabled": True, "candidates": ["lightgbm", "naive"], "n_trials": 6, "folds": 2, "pooling": {"levels": "none"}, "warm_start": {"sample": sample, "n_trials": 2}}
    return small_config(tmp_path, str(path), train={"automl": automl})


def test_a_sample_is_searched_in_full_and_seeds_a_short_search_of_the_rest(tmp_path):
    config = mm.load_config(_warm_config(tmp_path, sample=3))
    mm.run(config)
    out = _training(_warm_config(tmp_path, sample=3))
    full = out[out["n_trials"] == 6]
    seeded = out[out["tuning"].str.contains("warm-started from 3 sampled groups", na=False)]
    assert len(full) == 3 and len(seeded) == 7
    assert (seeded["n_trials"] == 2).all()
    assert out["status"].eq("trained").all()


def test_warm_start_sample_0_searches_each_group_alone(tmp_path):
    config = mm.load_config(_warm_config(tmp_path, sample=0))
    mm.run(config)
    out = _training(_warm_config(tmp_path, sample=0))
    assert (out["n_trials"] == 6).all() and not out["tuning"].str.contains("warm-started", na=False).any()


def test_a_pooled_group_exports_to_onnx_as_its_pool_with_its_own_calibration(pooled_run):
    from pathlib import Path

    from .conftest import require_module

    require_module("onnx", "onnx")
    require_module("onnxruntime", "onnx")
    config = mm.load_config(pooled_run)
    result = mm.export(config)
    index = pd.read_csv(Path(config.datastore) / "exports" / "onnx" / "index.csv")
    pooled = index[index["model"].str.startswith("pooled_")]
    assert len(pooled) >= 30 and (pooled["status"] == "onnx").all(), pooled[["status", "note"]].head()
    assert (pooled["max_relative_diff"] <= 1e-5).all() and result.failed == 0
    document = json.loads((Path(result.output) / pooled.iloc[0]["metadata_file"]).read_text())
    assert document["model"]["pool"]["version"] >= 1 and document["series"]["columns"]  # the pool's series
    assert "series" in [i["name"] for i in document["inputs"]]


def test_a_pool_that_cannot_be_fitted_leaves_its_members_their_local_models(tmp_path, capsys):
    path = pooled_config(tmp_path, shared_price_response())
    config = mm.load_config(path)
    mm.split(config)
    store = Datastore(config.datastore)
    groups = store.read_split_groups().set_index("label")
    broken = groups.loc["Store=0,Brand=a", "key"]
    store.partition_path("train", broken).unlink()  # a member's partition gone: its pools cannot be read
    result = mm.train(config)
    assert result.failed == 1 and result.failures[0]["reason"] == "partition_missing"
    failed = sorted(f["pool"] for f in result.pooling["failed"])
    assert failed == ["pooled_Brand (Brand=a)", "pooled_all (all series)"]
    assert "pooled model pooled_all (all series) failed, its members keep their local candidates" in capsys.readouterr().err
    out = _training(path)
    trained = out[out["status"] == "trained"]
    assert len(trained) == 35
    assert not trained["model"].eq("pooled_all").any()  # nobody uses a pool that was not fitted
    assert not trained[trained["Brand"] == "a"]["model"].eq("pooled_Brand").any()
    assert trained[trained["Brand"] != "a"]["model"].eq("pooled_Brand").any()  # brands b and c still pool


def test_a_member_whose_series_ends_early_is_not_scored_on_the_pool(tmp_path):
    frame = shared_price_response()
    weeks = sorted(frame["WeekStarting"].unique())
    early = (frame["Store"] == 5) & (frame["Brand"] == "c") & frame["WeekStarting"].isin(weeks[20:24])
    frame.loc[early, "Quantity"] = np.nan  # its last 4 weeks of actuals are missing
    config = pooled_config(tmp_path, frame)
    mm.run(mm.load_config(config))
    out = _training(config).set_index(["Store", "Brand"])
    row = out.loc[(5, "c")]
    assert row["status"] == "trained" and not str(row["model"]).startswith("pooled_")
    assert "pooled_all: the pool has no backtest fold with this group's cutoff" in row["dropped_candidates"]
    assert out.drop(index=(5, "c"))["model"].str.startswith("pooled_").sum() >= 30  # the others are unaffected


def test_pool_versions_no_row_points_to_are_removed_beyond_keep_versions(pooled_run):
    config = mm.load_config(pooled_run).with_overrides(["registry.keep_versions=1"])
    store = Datastore(config.datastore)
    pools = _pool_dirs(store)
    assert all(store.pool_versions(p) == [1] for p in pools)
    shared_price_response(weeks=25).to_csv(config.data.path, index=False)  # a new week for every group
    result = mm.run(config)
    assert result.exit_code == 0 and result.train.trained == 36
    assert all(store.pool_versions(p) == [2] for p in pools)  # every row points to v2 now: v1 goes
    out = _training(pooled_run)
    assert set(out.loc[out["model"].str.startswith("pooled_"), "tuning"].str.extract(r" v(\d+);")[0]) == {"2"}


def test_a_pooled_forecast_is_the_pools_own_prediction_of_that_series(pooled_run):
    """The group's forecast equals the pool model predicting the same rows inside the whole pool
    (same series code, same features), times the group's calibration: no mix-up of series."""
    from manymodels.core.kernels import group_data
    from manymodels.core.models import predict
    from manymodels.runner.tasks import pooled_model

    config = mm.load_config(pooled_run)
    store = Datastore(config.datastore)
    spec = group_spec(config, store.read_split_manifest())
    out = _training(pooled_run)
    groups = store.read_split_groups().set_index("label")
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    for row in out[out["model"] == "pooled_all"].head(3).itertuples():
        key = groups.loc[f"Store={row.Store},Brand={row.Brand}", "key"]
        meta, fitted = pooled_model(store, store.read_model_meta(key, int(row.model_version)))
        level = tuple(meta["pool"]["level"])
        history = pd.concat([store.read_partition("train", k) for k in groups["key"]], ignore_index=True)
        future = store.read_partition("inference", key)
        frame = pooling.with_statics(pd.concat([history, future], ignore_index=True), level, spec.group_columns)
        y = np.concatenate([history["Quantity"].to_numpy(float), np.full(len(future), np.nan)])
        data = group_data(frame, pooling.pool_spec(spec, level), meta["info"], y)
        known = np.arange(len(frame)) < len(history)
        direct = predict(fitted, data, known, np.arange(len(history), len(frame))) * meta["calibration"]["factor"]
        mine = forecast[(forecast["Store"] == row.Store) & (forecast["Brand"] == row.Brand)].sort_values("WeekStarting")
        np.testing.assert_allclose(mine["Prediction"].to_numpy(), direct, rtol=1e-9)


# -- the blend: a group's local model averaged with its pools -----------------------


def _blend_one_group(path) -> tuple[Datastore, str, dict]:
    """Turn one searched group's record into its blend, as the step's choice does when the blend
    wins (on these data the pools alone win: the blend's forecast path is what is checked)."""
    from manymodels.core.results import TrainRow
    from manymodels.steps import pools as pool_step

    config = mm.load_config(path)
    store = Datastore(config.datastore)
    out = _training(path)
    row = out[out["model"] == "pooled_all"].iloc[0]
    key = store.read_split_groups().set_index("label").loc[f"Store={row['Store']},Brand={row['Brand']}", "key"]
    version = int(row["model_version"])
    meta = store.read_model_meta(key, version)
    assert pooling.BLEND in meta["tuning"]["pooled"]  # every searched member is scored on its blend
    local = {**meta, "kind": meta["local"]["kind"]}
    # the record before the switch to the pool: refit the local model the blend keeps
    from manymodels.runner import tasks

    stored = dict(meta["tuning"])
    stored.pop("pooled_choice")
    spec = group_spec(config, store.read_split_manifest())
    from manymodels.core.kernels import fit_group

    frame = store.read_partition("train", key)
    result = fit_group(frame, spec, stored={**stored, "winner": local["kind"]}, tune=False)
    local_meta = {**result["meta"], **{k: meta[k] for k in ("group", "key", "version", "run_id", "fingerprint", "parts", "created", "pools")}}
    store.write_model(key, version, local_meta, result["model_text"])
    trow = TrainRow(key=key, values=[int(row["Store"]), row["Brand"]], label=f"Store={row['Store']},Brand={row['Brand']}", status=tasks.Status.TRAINED, model=local["kind"], model_version=version)
    pool_step._switch_to_blend(store, trow, {**local_meta, "tuning": meta["tuning"]}, pooling.BLEND, "test")
    return store, key, store.read_model_meta(key, version)


def test_a_blend_forecasts_the_average_of_its_local_model_and_its_pools(pooled_run):
    from manymodels.core.kernels import forecast_fitted, model_view
    from manymodels.core.models import average
    from manymodels.runner.tasks import load_model, pooled_model

    config = mm.load_config(pooled_run)
    store, key, meta = _blend_one_group(pooled_run)
    assert meta["kind"] == pooling.BLEND and set(meta["blend"]["pools"]) == set(meta["tuning"]["pooled"][pooling.BLEND]["members"])
    assert store.has_model(key, meta["version"], booster=True) == (meta["state"]["local"]["kind"] in ("lightgbm", "ensemble"))
    spec = group_spec(config, store.read_split_manifest())
    history, future = store.read_partition("train", key), store.read_partition("inference", key)
    _, fitted = load_model(store, key, meta["version"])
    points = []
    local = pooling.local_part(meta)
    points.append(forecast_fitted(history, future, local, fitted.parts[0][1], spec)[:, 0])
    for name, ref in meta["blend"]["pools"].items():
        pmeta, pfit = pooled_model(store, {**meta, "pool_ref": ref, "calibration": {"factor": meta["blend"]["calibration"][name]}})
        pspec, ph, pf = model_view(pmeta, spec, history, future)
        points.append(forecast_fitted(ph, pf, pmeta, pfit, pspec)[:, 0])
    expected = average(points, meta["state"]["transform"])
    assert len(points) == 1 + len(meta["blend"]["pools"]) >= 3
    done = mm.forecast(config.model_copy(update={"allow_reuse": False}))  # the record changed under the same version
    assert done.failed == 0, done
    forecast = pd.read_csv(store.output_path("forecasting_output.csv"))
    group = meta["group"]
    mine = forecast[(forecast["Store"].astype(str) == str(group["Store"])) & (forecast["Brand"] == group["Brand"])].sort_values("WeekStarting")
    np.testing.assert_allclose(mine["Prediction"].to_numpy(), expected, rtol=1e-9)
    assert not np.allclose(points[0], points[1])  # the parts differ: the average is not one of them
    assert (mine["Prediction_q10"] <= mine["Prediction"]).all() and (mine["Prediction"] <= mine["Prediction_q90"]).all()
    # mm serve reads a model the same way (tasks.load_model, kernels.checked_forecast): the same numbers
    from manymodels.core.kernels import checked_forecast

    served = checked_forecast(history, future, meta, fitted, spec, config.forecast.cap_factor).matrix[:, 0]
    np.testing.assert_allclose(np.sort(served), np.sort(expected), rtol=1e-9)


def test_a_blend_is_named_as_not_exportable_to_onnx(pooled_run):
    from .conftest import require_module

    require_module("onnx", "onnx")
    config = mm.load_config(pooled_run)
    _, key, _ = _blend_one_group(pooled_run)
    result = mm.export(config)
    index = pd.read_csv(Path(config.datastore) / "exports" / "onnx" / "index.csv").set_index("key")
    assert index.loc[key, "status"] == "failed" and "train.automl.pooling.blend: false" in index.loc[key, "note"]
    assert (index.drop(index=key)["status"] == "onnx").sum() >= 30 and result.failed == 1  # the others export


def test_a_nightly_refit_keeps_a_blend_with_its_pools_new_versions(pooled_run):
    config = mm.load_config(pooled_run)
    store, key, meta = _blend_one_group(pooled_run)
    before = {name: ref["version"] for name, ref in meta["blend"]["pools"].items()}
    shared_price_response(weeks=26, seed=0).to_csv(config.data.path, index=False)
    result = mm.run(config)
    assert result.forecast.failed == 0
    out = _training(pooled_run)
    group = meta["group"]
    row = out[(out["Store"].astype(str) == str(group["Store"])) & (out["Brand"] == group["Brand"])].iloc[0]
    assert row["model"] == pooling.BLEND and row["status"] == "trained", {k: v for k, v in row.to_dict().items() if k in ("tuning", "note", "n_trials", "candidate_errors", "pool")}
    newest = store.read_model_meta(key, int(row["model_version"]))
    assert all(newest["blend"]["pools"][name]["version"] > v for name, v in before.items())
    assert all(f"{r['label']} v{r['version']}" in row["tuning"] for r in newest["blend"]["pools"].values())
    for ref in newest["blend"]["pools"].values():  # the pool versions it points to are kept
        assert ref["version"] in store.pool_versions(ref["pool"])


def test_the_default_config_scores_every_group_of_the_sample_on_its_pools(sample_run):
    """Pooling is on by default (levels auto): the README's sample run (10 stores x 3 brands, 30 groups,
    min_groups 30) fits the one pool big enough, over all series, and scores the groups on it and
    on the blend; the per-brand (10 groups) and per-store (3) pools are too small to be fitted."""
    config, run = sample_run
    assert config.train.automl.pooling.levels == "auto" and config.train.automl.pooling.n_trials == 0
    assert run.train.pooling["fitted"] == 1 and run.train.pooling["too_small"] == 13 and not run.train.pooling["failed"]
    out = pd.read_csv(run.train.output)
    # a series that ends before the others (the sample has one) has other backtest cutoffs than
    # the pool's folds: it is not scored on the pool, and says so
    unscored = out["score_pooled_all"].isna() | out[f"score_{pooling.BLEND}"].isna()
    assert len(out) == 30 and unscored.sum() <= 3, out.loc[unscored, ["Store", "Brand", "dropped_candidates"]].to_string()
    assert out.loc[unscored, "dropped_candidates"].str.contains("pooled_all: the pool has no backtest fold with this group's cutoff").all()
    verdicts = run.train.pooling["verdicts"]
    assert len(verdicts) == 2 and pooling.BLEND in verdicts, verdicts  # the global pool's and the blend's
    assert all(v["blocks"] > 0 for v in verdicts.values()), verdicts
