"""mm export --format onnx: real onnxruntime against real LightGBM and mm's own forecasts."""

import json
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core.automl import apply_residual
from manymodels.core.features import design_matrix
from manymodels.core.kernels import group_data
from manymodels.core.models import Fitted, forward, predict_lightgbm
from manymodels.errors import MMError
from manymodels.extras.export import linear_inputs
from manymodels.steps.train import group_spec
from manymodels.store.datastore import Datastore

from .conftest import require_module, run_cli, write_config


@pytest.fixture
def ort():
    require_module("onnx", "onnx")
    return require_module("onnxruntime", "onnx")


def session(ort, path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def load_group(store: Datastore, spec, key: str, meta: dict, with_future: bool = False):
    """The group's rows as mm models them (history, plus its inference rows when asked)."""
    history = store.read_partition("train", key)
    frames = [history, store.read_partition("inference", key)] if with_future else [history]
    frame = pd.concat(frames, ignore_index=True)
    y = np.concatenate([history[spec.target_column].to_numpy(dtype=np.float64), np.full(len(frame) - len(history), np.nan)])
    return frame, group_data(frame, spec, meta["info"], y), len(history)


class OnnxBooster:
    """Stands in for lgb.Booster inside mm's recursive forecast: every step is scored by onnxruntime."""

    def __init__(self, sess):
        self.sess = sess

    def predict(self, X, num_iteration=None, num_threads=None):
        return self.sess.run(["raw"], {"features": X})[0].ravel()


def test_onnx_export_of_the_sample_run_equals_lightgbm_and_mm_forecasts(sample_run, tmp_path: Path, ort):
    config, run = sample_run
    result = mm.export(config, output=tmp_path / "onnx")
    assert result.exit_code == 0 and result.failed == 0
    assert result.onnx == 30 and result.verified == 30 and result.models == run.train.winners
    assert {"ensemble", "linear"} <= set(result.models)  # the exportable kinds the sample run picks
    assert set(result.models) <= {"ensemble", "linear", "lightgbm"}
    index = pd.read_csv(tmp_path / "onnx" / "index.csv")
    assert len(index) == 30 and (index["status"] == "onnx").all()

    store = Datastore(config.datastore)
    spec = group_spec(config, store.read_split_manifest())
    forecasts = pd.read_csv(run.forecast.output)
    for row in index.itertuples():
        meta = store.read_model_meta(row.key, row.model_version)
        document = json.loads((tmp_path / "onnx" / row.metadata_file).read_text())
        assert document["group"] == {"Store": str(row.Store), "Brand": row.Brand} and document["model"]["kind"] == row.model
        sess = session(ort, tmp_path / "onnx" / row.file)
        props = sess.get_modelmeta().custom_metadata_map
        assert json.loads(props["mm.inputs"]) == [i["name"] for i in document["inputs"]]
        expected = forecasts[(forecasts["Store"] == row.Store) & (forecasts["Brand"] == row.Brand)].sort_values("WeekStarting")
        frame, data, n_hist = load_group(store, spec, row.key, meta, with_future=True)
        future = np.arange(n_hist, len(frame))
        if row.model == "lightgbm":
            # one step: the booster's own output on the training feature rows, within 1e-5
            hist = np.flatnonzero(~np.isnan(data.panel.y))
            grid = data.grid(~np.isnan(data.panel.y), forward(data.panel.y, meta["state"]["transform"]))
            X = design_matrix(data.panel, hist, grid, data.first, data.spec, data.with_series)
            assert len(document["inputs"]) == X.shape[1]
            booster = lgb.Booster(model_str=store.read_model_text(row.key, row.model_version))
            want = booster.predict(X, num_iteration=meta["state"]["num_boost_round"])
            got = sess.run(None, {"features": X})
            np.testing.assert_allclose(got[0].ravel(), want, rtol=0, atol=1e-5)
            point = got[1].ravel()
            for k, q in enumerate(document["quantiles"], start=2):  # interval outputs follow mm's residual rule
                np.testing.assert_allclose(got[k].ravel(), np.maximum(apply_residual(point, q["shift"], "log1p"), 0), rtol=1e-6)
            # the whole recursive forecast, every step scored by onnxruntime, equals mm's forecast
            known = np.zeros(len(frame), dtype=bool)
            known[:n_hist] = True
            fitted = Fitted("lightgbm", meta["state"], OnnxBooster(sess))
            recursive = predict_lightgbm(fitted, data, known, future)
            order = np.argsort(frame[spec.time_column].to_numpy()[future], kind="stable")
            np.testing.assert_allclose(recursive[order], expected["Prediction"].to_numpy(), rtol=1e-5)
        elif row.model == "ensemble":
            members = {m["kind"]: m["state"] for m in meta["state"]["members"]}
            lgb_transform = members["lightgbm"]["transform"]
            hist = np.flatnonzero(~np.isnan(data.panel.y))
            grid = data.grid(~np.isnan(data.panel.y), forward(data.panel.y, lgb_transform))
            X = design_matrix(data.panel, hist, grid, data.first, data.spec, data.with_series)
            booster = lgb.Booster(model_str=store.read_model_text(row.key, row.model_version))
            got = sess.run(["raw"], {"features": X, "inputs": linear_inputs(data, hist)})[0].ravel()
            # within 1e-5: absolute for log-space outputs, relative for outputs in units (float32 tree sums)
            np.testing.assert_allclose(got, booster.predict(X, num_iteration=members["lightgbm"]["num_boost_round"]), rtol=1e-5, atol=1e-5)
            # a database's procedure: one call per period, lags read the earlier periods' 'raw'
            known = np.zeros(len(frame), dtype=bool)
            known[:n_hist] = True
            grid = data.grid(known, forward(data.panel.y, lgb_transform))
            outputs = {name: np.empty(len(future)) for name in ["Prediction", "Prediction_q10", "Prediction_q50", "Prediction_q90"]}
            periods = data.panel.period[future]
            for p in np.unique(periods):
                at = np.flatnonzero(periods == p)
                idx = future[at]
                step = sess.run(["raw", "prediction", "prediction_q10", "prediction_q50", "prediction_q90"], {
                    "features": design_matrix(data.panel, idx, grid, data.first, data.spec, data.with_series),
                    "inputs": linear_inputs(data, idx),
                })
                grid[data.panel.series[idx], p - data.first] = step[0].ravel()
                for name, values in zip(outputs, step[1:]):
                    outputs[name][at] = values.ravel()
            order = np.argsort(frame[spec.time_column].to_numpy()[future], kind="stable")
            for name, values in outputs.items():
                np.testing.assert_allclose(values[order], expected[name].to_numpy(), rtol=1e-5, err_msg=name)
        else:
            # linear: each future row scored alone; point and interval equal forecasting_output.csv
            got = sess.run(None, {"inputs": linear_inputs(data, future)})
            order = np.argsort(frame[spec.time_column].to_numpy()[future], kind="stable")
            for k, column in enumerate(["Prediction", "Prediction_q10", "Prediction_q50", "Prediction_q90"], start=1):
                np.testing.assert_allclose(got[k].ravel()[order], expected[column].to_numpy(), rtol=1e-9, err_msg=column)


def test_categorical_splits_missing_and_unseen_values(tmp_path: Path, ort):
    """Per-store models over 10 brands (a 'series' code feature) and a text promotion column."""
    frame = mm.generate_oj_sales(stores=2, brands=10, weeks=80, future_weeks=4, seed=3)
    rng = np.random.default_rng(3)
    frame["Promo"] = rng.choice(["none", "tv", "flyer", "display"], len(frame))
    frame.loc[frame["Promo"] == "tv", "Quantity"] *= 1.8
    path = tmp_path / "sales.parquet"
    frame.to_parquet(path)
    config = load_config(write_config(
        tmp_path, str(path), data={"group_columns": ["Store"], "series_columns": ["Store", "Brand"], "known_future_columns": ["Price", "Advert", "Promo"]},
        train={"num_boost_round": 60, "params": {"max_cat_to_onehot": 4, "min_data_per_group": 5, "cat_smooth": 1.0}},
    ))
    assert mm.run(config).exit_code == 0
    result = mm.export(config, output=tmp_path / "onnx")
    assert result.onnx == 2 and result.failed == 0

    store = Datastore(config.datastore)
    spec = group_spec(config, store.read_split_manifest())
    index = pd.read_csv(tmp_path / "onnx" / "index.csv")
    set_splits = 0
    for row in index.itertuples():
        meta = store.read_model_meta(row.key, row.model_version)
        document = json.loads((tmp_path / "onnx" / row.metadata_file).read_text())
        names = [i["name"] for i in document["inputs"]]
        assert names[-1] == "series" and "Promo" in names and len(document["series"]["codes"]) == 10
        assert document["categories"]["Promo"] == ["display", "flyer", "none", "tv"]
        booster = lgb.Booster(model_str=store.read_model_text(row.key, row.model_version))
        set_splits += json.dumps(booster.dump_model()).count("||")  # splits on a set of categories: chains of equality tests
        _, data, _ = load_group(store, spec, row.key, meta)
        rows = np.flatnonzero(~np.isnan(data.panel.y))
        grid = data.grid(~np.isnan(data.panel.y), forward(data.panel.y, meta["state"]["transform"]))
        X = design_matrix(data.panel, rows, grid, data.first, data.spec, data.with_series)
        # edge rows: unknown lags, missing and unseen categories, negative codes, zeros
        edge = np.repeat(X[:40], 5, axis=0)
        promo, series = names.index("Promo"), names.index("series")
        edge[0::5, :4] = np.nan
        edge[1::5, promo] = np.nan
        edge[2::5, series] = 37.0
        edge[3::5, promo] = -1.0
        edge[4::5, :] = 0.0
        X = np.vstack([X, edge])
        want = booster.predict(X, num_iteration=meta["state"]["num_boost_round"])
        got = session(ort, tmp_path / "onnx" / row.file).run(["raw"], {"features": X})[0].ravel()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert set_splits > 0, "the models should contain many-category splits"


def test_baseline_winners_get_metadata_only_and_failed_groups_are_listed(tmp_path: Path, oj_frame: pd.DataFrame, ort):
    frame = oj_frame[~((oj_frame["Store"] == 1000) & (oj_frame["Brand"] == "dominicks") & (oj_frame["WeekStarting"] < "1991-07-01"))]
    path = tmp_path / "sales.parquet"
    frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path), train={"min_history": 20, "automl": {"enabled": True, "candidates": ["naive", "mean"], "folds": 1}}))
    assert mm.run(config).exit_code == 3
    result = mm.export(config)
    out = Path(config.datastore) / "exports" / "onnx"
    assert result.output == str(out)
    assert result.metadata_only == 5 and result.no_model == 1 and result.onnx == 0 and result.failed == 0
    index = pd.read_csv(out / "index.csv")
    assert sorted(index["status"]) == ["metadata_only"] * 5 + ["no_model"]
    assert not list(out.glob("*.onnx"))
    for row in index[index["status"] == "metadata_only"].itertuples():
        document = json.loads((out / row.metadata_file).read_text())
        assert document["inputs"] == [] and document["rule"] and document["model"]["kind"] in ("naive", "mean")
    failed = index[index["status"] == "no_model"].iloc[0]
    assert failed["reason"] == "too_short" and failed["label"] == "Store=1000,Brand=dominicks"


def test_export_replaces_its_own_output_only(tmp_path: Path, oj_csv: Path, ort):
    config = load_config(write_config(tmp_path, str(oj_csv), train={"num_boost_round": 10}))
    mm.run(config)
    out = tmp_path / "onnx"
    assert mm.export(config, output=out).onnx == 6
    assert len(list(out.glob("*.onnx"))) == 6
    again = mm.export(config, output=out, groups=["Store=1000"], verify=False)
    assert again.onnx == 2 and again.verified == 0 and again.max_relative_diff is None
    assert len(list(out.glob("*.onnx"))) == 2  # the previous export was replaced whole
    assert not list(tmp_path.glob(".tmp-*"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MMError, match="not an mm export"):
        mm.export(config, output=foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_export_errors_and_json(tmp_path: Path, oj_csv: Path, ort):
    config_path = write_config(tmp_path, str(oj_csv), train={"num_boost_round": 10})
    config = load_config(config_path)
    with pytest.raises(MMError, match="no finished train run"):
        mm.export(config)
    mm.run(config)
    done = run_cli("export", "-c", str(config_path), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["onnx"] == 6 and document["exit_code"] == 0 and document["max_relative_diff"] < 1e-5
    done = run_cli("export", "-c", str(config_path), "--format", "pmml")
    assert done.returncode == 1 and "--format 'pmml' is not supported" in done.stderr and "Traceback" not in done.stderr


def test_export_without_the_onnx_extra_says_what_to_install(tmp_path: Path, oj_csv: Path, monkeypatch):
    config = load_config(write_config(tmp_path, str(oj_csv)))
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    with pytest.raises(MMError, match="ONNX export needs the onnx package") as caught:
        mm.export(config)
    assert caught.value.hint == "pip install 'manymodels[onnx]'"
    assert not (tmp_path / "store").exists()  # refused before touching anything
