"""mm report (and mm export) on ~10,000 groups: generation time, page size, page speed.

    python bench/report_scale.py                       # 3,334 stores x 3 brands = 10,002 groups
    python bench/report_scale.py --browser --export    # also time the page in Chromium and the ONNX export
    python bench/report_scale.py --stores 334          # ~1,000 groups, quicker

The first run builds the datastore (simulated sales, last 4 weeks held out,
AutoML off, 20 boosting rounds: a few minutes on 2 cores) under --workdir
(default bench/out/report_scale); later runs reuse it. The reference, measured
in the same run, is the bare input of the report: reading every group's train
partition and forecast file, one by one with pyarrow (the columns the charts
use). The page must not grow with a chart per group: its DOM size is printed
with --browser.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import manymodels as mm  # noqa: E402
from manymodels.store.datastore import Datastore  # noqa: E402
from manymodels.store.runs import latest_run  # noqa: E402

CONFIG = """\
datastore: store
data:
  path: sales.parquet
  time_column: WeekStarting
  target_column: Quantity
  group_columns: [Store, Brand]
  known_future_columns: [Price, Advert]
  drop_columns: [Revenue]
split:
  holdout: 4
train:
  horizon: 4
  min_history: 20
  num_boost_round: 20
  automl:
    enabled: false
forecast:
  quantiles: [0.1, 0.9]
"""
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def datastore(workdir: Path, stores: int, rerun: bool) -> mm.Config:
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "sales.parquet"
    if not data.exists():
        mm.generate_oj_sales(stores=stores, brands=3, weeks=121, future_weeks=0).to_parquet(data)
    (workdir / "mm.yaml").write_text(CONFIG)
    config = mm.load_config(workdir / "mm.yaml")
    store = Datastore(config.datastore)
    if rerun or not store.is_datastore() or latest_run(store, "forecast") is None:
        started = time.perf_counter()
        result = mm.run(config)
        print(f"built the datastore: {result.train.n_groups:,} groups in {time.perf_counter() - started:.0f}s (train {result.train.duration_s:.0f}s)")
    return config


def timed(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def browser(path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        page = b.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        ready = time.perf_counter() - started
        label = page.evaluate("JSON.parse(document.getElementById('mm-data').textContent).groups.label.slice(-1)[0]")
        started = time.perf_counter()
        page.fill("#group-search", label)
        page.wait_for_function("document.querySelectorAll('#group-list option').length === 1")
        page.select_option("#group-list", label=label)
        page.wait_for_function(f"document.getElementById('group-title').textContent === {json.dumps(label)}")
        select = time.perf_counter() - started
        nodes = page.evaluate("document.getElementsByTagName('*').length")
        b.close()
    return {"page_ready_s": round(ready, 3), "search_and_select_s": round(select, 3), "dom_elements": nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=3334, help="stores x 3 brands = groups")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "report_scale")
    parser.add_argument("--repeat", type=int, default=3, help="report builds to time (median)")
    parser.add_argument("--rerun", action="store_true", help="run split/train/forecast again")
    parser.add_argument("--browser", action="store_true", help="open the page in headless Chromium (/usr/bin/chromium, playwright)")
    parser.add_argument("--export", action="store_true", help="also time mm export --format onnx (the onnx extra)")
    args = parser.parse_args()

    config = datastore(args.workdir, args.stores, args.rerun)
    store = Datastore(config.datastore)
    keys = store.read_split_groups()["key"].tolist()
    files = [(store.partition_path("train", k), ["Quantity", "_mm_period"]) for k in keys]
    files += [(store.forecast_path(k), ["WeekStarting", "Quantity", "Prediction", "Prediction_q10", "Prediction_q90"]) for k in keys]
    reference, _ = timed(lambda: [pq.read_table(path, columns=columns) for path, columns in files if path.exists()], 1)
    csv = store.output_path("forecasting_output.csv")
    seconds, result = timed(lambda: mm.report(config), args.repeat)
    page = Path(result.path).read_text(encoding="utf-8")
    table = len(re.search(r'id="mm-data">(.*?)</script>', page, re.S).group(1))
    lines = len(re.search(r'id="mm-series">(.*?)</script>', page, re.S).group(1))
    csv_bytes = csv.stat().st_size
    numbers = {
        "groups": result.n_groups,
        "report_s": round(seconds, 3),
        "reference_read_group_files_s": round(reference, 3),
        "report_vs_reference": round(seconds / reference, 2),
        "html_bytes": result.bytes,
        "html_MB": round(result.bytes / 1e6, 2),
        "bytes_per_group": round(result.bytes / max(result.n_groups, 1)),
        "table_bytes": table,
        "chart_lines_bytes": lines,
        "forecasting_output_csv_bytes": csv_bytes,
        "html_vs_forecasting_output_csv": round(result.bytes / csv_bytes, 2),
    }
    if args.browser:
        numbers.update(browser(Path(result.path)))
    if args.export:
        out = args.workdir / "onnx"
        export_s, exported = timed(lambda: mm.export(config, output=out), 1)
        numbers.update({"export_s": round(export_s, 1), "exported_onnx": exported.onnx, "export_max_relative_diff": exported.max_relative_diff, "export_ms_per_group": round(1000 * export_s / max(exported.n_groups, 1), 1)})
    width = max(len(k) for k in numbers)
    print(f"mm report on {result.n_groups:,} groups ({result.path})")
    for key, value in numbers.items():
        print(f"  {key.ljust(width)}  {value}")
    (args.workdir / "results.json").write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
