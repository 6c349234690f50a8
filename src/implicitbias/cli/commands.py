"""``implicitbias list | run | report | plot | knockout``: a thin layer over experiments, runner, store and report.

Bad input (unknown experiment or preset, malformed ``--set``, invalid config values, NaN in given
sequences) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..runtime import backends, footprint
from . import help as clihelp
from . import equations as equations_cli
from . import knockout as knockout_cli
from .. import experiments
from ..core import progress as progress_mod
from .. import report as report_mod
from ..runtime.overrides import (
    apply_overrides,
    distinct_configs,
    parse_overrides,
    parse_sweeps,
    select_presets,
    sweep_label,
)
from ..record import strict_json
from ..runtime.runner import run_all
from ..runtime.store import DamagedRun, Store, StoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=clihelp.overview(),
                  help="Reproduce 'The Implicit Bias of Structured SSMs Can Be Poisoned with Clean Labels'.")
console = Console()
err = Console(stderr=True)

app.add_typer(knockout_cli.app, name="knockout")  # the paper's pipeline on a local checkpoint (cli/knockout.py)
app.add_typer(equations_cli.app, name="equations")  # GRPO / test accuracy on a local HF LM (cli/equations.py)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where runs are stored.", envvar="IMPLICITBIAS_RUNS")]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def _warn(message: str) -> None:
    """One line on stderr (e.g. a damaged stored run that is skipped)."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _fail_store(ctx: typer.Context, e: StoreError) -> None:
    """The store (or report) cannot be written (full or read-only disk, not a directory): one line
    naming the path and the errno; exit 2 if the user chose the path (--runs-dir or
    IMPLICITBIAS_RUNS), else 1."""
    source = ctx.get_parameter_source("runs_dir")
    _fail(escape(str(e)), code=1 if source is None or source.name == "DEFAULT" else 2)


def _enable_compile_cache() -> None:
    """Reuse compiled XLA programs across invocations (a second ``run`` skips most compile time)."""
    backends.enable_compile_cache()


@contextlib.contextmanager
def _progress_log():
    """Experiments report progress inside a long run (e.g. per seed) on the ``implicitbias`` logger;
    show it on the console, above the progress bar, for the duration of a command."""
    from rich.logging import RichHandler

    logger = logging.getLogger("implicitbias")
    handler = RichHandler(console=console, show_path=False, show_level=False, show_time=False)
    old = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # printed once, here, not again by a root handler some library set up
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


@app.command("list")
def list_presets() -> None:
    """List experiments and their named presets."""
    for name, exp in experiments.EXPERIMENTS.items():
        console.print(f"[bold]{name}[/]")
        for preset, cfg in exp.PRESETS.items():
            console.print(f"  {preset:28s} seeds={list(cfg.seeds)}", highlight=False)


@app.command(cls=clihelp.RunCommand)  # run EXPERIMENT --help: its presets and config fields
def run(
    ctx: typer.Context,
    experiment: Annotated[str, typer.Argument(help="Experiment name, e.g. table1.")],
    preset: Annotated[
        list[str] | None, typer.Option("--preset", "-p", help="Preset name or prefix (repeatable); default: all.")
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Each --preset selects only the preset of that name, not the presets "
                           "under it (e.g. synthetic/beyond_L6 without its synthetic/beyond_L6/... variants).")
    ] = False,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: key=value (repeatable).")
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            help="Run every value of a field: key=v1,v2,... (repeatable: the grid over all keys; "
            "each point stored as its own run).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute runs that are already stored.")] = False,
    runs_dir: RunsDir = Path("runs"),
    backend: Annotated[
        str, typer.Option("--backend", help="Where runs compute: local (this process) or ray (a Ray cluster; "
                          f"{escape(backends.RAY_HINT)}).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray: the cluster to join (auto, host:port, ray://host:port); "
                                 "default: start a local Ray instance.")
    ] = None,
    cpus_per_run: Annotated[float | None, typer.Option("--cpus-per-run", help="Ray: CPUs per run (default 1).")] = None,
    gpus_per_run: Annotated[float | None, typer.Option("--gpus-per-run", help="Ray: GPUs per run (default 0).")] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Ray: attempts after a failed one (lost worker...; default 2).")
    ] = None,
) -> None:
    """Run presets of an experiment (stored; complete runs are skipped unless --force)."""
    try:
        exp = experiments.get(experiment)
        chosen = select_presets(exp.PRESETS, preset, exp.NAME, exact=exact)
        overrides = parse_overrides(exp.Config, list(set_ or []))
        if seeds is not None:
            overrides.update(parse_overrides(exp.Config, [f"seeds={seeds}"]))
        grid = parse_sweeps(exp.Config, list(sweep or []))
        clash = sorted(set(overrides) & set(grid[0]))
        if clash:
            raise ValueError(f"{', '.join(clash)} given in both --set and --sweep")
        configs = {
            name + sweep_label(point): apply_overrides(cfg, {**overrides, **point})
            for name, cfg in chosen.items()
            for point in grid
        }
        configs, merged = distinct_configs(configs)
        for dropped, kept in merged:
            _warn(f"{dropped} is the same config as {kept} under these overrides: run once, as {kept}")
        footprint.check(exp, configs)  # a config whose arrays cannot fit in memory is refused here
        executor = backends.make(backend, address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                              retries=retries)
    except (ValueError, TypeError) as e:
        _fail(escape(str(e)))
    _enable_compile_cache()
    store = Store(runs_dir, warn=_warn)
    with (
        _progress_log(),
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        task = progress.add_task(f"{experiment}", total=len(configs), count=f"0/{len(configs)}")
        inside = progress.add_task("", total=None, visible=False, count="")  # inside the run in progress

        def report_inside(item):
            progress.update(inside, description=escape(f"  {item.describe()}"), visible=True)

        def start(name):
            progress.update(inside, visible=False)
            progress.update(task, description=escape(f"{experiment}: {name}"))  # a sweep label is not markup

        def done(out):
            note = "stored, skipped" if out.skipped else f"{out.wall_seconds:.1f}s"
            if out.error:
                note = f"FAILED ({out.attempts} attempts): {out.error}"
            progress.console.print(f"  {out.preset:28s} {note:>16s}  {out.path}", highlight=False, markup=False)
            progress.advance(task)
            progress.update(task, count=f"{progress.tasks[task].completed:.0f}/{len(configs)}")

        def retry(failed):
            progress.console.print(f"  {failed.key:28s} attempt {failed.attempt} failed, retrying: {failed.error}",
                                   highlight=False, markup=False)

        if executor.name != "local":
            progress.update(task, description=escape(f"{experiment} on {executor.name}"))
        try:
            with progress_mod.listening(report_inside):
                outs = run_all(exp, configs, store, force=force, backend=executor, on_start=start, on_done=done,
                               on_retry=retry)
        except StoreError as e:
            progress.stop()
            executor.close()
            _fail_store(ctx, e)
        except ValueError as e:  # a BackendError (Ray could not start) is one
            executor.close()
            _fail(escape(str(e)))
        except KeyboardInterrupt:
            progress.stop()
            err.print("interrupted: completed runs are stored; the runs in progress were discarded")
            executor.close()  # cancels nothing more: salvage already cancelled the rest; stops a local Ray
            # XLA may still be running the interrupted computation on its own threads; a normal
            # interpreter shutdown under it can crash, so leave at once (every completed run is
            # already on disk, written atomically).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
    executor.close()
    failed = [o for o in outs if o.error]
    if failed:
        _fail(f"{len(failed)} of {len(outs)} runs failed on every attempt (nothing stored for them): "
              + escape("; ".join(f"{o.preset}: {o.error}" for o in failed)), code=1)


@app.command()
def report(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON instead of Markdown.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Tables (and figures) of every stored run beside the paper's numbers; also written to
    runs/report.md and a self-contained runs/report.html."""
    store = Store(runs_dir, warn=_warn)
    if as_json:
        sys.stdout.write(json.dumps(strict_json(report_mod.collect(store)), indent=2, allow_nan=False) + "\n")
        return
    try:
        text, paths = report_mod.write(store, runs_dir)
    except StoreError as e:
        _fail_store(ctx, e)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    console.print(f"written: {paths[0]} and {paths[1]}", highlight=False)


@app.command()
def plot(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="An experiment name (all its stored runs) or a run directory.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write the figures of stored runs (PNG) under RUNS_DIR/figures/<experiment>/."""
    store = Store(runs_dir, warn=_warn)
    path = Path(target)
    try:
        if path.is_dir() and (path / "config.json").exists():
            run_ = store.load(path)
            exp, runs = experiments.get(run_.experiment), [run_]
        else:
            exp = experiments.get(target)
            runs = list(store.runs(exp.NAME))
    except DamagedRun as e:
        _fail(escape(str(e)))
    except ValueError as e:
        _fail(f"{e} (or give a run directory)")
    if not runs:
        _fail(f"no stored runs of {exp.NAME!r} under {runs_dir}: run `implicitbias run {exp.NAME}` first")
    section = report_mod.SECTIONS.get(exp.NAME)
    try:
        written = [] if section is None else section.figures(runs, section.rows(runs), runs_dir / "figures" / exp.NAME)
    except StoreError as e:
        _fail_store(ctx, e)
    if not written:
        _fail(f"experiment {exp.NAME!r} has no figures")
    for f in written:
        console.print(f"written: {f}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
