"""--json on every command, for scripts and cron."""

import json

import typer

from manymodels import __version__
from manymodels.cli import app

from .conftest import run_cli


def commands(group, prefix: str = ""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a command group (mm runs)
            yield from commands(command, f"{prefix}{name} ")
        yield f"{prefix}{name}", command


def test_every_command_has_json():
    found = dict(commands(typer.main.get_command(app)))
    assert {"split", "train", "forecast", "run", "clean", "runs", "runs show", "models", "sample", "report", "export", "version"} <= set(found)
    missing = [name for name, command in found.items() if not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_version_json():
    done = run_cli("version", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"version": __version__}
