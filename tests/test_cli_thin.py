"""The CLI is thin: every command passes what it was given to the library API, and nothing else.

The API functions are replaced by spies (in this process, through typer's
CliRunner) that record their arguments and stop the command; each test then
checks that every flag arrived.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

import manymodels as mm
import manymodels.api as api
from manymodels.cli import RUN_FLAGS, app
from manymodels.errors import MMError
from manymodels.runner.options import RunOptions

from .conftest import write_config

# one value for every RunOptions field, and the flag that sets it
RUN_ARGV = {
    "jobs": (["--jobs", "3"], 3),
    "engine": (["--engine", "serial"], "serial"),
    "scheduler": (["--scheduler", "tcp://127.0.0.1:9"], "tcp://127.0.0.1:9"),
    "allow_reuse": (["--no-allow-reuse"], False),
    "wait": (["--wait", "7.5"], 7.5),
}
GIVEN = RunOptions(**{name: value for name, (_, value) in RUN_ARGV.items()})


def test_every_run_option_has_one_flag():
    names = {f.name for f in fields(RunOptions)}
    assert set(RUN_FLAGS) == names  # a new field needs its flag in cli.RUN_FLAGS...
    assert set(RUN_ARGV) == names  # ...and a value here, so the tests below check it arrives
    assert all(value != f.default for f in fields(RunOptions) for value in [RUN_ARGV[f.name][1]])


class _Stop(MMError):
    pass


@pytest.fixture
def spy(monkeypatch):
    """``spy(name)`` replaces ``api.<name>`` with a recorder; ``calls[name]`` is (args, kwargs)."""
    calls: dict[str, tuple[tuple, dict]] = {}

    def install(name: str) -> None:
        def recorder(*args, **kwargs):
            calls[name] = (args, kwargs)
            raise _Stop("stopped by the test")

        monkeypatch.setattr(api, name, recorder)

    install.calls = calls
    return install


def _invoke(*argv: str) -> str:
    done = CliRunner().invoke(app, list(argv))
    assert done.exit_code == 1 and "stopped by the test" in done.output, done.output
    return done.output


def _run_argv(names=RUN_ARGV) -> list[str]:
    return [arg for name in names for arg in RUN_ARGV[name][0]]


OUTPUT_ARGV = ["--verbose", "--quiet", "--json"]


def _check_terminal(terminal, log: Path | None = None) -> None:
    assert terminal.verbose and terminal.quiet and terminal.json_mode
    if log is not None:  # the terminal writes there (the command's error, here)
        assert "stopped by the test" in log.read_text()


@pytest.mark.parametrize(
    "command,step_argv,step_kwargs",
    [
        ("split", [], {}),
        ("train", ["--groups", "Store=2", "--groups", "Store=3", "--retry-failed"], {"groups": ["Store=2", "Store=3"], "retry_failed": True}),
        ("forecast", ["--run-id", "20260101-000000-train-abcd"], {"run_id": "20260101-000000-train-abcd"}),
        ("run", [], {}),
    ],
)
def test_a_step_command_passes_its_config_terminal_options_and_arguments(tmp_path: Path, spy, command, step_argv, step_kwargs):
    path = write_config(tmp_path, "sales.csv")
    log = tmp_path / "mm.log"
    spy(command)
    _invoke(command, "-c", str(path), "--set", "train.horizon=3", *step_argv, *_run_argv(), "--explain", *OUTPUT_ARGV, "--log-file", str(log))
    (config, terminal), kwargs = spy.calls[command]
    assert config.train.horizon == 3 and config.data.path == str(tmp_path / "sales.csv")
    _check_terminal(terminal, log)
    assert kwargs.pop("options") == GIVEN
    if command == "run":
        assert callable(kwargs.pop("on_step"))
    assert kwargs == step_kwargs


def test_explain_alone_turns_details_on(tmp_path: Path, spy):
    spy("train")
    _invoke("train", "-c", str(write_config(tmp_path, "sales.csv")), "--explain")
    (_, terminal), kwargs = spy.calls["train"]
    assert terminal.verbose and not terminal.quiet and kwargs["options"] == RunOptions()


def test_clean_accuracy_and_export_pass_the_lock_wait(tmp_path: Path, spy):
    path = write_config(tmp_path, "sales.csv")
    spy("clean")
    _invoke("clean", "-c", str(path), "--step", "train", "--yes", *_run_argv(["wait"]), *OUTPUT_ARGV)
    (_, terminal), kwargs = spy.calls["clean"]
    _check_terminal(terminal)
    assert kwargs == {"step": "train", "yes": True, "options": RunOptions(wait=7.5)}

    spy("accuracy")
    _invoke("accuracy", "-c", str(path), *_run_argv(["wait"]), *OUTPUT_ARGV)
    (config, terminal), kwargs = spy.calls["accuracy"]
    _check_terminal(terminal)
    assert config.source and kwargs == {"options": RunOptions(wait=7.5)}

    spy("export")
    out = tmp_path / "onnx"
    _invoke("export", "-c", str(path), "--format", "onnx", "-o", str(out), "-g", "Store=2", "--run-id", "R", "--no-verify", *_run_argv(["wait"]), *OUTPUT_ARGV)
    (_, terminal), kwargs = spy.calls["export"]
    _check_terminal(terminal)
    assert kwargs == {"fmt": "onnx", "output": out, "groups": ["Store=2"], "run_id": "R", "verify": False, "options": RunOptions(wait=7.5)}


def test_report_runs_and_models_call_the_api(tmp_path: Path, spy):
    path = write_config(tmp_path, "sales.csv")
    spy("report")
    _invoke("report", "-c", str(path), "-o", str(tmp_path / "r.html"), "--history", "12", *OUTPUT_ARGV)
    (config, terminal), kwargs = spy.calls["report"]
    _check_terminal(terminal)
    assert kwargs == {"output": tmp_path / "r.html", "history": 12}

    spy("list_runs")
    _invoke("runs", "-c", str(path), "--set", "datastore=elsewhere", "--step", "train", "-n", "5", "--json")
    (config,), kwargs = spy.calls["list_runs"]
    assert config.datastore.endswith("elsewhere") and kwargs == {"step": "train", "limit": 5}

    spy("show_run")
    _invoke("runs", "-c", str(path), "show", "RUN-1")
    assert spy.calls["show_run"][0][1] == "RUN-1"
    _invoke("runs", "show", "RUN-2", "-c", str(path))
    assert spy.calls["show_run"][0][1] == "RUN-2"

    spy("list_models")
    _invoke("models", "-c", str(path), "-g", "Store=2", "--json")
    (config,), kwargs = spy.calls["list_models"]
    assert kwargs == {"groups": ["Store=2"]}


def test_serve_passes_its_flags(tmp_path: Path, spy):
    path = write_config(tmp_path, "sales.csv")
    spy("serve")
    _invoke("serve", "-c", str(path), "--set", "serve.cache_size=7", "--host", "0.0.0.0", "--port", "9001", "--pin", "R", "--api-key-file", str(tmp_path / "key"))
    (config,), kwargs = spy.calls["serve"]
    assert config.serve.cache_size == 7
    assert kwargs == {"host": "0.0.0.0", "port": 9001, "pin": "R", "api_key_file": str(tmp_path / "key")}


def test_the_python_api_takes_run_options_as_one_object_or_as_keywords():
    assert RunOptions.of(None, jobs=2) == RunOptions(jobs=2)
    assert RunOptions.of(RunOptions(jobs=2, wait=1.0), allow_reuse=False) == RunOptions(jobs=2, wait=1.0, allow_reuse=False)
    with pytest.raises(TypeError, match="unknown run option.*jobz"):
        RunOptions.of(None, jobz=2)
    assert mm.RunOptions is RunOptions
