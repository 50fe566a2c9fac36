"""A real Dask cluster for tests: `dask scheduler` and `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Cluster:
    """A scheduler and workers as separate processes (each in its own process group)."""

    def __init__(self, folder: Path, workers: int = 2, env: dict | None = None):
        self.folder = folder
        self.env = {**os.environ, **(env or {})}
        self.file = folder / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        self.scheduler = self._start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(self.file)], "scheduler")
        deadline = time.monotonic() + 60
        while not self.file.exists():
            assert time.monotonic() < deadline and self.scheduler.poll() is None, (folder / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self.add_worker(i) for i in range(workers)]
        self.wait_for(workers)

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=self.env, start_new_session=True)
        self.processes.append(proc)
        return proc

    def add_worker(self, i: int) -> subprocess.Popen:
        args = ["worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0", "--name", f"w{i}"]
        return self._start(args, f"worker{i}")

    def wait_for(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its nanny: a lost machine
        proc.wait()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
