"""Metrics that survive zeros (intermittent demand): what each metric cannot score is counted
and said, the selection falls back to a metric that can score a group, and `mm run` says it all."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.core import automl
from manymodels.core.kernels import fit_group
from manymodels.core.metrics import (
    both_zero,
    history_scale,
    mase_scale,
    scores,
    unscored,
)

from .conftest import chromium_page, run_cli, small_config
from .test_kernels import spec_for, weekly_group
from .test_report import embedded

# -- the metrics at zero -----------------------------------------------------------------


def test_all_zero_actuals_leave_mape_and_wape_undefined_and_counted():
    actual, forecast = np.zeros(6), np.array([0.0, 1.0, 2.0, 0.0, 3.0, 0.5])
    s = scores(actual, forecast, mase_scale=2.0)
    assert math.isnan(s["mape"]) and math.isnan(s["wape"])  # nothing to divide by
    assert s["smape"] == pytest.approx(100.0 * 4 / 6 * 2)  # 200% on each of the 4 rows with a forecast, 0 on the 2 exact ones
    assert s["mase"] == pytest.approx(np.mean(forecast) / 2.0) and s["rmse"] > 0  # zero-safe: MAE over the scale
    assert unscored(actual, forecast, 2.0) == {"mape": 6, "smape": 0, "wape": 6, "rmse": 0, "mase": 0}
    assert both_zero(actual, forecast) == 2


def test_all_zero_actual_and_forecast_is_an_exact_forecast_for_smape():
    zeros = np.zeros(5)
    s = scores(zeros, zeros, mase_scale=1.0)
    assert s["smape"] == 0.0 and s["rmse"] == 0.0 and s["mase"] == 0.0  # 0/0 rows count as 0 error
    assert math.isnan(s["mape"]) and math.isnan(s["wape"])
    assert unscored(zeros, zeros, 1.0) == {"mape": 5, "smape": 0, "wape": 5, "rmse": 0, "mase": 0}
    assert both_zero(zeros, zeros) == 5


def test_a_constant_history_has_no_mase_scale():
    constant = np.full((2, 30), 4.0)
    assert mase_scale(constant, 52) == 0.0  # every seasonal (here lag-1) difference is 0
    s = scores(np.array([4.0, 5.0]), np.array([4.0, 4.0]), mase_scale(constant, 52))
    assert math.isnan(s["mase"]) and s["wape"] == pytest.approx(100 / 9)
    assert unscored(np.array([4.0, 5.0]), np.array([4.0, 4.0]), 0.0)["mase"] == 2
    assert unscored(np.array([4.0, 5.0]), np.array([4.0, 4.0]), None)["mase"] == 2  # no scale at all (one period)
    assert mase_scale(np.full((1, 1), 4.0), 52) is None


def test_partly_zero_actuals_score_mape_on_the_nonzero_rows_only():
    actual, forecast = np.array([0.0, 0.0, 10.0, np.nan]), np.array([5.0, 0.0, 8.0, 1.0])
    s = scores(actual, forecast)
    assert s["mape"] == pytest.approx(20.0) and s["wape"] == pytest.approx(70.0)  # (5 + 0 + 2) / 10
    assert unscored(actual, forecast) == {"mape": 2, "smape": 0, "wape": 0, "rmse": 0, "mase": 3}  # the NaN row is no row


def test_the_forecast_reads_the_same_scale_as_the_backtest():
    """history_scale (rows, as mm forecast has them) equals mase_scale of the fit's grid."""
    rng = np.random.default_rng(0)
    grid = rng.poisson(1.0, size=(3, 60)).astype(float)
    grid[1, 10:14] = np.nan  # a gap
    series, period = np.nonzero(~np.isnan(grid))
    values = grid[series, period]
    for season in (None, 4, 52):
        assert history_scale(series, period + 100, values, season) == pytest.approx(mase_scale(grid, season))
    assert history_scale(np.empty(0, int), np.empty(0, int), np.empty(0), 52) is None


# -- choosing when the metric cannot score a group ------------------------------------------


@pytest.mark.parametrize(
    "metric, actual, scale, expected",
    [
        ("mape", [1.0, 2.0, 0.0, 3.0], 1.0, "mape"),  # 3 of 4 rows scored: enough
        ("mape", [0.0, 0.0, 0.0, 3.0], 1.0, "wape"),  # mostly zeros: MAPE would ignore most of the backtest
        ("mape", [0.0, 0.0, 0.0, 0.0], 1.0, "mase"),  # all zeros: WAPE cannot either, MASE can
        ("wape", [0.0, 0.0, 0.0, 0.0], 0.0, "rmse"),  # and a constant (never sold) history: RMSE
        ("mase", [2.0, 2.0], 0.0, "wape"),
        ("smape", [0.0, 0.0], 0.0, "smape"),  # sMAPE scores every row (0/0 is exact)
        ("wape", [], None, "wape"),  # no backtest: nothing to fall back on
    ],
)
def test_selection_metric_falls_back_to_one_that_can_score_the_backtest(metric, actual, scale, expected):
    chosen, note = automl.selection_metric(metric, np.asarray(actual, dtype=float), scale)
    assert chosen == expected
    assert (note == "") == (expected == metric)
    if note:
        assert note.startswith(f"{metric} could score") and f"by {expected} instead" in note


def intermittent_group(n_weeks=80, share=0.1, seed=3, zero_tail=0):
    """weekly_group's shape with mostly-zero demand; the last ``zero_tail`` weeks sold nothing."""
    history, future = weekly_group(n_weeks=n_weeks, seed=seed)
    rng = np.random.default_rng(seed)
    sold = rng.random(len(history)) < share
    history["y"] = np.where(sold, rng.poisson(3, len(history)) + 1, 0).astype(float)
    history.loc[history.index[len(history) - zero_tail :], "y"] = 0.0
    return history, future


@pytest.mark.parametrize("metric", ["mape", "wape"])
def test_a_group_whose_backtest_actuals_are_all_zero_is_chosen_by_a_metric_that_can_score_it(metric):
    """Before: every candidate scored inf and the first of a fixed preference list won, silently."""
    history, _ = intermittent_group(zero_tail=12)  # the 3 backtest folds of 4 weeks sold nothing
    auto = {"enabled": True, "candidates": ["naive", "mean", "moving_average", "linear"], "n_trials": 0, "folds": 3, "metric": metric, "evidence": 0.0}
    result = fit_group(history, spec_for(automl=auto))
    assert result["status"] == "trained", result
    assert result["selection_metric"] == "mase" and result["meta"]["calibration"]["metric"] == "mase"
    assert all(math.isfinite(v) for v in result["scores"].values())
    assert result["model"] == min(result["scores"], key=result["scores"].get)  # evidence 0: the best MASE wins
    assert f"{metric} could score 0 of the 12 backtest rows" in result["note"] and "by mase instead" in result["note"]
    assert result["n_backtest"] == 12 and result["unscored"]["mape"] == result["unscored"]["wape"] == 12 and result["unscored"]["mase"] == 0


def test_a_scored_group_keeps_its_metric_and_counts_what_mape_skipped():
    history, _ = intermittent_group(share=0.7)
    auto = {"enabled": True, "candidates": ["naive", "mean"], "n_trials": 0, "folds": 2, "metric": "mape"}
    result = fit_group(history, spec_for(automl=auto))
    zeros = int((history["y"].to_numpy()[-8:] == 0).sum())
    assert result["selection_metric"] == "mape" and "instead" not in result["note"]
    assert result["n_backtest"] == 8 and result["unscored"]["mape"] == zeros and result["unscored"]["wape"] == 0


# -- mm run on intermittent data -------------------------------------------------------------


def spare_parts(folder: Path) -> Path:
    """5 weekly series of spare parts: three sell in 1 week of 7, one never sells, one sells 3 a week."""
    rng = np.random.default_rng(5)
    rows = []
    for g in ("p1", "p2", "p3", "never", "steady"):
        for w in range(60):
            y = 0.0 if g == "never" else 3.0 if g == "steady" else float(rng.poisson(4) + 1) * (rng.random() < 0.15)
            rows.append({"g": g, "t": (pd.Timestamp("2021-01-07") + pd.Timedelta(weeks=w)).strftime("%Y-%m-%d"), "y": y, "price": round(float(rng.uniform(1, 3)), 2)})
    path = folder / "spares.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return small_config(folder, str(path), split={"holdout": 8}, train={"horizon": 8, "min_history": 10, "automl": {"enabled": True, "n_trials": 2, "folds": 2, "metric": "mape"}})


@pytest.fixture(scope="module")
def intermittent_run(tmp_path_factory):
    """``mm run --json`` on the spare parts, the last 8 weeks held out: (folder, config, the JSON result)."""
    folder = tmp_path_factory.mktemp("spares")
    config = spare_parts(folder)
    done = run_cli("run", "-c", str(config), "--json")
    assert done.returncode == 0, done.stderr
    return folder, config, json.loads(done.stdout)


def test_mm_run_on_intermittent_data_names_the_rows_each_metric_could_not_score(intermittent_run):
    folder, config, result = intermittent_run
    train, forecast = result["train"], result["forecast"]
    training = pd.read_csv(folder / "store" / "outputs" / "training_output.csv").set_index("g")
    actual = pd.read_csv(folder / "store" / "outputs" / "forecasting_output.csv")

    # the forecast: zero-safe metrics are finite, and every unscored row is counted with its reason
    accuracy, missed = forecast["accuracy"], forecast["unscored"]
    n = accuracy["n_rows"]
    assert n == 40 and math.isfinite(accuracy["wape"]) and math.isfinite(accuracy["mase"])
    zeros = int((actual["y"] == 0).sum())
    assert zeros > n / 2 and missed["mape"]["rows"] == zeros  # MAPE: undefined at actual 0
    assert missed["mase"]["rows"] == 16  # "never" and "steady" have a constant history: no scale
    assert missed["wape"] == {"rows": 0, "groups": int(actual.groupby("g")["y"].sum().eq(0).sum())}
    assert accuracy["n_both_zero"] == int(((actual["y"] == 0) & (actual["Prediction"] == 0)).sum())
    assert missed["smape"]["rows"] == missed["rmse"]["rows"] == 0
    record = json.loads((folder / "store" / "runs" / f"{forecast['run_id']}.json").read_text())
    assert record["unscored"] == missed and record["accuracy"] == accuracy

    # the backtest: per group in training_output.csv, summed in the result; mape fell back where it had to
    assert training.loc["never", "n_unscored_mape"] == training.loc["never", "n_backtest"] == 16
    assert training.loc["never", "n_unscored_mase"] == training.loc["steady", "n_unscored_mase"] == 16
    assert train["unscored"]["mape"]["rows"] == training["n_unscored_mape"].sum() and train["backtest_rows"] == 80
    assert training.loc["steady", "selection_metric"] == "mape"
    fell_back = training[training["selection_metric"] != "mape"]
    assert len(fell_back) >= 1 and fell_back["tuning"].str.contains("chosen and calibrated by").all()
    assert sum(train["metric_fallbacks"].values()) == len(fell_back)
    score_columns = [c for c in training.columns if c.startswith("score_")]
    assert np.isfinite(training[score_columns].to_numpy(dtype=float)[~training[score_columns].isna().to_numpy()]).all()
    record = json.loads((folder / "store" / "runs" / f"{train['run_id']}.json").read_text())
    assert record["backtest"]["unscored"] == train["unscored"] and record["backtest"]["rows"] == 80


def test_the_console_leads_with_the_zero_safe_metrics_and_says_what_each_skipped(intermittent_run):
    folder, config, result = intermittent_run
    n, zeros = result["forecast"]["accuracy"]["n_rows"], result["forecast"]["unscored"]["mape"]["rows"]
    again = run_cli("run", "-c", str(config))  # everything reused: measured again from the files
    assert again.returncode == 0, again.stderr
    heads = [line.split()[0] for line in again.stdout.splitlines() if line.startswith("  ") and line.split()[0] in ("WAPE", "MASE", "sMAPE", "MAPE")]
    assert heads == ["WAPE", "MASE", "sMAPE", "MAPE"]
    assert f"({n - zeros} of {n} rows scored; {zeros} have actual 0: MAPE is undefined there, see WAPE)" in again.stdout
    assert f"({n - 16} of {n} rows scored; 16 are in groups with no MASE scale (a constant history))" in again.stdout
    assert "group(s) whose actuals are all 0 have no WAPE and are not ranked" in again.stdout
    backtest = result["train"]["unscored"]
    assert f"MAPE {backtest['mape']['rows']} of 80 backtest rows (actual 0)" in again.stdout
    assert "metric fallback" in again.stdout and "could not score most of their backtest" in again.stdout


def test_the_report_shows_each_metric_s_coverage(intermittent_run):
    folder, config, result = intermittent_run
    page = mm.report(load_config(config), output=folder / "report.html")
    data, _ = embedded(Path(page.path).read_text(encoding="utf-8"))
    summary, groups = data["summary"], data["groups"]
    assert summary["forecast"]["unscored"] == {m: u["rows"] for m, u in result["forecast"]["unscored"].items()}
    assert summary["train"]["unscored"] == {m: result["train"]["unscored"][m]["rows"] for m in ("mape", "wape", "mase")}
    assert summary["train"]["backtest_rows"] == 80 and summary["train"]["n_models"] == 5
    assert [m["key"] for m in data["metrics"]][:4] == ["wape", "wape", "mase", "mase"]  # zero-safe first
    never = groups["label"].index("g=never")
    assert groups["bt_miss"]["mape"][never] == groups["bt_n"][never] == 16 and groups["fc_miss"]["mase"][never] == 8

    with chromium_page() as browser:
        errors = []
        browser.on("pageerror", lambda e: errors.append(str(e)))
        browser.goto(Path(page.path).as_uri())
        browser.wait_for_selector("body[data-ready='1']", timeout=30_000)
        n, zeros = result["forecast"]["accuracy"]["n_rows"], result["forecast"]["unscored"]["mape"]["rows"]
        assert f"({n - zeros} of {n} rows scored; {zeros} have actual 0)" in browser.text_content("#card-forecast")
        assert "backtest rows have actual 0" in browser.text_content("#card-train")
        browser.select_option("#dist-metric", "fc_mape")
        assert f"It could not score {zeros} of the {n} rows with actuals" in browser.text_content("#dist-note")
        assert browser.locator("#worst thead th", has_text="rows scored").count() == 1
        assert errors == []
