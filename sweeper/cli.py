"""The `sweep` command line. Each command is thin: parse, build, call one function, render.

Imports of the heavy layers (optuna, sqlalchemy, fastapi, numpy) happen inside the commands, so
`sweep --help` stays fast and importing this module has no side effects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sweeper.errors import SweeperError

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sweeper")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter sweeps over hosted LLM fine-tuning APIs.

    \b
    Example:
      sweep run configs/quickstart.toml
      sweep compare configs/quickstart.toml --format table
    """
    ctx.obj = {"debug": debug}


config_argument = click.argument(
    "config", type=click.Path(dir_okay=False, path_type=str), metavar="CONFIG"
)


@cli.command()
@config_argument
@click.option("--n-trials", type=click.IntRange(min=1), help="Override [sweep].n_trials.")
@click.option(
    "--max-concurrent", type=click.IntRange(min=1), help="Override [sweep].max_concurrent."
)
@click.option(
    "--dry-run", is_flag=True, help="Validate, print the trials it would launch; spend nothing."
)
@click.option(
    "--allow-config-change",
    is_flag=True,
    help="Resume even if the search space or fixed fields changed.",
)
@click.option(
    "--cancel-on-exit",
    is_flag=True,
    help="On Ctrl-C, cancel the jobs in flight instead of leaving them running.",
)
def run(
    config: str,
    n_trials: int | None,
    max_concurrent: int | None,
    dry_run: bool,
    allow_config_change: bool,
    cancel_on_exit: bool,
) -> None:
    """Start or resume the sweep CONFIG describes.

    Running the same command again resumes: jobs in flight are re-attached, interrupted launches
    are reconciled with the provider, and no job is launched twice.

    \b
    Example:
      sweep run configs/quickstart.toml --max-concurrent 2
    """
    import os

    from sweeper import ui
    from sweeper.config import load_config

    cfg = load_config(config)
    if dry_run:
        from sweeper.engine.service import plan_sweep

        ui.print_plan(cfg, plan_sweep(cfg, env=os.environ, n_trials=n_trials))
        return
    from sweeper.engine.service import run_sweep

    with ui.observer_for(cfg) as observer:
        result = run_sweep(
            cfg,
            env=os.environ,
            n_trials=n_trials,
            max_concurrent=max_concurrent,
            allow_config_change=allow_config_change,
            cancel_on_exit=cancel_on_exit,
            observer=observer,
        )
    ui.print_result(cfg, result)
    if result.interrupted:
        sys.exit(130)


@cli.command()
@config_argument
def status(config: str) -> None:
    """Trials by state, jobs in flight with progress, best so far, budget used.

    Read-only: safe to run while `sweep run` is working on the same database.

    \b
    Example:
      sweep status configs/quickstart.toml
    """
    from sweeper.report.status import render_status, sweep_status
    from sweeper.report.term import console, load_context

    out = console()
    for part in render_status(sweep_status(load_context(config))):
        out.print(part)


@cli.command()
@config_argument
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table"
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="Only the first N rows in the chosen order (default order: best first).",
)
@click.option(
    "--sort",
    "sort_by",
    metavar="METRIC",
    help="Sort by a metric, a param, or number/trained_tokens/cost/duration "
    "(default: the objective, best first).",
)
@click.option(
    "--with",
    "with_configs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Another sweep's config: show the best trial of each sweep side by side.",
)
def compare(
    config: str, fmt: str, top: int | None, sort_by: str | None, with_configs: tuple[str, ...]
) -> None:
    """One row per trial: state, objective value(s), params, job, tokens, cost, duration.

    \b
    Example:
      sweep compare configs/quickstart.toml --top 5
      sweep compare configs/quickstart.toml --format json --sort cost
    """
    from sweeper.report import compare as c
    from sweeper.report.term import console, load_context

    ctx = load_context(config)
    if with_configs:
        records = [rec for p in (config, *with_configs) for rec in c.best_of(load_context(p))]
        console().print(c.render_side_by_side(records, fmt))
        return
    try:
        cmp = c.compare(ctx, sort_by=sort_by, top=top)
    except c.UnknownSortKey as exc:
        raise click.BadParameter(str(exc), param_hint="--sort") from exc
    if fmt == "table":
        console().print(c.render_table(cmp))
    else:
        click.echo(
            {"json": c.render_json, "csv": c.render_csv, "markdown": c.render_markdown}[fmt](cmp),
            nl=fmt == "json",
        )


@cli.command()
@config_argument
@click.argument("trial", type=int)
def show(config: str, trial: int) -> None:
    """One trial: params, attempts with job ids, events, per-epoch metrics, error.

    An unknown TRIAL number is a usage error (exit code 2).

    \b
    Example:
      sweep show configs/quickstart.toml 3
    """
    from sweeper.report.show import UnknownTrial, render_trial, show_trial
    from sweeper.report.term import console, load_context

    try:
        view = show_trial(load_context(config), trial)
    except UnknownTrial as exc:
        raise click.BadParameter(str(exc), param_hint="TRIAL") from exc
    out = console()
    for part in render_trial(view):
        out.print(part)


@cli.command()
@config_argument
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write."
)
def report(config: str, out: str) -> None:
    """Write a self-contained HTML report (history, loss curves, importances, table).

    The page embeds plotly.js, so it opens offline; it never writes the database.

    \b
    Example:
      sweep report configs/quickstart.toml --out report.html
    """
    from sweeper.report.html import write_report
    from sweeper.report.term import load_context

    summary = write_report(load_context(config), out)
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"wrote {summary.path} ({summary.trials} trials, {summary.figures} figures, "
        f"{summary.seconds:.1f} s)"
    )


@cli.command()
@config_argument
@click.option("--trial", type=int, help="Only this trial's job.")
def cancel(config: str, trial: int | None) -> None:
    """Cancel in-flight jobs (all, or one trial's) and close their trials.

    Cancelling the whole sweep also stops running workers from launching more trials;
    the next `sweep run` lifts that stop.

    \b
    Example:
      sweep cancel configs/quickstart.toml --trial 3
    """
    import os

    from sweeper.config import load_config
    from sweeper.engine.control import cancel_sweep

    cancelled = cancel_sweep(load_config(config), env=os.environ, trial=trial)
    for number, job_id in cancelled:
        click.echo(f"trial {number}: cancelled {job_id}")
    if not cancelled:
        click.echo("no job in flight" + (f" for trial {trial}" if trial is not None else ""))


@cli.command()
@config_argument
@click.option("--yes", is_flag=True, help="Cancel the orphans instead of only listing them.")
def gc(config: str, yes: bool) -> None:
    """List (and with --yes cancel) provider jobs of this sweep that no trial owns.

    Such orphans carry this sweep's job suffix but no attempt records them, e.g. a job
    created by hand with a copied suffix, or by a sweep database that was deleted.

    \b
    Example:
      sweep gc configs/quickstart.toml --yes
    """
    import os

    from sweeper.config import load_config
    from sweeper.engine.control import gc_sweep

    orphans = gc_sweep(load_config(config), env=os.environ, cancel=yes)
    for o in orphans:
        action = "cancelled" if o.cancelled else ("left running" if not o.job.is_terminal else "")
        click.echo(f"{o.job.id}  {o.job.status:<10} suffix={o.job.suffix}  {action}".rstrip())
    running = sum(1 for o in orphans if not o.job.is_terminal and not o.cancelled)
    click.echo(
        f"{len(orphans)} orphan job(s)"
        + (f", {running} still running: rerun with --yes" if running else "")
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(min=0),
    help="0 picks a free port.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Where files and jobs persist [default: ./.sweeper-local].",
)
@click.option(
    "--api-key",
    envvar="SWEEPER_LOCAL_API_KEY",
    help="The bearer token to accept [env SWEEPER_LOCAL_API_KEY; default: random, printed].",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False),
    help="Write the base URL to this file once listening.",
)
@click.option(
    "--max-running",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Jobs training at once; more wait in `queued`.",
)
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="P(answer 500).")
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="P(close the connection without answering).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second beyond which the answer is 429 with Retry-After.",
)
@click.option(
    "--latency", type=click.FloatRange(min=0), default=0.0, help="Seconds added to every answer."
)
@click.option(
    "--job-failure-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="P(a job fails mid-training with internal_error).",
)
@click.option(
    "--step-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds slept per training step (long jobs).",
)
@click.option("--seed", type=int, help="Seed of the injected faults (reproducible runs).")
@click.option("--list-models", is_flag=True, help="Print the model names it accepts and exit.")
def serve(
    host: str,
    port: int,
    state_dir: str | None,
    api_key: str | None,
    port_file: str | None,
    max_running: int,
    error_rate: float,
    drop_rate: float,
    rate_limit: float | None,
    latency: float,
    job_failure_rate: float,
    step_delay: float,
    seed: int | None,
    list_models: bool,
) -> None:
    """Run the local fine-tuning service (a Nebius-compatible API whose jobs really train).

    Once it accepts connections it prints one line, `sweeper local service listening on
    http://HOST:PORT/v1`, and serves until Ctrl-C or SIGTERM. State survives restarts.

    \b
    Example:
      sweep serve --port 0 --state-dir /tmp/ft --api-key secret --error-rate 0.1 --seed 1
    """
    from pathlib import Path

    from sweeper.local import catalog
    from sweeper.local.embedded import serve_forever
    from sweeper.local.faults import FaultConfig

    if list_models:
        for m in catalog.MODELS.values():
            click.echo(f"{m.name}\t{m.local_name}")
        return
    if api_key is None:
        import secrets

        api_key = f"sk-local-{secrets.token_hex(16)}"
        click.echo(f"api key: {api_key}", err=True)
    faults = FaultConfig(
        error_rate, drop_rate, rate_limit, latency, job_failure_rate, step_delay, seed
    )
    serve_forever(
        Path(state_dir or ".sweeper-local"),
        host=host,
        port=port,
        api_key=api_key,
        faults=faults,
        max_running=max_running,
        port_file=Path(port_file) if port_file else None,
    )


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@config_argument
def db_upgrade(config: str) -> None:
    """Apply sweeper's migrations to the storage CONFIG names."""
    from sweeper.config import load_config
    from sweeper.store.db import upgrade

    cfg = load_config(config)
    upgrade(cfg.storage_url)
    click.echo(f"{cfg.sweep.storage}: sweeper's tables are at the newest schema")


def _configure_logging(debug: bool) -> None:
    """sweeper's warnings (retries, adoptions) as short lines on stderr; stamina's own retry
    records repeat them without the reason, so they are left out unless --debug."""
    import logging

    root = logging.getLogger("sweeper")
    if not any(getattr(h, "sweeper_cli", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler.sweeper_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        logging.getLogger("stamina").setLevel(logging.ERROR)


def main() -> None:
    """Console entry point: SweeperError becomes one line and its exit code."""
    debug = "--debug" in sys.argv[1:]
    _configure_logging(debug)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except SweeperError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
