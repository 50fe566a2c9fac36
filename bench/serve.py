"""mm serve under load: latency and throughput over real HTTP, next to the same work in-process.

Builds (or reuses, ``--keep``) a trained datastore from the sample generator
(``--stores`` x ``--brands`` groups, 121 weeks of history, 20 future weeks with
planned prices; LightGBM with ``--rounds`` rounds, AutoML off so the first build
stays in minutes), starts ``mm serve`` as its own process on 127.0.0.1, and
drives it with the standard library's HTTP client (keep-alive connections, one
per client thread) for a bounded number of requests per scenario:

- ``stored``: a random group's stored forecast (the fast path: nothing new in
  the request), groups drawn from ``--groups`` of them, warmed first;
- ``what_if``: one group with new prices for its 20 future weeks (a full
  recursive LightGBM forecast, 20 steps: extras/whatif.py, equal to
  kernels.checked_forecast to the bit).

Each at concurrency 1 and 8 (client threads). Printed per scenario: p50 and p99
latency and requests per second, medians over ``--repeats`` runs, the server
process's CPU time per request (user + system, from /proc: what a request costs
whatever the neighbours do; 1000 / that is the requests per second one core
can answer), and the same requests answered in-process (``Forecaster.forecast``
on the same datastore, no HTTP), whose numbers are checked equal to the served
ones.

The client runs on the same machine: on 2 cores, client threads and the server
share the CPUs, so the HTTP figures are upper bounds on latency (lower bounds
on throughput) for a server with the machine to itself.

    python bench/serve.py                         # 1,000 stores x 3 brands
    python bench/serve.py --stores 50 --requests 200 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import manymodels as mm  # noqa: E402
from manymodels.console import Terminal  # noqa: E402
from manymodels.extras.sample import data_settings, generate_oj_sales  # noqa: E402


def build(folder: Path, stores: int, brands: int, rounds: int, jobs: int | None) -> Path:
    """The datastore and its config (reused when ``folder`` already holds a finished run)."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "mm.yaml"
    if (folder / "datastore" / "outputs" / "forecasting_output.csv").exists() and config_path.exists():
        return config_path
    frame = generate_oj_sales(stores=stores, brands=brands, weeks=121, future_weeks=20, seed=0)
    frame.to_parquet(folder / "sales.parquet", index=False)
    raw = {
        "datastore": "datastore",
        "data": data_settings("sales.parquet"),
        "train": {"horizon": 20, "min_history": 30, "num_boost_round": rounds, "automl": {"enabled": False}},
        "forecast": {"quantiles": [0.1, 0.5, 0.9]},
        "engine": {"kind": "local", "jobs": jobs},
        "serve": {"cache_size": stores * brands + 10},
    }
    import yaml

    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    started = time.perf_counter()
    result = mm.run(mm.load_config(config_path), Terminal(quiet=True))
    print(f"built {stores * brands:,} groups in {time.perf_counter() - started:.0f} s (exit {result.exit_code})", flush=True)
    return config_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config_path: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "manymodels", "serve", "-c", str(config_path), "--port", str(port)]
    # this checkout's mm, whatever the working directory and the installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mm serve did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)


def drive(port: int, bodies: list[bytes], concurrency: int) -> tuple[list[float], float, list[bytes]]:
    """Send ``bodies`` (split over ``concurrency`` keep-alive clients); latencies, wall time, answers."""
    latencies: list[float] = []
    answers: list[bytes] = [b""] * len(bodies)
    lock = threading.Lock()
    chunks = [list(range(i, len(bodies), concurrency)) for i in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def client(indices: list[int]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        start.wait()
        for i in indices:
            t = time.perf_counter()
            conn.request("POST", "/forecast", body=bodies[i], headers={"content-type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - t)
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {data[:500]!r}")
            answers[i] = data
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - began, answers


def in_process(config_path: Path, bodies: list[bytes]) -> tuple[list[float], list[dict]]:
    """The same requests through the server's Forecaster, without HTTP (one thread)."""
    from manymodels.extras.serve import ForecastRequest, create_app

    server = create_app(mm.load_config(config_path), watch=False)
    requests = [ForecastRequest.model_validate_json(b) for b in bodies]
    for r in requests[: min(len(requests), 50)]:
        server.forecaster.forecast(r)  # warm, as the HTTP runs are
    latencies, answers = [], []
    for r in requests:
        t = time.perf_counter()
        answers.append(server.forecaster.forecast(r))
        latencies.append(time.perf_counter() - t)
    return latencies, answers


def predictions(answer: dict) -> list[float]:
    return [row["prediction"] for f in answer["forecasts"] for row in f["rows"]]


def scenario_bodies(config_path: Path, n: int, n_groups: int, seed: int) -> dict[str, list[bytes]]:
    import pandas as pd

    config = mm.load_config(config_path)
    out = pd.read_csv(Path(config.datastore) / "outputs" / "forecasting_output.csv")
    groups = out[["Store", "Brand"]].drop_duplicates().to_dict("records")
    rng = random.Random(seed)
    picked = rng.sample(groups, min(n_groups, len(groups)))
    stored = [json.dumps({"group": rng.choice(picked)}).encode() for _ in range(n)]
    one = out[(out["Store"] == picked[0]["Store"]) & (out["Brand"] == picked[0]["Brand"])]
    what_if = []
    for _ in range(n):
        cut = rng.uniform(0.7, 1.0)  # "what if we drop the price?"
        future = [{"WeekStarting": r.WeekStarting, "Price": round(r.Price * cut, 2), "Advert": int(r.Advert)} for r in one.itertuples()]
        what_if.append(json.dumps({"group": picked[0], "future": future}).encode())
    return {"stored": stored, "what_if": what_if}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--brands", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per scenario, concurrency and repeat")
    parser.add_argument("--groups", type=int, default=500, help="groups the stored-forecast requests are drawn from")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/mm-bench-serve"), help="folder of the datastore (reused if built)")
    args = parser.parse_args()

    config_path = build(args.keep / f"s{args.stores}x{args.brands}r{args.rounds}", args.stores, args.brands, args.rounds, args.jobs)
    bodies = scenario_bodies(config_path, args.requests, args.groups, seed=1)
    port = free_port()
    server = start_server(config_path, port)
    try:
        for name, sent in bodies.items():  # warm the server's cache with every group used
            drive(port, sent[: min(len(sent), 2 * args.groups)], 1)
        results = {}
        for name, sent in bodies.items():
            local, local_answers = in_process(config_path, sent)
            for concurrency in (1, 8):
                runs = []
                for _ in range(args.repeats):
                    cpu = cpu_seconds(server.pid)
                    latencies, wall, answers = drive(port, sent, concurrency)
                    runs.append((pct(latencies, 50), pct(latencies, 99), len(sent) / wall, (cpu_seconds(server.pid) - cpu) * 1000.0 / len(sent)))
                # the served numbers are the in-process ones (the same code path, the same floats)
                assert all(predictions(json.loads(a)) == predictions(b) for a, b in zip(answers, local_answers)), name
                results[(name, concurrency)] = tuple(statistics.median(r[i] for r in runs) for i in range(4))
            results[(name, "in-process")] = (pct(local, 50), pct(local, 99), len(local) / sum(local), float("nan"))
    finally:
        server.terminate()
        server.wait(20)
    print(f"\nmm serve, {args.stores * args.brands:,} groups, {args.requests} requests per run, median of {args.repeats} runs (load before: {os.getloadavg()[0]:.2f})")
    print(f"{'scenario':<10} {'clients':>10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'server CPU ms/req':>18}")
    for (name, concurrency), (p50, p99, rate, cpu) in results.items():
        print(f"{name:<10} {concurrency!s:>10} {p50:8.2f} {p99:8.2f} {rate:8.0f} {cpu:18.2f}")


if __name__ == "__main__":
    main()
