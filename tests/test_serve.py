"""mm serve: a real uvicorn server on 127.0.0.1 and a real HTTP client (the standard library's).

Every endpoint and error code; the served forecast against mm forecast's, exactly;
a switch to a new train run while requests are in flight; a bounded load loop
with malformed bodies mixed in.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from manymodels.config import load_config
from manymodels.store.datastore import Datastore

from .conftest import require_module, small_config, small_table

uvicorn = require_module("uvicorn", "serve")
require_module("fastapi", "serve")

from manymodels.extras.serve import create_app  # noqa: E402  (after the skip: it needs the extra)

GROUPS = ("a", "b", "c", "d", "e", "f")
QUANTILES = [0.1, 0.9]
SERVE = {"refresh_seconds": 0.2, "max_body_bytes": 20_000, "max_groups": 50, "cache_size": 4}


def _table(prices_from: float | None = None) -> pd.DataFrame:
    frame = small_table(groups=GROUPS, weeks=30, future=2, seed=3)
    if prices_from is not None:  # the what-if: other known-future prices in the forecast weeks
        future = frame["y"].isna()
        frame.loc[future, "price"] = np.round(prices_from + 0.1 * np.arange(int(future.sum())), 2)
    return frame


def _datastore(folder: Path, frame: pd.DataFrame, **serve) -> mm.Config:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "in.csv", index=False)
    path = small_config(folder, str(folder / "in.csv"), forecast={"quantiles": QUANTILES}, serve={**SERVE, **serve})
    config = load_config(path)
    assert mm.run(config).exit_code == 0
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """Keep-alive JSON over http.client; ``call`` returns (status, parsed body or text)."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port, self.headers = port, headers or {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = {"content-type": "application/json", **self.headers, **(headers or {})}
        try:
            self.conn.request(method, path, body=data, headers=sent)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):  # the server closed a kept-alive connection: once more
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=data, headers=sent)
            response = self.conn.getresponse()
        text = response.read().decode()
        if response.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text

    def post(self, body=None, **kw):
        return self.call("POST", "/forecast", body, **kw)

    def get(self, path: str):
        return self.call("GET", path)


@contextmanager
def serving(config: mm.Config, **kw):
    """The app on a real uvicorn server in a thread, on a free port of 127.0.0.1."""
    built = create_app(config, **kw)
    server = uvicorn.Server(uvicorn.Config(built.app, host="127.0.0.1", port=_free_port(), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield built, Client(server.config.port)
    finally:
        server.should_exit = True
        thread.join(10)
        built.runs.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _datastore(tmp_path_factory.mktemp("serve") / "a", _table())


@pytest.fixture(scope="module")
def served(store):
    with serving(store) as (built, client):
        yield built, client


def _output(config: mm.Config) -> pd.DataFrame:
    return pd.read_csv(Datastore(config.datastore).output_path("forecasting_output.csv"))


def _rows(answer: dict) -> pd.DataFrame:
    rows = [{"g": f["group"]["g"], "t": r["time"], "Prediction": r["prediction"], **{f"Prediction_q{float(q) * 100:g}": v for q, v in r["quantiles"].items()}, "model_version": r["model_version"], "run_id": r["run_id"]} for f in answer["forecasts"] for r in f["rows"]]
    return pd.DataFrame(rows)


PRED = ["Prediction", "Prediction_q10", "Prediction_q90"]


# -- endpoints ----------------------------------------------------------------------

def test_health_groups_and_one_group(served, store):
    built, client = served
    status, health = client.get("/health")
    assert status == 200 and health["status"] == "ok" and health["groups"] == len(GROUPS)
    train = mm.list_runs(store, step="train")[-1]["id"]
    assert health["run_id"] == train and health["forecast_run_id"]

    status, page = client.get("/groups?limit=4&offset=0")
    assert status == 200 and page["total"] == 6 and [g["group"]["g"] for g in page["groups"]] == ["a", "b", "c", "d"]
    status, rest = client.get("/groups?limit=4&offset=4")
    assert [g["group"]["g"] for g in rest["groups"]] == ["e", "f"]
    status, one = client.get("/groups?g=c")
    assert status == 200 and one["total"] == 1 and one["groups"][0]["model"] == "lightgbm"
    status, bad = client.get("/groups?colour=red")
    assert status == 422 and "colour" in bad["error"]

    key = one["groups"][0]["key"]
    status, group = client.get(f"/groups/{key}")
    assert status == 200 and group["label"] == "g=c" and group["model_version"] == 1 and group["drivers"] == ["price"]
    assert set(group["metrics"]) >= {"wape", "mase"} and group["demand_class"] == "smooth"
    assert client.get("/groups/g=c")[1]["key"] == key  # by label too
    status, missing = client.get("/groups/g=nope")
    assert status == 404 and "g=nope" in missing["error"]

    status, openapi = client.get("/openapi.json")
    assert status == 200 and {"/forecast", "/groups", "/groups/{key}", "/health", "/metrics"} <= set(openapi["paths"])


def test_the_fast_path_is_the_stored_forecast(served, store):
    _, client = served
    status, answer = client.post({"groups": [{"group": {"g": g}} for g in GROUPS]})
    assert status == 200 and all(f["source"] == "stored" for f in answer["forecasts"])
    got, want = _rows(answer), _output(store)
    assert got[["g", "t", *PRED]].equals(want[["g", "t", *PRED]])  # exactly: same floats
    assert (got["run_id"] == answer["run_id"]).all() and (got["model_version"] == 1).all()
    status, short = client.post({"key": answer["forecasts"][0]["key"], "horizon": 1})
    assert status == 200 and [r["step"] for r in short["forecasts"][0]["rows"]] == [1]


def test_computed_forecasts_equal_mm_forecast(served, store, tmp_path):
    """The same inference rows sent as future rows give mm forecast's numbers; new prices give
    the numbers mm forecast gives on an input with those prices (same data, same seed: same models)."""
    built, client = served
    inference = _table().loc[lambda f: f["y"].isna()]

    def request(frame):
        return {"groups": [{"group": {"g": g}, "future": [{"t": r.t, "price": r.price} for r in rows.itertuples()]} for g, rows in frame.groupby("g")]}

    status, same = client.post(request(inference))
    assert status == 200 and all(f["source"] == "computed" for f in same["forecasts"])
    # the LightGBM groups went the what-if path's way (extras/whatif.py), the others the batch path's
    cached = [(f["model"], built.cache.entries[f["key"]].parts.get("prepared")) for f in same["forecasts"] if f["key"] in built.cache.entries]
    assert any(p is not None for _, p in cached) and all((p is not None) == (m == "lightgbm") for m, p in cached), cached
    assert _rows(same)[["g", "t", *PRED]].equals(_output(store)[["g", "t", *PRED]])

    what_if = _table(prices_from=0.5)
    other = _datastore(tmp_path / "b", what_if)
    status, answer = client.post(request(what_if.loc[what_if["y"].isna()]))
    assert status == 200
    got, want = _rows(answer), _output(other)
    assert not got["Prediction"].equals(_output(store)["Prediction"])  # the prices moved the forecast
    assert got[["g", "t", *PRED]].equals(want[["g", "t", *PRED]])
    checked = {f["label"]: f["checks"] for f in answer["forecasts"]}
    assert any(c["out_of_range"] for c in checked.values())  # 0.5.. is below every group' training prices


def test_history_rows_move_the_forecast_origin(served):
    _, client = served
    status, answer = client.post({"group": {"g": "a"}, "history": [{"t": "2021-08-05", "y": 40, "price": 2.0}], "future": [{"t": "2021-08-19", "price": 2.0}]})
    assert status == 200
    rows = answer["forecasts"][0]["rows"]
    assert [(r["time"], r["step"]) for r in rows] == [("2021-08-12", 1), ("2021-08-19", 2)]
    # without the future row the stored rows no longer cover the horizon from the new origin
    status, error = client.post({"group": {"g": "a"}, "history": [{"t": "2021-08-05", "y": 40, "price": 2.0}], "horizon": 2})
    assert status == 422 and "do not cover the horizon" in error["error"] and error["field"] == "future"


@pytest.mark.parametrize(
    "body, status, names",
    [
        ({"group": {"g": "zz"}}, 404, "g=zz"),
        ({"key": "0123456789abcdef0123"}, 404, "0123456789abcdef0123"),
        ({"group": {"h": "a"}}, 422, "'h' is not a group column"),
        ({"group": {}}, 422, "missing group column 'g'"),
        ({"group": {"g": "a"}, "horizon": 3}, 422, "longer than the trained horizon 2"),
        ({"group": {"g": "a"}, "horizon": 0}, 422, "horizon"),
        ({"group": {"g": "a"}, "horizon": "two"}, 422, "horizon"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-06", "price": 2}]}, 422, "off the group's time grid"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-05", "price": "cheap"}]}, 422, "future[0].price: 'cheap' is not a number"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-05"}]}, 422, "missing column 'price'"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-05", "price": 2, "colour": 1}]}, 422, "unknown column 'colour'"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-05", "price": 2, "y": 3}]}, 422, "actuals go in 'history'"),
        ({"group": {"g": "a"}, "future": [{"t": "2022-08-04", "price": 2}]}, 422, "beyond the trained horizon 2"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-07-29", "price": 2}]}, 422, "not after the last known value"),
        ({"group": {"g": "a"}, "future": [{"t": "not a date", "price": 2}]}, 422, "not dates"),
        ({"group": {"g": "a"}, "future": [{"t": "2021-08-05", "price": 2, "g": "b"}]}, 422, "is not this group's value"),
        ({"group": {"g": "a"}, "history": [{"t": "2021-07-29", "y": 1, "price": 2}]}, 422, "not newer than the training data"),
        ({"group": {"g": "a"}, "history": [{"t": "2021-08-05", "price": 2}]}, 422, "missing column 'y'"),
        ({"group": {"g": "a"}, "key": "x"}, 422, "either as 'key' or as 'group'"),
        ({}, 422, "name the groups"),
        ({"groups": [{"group": {"g": "a"}}], "key": "x"}, 422, "not both"),
        ({"groups": [{"group": {"g": "a"}}, {"group": {"g": "zz"}}]}, 404, "g=zz"),
    ],
)
def test_bad_requests_get_clear_answers(served, body, status, names):
    _, client = served
    got, answer = client.post(body)
    assert got == status, answer
    assert names in answer["error"], answer


def test_malformed_and_oversized_bodies(served):
    _, client = served
    status, answer = client.post(raw=b'{"group": {"g": "a"')
    assert status == 422 and "json" in answer["error"].lower()
    status, answer = client.post(raw=b"x" * 30_000)
    assert status == 413 and "max_body_bytes" in answer["error"]
    status, answer = client.post({"groups": [{"group": {"g": "a"}}] * 51})
    assert status == 413 and "serve.max_groups" in answer["error"]


def test_metrics_are_prometheus_text(served):
    _, client = served
    client.post({"group": {"g": "b"}})
    status, text = client.get("/metrics")
    assert status == 200 and isinstance(text, str)
    for needle in ('mm_serve_requests_total{method="POST",endpoint="/forecast",status="200"}', 'mm_serve_request_duration_seconds_bucket{endpoint="/forecast",le="+Inf"}', "mm_serve_cache_hits_total", "mm_serve_cache_loads_total", "mm_serve_errors_total 0", "mm_serve_cache_groups"):
        assert needle in text, needle
    cached = int(text.split("\nmm_serve_cache_groups ")[1].split()[0])
    assert cached <= SERVE["cache_size"]  # the cache stays within serve.cache_size


# -- faults and run switches (each on its own copy of the datastore) ---------------------

@pytest.fixture
def copy(store, tmp_path):
    """A copy of the module's datastore with its own config (tests here change it)."""
    folder = tmp_path / "copy"
    shutil.copytree(Path(store.datastore).parent, folder)
    return load_config(folder / "mm.yaml")


def test_an_unreadable_model_is_503_for_its_group_only(copy):
    store = Datastore(copy.datastore)
    info = next(g for g in mm.list_models(copy) if g["group"] == {"g": "b"})
    store.model_text_path(info["key"], 1).write_bytes(b"not zstd at all")
    with serving(copy) as (_, client):
        what_if = {"t": "2021-08-05", "price": 2.0}
        status, answer = client.post({"group": {"g": "b"}, "future": [what_if]})
        assert status == 503 and "g=b" in answer["error"] and "cannot be read" in answer["error"]
        assert client.post({"group": {"g": "a"}, "future": [what_if]})[0] == 200
        assert client.post({"group": {"g": "b"}})[0] == 200  # its stored forecast needs no model
        assert "mm_serve_model_errors_total 1" in client.get("/metrics")[1]
    assert store.model_text_path(info["key"], 1).read_bytes() == b"not zstd at all"  # read-only: nothing moved aside


def test_a_new_train_run_is_served_without_a_restart_and_never_mixed(copy):
    with serving(copy) as (built, client):
        first = built.runs.current().run_id
        seen, problems, stop = [], [], threading.Event()

        def hammer(n: int) -> None:
            mine = Client(client.port)
            while not stop.is_set():
                body = {"groups": [{"group": {"g": g}} for g in GROUPS]} if n % 2 else {"groups": [{"group": {"g": g}, "future": [{"t": "2021-08-05", "price": 2.0}]} for g in GROUPS[:3]]}
                status, answer = mine.post(body)
                if status != 200:
                    problems.append((status, answer))
                    continue
                ids = {r["run_id"] for f in answer["forecasts"] for r in f["rows"]} | {f["run_id"] for f in answer["forecasts"]} | {answer["run_id"]}
                versions = {f["model_version"] for f in answer["forecasts"]} | {r["model_version"] for f in answer["forecasts"] for r in f["rows"]}
                if len(ids) != 1 or len(versions) != 1:
                    problems.append(("mixed", ids, versions))
                seen.append((answer["run_id"], versions.pop()))

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            retrained = mm.train(copy, allow_reuse=False)  # every group gets a version 2
            assert retrained.trained == len(GROUPS)
            deadline = time.monotonic() + 15
            while built.runs.current().run_id != retrained.run_id:
                assert time.monotonic() < deadline, "the server did not switch to the new train run"
                time.sleep(0.05)
            time.sleep(0.5)
            mm.forecast(copy)  # the new run's stored forecasts: the fast path again
            time.sleep(0.8)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not problems, problems[:3]
    runs = {run for run, _ in seen}
    assert runs == {first, retrained.run_id}
    assert {v for run, v in seen if run == first} == {1} and {v for run, v in seen if run == retrained.run_id} == {2}
    assert built.runs.switches >= 2  # the train run, then its forecast run
    with serving(copy, pin=first) as (pinned, client):  # --pin: the first run's models, after the retrain too
        status, answer = client.post({"group": {"g": "a"}})
        assert status == 200 and answer["run_id"] == first and answer["forecasts"][0]["model_version"] == 1
        assert client.get("/health")[1]["pinned"] is True


def test_a_split_without_its_train_never_pairs_the_model_with_other_rows(tmp_path):
    """The nightly window between mm split and mm train: a group whose rows the split changed
    gets 409 for new rows (its model's history is gone from the split), its stored forecast
    stays the nightly one, an unchanged group answers as before; the train run ends it."""
    config = _datastore(tmp_path / "w", _table())
    what_if = {"t": "2021-08-05", "price": 2.0}
    with serving(config) as (built, client):
        first = built.runs.current()
        status, before = client.post({"groups": [{"group": {"g": g}, "future": [what_if]} for g in ("a", "b")]})
        assert status == 200
        status, stored = client.post({"group": {"g": "a"}})
        assert status == 200
        frame = _table()
        frame.loc[(frame["g"] == "a") & frame["y"].notna(), "y"] += 7.0  # group a's actuals revised, b's not
        frame.to_csv(tmp_path / "w" / "in.csv", index=False)
        assert not mm.split(config).reused
        deadline = time.monotonic() + 15
        while built.runs.current().split_run_id == first.split_run_id:
            assert time.monotonic() < deadline, "the server did not see the new split"
            time.sleep(0.05)
        assert built.runs.current().run_id == first.run_id  # no new train run yet

        status, error = client.post({"group": {"g": "a"}, "future": [what_if]})
        assert status == 409 and "g=a" in error["error"] and "mm train" in error["error"] and error["field"] == "future", error
        assert client.post({"group": {"g": "a"}, "history": [{"t": "2021-08-05", "y": 3.0, "price": 2.0}]})[0] == 409
        status, again = client.post({"group": {"g": "b"}, "future": [what_if]})
        assert status == 200 and again["forecasts"][0]["rows"] == before["forecasts"][1]["rows"]
        assert client.post({"group": {"g": "a"}}) == (200, stored)  # the nightly forecast, as it was
        health = client.get("/health")[1]
        assert health["history_replaced"] == 1 and health["split_run_id"] != first.split_run_id
        key = before["forecasts"][0]["key"]
        assert client.get(f"/groups/{key}")[1]["what_if"] is False
        assert client.get(f"/groups/{before['forecasts'][1]['key']}")[1]["what_if"] is True

        trained = mm.train(config)  # a is fitted again on its new rows, b's model is reused
        assert trained.trained == 1
        deadline = time.monotonic() + 15
        while built.runs.current().run_id != trained.run_id:
            assert time.monotonic() < deadline, "the server did not switch to the new train run"
            time.sleep(0.05)
        status, after = client.post({"group": {"g": "a"}, "future": [what_if]})
        assert status == 200 and after["forecasts"][0]["model_version"] == 2
        assert client.get("/health")[1]["history_replaced"] == 0


def test_rows_read_after_a_new_split_began_are_refused(tmp_path):
    """A group first read after a split replaced the served one (before the server noticed):
    503, never the new split's rows under the old snapshot; once switched, it answers."""
    from manymodels.extras.serve import ForecastRequest, RequestError

    config = _datastore(tmp_path / "r", _table())
    built = create_app(config, watch=False)
    frame = _table()
    frame.loc[frame["y"].notna(), "y"] += 1.0
    frame.to_csv(tmp_path / "r" / "in.csv", index=False)
    assert not mm.split(config).reused
    request = ForecastRequest.model_validate({"group": {"g": "c"}, "future": [{"t": "2021-08-05", "price": 2.0}]})
    with pytest.raises(RequestError) as caught:
        built.forecaster.forecast(request)
    assert caught.value.status == 503 and "g=c" in caught.value.message and "retry" in caught.value.message
    assert built.runs.refresh()  # the new split: every group's rows changed, none may be paired with the old models
    with pytest.raises(RequestError) as caught:
        built.forecaster.forecast(request)
    assert caught.value.status == 409


def test_a_what_if_state_that_cannot_be_prepared_falls_back_to_the_batch_path(store, monkeypatch):
    """The what-if path leans on LightGBM's C API: should preparing it fail (another LightGBM),
    the group is forecast the batch path's way, to the same numbers, and /metrics counts it."""
    from manymodels.extras import serve as served_module
    from manymodels.extras.serve import ForecastRequest

    body = {"groups": [{"group": {"g": g}, "future": [{"t": "2021-08-05", "price": 2.0}]} for g in GROUPS]}
    want = create_app(store, watch=False).forecaster.forecast(ForecastRequest.model_validate(body))

    def broken(*args, **kwargs):
        raise AttributeError("module 'lightgbm.basic' has no attribute '_LIB'")

    monkeypatch.setattr(served_module.Prepared, "of", broken)
    built = create_app(store, watch=False)
    got = built.forecaster.forecast(ForecastRequest.model_validate(body))
    assert got == want
    lightgbm = sum(f["model"] == "lightgbm" for f in got["forecasts"])
    assert lightgbm and built.stats.counters["whatif_fallbacks"] == lightgbm
    assert f"mm_serve_whatif_fallbacks_total {lightgbm}" in built.stats.text(built.runs, built.cache)


def test_a_bounded_load_loop_with_malformed_bodies(served):
    """A few thousand requests, one in five malformed: never a 5xx, and memory stays flat."""
    _, client = served
    rng = random.Random(0)
    good = [{"group": {"g": "c"}}, {"groups": [{"group": {"g": g}} for g in GROUPS[:3]]}, {"group": {"g": "d"}, "future": [{"t": "2021-08-12", "price": 1.5}]}]
    bad_raw = [b"", b"null", b"[]", b"{", b'{"group": 5}', b'{"horizon": 1e400, "key": "x"}', b'{"key": "\\ud800"}', b'{"group": {"g": "a"}, "future": [1, 2]}', b'{"group": {"g": "a"}, "future": [{"t": NaN, "price": 1}]}', b'{"group": {"g": "a"}, "history": [{"t": "2021-08-05", "y": Infinity, "price": 1}]}', bytes(rng.randrange(256) for _ in range(200))]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def loop(seed: int, n: int) -> None:
        mine, r = Client(client.port), random.Random(seed)
        for _ in range(n):
            if r.random() < 0.2:
                status, _ = mine.post(raw=r.choice(bad_raw))
            else:
                status, _ = mine.post(r.choice(good))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    loop(99, 200)  # warm: every part of the groups used is cached
    before = rss_mb()
    threads = [threading.Thread(target=loop, args=(s, 500)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = rss_mb()
    assert sum(statuses.values()) == 2200
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.get(422, 0) > 100 and statuses.get(200, 0) > 1500
    assert after - before < 40, (before, after)


# -- the command -------------------------------------------------------------------------

def test_mm_serve_with_an_api_key(store, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    port = _free_port()
    config_path = Path(store.datastore).parent / "mm.yaml"
    process = subprocess.Popen([sys.executable, "-m", "manymodels", "serve", "-c", str(config_path), "--port", str(port), "--api-key-file", str(key_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = Client(port)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = client.get("/health")  # open without a key: load balancers probe it
                break
            except OSError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "mm serve did not start"
                time.sleep(0.2)
        assert status == 200 and health["status"] == "ok"
        status, answer = client.post({"group": {"g": "a"}})
        assert status == 401 and "API key" in answer["error"]
        assert client.post({"group": {"g": "a"}}, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert client.get("/groups")[0] == 401
        assert client.post({"group": {"g": "a"}}, headers={"Authorization": "Bearer s3cret-key"})[0] == 200
        assert client.post({"group": {"g": "a"}}, headers={"X-API-Key": "s3cret-key"})[0] == 200
    finally:
        process.terminate()
        process.wait(20)


def test_mm_serve_refuses_a_datastore_without_a_train_run(tmp_path):
    from .conftest import run_cli

    path = small_config(tmp_path, str(tmp_path / "none.csv"))
    result = run_cli("serve", "-c", str(path), "--port", str(_free_port()), timeout=60)
    assert result.returncode == 1 and "mm run" in result.stderr + result.stdout


# -- other shapes: series inside a group, other models ----------------------------------

@pytest.mark.parametrize("candidates", [["lightgbm", "linear", "naive", "mean"], ["linear"], ["moving_average"], ["ensemble", "lightgbm", "linear"]], ids=lambda c: "-".join(c))
def test_a_group_of_series_and_other_models_equal_mm_forecast(tmp_path, candidates):
    """Brands as groups with stores as their series, one model kind or AutoML's choice: the
    inference rows sent back as future rows give mm forecast's numbers."""
    from manymodels.extras.sample import generate_oj_sales

    from .conftest import write_config

    frame = generate_oj_sales(stores=3, brands=2, weeks=60, future_weeks=4, seed=7)
    frame["WeekStarting"] = frame["WeekStarting"].dt.strftime("%Y-%m-%d")
    frame.to_csv(tmp_path / "sales.csv", index=False)
    path = write_config(
        tmp_path, str(tmp_path / "sales.csv"),
        data={"group_columns": ["Brand"], "series_columns": ["Store", "Brand"]},
        train={"automl": {"enabled": True, "candidates": candidates, "n_trials": 0, "folds": 2, "reference": candidates[0]}},
        forecast={"quantiles": [0.5]},
    )
    config = load_config(path)
    assert mm.run(config).exit_code == 0
    want = _output(config)
    models = set(pd.read_csv(Datastore(config.datastore).output_path("training_output.csv"))["model"])
    assert len(candidates) > 1 or models == set(candidates)
    future = frame.loc[frame["Quantity"].isna()]
    body = {"groups": [{"group": {"Brand": b}, "future": [{"WeekStarting": r.WeekStarting, "Store": r.Store, "Price": r.Price, "Advert": r.Advert} for r in rows.itertuples()]} for b, rows in future.groupby("Brand")]}
    with serving(config) as (_, client):
        status, answer = client.post(body)
        assert status == 200, answer
        got = pd.DataFrame([{"Brand": f["group"]["Brand"], "Store": r["Store"], "WeekStarting": r["time"], "Prediction": r["prediction"], "Prediction_q50": r["quantiles"]["0.5"]} for f in answer["forecasts"] for r in f["rows"]])
        keys = ["Brand", "Store", "WeekStarting"]
        want["Store"] = want["Store"].astype(str)  # a series column is text in the partitions (and JSON), a number once the CSV is read back
        merged = want.merge(got, on=keys, suffixes=("", "_served"))
        assert len(merged) == len(want) == len(got)
        assert (merged["Prediction"] == merged["Prediction_served"]).all() and (merged["Prediction_q50"] == merged["Prediction_q50_served"]).all()
        status, stored = client.post({"groups": [{"group": {"Brand": b}} for b in future["Brand"].unique()]})
        assert status == 200 and {r["Store"] for f in stored["forecasts"] for r in f["rows"]} == set(future["Store"].astype(str))
        # a series this group does not have is named
        row = {"WeekStarting": future["WeekStarting"].iloc[0], "Store": 999, "Price": 2.0, "Advert": 1}
        status, error = client.post({"group": {"Brand": future["Brand"].iloc[0]}, "future": [row]})
        assert status == 422 and "no history" in error["error"] and "Store=999" in error["error"]


def test_pooled_models_are_served_as_mm_forecast_forecasts_them(tmp_path):
    """Groups whose model is a pool's LightGBM (train.automl.pooling): their inference rows sent
    back as future rows give mm forecast's numbers (through the pool, the batch path's way)."""
    from .test_pooling import pooled_config, shared_price_response

    frame = shared_price_response()
    config = load_config(pooled_config(tmp_path, frame))
    assert mm.run(config).exit_code == 0
    out = pd.read_csv(Datastore(config.datastore).output_path("training_output.csv"))
    pooled = out[out["model"].str.startswith("pooled_")].head(3)
    assert len(pooled) == 3, out["model"].value_counts()
    want = _output(config)
    future = frame.loc[frame["Quantity"].isna()]
    with serving(config) as (built, client):
        for row in pooled.itertuples():
            rows = future[(future["Store"] == row.Store) & (future["Brand"] == row.Brand)]
            body = {"group": {"Store": row.Store, "Brand": row.Brand}, "future": [{"WeekStarting": r.WeekStarting, "Price": r.Price, "Advert": r.Advert} for r in rows.itertuples()]}
            status, answer = client.post(body)
            assert status == 200, answer
            expected = want[(want["Store"] == row.Store) & (want["Brand"] == row.Brand)]
            assert [r["prediction"] for r in answer["forecasts"][0]["rows"]] == expected["Prediction"].tolist()
            assert answer["forecasts"][0]["model"] == row.model
            assert built.cache.entries[answer["forecasts"][0]["key"]].parts.get("prepared") is None  # the batch path
            cheaper = {**body, "future": [{**r, "Price": 1.0} for r in body["future"]]}
            status, moved = client.post(cheaper)
            assert status == 200 and [r["prediction"] for r in moved["forecasts"][0]["rows"]] != expected["Prediction"].tolist()


def test_an_integer_time_axis(tmp_path):
    frame = small_table(groups=("a", "b"), weeks=30, future=2, seed=5)
    frame["t"] = frame.groupby("g").cumcount() + 100  # period numbers 100, 101, ...
    config = _datastore(tmp_path / "int", frame)
    want = _output(config)
    with serving(config) as (_, client):
        future = frame.loc[frame["y"].isna() & (frame["g"] == "a")]
        status, answer = client.post({"group": {"g": "a"}, "future": [{"t": int(r.t), "price": r.price} for r in future.itertuples()]})
        assert status == 200, answer
        assert [r["prediction"] for r in answer["forecasts"][0]["rows"]] == want.loc[want["g"] == "a", "Prediction"].tolist()
        assert [r["time"] for r in answer["forecasts"][0]["rows"]] == ["130", "131"]
        status, error = client.post({"group": {"g": "a"}, "future": [{"t": "130", "price": 2.0}]})
        assert status == 422 and "not a period number" in error["error"]
