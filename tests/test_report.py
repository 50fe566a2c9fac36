"""mm report: a self-contained HTML page, checked in real headless Chromium."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.errors import UpstreamMissing

from .conftest import ARTIFACTS, chromium_page, run_cli, write_config


def embedded(page: str) -> tuple[dict, str]:
    """The page's data block and its per-group chart lines."""
    data = re.search(r'<script type="application/json" id="mm-data">(.*?)</script>', page, re.S).group(1)
    series = re.search(r'<script type="text/plain" id="mm-series">(.*?)</script>', page, re.S).group(1)
    return json.loads(data), series


def test_sample_report_renders_in_headless_chromium(sample_run, tmp_path: Path):
    config, run = sample_run
    result = mm.report(config, output=tmp_path / "report.html")
    assert result.n_groups == 30 and result.n_charts == 30 and result.n_failed == 0
    assert result.train_run_id == run.train.run_id and result.forecast_run_id == run.forecast.run_id
    page_path = Path(result.path)
    html = page_path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not load anything from the network"

    with chromium_page() as page:
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)

        # run summary, and plots actually drawn (non-empty SVG)
        assert "Train: completed" in page.text_content("#card-train")
        assert "Forecast: completed" in page.text_content("#card-forecast")
        assert page.locator("#dist-plot svg g.box rect").count() == 1
        box = page.locator("#dist-plot svg").bounding_box()
        assert box["width"] > 300 and box["height"] > 40
        assert page.locator("#time-hist svg rect").count() > 0
        assert page.locator("#model-bars svg rect").count() == len(run.train.winners)
        assert page.locator("#worst tbody tr").count() == 10 and page.locator("#best tbody tr").count() == 10

        # by model, as violins: one violin per model chosen
        page.select_option("#dist-by", "@model")
        page.select_option("#dist-style", "violin")
        assert page.locator("#dist-plot svg g.box").count() == len(run.train.winners)
        # a violin needs two values: a model chosen by one group gets its box (and median) only
        assert page.locator("#dist-plot svg g.box path").count() == sum(1 for n in run.train.winners.values() if n > 1)

        # search and select a group: its chart shows history, forecast, interval and actuals
        page.fill("#group-search", "store=1003 tropicana")
        page.wait_for_function("document.querySelectorAll('#group-list option').length === 1")
        page.select_option("#group-list", label="Store=1003,Brand=tropicana")
        page.wait_for_function("document.getElementById('group-title').textContent === 'Store=1003,Brand=tropicana'")
        for part in ("history", "forecast", "band", "actual"):
            d = page.get_attribute(f"#group-chart svg path.{part}", "d")
            assert d and d.startswith("M") and d.count("L") > 3, part
        assert "linear" in page.text_content("#group-facts") or "lightgbm" in page.text_content("#group-facts")
        assert page.evaluate("location.hash") == "#group=Store%3D1003%2CBrand%3Dtropicana"

        # a click in the worst table selects that group
        worst = page.text_content("#worst tbody tr:first-child td:first-child")
        page.click("#worst tbody tr:first-child")
        page.wait_for_function(f"document.getElementById('group-title').textContent === {json.dumps(worst)}")

        assert page.evaluate("document.getElementById('group-list').selectedIndex") == -1
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert errors == []
        assert set(requests) == {page_path.as_uri()}, "the page fetched something besides itself"

    # a link to one group opens on that group
    with chromium_page() as page:
        page.goto(page_path.as_uri() + "#group=" + "Store%3D1005%2CBrand%3Ddominicks")
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#group-title") == "Store=1005,Brand=dominicks"
        assert page.get_attribute("#group-chart svg path.history", "d")


def test_report_shows_drivers_importance_and_realised_accuracy(tmp_path: Path):
    """Two nightly rounds with forecast.explain: the drivers beside each group's chart, importance
    across groups, and realised accuracy over time, by step and per group, drawn in Chromium."""
    full = mm.generate_oj_sales(stores=2, brands=3, weeks=70, future_weeks=0, seed=5)
    week = (full["WeekStarting"] - full["WeekStarting"].min()).dt.days // 7
    path = tmp_path / "sales.parquet"
    config = load_config(write_config(tmp_path, str(path), train={"horizon": 4}, forecast={"explain": 3}))
    for known in (62, 65):  # the nightly extract: history up to the night, the next 4 weeks' plans
        night = full[week < known + 4].copy()
        night.loc[week[week < known + 4] >= known, "Quantity"] = None
        night.to_parquet(path)
        assert mm.run(config).exit_code == 0
    result = mm.report(config, output=tmp_path / "report.html")
    data, _ = embedded(Path(result.path).read_text(encoding="utf-8"))
    assert data["realised"]["n_rows"] == 6 * 3 and [s["step"] for s in data["realised"]["by_step"]] == [1, 2, 3]
    assert data["importance"] and data["importance"][0]["groups"] == 6

    with chromium_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(Path(result.path).as_uri() + "#group=" + "Store%3D1000%2CBrand%3Dtropicana")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert page.locator("#realised-time svg path.realised").count() == 2  # forecast and seasonal naive
        assert page.locator("#realised-steps svg circle").count() == 2 * 3
        assert page.locator("#realised-degraded tbody tr").count() == 6
        assert page.locator("#importance-bars svg rect.bar").count() == len(data["importance"])
        assert page.locator("#group-drivers svg rect.bar").count() >= 3  # the group's drivers beside its chart
        assert page.locator("#group-realised svg path.realised").count() == 1
        box, side = page.locator("#group-chart svg").bounding_box(), page.locator("#group-drivers svg").bounding_box()
        assert side["x"] > box["x"] + box["width"] - 1  # beside the forecast chart, not below it
        page.click("#realised-degraded tbody tr:first-child")
        page.wait_for_function("document.getElementById('group-title').textContent === " + json.dumps(data["realised"]["degraded"][0]["group"]))
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "report_accuracy.png"), full_page=True)
        assert errors == []


@pytest.fixture
def store_with_failures(tmp_path: Path, oj_frame: pd.DataFrame):
    """Per-store models over two brands (two series per group); store 1000 is too short to train."""
    frame = oj_frame[~((oj_frame["Store"] == 1000) & (oj_frame["WeekStarting"] < "1991-06-01"))]
    path = tmp_path / "sales.parquet"
    frame.to_parquet(path)
    config_path = write_config(
        tmp_path, str(path), data={"group_columns": ["Store"], "series_columns": ["Store", "Brand"]},
        train={"min_history": 20}, forecast={"quantiles": [0.1, 0.5, 0.9]},
    )
    config = load_config(config_path)
    assert mm.run(config).exit_code == 3
    return config_path, config


def test_report_lists_failures_and_loads_each_group_from_its_own_line(store_with_failures):
    config_path, config = store_with_failures
    result = mm.report(config, history=30)
    assert Path(result.path) == Path(config.datastore) / "outputs" / "report.html"
    assert result.n_groups == 3 and result.n_failed == 1  # store 1000: train failed, so forecast had no model
    data, series = embedded(Path(result.path).read_text(encoding="utf-8"))
    groups = data["groups"]
    labels = groups["label"]
    assert labels == ["Store=1000", "Store=1001", "Store=1002"]
    status = [groups["train_status"]["levels"][c] for c in groups["train_status"]["codes"]]
    assert status == ["failed", "trained", "trained"]
    reason = groups["train_reason"]["levels"][groups["train_reason"]["codes"][0]]
    assert reason == "too_short" and "too_short" in groups["train_error"][0]
    assert [groups["fc_status"]["levels"][c] for c in groups["fc_status"]["codes"]][0] == "no_model"
    for i, label in enumerate(labels):
        line = json.loads(series[groups["off"][i]: groups["off"][i] + groups["len"][i]])
        names = [s["n"] for s in line["s"]]
        assert names == ["Brand=dominicks", "Brand=minute.maid"], label
        for s in line["s"]:
            assert len(s["y"]) <= 30  # history capped
            if label != "Store=1000":
                assert len(s["f"]) == 4 and len(s["lo"]) == 4 and len(s["hi"]) == 4
        if label != "Store=1000":
            assert set(line["scores"]) == {"lightgbm"}
    assert data["meta"]["band"] == ["Prediction_q10", "Prediction_q90"]
    assert data["summary"]["train"]["counts"] == {"trained": 2, "reused": 0, "failed": 1}


def test_report_reuses_training_time_of_reused_models(store_with_failures):
    _, config = store_with_failures
    first = embedded(Path(mm.report(config).path).read_text(encoding="utf-8"))[0]["groups"]["duration"]
    assert mm.train(config).reused == 2
    second = embedded(Path(mm.report(config).path).read_text(encoding="utf-8"))[0]["groups"]["duration"]
    assert second == first and second[1] > 0


def test_report_without_runs_is_a_clear_error(tmp_path: Path, oj_csv: Path):
    config = load_config(write_config(tmp_path, str(oj_csv)))
    with pytest.raises(UpstreamMissing, match="no mm datastore"):
        mm.report(config)
    mm.split(config)
    with pytest.raises(UpstreamMissing, match="no finished train or forecast run") as caught:
        mm.report(config)
    assert "mm train" in caught.value.hint


def test_report_command_json_and_exit_codes(store_with_failures, tmp_path: Path):
    config_path, _ = store_with_failures
    out = tmp_path / "elsewhere.html"
    done = run_cli("report", "-c", str(config_path), "--output", str(out), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["path"] == str(out) and out.exists() and document["n_failed"] == 1
    (tmp_path / "other").mkdir()
    done = run_cli("report", "-c", str(write_config(tmp_path / "other", "x.csv")))
    assert done.returncode == 1 and "no mm datastore" in done.stderr and "hint:" in done.stderr and "Traceback" not in done.stderr


def test_group_values_cannot_break_the_page(tmp_path: Path, oj_frame: pd.DataFrame):
    """Values with markup and non-ASCII characters stay data: escaped in the page, offsets intact."""
    frame = oj_frame.replace({"Brand": {"dominicks": "</script><script>alert(1)</script>", "minute.maid": "café ☕"}})
    path = tmp_path / "sales.parquet"
    frame.to_parquet(path)
    config = load_config(write_config(tmp_path, str(path)))
    mm.run(config)
    page = Path(mm.report(config).path).read_text(encoding="utf-8")
    assert page.count("</script>") == 3 and "alert(1)</script>" not in page
    data, series = embedded(page)
    labels = data["groups"]["label"]
    assert "Store=1000,Brand=</script><script>alert(1)</script>" in labels and "Store=1000,Brand=café ☕" in labels
    brands = data["groups"]["cols"]["Brand"]["levels"]
    assert set(brands) == {"</script><script>alert(1)</script>", "café ☕"}
    for off, length in zip(data["groups"]["off"], data["groups"]["len"]):
        assert json.loads(series[off: off + length])["s"][0]["y"]  # every line found by its offset


def _group_forecast_measures(output: pd.DataFrame, quantiles: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """WAPE of each group and the pooled coverage of each quantile, from forecasting_output.csv itself."""
    output = output.assign(label="Store=" + output["Store"].astype(str) + ",Brand=" + output["Brand"])
    err = (output["Prediction"] - output["Quantity"]).abs()
    sums = pd.DataFrame({"label": output["label"], "err": err, "actual": output["Quantity"].abs()}).groupby("label").sum()
    wape = (100 * sums["err"] / sums["actual"]).to_dict()
    coverage = {q: float((output["Quantity"] <= output[q]).mean()) for q in quantiles}
    return wape, coverage


def test_report_measures_each_groups_forecast_against_the_holdout_actuals(tmp_path: Path, oj_frame: pd.DataFrame):
    """With split.holdout the inference rows carry their actuals: the report shows each group's
    forecast metrics and the interval coverage, for forecasts made by the run and for those it reused."""
    path = tmp_path / "sales.parquet"
    oj_frame[oj_frame["Quantity"].notna()].to_parquet(path)  # no future weeks: the 4 held-out weeks are the inference rows
    config = load_config(write_config(tmp_path, str(path), split={"holdout": 4}, forecast={"quantiles": [0.1, 0.5, 0.9]}))
    result = mm.run(config)
    assert result.exit_code == 0 and result.forecast.forecast == 6 and result.forecast.accuracy["n_rows"] == 24
    quantiles = ["Prediction_q10", "Prediction_q50", "Prediction_q90"]
    wape, coverage = _group_forecast_measures(pd.read_csv(result.forecast.output), quantiles)

    made = embedded(Path(mm.report(config).path).read_text(encoding="utf-8"))[0]
    again = mm.forecast(config)
    assert again.reused == 6 and again.forecast == 0  # reused forecasts are measured again, from their files
    reused = embedded(Path(mm.report(config).path).read_text(encoding="utf-8"))[0]

    made_by_train = f"forecast: made by train run {result.train.run_id} with the model it had just fitted"  # staged by its train task
    for data, decision in ((made, made_by_train), (reused, "reused: unchanged")):
        groups, summary = data["groups"], data["summary"]["forecast"]
        assert {groups["fc_decision"]["levels"][c] for c in groups["fc_decision"]["codes"]} == {decision}
        assert groups["fc"]["wape"] == pytest.approx([wape[label] for label in groups["label"]], rel=1e-3)
        assert all(isinstance(v, (int, float)) for m in ("mape", "smape", "rmse") for v in groups["fc"][m])
        assert data["metrics"][0]["id"] == "fc_wape"  # the page opens on forecast WAPE when there are actuals
        assert list(summary["coverage"]) == quantiles
        assert summary["coverage"] == pytest.approx(coverage, abs=1e-4)
        assert summary["coverage"] == pytest.approx(result.forecast.coverage, abs=1e-4)  # the run's own tally agrees
    assert reused["groups"]["fc"] == made["groups"]["fc"]
