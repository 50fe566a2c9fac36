"""The ``mm`` command: a thin layer over the library API.

Parses options, calls ``manymodels.<step>``, prints the result through the
Terminal, and maps outcomes to exit codes: 0 all groups succeeded, 1 the
command could not run (bad config, bad input, missing upstream, datastore
busy), 3 it ran but some groups failed (the rest are written).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .console import Terminal
from .errors import EXIT_ERROR, MMError, from_os_error

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

# -- shared options ----------------------------------------------------------
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.horizon=8 (repeatable).", show_default=False)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show details and tracebacks.")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Print every reuse decision with its reason.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors (for cron).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
LogOpt = Annotated[Optional[Path], typer.Option("--log-file", help="Append everything shown (and details) to this file.", show_default=False)]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes (default: all cores).", show_default=False)]
EngineOpt = Annotated[Optional[str], typer.Option("--engine", help="serial | local | dask (default: engine.kind).", show_default=False)]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Dask scheduler address tcp://HOST:PORT.", show_default=False)]
ReuseOpt = Annotated[Optional[bool], typer.Option("--allow-reuse/--no-allow-reuse", help="Reuse unchanged outputs (default: allow_reuse).", show_default=False)]
WaitOpt = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for another mm using the datastore.")]
GroupsOpt = Annotated[Optional[list[str]], typer.Option("--groups", "-g", help="Only these groups: --groups Store=2,Brand=tropicana (repeatable).", show_default=False)]


def _terminal(quiet: bool, json_mode: bool, verbose: bool, log_file: Path | None) -> Terminal:
    return Terminal(quiet=quiet, json_mode=json_mode, verbose=verbose, log_file=log_file)


def _guarded(fn):
    """Run a command body: MMError -> message + exit 1; bugs -> short message (traceback with -v)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        terminal: Terminal = kwargs.pop("_terminal")
        code = EXIT_ERROR
        try:
            code = fn(*args, terminal=terminal, **kwargs) or 0
        except (MMError, OSError) as raised:
            exc = raised if isinstance(raised, MMError) else from_os_error(raised)
            terminal.error(exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""))
            if terminal.verbose:
                terminal.traceback()
            if terminal.json_mode:
                terminal.emit_json({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
            code = exc.exit_code
        except KeyboardInterrupt:
            terminal.error("interrupted; finished groups are kept and the next run picks up from there")
            code = 130
        except Exception as exc:  # a bug: say so plainly, without a wall of traceback
            terminal.error(f"unexpected error: {type(exc).__name__}: {exc}\n  this is a bug in mm; run again with --verbose for the traceback and please report it")
            if terminal.verbose:
                terminal.traceback()
            code = EXIT_ERROR
        finally:
            terminal.close()
        raise typer.Exit(code)

    return wrapper


def _config(path: Path, overrides: list[str] | None):
    from .config import load_config

    return load_config(path, overrides or [])


# -- commands ----------------------------------------------------------------

@app.command()
def split(
    config: ConfigOpt,
    set_: SetOpt = None,
    jobs: JobsOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    allow_reuse: ReuseOpt = None,
    wait: WaitOpt = 0.0,
    explain: ExplainOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Split the raw table into per-group train and inference partitions."""
    _split_cmd(config, set_, jobs, engine, scheduler, allow_reuse, wait, _terminal=_terminal(quiet, json_, verbose or explain, log_file))


@_guarded
def _split_cmd(config_path, overrides, jobs, engine, scheduler, allow_reuse, wait, terminal):
    from . import api

    result = api.split(_config(config_path, overrides), terminal, jobs=jobs, engine=engine, scheduler=scheduler, allow_reuse=allow_reuse, wait=wait)
    report_split(terminal, result)
    terminal.emit_json(result.to_dict())
    return 0


@app.command()
def train(
    config: ConfigOpt,
    set_: SetOpt = None,
    groups: GroupsOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retrain only the groups that failed in the latest run.")] = False,
    jobs: JobsOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    allow_reuse: ReuseOpt = None,
    wait: WaitOpt = 0.0,
    explain: ExplainOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Fit one model per group (AutoML over LightGBM and baselines), reusing unchanged groups."""
    _train_cmd(config, set_, groups, retry_failed, jobs, engine, scheduler, allow_reuse, wait, _terminal=_terminal(quiet, json_, verbose or explain, log_file))


@_guarded
def _train_cmd(config_path, overrides, groups, retry_failed, jobs, engine, scheduler, allow_reuse, wait, terminal):
    from . import api

    result = api.train(
        _config(config_path, overrides), terminal, groups=groups, retry_failed=retry_failed,
        jobs=jobs, engine=engine, scheduler=scheduler, allow_reuse=allow_reuse, wait=wait,
    )
    report_train(terminal, result)
    terminal.emit_json(result.to_dict())
    return result.exit_code


@app.command()
def forecast(
    config: ConfigOpt,
    set_: SetOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Use the models of this train run (default: the latest finished one).", show_default=False)] = None,
    jobs: JobsOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    allow_reuse: ReuseOpt = None,
    wait: WaitOpt = 0.0,
    explain: ExplainOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Predict every inference row with its group's model."""
    _forecast_cmd(config, set_, run_id, jobs, engine, scheduler, allow_reuse, wait, _terminal=_terminal(quiet, json_, verbose or explain, log_file))


@_guarded
def _forecast_cmd(config_path, overrides, run_id, jobs, engine, scheduler, allow_reuse, wait, terminal):
    from . import api

    result = api.forecast(
        _config(config_path, overrides), terminal, run_id=run_id, jobs=jobs, engine=engine,
        scheduler=scheduler, allow_reuse=allow_reuse, wait=wait,
    )
    report_forecast(terminal, result)
    terminal.emit_json(result.to_dict())
    return result.exit_code


@app.command()
def run(
    config: ConfigOpt,
    set_: SetOpt = None,
    jobs: JobsOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    allow_reuse: ReuseOpt = None,
    wait: WaitOpt = 0.0,
    explain: ExplainOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Split, train and forecast in one go (what cron calls), reusing what is still valid."""
    _run_cmd(config, set_, jobs, engine, scheduler, allow_reuse, wait, _terminal=_terminal(quiet, json_, verbose or explain, log_file))


@_guarded
def _run_cmd(config_path, overrides, jobs, engine, scheduler, allow_reuse, wait, terminal):
    from . import api

    reporters = {"split": report_split, "train": report_train, "forecast": report_forecast}
    result = api.run(
        _config(config_path, overrides), terminal, jobs=jobs, engine=engine, scheduler=scheduler,
        allow_reuse=allow_reuse, wait=wait, on_step=lambda name, r: reporters[name](terminal, r),
    )
    terminal.emit_json(result.to_dict())
    return result.exit_code


@app.command()
def clean(
    config: ConfigOpt,
    set_: SetOpt = None,
    step: Annotated[str, typer.Option("--step", help="split | train | forecast | all")] = "all",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really delete (default: dry run).")] = False,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Remove step outputs from the datastore (a dry run unless --yes)."""
    _clean_cmd(config, set_, step, yes, wait, _terminal=_terminal(quiet, json_, verbose, log_file))


@_guarded
def _clean_cmd(config_path, overrides, step, yes, wait, terminal):
    from . import api

    result = api.clean(_config(config_path, overrides), terminal, step=step, yes=yes, wait=wait)
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


@app.command()
def report(
    config: ConfigOpt,
    set_: SetOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="HTML file to write (default: <datastore>/outputs/report.html).", show_default=False)] = None,
    history: Annotated[int, typer.Option("--history", min=0, help="Periods of history per series in the group charts (0: all).")] = 156,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Write one self-contained HTML report of the latest runs (works offline)."""
    _report_cmd(config, set_, output, history, _terminal=_terminal(quiet, json_, verbose, log_file))


@_guarded
def _report_cmd(config_path, overrides, output, history, terminal):
    from . import api

    result = api.report(_config(config_path, overrides), terminal, output=output, history=history)
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


@app.command()
def export(
    config: ConfigOpt,
    set_: SetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx (needs: pip install 'manymodels[onnx]').")] = "onnx",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder to write (default: <datastore>/exports/<format>).", show_default=False)] = None,
    groups: GroupsOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Export the models of this train run (default: the latest finished one).", show_default=False)] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Score each exported model with onnxruntime on its training rows and compare with mm.")] = True,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    log_file: LogOpt = None,
):
    """Write every group's model as ONNX (LightGBM, linear) plus metadata, for scoring in a database."""
    _export_cmd(config, set_, fmt, output, groups, run_id, verify, wait, _terminal=_terminal(quiet, json_, verbose, log_file))


@_guarded
def _export_cmd(config_path, overrides, fmt, output, groups, run_id, verify, wait, terminal):
    from . import api

    r = api.export(_config(config_path, overrides), terminal, fmt=fmt, output=output, groups=groups, run_id=run_id, verify=verify, wait=wait)
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


@app.command()
def sample(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (a folder with --per-group-files).")] = Path("sample_data/oj_sales.csv"),
    stores: Annotated[int, typer.Option("--stores", min=1, help="Stores (3,991 gives the accelerator's 11,973 series).")] = 10,
    brands: Annotated[int, typer.Option("--brands", min=1, help="Brands per store.")] = 3,
    weeks: Annotated[int, typer.Option("--weeks", min=1, help="Weeks of history.")] = 121,
    future_weeks: Annotated[int, typer.Option("--future-weeks", min=0, help="Weeks after the history with planned Price/Advert and no Quantity.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
    per_group_files: Annotated[bool, typer.Option("--per-group-files", help="One file per store x brand, as the accelerator had.")] = False,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
):
    """Generate simulated orange-juice sales in the accelerator's shape."""
    _sample_cmd(output, stores, brands, weeks, future_weeks, seed, fmt, per_group_files, _terminal=_terminal(quiet, json_, False, None))


@_guarded
def _sample_cmd(output, stores, brands, weeks, future_weeks, seed, fmt, per_group_files, terminal):
    from .sample import generate_oj_sales, write_sample

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
    config: ConfigOpt = Path("mm.yaml"),
    set_: SetOpt = None,
    step: Annotated[Optional[str], typer.Option("--step", help="Only runs of this step.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show the newest N runs.")] = 20,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
):
    """List step runs, newest last (`mm runs show ID` for one)."""
    ctx.obj = {"config": config, "set": set_, "json": json_, "verbose": verbose}
    if ctx.invoked_subcommand is None:
        _runs_cmd(config, set_, step, limit, _terminal=_terminal(False, json_, verbose, None))


@_guarded
def _runs_cmd(config_path, overrides, step, limit, terminal):
    from .datastore import Datastore
    from .runs import effective_status

    store = Datastore(_config(config_path, overrides).datastore)
    records = [r for r in store.list_runs() if step is None or r.get("step") == step][-limit:]
    for r in records:
        r["status"] = effective_status(r)
    rows = [
        (r["id"], r["step"], r["status"], r.get("started", "")[:19], _duration(r), _counts(r.get("counts", {})))
        for r in records
    ]
    if not records:
        terminal.info(f"no runs in datastore {store.root}")
    else:
        terminal.table(f"runs in {store.root}", ["id", "step", "status", "started (UTC)", "duration", "groups"], rows)
    terminal.emit_json(records)
    return 0


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id (see mm runs).")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.", show_default=False)] = None,
    json_: JsonOpt = False,
    groups_limit: Annotated[int, typer.Option("--groups-limit", help="Per-group rows to print.")] = 30,
):
    """Details of one run: counts, and every group's status and reason."""
    obj = ctx.obj or {}
    json_mode = json_ or obj.get("json", False)
    _runs_show_cmd(config or obj.get("config") or Path("mm.yaml"), obj.get("set"), run_id, groups_limit, _terminal=_terminal(False, json_mode, obj.get("verbose", False), None))


@_guarded
def _runs_show_cmd(config_path, overrides, run_id, groups_limit, terminal):
    from .datastore import Datastore
    from .runs import effective_status

    store = Datastore(_config(config_path, overrides).datastore)
    record = store.read_run(run_id)
    record["status"] = effective_status(record)
    groups = store.read_run_groups(run_id)
    if not len(groups):  # an interrupted run: its journal lists the groups it finished
        import pandas as pd

        groups = pd.DataFrame(store.read_journal(run_id))
    keys = ["id", "step", "status", "started", "ended", "counts", "config_fingerprint", "mm_version", "host", "pid", "argv", "train_run_id", "output", "accuracy", "error", "reason"]
    terminal.facts(f"run {run_id}", [(k, json.dumps(record[k]) if isinstance(record[k], (dict, list)) else record[k]) for k in keys if k in record and record[k] not in (None, "", {}, [])])
    if len(groups):
        cols = [c for c in ("label", "status", "model", "model_version", "decision", "error") if c in groups.columns]
        shown = groups[cols].head(groups_limit).fillna("")
        terminal.table(f"groups ({len(groups)}; first {min(groups_limit, len(groups))})", cols, shown.astype(str).values.tolist())
    document = {**record, "groups": json.loads(groups.to_json(orient="records")) if len(groups) else []}
    terminal.emit_json(document)
    return 0


@app.command()
def models(
    config: ConfigOpt,
    set_: SetOpt = None,
    groups: GroupsOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to print.")] = 50,
):
    """List stored model versions (newest first per group) with their tags."""
    _models_cmd(config, set_, groups, limit, _terminal=_terminal(False, json_, verbose, None))


@_guarded
def _models_cmd(config_path, overrides, groups, limit, terminal):
    from .datastore import Datastore
    from .registry import list_models
    from .selection import GroupSelector

    config = _config(config_path, overrides)
    selector = GroupSelector(groups or [], config.data.group_columns)
    found = list_models(Datastore(config.datastore), selector.matches if selector else None)
    rows = [
        (",".join(f"{k}={v}" for k, v in m["group"].items()), m["version"], m["model"], m["run_id"], m["created"], _num(m.get("wape")))
        for m in found[:limit]
    ]
    terminal.table(f"models ({len(found)} versions)", ["group", "version", "model", "run", "created", "backtest wape"], rows)
    terminal.emit_json(found)
    return 0


@app.command()
def version(json_: JsonOpt = False):
    """Print the manymodels version."""
    terminal = Terminal(json_mode=json_)
    if not json_:
        terminal.out.print(f"manymodels {__version__}")
    terminal.emit_json({"version": __version__})


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
    medians = ", ".join(f"{k} {v:.2f}%" for k, v in r.median_backtest.items()) or "-"
    terminal.facts(
        f"train: {r.status} (run {r.run_id})",
        [
            ("groups", f"{r.n_groups:,}: {r.trained:,} trained ({r.tuned:,} tuned), {r.reused:,} reused, {r.failed:,} failed"),
            ("models chosen", winners),
            ("median backtest", medians),
            ("time", f"{r.duration_s:.1f}s"),
            ("output", r.output),
        ],
    )
    _failures(terminal, r.failures, "train", "training_output.csv")


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
        a = r.accuracy
        terminal.facts(
            f"accuracy against the actuals in the inference rows ({a['n_rows']:,} rows)",
            [("MAPE", f"{a['mape']:.2f}%"), ("sMAPE", f"{a['smape']:.2f}%"), ("WAPE", f"{a['wape']:.2f}%")]
            + [(f"below {name}", f"{share:.1%}") for name, share in r.coverage.items()],
        )
        if r.worst_groups:
            terminal.table("worst groups (by WAPE)", ["group", "MAPE %", "sMAPE %", "WAPE %"], [(w["group"], _num(w["mape"]), _num(w["smape"]), _num(w["wape"])) for w in r.worst_groups])
    if r.rows_beyond_horizon:
        terminal.warn(f"{r.rows_beyond_horizon:,} inference rows are more than train.horizon periods after their last known value; their accuracy was not validated by the backtest")
    if r.out_of_range:
        o = r.out_of_range
        terminal.warn(f"{o['n']:,} known-future value(s) in {o['groups']:,} group(s) are outside what their series' model saw in training (the linear model clamps numbers to the training range; LightGBM treats them as the nearest value seen): " + "; ".join(o["examples"][:5]))
    if r.capped:
        c = r.capped
        terminal.warn(f"{c['n']:,} forecast row(s) in {c['groups']:,} group(s) were capped by forecast.cap_factor: " + "; ".join(c["examples"][:5]))
    _failures(terminal, r.failures, "forecast", "the run record (mm runs show)")


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


def _num(v) -> str:
    return "" if v is None else f"{v:.2f}"


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
    from .datastore import use_system_allocator

    use_system_allocator()
    app(prog_name="mm")


if __name__ == "__main__":
    sys.exit(main())
