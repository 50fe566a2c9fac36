"""The ``mm`` command: a thin layer over the library API.

Parses options, calls ``manymodels.api``, prints the result through the
Terminal, and maps outcomes to exit codes: 0 all groups succeeded, 1 the
command could not run (bad config, bad input, missing upstream, datastore
busy), 3 it ran but some groups failed (the rest are written).

The options commands share are declared once, below, and attached by
``@command``: a command's function takes ``config`` (loaded, with ``--set``
applied), ``terminal`` and ``options`` (a ``RunOptions``) ready-made.
"""

from __future__ import annotations

import inspect
import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .console import Terminal
from .errors import EXIT_ERROR, MMError, from_os_error
from .runner.options import RunOptions

app = typer.Typer(
    name="mm",
    help="manymodels: train, store and serve one forecasting model per group.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
runs_app = typer.Typer(help="List and inspect step runs.", invoke_without_command=True, no_args_is_help=False)
app.add_typer(runs_app, name="runs")

# -- shared options: each declared once ----------------------------------------------
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.horizon=8 (repeatable).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show details and tracebacks.")]
GroupsOpt = Annotated[Optional[list[str]], typer.Option("--groups", "-g", help="Only these groups: --groups Store=2,Brand=tropicana (repeatable).", show_default=False)]
RunIdOpt = Annotated[Optional[str], typer.Option("--run-id", help="Use the models of this train run (default: the latest finished one).", show_default=False)]

# One flag per RunOptions field (its default is the field's): what a command given run=RUN passes to the API.
RUN_FLAGS = {
    "jobs": Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes (default: all cores).", show_default=False)],
    "engine": Annotated[Optional[str], typer.Option("--engine", help="serial | local | dask (default: engine.kind).", show_default=False)],
    "scheduler": Annotated[Optional[str], typer.Option("--scheduler", help="Dask scheduler address tcp://HOST:PORT.", show_default=False)],
    "allow_reuse": Annotated[Optional[bool], typer.Option("--allow-reuse/--no-allow-reuse", help="Reuse unchanged outputs (default: allow_reuse).", show_default=False)],
    "wait": Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for another mm using the datastore.")],
}
RUN = tuple(RUN_FLAGS)
LOCK = ("wait",)  # commands that only take the datastore lock

# The Terminal's flags: (declaration, default).
OUTPUT_FLAGS = {
    "explain": (Annotated[bool, typer.Option("--explain", help="Print every reuse decision with its reason.")], False),
    "verbose": (VerboseOpt, False),
    "quiet": (Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors (for cron).")], False),
    "json_": (JsonOpt, False),
    "log_file": (Annotated[Optional[Path], typer.Option("--log-file", help="Append everything shown (and details) to this file.", show_default=False)], None),
}
STEP_OUTPUT = tuple(OUTPUT_FLAGS)
OUTPUT = ("verbose", "quiet", "json_", "log_file")

_INJECTED = ("config", "terminal", "options")


def _flag(name: str, annotation, default=inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _shared(config: bool, run: tuple[str, ...], output: tuple[str, ...]) -> tuple[list[inspect.Parameter], list[inspect.Parameter]]:
    """The shared parameters a command takes: (before its own, after its own)."""
    before = [_flag("config_path", ConfigOpt), _flag("overrides", SetOpt, None)] if config else []
    defaults = {f.name: f.default for f in fields(RunOptions)}
    after = [_flag(name, RUN_FLAGS[name], defaults[name]) for name in run]
    after += [_flag(name, *OUTPUT_FLAGS[name]) for name in output]
    return before, after


def command(group: typer.Typer = app, *, name: str | None = None, config: bool = True, run: tuple[str, ...] = (), output: tuple[str, ...] = OUTPUT):
    """Register ``body`` as a command with the shared options it names.

    ``config``: --config and --set, loaded into the body's ``config``; ``run``: flags of RunOptions
    fields, built into its ``options``; ``output``: the Terminal's flags, built into its ``terminal``.
    The body returns the exit code; errors become messages (see ``_execute``).
    """

    def register(body):
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(body, eval_str=True).parameters.values() if p.name not in _INJECTED]
        wanted = set(inspect.signature(body).parameters) & set(_INJECTED)
        before, after = _shared(config, run, output)

        def wrapper(**kwargs):
            terminal = _make_terminal(kwargs)
            options = RunOptions(**{field: kwargs.pop(field) for field in run})
            path, overrides = kwargs.pop("config_path", None), kwargs.pop("overrides", None)

            def call():
                given = {"config": _config(path, overrides) if config else None, "terminal": terminal, "options": options}
                return body(**kwargs, **{k: v for k, v in given.items() if k in wanted})

            _execute(terminal, call)

        wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = body.__name__, body.__qualname__, body.__doc__
        wrapper.__signature__ = inspect.Signature([*before, *own, *after])
        group.command(name)(wrapper)
        return wrapper

    return register


def _make_terminal(kwargs: dict) -> Terminal:
    explain, verbose = kwargs.pop("explain", False), kwargs.pop("verbose", False)
    return Terminal(quiet=kwargs.pop("quiet", False), json_mode=kwargs.pop("json_", False), verbose=verbose or explain, log_file=kwargs.pop("log_file", None))


class Terminated(KeyboardInterrupt):
    """SIGTERM (cron's or systemd's timeout, `kill`): stopped the way Ctrl-C stops a step,
    so the run record says interrupted, the lock is released and the workers are stopped."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _execute(terminal: Terminal, call) -> None:
    """Run a command body: MMError -> message + exit 1; bugs -> short message (traceback with -v)."""
    code = EXIT_ERROR
    try:
        code = call() or 0
    except (MMError, OSError) as raised:
        exc = raised if isinstance(raised, MMError) else from_os_error(raised)
        terminal.error(exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""))
        if terminal.verbose:
            terminal.traceback()
        if terminal.json_mode:
            terminal.emit_json({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
        code = exc.exit_code
    except KeyboardInterrupt as stopped:
        terminated = isinstance(stopped, Terminated)
        terminal.error(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; finished groups are kept and the next run picks up from there")
        code = 143 if terminated else 130
    except Exception as exc:  # a bug: say so plainly, without a wall of traceback
        terminal.error(f"unexpected error: {type(exc).__name__}: {exc}\n  this is a bug in mm; run again with --verbose for the traceback and please report it")
        if terminal.verbose:
            terminal.traceback()
        code = EXIT_ERROR
    finally:
        terminal.close()
    raise typer.Exit(code)


def _config(path: Path, overrides: list[str] | None):
    from .config import load_config

    return load_config(path, overrides or [])


# -- commands ----------------------------------------------------------------

@command(run=RUN, output=STEP_OUTPUT)
def split(config, terminal, options):
    """Split the raw table into per-group train and inference partitions."""
    from . import api

    result = api.split(config, terminal, options=options)
    report_split(terminal, result)
    terminal.emit_json(result.to_dict())
    return 0


@command(run=RUN, output=STEP_OUTPUT)
def train(
    config, terminal, options,
    groups: GroupsOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retrain only the groups that failed in the latest run.")] = False,
):
    """Fit one model per group (AutoML over LightGBM and baselines), reusing unchanged groups."""
    from . import api

    result = api.train(config, terminal, groups=groups, retry_failed=retry_failed, options=options)
    report_train(terminal, result)
    terminal.emit_json(result.to_dict())
    return result.exit_code


@command(run=RUN, output=STEP_OUTPUT)
def forecast(config, terminal, options, run_id: RunIdOpt = None):
    """Predict every inference row with its group's model."""
    from . import api

    result = api.forecast(config, terminal, run_id=run_id, options=options)
    report_forecast(terminal, result)
    terminal.emit_json(result.to_dict())
    return result.exit_code


@command(run=RUN, output=STEP_OUTPUT)
def run(config, terminal, options):
    """Split, train and forecast in one go (what cron calls), reusing what is still valid."""
    from . import api

    reporters = {"split": report_split, "accuracy": report_accuracy, "train": report_train, "forecast": report_forecast}
    result = api.run(config, terminal, options=options, on_step=lambda name, r: reporters[name](terminal, r))
    terminal.emit_json(result.to_dict())
    return result.exit_code


@command(run=LOCK)
def accuracy(config, terminal, options):
    """Score the stored forecasts against the actuals the split now has (realised accuracy, drift)."""
    from . import api

    result = api.accuracy(config, terminal, options=options)
    report_accuracy(terminal, result)
    terminal.emit_json(result.to_dict())
    return 0


@command(run=LOCK)
def clean(
    config, terminal, options,
    step: Annotated[str, typer.Option("--step", help="split | train | forecast | all")] = "all",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really delete (default: dry run).")] = False,
):
    """Remove step outputs from the datastore (a dry run unless --yes)."""
    from . import api

    result = api.clean(config, terminal, step=step, yes=yes, options=options)
    verb = "would remove" if result.dry_run else "removed"
    if not result.entries:
        terminal.info(f"clean: nothing to remove for step {step}")
    else:
        terminal.table(
            f"clean --step {step}: {verb} {len(result.entries)} path(s), {_size(result.total_bytes)}",
            ["path", "size"],
            [(e["path"], _size(e["bytes"])) for e in result.entries],
        )
        if result.dry_run:
            terminal.info("dry run: nothing was deleted; pass --yes to delete")
    terminal.emit_json(result.to_dict())
    return 0


@command()
def report(
    config, terminal,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="HTML file to write (default: <datastore>/outputs/report.html).", show_default=False)] = None,
    history: Annotated[int, typer.Option("--history", min=0, help="Periods of history per series in the group charts (0: all).")] = 156,
):
    """Write one self-contained HTML report of the latest runs (works offline)."""
    from . import api

    result = api.report(config, terminal, output=output, history=history)
    terminal.facts(
        f"report: {result.path}",
        [
            ("groups", f"{result.n_groups:,} ({result.n_charts:,} with charts, {result.n_failed:,} failed)"),
            ("runs", f"train {result.train_run_id or '-'}, forecast {result.forecast_run_id or '-'}"),
            ("size", _size(result.bytes)),
            ("time", f"{result.duration_s:.1f}s"),
        ],
    )
    terminal.emit_json(result.to_dict())
    return 0


@command(run=LOCK)
def export(
    config, terminal, options,
    fmt: Annotated[str, typer.Option("--format", help="onnx (needs: pip install 'manymodels[onnx]').")] = "onnx",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder to write (default: <datastore>/exports/<format>).", show_default=False)] = None,
    groups: GroupsOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Export the models of this train run (default: the latest finished one).", show_default=False)] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Score each exported model with onnxruntime on its training rows and compare with mm.")] = True,
):
    """Write every group's model as ONNX (LightGBM, linear) plus metadata, for scoring in a database."""
    from . import api

    r = api.export(config, terminal, fmt=fmt, output=output, groups=groups, run_id=run_id, verify=verify, options=options)
    check = f"{r.verified:,} checked with onnxruntime, largest relative difference {r.max_relative_diff:.2g}" if r.verified else "not checked (--no-verify)"
    terminal.facts(
        f"export: {r.status} ({r.format} -> {r.output})",
        [
            ("models from", f"train run {r.train_run_id}"),
            ("groups", f"{r.n_groups:,}: {r.onnx:,} as ONNX, {r.metadata_only:,} metadata only (baselines), {r.no_model:,} without a model, {r.failed:,} failed"),
            ("models", ", ".join(f"{k} {v}" for k, v in sorted(r.models.items(), key=lambda kv: -kv[1])) or "-"),
            ("check", check),
            ("time", f"{r.duration_s:.1f}s"),
            ("index", str(Path(r.output) / "index.csv")),
        ],
    )
    _failures(terminal, r.failures, "export", "index.csv")
    terminal.emit_json(r.to_dict())
    return r.exit_code


@command(output=("verbose", "json_", "log_file"))
def serve(
    config, terminal,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only; put a reverse proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    pin: Annotated[Optional[str], typer.Option("--pin", help="Serve this train run's models instead of following the latest one.", show_default=False)] = None,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="Require this key (the file's one line) as 'Authorization: Bearer KEY' or 'X-API-Key'.", show_default=False)] = None,
):
    """Serve every group's forecast over HTTP (needs: pip install 'manymodels[serve]')."""
    from . import api

    terminal.info(f"serving {config.datastore} on http://{host}:{port} (Ctrl-C stops)")
    # --json: one document when the server starts (it runs until stopped: there is no result to print)
    terminal.emit_json({"serving": f"http://{host}:{port}", "datastore": str(config.datastore), "pin": pin})
    api.serve(config, host=host, port=port, pin=pin, api_key_file=str(api_key_file) if api_key_file else None)


@command(config=False, output=("quiet", "json_"))
def sample(
    terminal,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (a folder with --per-group-files).")] = Path("sample_data/oj_sales.csv"),
    stores: Annotated[int, typer.Option("--stores", min=1, help="Stores (3,991 gives the accelerator's 11,973 series).")] = 10,
    brands: Annotated[int, typer.Option("--brands", min=1, help="Brands per store.")] = 3,
    weeks: Annotated[int, typer.Option("--weeks", min=1, help="Weeks of history.")] = 121,
    future_weeks: Annotated[int, typer.Option("--future-weeks", min=0, help="Weeks after the history with planned Price/Advert and no Quantity.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
    per_group_files: Annotated[bool, typer.Option("--per-group-files", help="One file per store x brand, as the accelerator had.")] = False,
):
    """Generate simulated orange-juice sales in the accelerator's shape."""
    from .extras.sample import generate_oj_sales, write_sample

    if fmt not in ("csv", "parquet"):
        raise MMError(f"--format {fmt!r} is not supported", "use csv or parquet")
    frame = generate_oj_sales(stores=stores, brands=brands, weeks=weeks, future_weeks=future_weeks, seed=seed)
    written = write_sample(frame, output, fmt, per_group_files)
    where = str(output) if not per_group_files else f"{len(written)} files in {output}"
    terminal.success(f"sample: {len(frame):,} rows, {stores * brands:,} series ({stores} stores x {brands} brands) -> {where}")
    terminal.emit_json({"rows": len(frame), "series": stores * brands, "files": [str(p) for p in written[:10]], "n_files": len(written)})
    return 0


@runs_app.callback()
def runs(
    ctx: typer.Context,
    config_path: ConfigOpt = Path("mm.yaml"),
    overrides: SetOpt = None,
    step: Annotated[Optional[str], typer.Option("--step", help="Only runs of this step.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show the newest N runs.")] = 20,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
):
    """List step runs, newest last (`mm runs show ID` for one)."""
    ctx.obj = {"config": config_path, "set": overrides, "json": json_, "verbose": verbose}
    if ctx.invoked_subcommand is None:
        terminal = Terminal(json_mode=json_, verbose=verbose)
        _execute(terminal, lambda: _list_runs(terminal, _config(config_path, overrides), step, limit))


def _list_runs(terminal: Terminal, config, step: str | None, limit: int) -> int:
    from . import api

    records = api.list_runs(config, step=step, limit=limit)
    rows = [(r["id"], r["step"], r["status"], r.get("started", "")[:19], _duration(r), _counts(r.get("counts", {}))) for r in records]
    if not records:
        terminal.info(f"no runs in datastore {config.datastore}")
    else:
        terminal.table(f"runs in {config.datastore}", ["id", "step", "status", "started (UTC)", "duration", "groups"], rows)
    terminal.emit_json(records)
    return 0


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id (see mm runs).")],
    config_path: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.", show_default=False)] = None,
    json_: JsonOpt = False,
    groups_limit: Annotated[int, typer.Option("--groups-limit", help="Per-group rows to print.")] = 30,
):
    """Details of one run: counts, and every group's status and reason."""
    obj = ctx.obj or {}
    terminal = Terminal(json_mode=json_ or obj.get("json", False), verbose=obj.get("verbose", False))
    config_path = config_path or obj.get("config") or Path("mm.yaml")
    _execute(terminal, lambda: _show_run(terminal, _config(config_path, obj.get("set")), run_id, groups_limit))


def _show_run(terminal: Terminal, config, run_id: str, groups_limit: int) -> int:
    import json

    from . import api

    details = api.show_run(config, run_id)
    record, groups = details.record, details.groups
    keys = ["id", "step", "status", "started", "ended", "counts", "config_fingerprint", "mm_version", "host", "pid", "argv", "train_run_id", "output", "backtest", "accuracy", "unscored", "error", "reason", "cutoff"]
    terminal.facts(f"run {run_id}", [(k, json.dumps(record[k]) if isinstance(record[k], (dict, list)) else record[k]) for k in keys if k in record and record[k] not in (None, "", {}, [])])
    if len(groups):
        cols = [c for c in ("label", "status", "model", "model_version", "decision", "error") if c in groups.columns]
        shown = groups[cols].head(groups_limit).fillna("")
        terminal.table(f"groups ({len(groups)}; first {min(groups_limit, len(groups))})", cols, shown.astype(str).values.tolist())
    terminal.emit_json(details.to_dict())
    return 0


@command(output=("json_", "verbose"))
def models(config, terminal, groups: GroupsOpt = None, limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print.")] = 50):
    """List stored model versions (newest first per group) with their tags."""
    from . import api

    found = api.list_models(config, groups=groups)
    rows = [
        (",".join(f"{k}={v}" for k, v in m["group"].items()), m["version"], m["model"], m["run_id"], m["created"], _num(m.get("wape")), _num(m.get("mase"), 3))
        for m in found[:limit]
    ]
    terminal.table(f"models ({len(found)} versions)", ["group", "version", "model", "run", "created", "backtest wape", "backtest mase"], rows)
    terminal.emit_json(found)
    return 0


@command(config=False, output=("json_",))
def version(terminal):
    """Print the manymodels version."""
    if not terminal.json_mode:
        terminal.out.print(f"manymodels {__version__}")
    terminal.emit_json({"version": __version__})
    return 0


# -- reports -----------------------------------------------------------------

def report_split(terminal: Terminal, r) -> None:
    reuse = f"reused ({r.reason})" if r.reused else f"done ({r.reason})"
    terminal.facts(
        f"split: {reuse}",
        [
            ("groups", f"{r.n_groups:,} ({r.n_series:,} series)"),
            ("rows", f"{r.n_train_rows:,} train, {r.n_inference_rows:,} inference"),
            ("time span", f"{r.first_time} .. {r.last_time} ({r.frequency})"),
            ("cutoff", r.cutoff),
            ("groups with gaps", f"{r.groups_with_gaps:,}"),
            ("groups with nothing to forecast", f"{r.groups_without_inference:,}"),
        ],
    )
    for w in r.warnings:
        terminal.warn(w)


def report_train(terminal: Terminal, r) -> None:
    winners = ", ".join(f"{k} {v}" for k, v in sorted(r.winners.items(), key=lambda kv: -kv[1])) or "-"
    pairs = [
        ("groups", f"{r.n_groups:,}: {r.trained:,} trained ({r.tuned:,} tuned), {r.reused:,} reused, {r.failed:,} failed"),
        ("models chosen", winners),
        ("median backtest", _median_backtest(r) or "-"),
    ]
    unscored = _backtest_unscored(r)
    if unscored:
        pairs.append(("not scored", unscored))
    if r.metric_fallbacks:
        chosen = ", ".join(f"{n:,} group(s) chosen by {m}" for m, n in r.metric_fallbacks.items())
        pairs.append(("metric fallback", f"{chosen}: train.automl.metric could not score most of their backtest (see tuning in training_output.csv)"))
    pairs += [("time", f"{r.duration_s:.1f}s"), ("output", r.output)]
    terminal.facts(f"train: {r.status} (run {r.run_id})", pairs)
    _failures(terminal, r.failures, "train", "training_output.csv")


# How the console names the metrics, and writes their values.
METRIC_LABELS = {"wape": "WAPE", "mase": "MASE", "smape": "sMAPE", "mape": "MAPE", "rmse": "RMSE"}
PERCENT = ("wape", "smape", "mape")


def _metric_value(metric: str, value) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2f}%" if metric in PERCENT else f"{value:.3f}"


def _median_backtest(r) -> str:
    """Each median with how many groups it is over, when the metric could not score them all."""
    with_model = sum(r.winners.values())
    parts = []
    for m, value in r.median_backtest.items():
        missing = (r.unscored.get(m) or {}).get("groups", 0)
        over = f" ({with_model - missing:,} of {with_model:,} groups)" if missing else ""
        parts.append(f"{METRIC_LABELS[m]} {_metric_value(m, value)}{over}")
    return ", ".join(parts)


# Why a metric could not score backtest rows (see core/metrics.py), as the console says it.
BACKTEST_WHY = {
    "mape": "actual 0",
    "wape": "in groups whose backtest actuals are all 0",
    "mase": "in groups with a constant history: no scale",
}


def _backtest_unscored(r) -> str:
    parts = []
    for m, why in BACKTEST_WHY.items():
        rows = (r.unscored.get(m) or {}).get("rows", 0)
        if rows:
            parts.append(f"{METRIC_LABELS[m]} {rows:,} of {r.backtest_rows:,} backtest rows ({why})")
    return "; ".join(parts)


# Why a pooled forecast metric could not score rows: (some of them, all of them), WAPE and MASE first.
FORECAST_WHY = {
    "wape": ("", "every actual is 0: WAPE is undefined, see MASE"),  # pooled, it fails only as a whole
    "mase": ("are in groups with no MASE scale (a constant history)", "no group has a MASE scale (a constant history)"),
    "smape": ("", ""),  # scores every row
    "mape": ("have actual 0: MAPE is undefined there, see WAPE", "every actual is 0: MAPE is undefined, see WAPE"),
}


def _accuracy_pairs(r) -> list[tuple[str, str]]:
    """WAPE and MASE first (zero-safe); for each metric, the rows it could not score and why."""
    a, n = r.accuracy, r.accuracy["n_rows"]
    pairs = []
    for m, (some, every) in FORECAST_WHY.items():
        missed = (r.unscored.get(m) or {}).get("rows", 0)
        note = ""
        if missed and missed == n:
            note = f"  (no row scored: {every})"
        elif missed:
            note = f"  ({n - missed:,} of {n:,} rows scored; {missed:,} {some})"
        elif m == "smape" and a.get("n_both_zero"):
            note = f"  ({a['n_both_zero']:,} rows with actual and forecast 0 count as exact)"
        pairs.append((METRIC_LABELS[m], _metric_value(m, a.get(m)) + note))
    return pairs


def _worst_groups(terminal: Terminal, r) -> None:
    without = (r.unscored.get("wape") or {}).get("groups", 0)
    title = "worst groups (by WAPE" + (f"; {without:,} group(s) whose actuals are all 0 have no WAPE and are not ranked)" if without else ")")
    rows = [(w["group"], _num(w["wape"]), _num(w["mase"], 3), _num(w["smape"]), _partial(w, "mape")) for w in r.worst_groups]
    terminal.table(title, ["group", "WAPE %", "MASE", "sMAPE %", "MAPE %"], rows)


def _partial(w: dict, metric: str) -> str:
    """A group's metric, with the rows it scored when it could not score them all."""
    missed = (w.get("unscored") or {}).get(metric, 0)
    value = _num(w[metric])
    return f"{value} ({w['n_rows'] - missed} of {w['n_rows']} rows)" if missed and value else value


def report_accuracy(terminal: Terminal, r) -> None:
    """Realised accuracy: the stored forecasts against the actuals that arrived since."""
    m = r.metric
    if not r.n_rows:
        terminal.facts("accuracy: nothing scored yet", [("forecast runs stored", f"{r.n_runs:,}"), ("why", "no stored forecast has an actual in the split yet (the next split brings them)")])
        return
    label = METRIC_LABELS[m]

    def line(p: dict) -> str:
        fva = _metric_value(m, p.get("fva"))
        return f"{label} {_metric_value(m, p.get(m))} (seasonal naive {_metric_value(m, p.get('seasonal_naive'))}, value added {fva}), bias {_num(p.get('bias'), 3)}, {p['n_rows']:,} rows"

    pairs = [("scored now", line(r.latest) if r.latest else "no new actual"), ("all scored", line(r.overall)), ("groups", f"{r.n_groups:,} from {r.n_runs:,} forecast run(s)")]
    rule = r.drift_rule
    pairs.append(("drift", f"{len(r.drift):,} group(s): {label} over the last {rule['window']} scored periods > {rule['factor']:g} x backtest" + (": " + ", ".join(r.drift[:5]) + (" ..." if len(r.drift) > 5 else "") if r.drift else "")))
    pairs += [("time", f"{r.duration_s:.1f}s"), ("output", r.output)]
    terminal.facts(f"accuracy: {r.n_new:,} forecast rows scored", pairs)
    terminal.table(f"realised {label} by horizon step", ["step", f"{label}", "seasonal naive", "value added", "rows"], [(s["step"], _metric_value(m, s[m]), _metric_value(m, s["seasonal_naive"]), _metric_value(m, s["fva"]), s["n_rows"]) for s in r.by_step])
    if r.degraded:
        terminal.table("most degraded groups (realised over backtest)", ["group", "realised", "backtest", "ratio", "drift"], [(d["group"], _metric_value(m, d["realised"]), _metric_value(m, d["backtest"]), _num(d["ratio"]), "yes" if d["drift"] else "") for d in r.degraded])


def report_forecast(terminal: Terminal, r) -> None:
    pairs = [
        ("models from", f"train run {r.train_run_id}"),
        ("groups", f"{r.n_groups:,}: {r.forecast:,} forecast, {r.reused:,} reused, {r.no_model:,} without a model, {r.failed:,} failed"),
        ("rows", f"{r.n_rows:,}"),
        ("time", f"{r.duration_s:.1f}s"),
        ("output", r.output),
    ]
    if r.rows_beyond_horizon:
        pairs.insert(3, ("beyond horizon", f"{r.rows_beyond_horizon:,} rows are further ahead than train.horizon"))
    terminal.facts(f"forecast: {r.status} (run {r.run_id})", pairs)
    if r.accuracy:
        terminal.facts(
            f"accuracy against the actuals in the inference rows ({r.accuracy['n_rows']:,} rows)",
            _accuracy_pairs(r) + [(f"below {name}", f"{share:.1%}") for name, share in r.coverage.items()],
        )
        if r.worst_groups:
            _worst_groups(terminal, r)
    if r.hierarchy:
        report_hierarchy(terminal, r.hierarchy)
    if r.rows_beyond_horizon:
        terminal.warn(f"{r.rows_beyond_horizon:,} inference rows are more than train.horizon periods after their last known value; their accuracy was not validated by the backtest")
    if r.out_of_range:
        o = r.out_of_range
        terminal.warn(f"{o['n']:,} known-future value(s) in {o['groups']:,} group(s) lie outside their series' training range, so the models read them as the nearest value seen: " + "; ".join(o["examples"][:3]) + _more(o, 3))
    if r.capped:
        c = r.capped
        terminal.warn(f"{c['n']:,} forecast row(s) in {c['groups']:,} group(s) were capped by forecast.cap_factor: " + "; ".join(c["examples"][:3]) + _more(c, 3))
    _failures(terminal, r.failures, "forecast", "the run record (mm runs show)")


def report_hierarchy(terminal: Terminal, h: dict) -> None:
    """The reconciliation of a forecast run with a hierarchy (steps/reconcile.py)."""
    if "error" in h:
        return  # warned when it happened
    levels = ", ".join(f"{name} {n:,}" for name, n in h["levels"].items())
    method = h["method"] + (f", {h['top_down_rule']}" if h.get("top_down_rule") else "") + (", nonnegative" if h["nonnegative"] else "")
    pairs = [("method", method), ("nodes", f"{h['n_nodes']:,}: {levels}"), ("output", h["output"])]
    if h["failed_nodes"]["n"]:
        f = h["failed_nodes"]
        pairs.append(("failed nodes", f"{f['n']:,} (their branches are bottom-up): " + "; ".join(f["examples"][:5])))
    if h.get("train_level"):
        pairs.insert(1, ("trained", f"level {h['train_level']} only: the levels above are its sums, those below split by {h['top_down_rule']}"))
    terminal.facts("hierarchy: forecasts reconciled", pairs)
    if h.get("accuracy"):
        order = [lvl for lvl in h.get("level_order", []) if lvl in h["accuracy"]] or list(h["accuracy"])
        base = lambda a, k: (a["base"] or {}).get(k)  # noqa: E731  (None: a level hierarchy.train_level derived has no base forecast)
        rows = [(name, _num(base(a, "mase"), 3), _num(a["reconciled"]["mase"], 3), _num(base(a, "smape")), _num(a["reconciled"]["smape"])) for name, a in ((n, h["accuracy"][n]) for n in order)]
        terminal.table("accuracy per level, base -> reconciled", ["level", "MASE base", "MASE rec.", "sMAPE % base", "sMAPE % rec."], rows)
    if h.get("unfilled_bottom", {}).get("n"):
        u = h["unfilled_bottom"]
        terminal.warn(f"hierarchy: {u['n']:,} bottom series have no forecast and no forecasted ancestor; they and the nodes above them have none: " + "; ".join(u["examples"][:5]))


def _more(found: dict, shown: int) -> str:
    """Where the rest of a forecast check's cases are, when the console shows only the first."""
    return f" (and {found['n'] - shown:,} more: 'mm runs show RUN_ID' or --json lists the first {len(found['examples'])})" if found["n"] > shown else ""


def _failures(terminal: Terminal, failures: list[dict], step: str, where: str) -> None:
    if not failures:
        return
    shown = failures[:10]
    terminal.warn(f"{step}: {len(failures):,} group(s) failed; see {where} for all")
    terminal.table(f"{step} failures (first {len(shown)})", ["group", "reason", "detail"], [(f["group"], f["reason"], f["error"][:120]) for f in shown])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _num(v, digits: int = 2) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def _duration(r: dict) -> str:
    import datetime as dt

    try:
        start = dt.datetime.fromisoformat(r["started"])
        end = dt.datetime.fromisoformat(r["ended"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"{(end - start).total_seconds():.1f}s"


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items())


def main() -> None:
    from .store.memory import use_system_allocator

    use_system_allocator()
    signal.signal(signal.SIGTERM, _raise_terminated)
    app(prog_name="mm")


if __name__ == "__main__":
    sys.exit(main())
