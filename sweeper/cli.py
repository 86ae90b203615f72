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


def _not_yet(name: str) -> None:
    raise click.ClickException(f"`sweep {name}` is not implemented yet")


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
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Override [sweep].max_concurrent.")
@click.option("--dry-run", is_flag=True, help="Validate, print the trials it would launch; spend nothing.")
@click.option("--allow-config-change", is_flag=True, help="Resume even if the search space or fixed fields changed.")
@click.option("--cancel-on-exit", is_flag=True, help="On Ctrl-C, cancel the jobs in flight instead of leaving them running.")
def run(config: str, n_trials: int | None, max_concurrent: int | None, dry_run: bool,
        allow_config_change: bool, cancel_on_exit: bool) -> None:
    """Start or resume the sweep CONFIG describes.

    Running the same command again resumes: jobs in flight are re-attached, interrupted launches
    are reconciled with the provider, and no job is launched twice.

    \b
    Example:
      sweep run configs/quickstart.toml --max-concurrent 2
    """
    _not_yet("run")


@cli.command()
@config_argument
def status(config: str) -> None:
    """Trials by state, jobs in flight with progress, best so far, budget used."""
    _not_yet("status")


@cli.command()
@config_argument
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table")
@click.option("--top", type=click.IntRange(min=1), help="Only the N best trials.")
@click.option("--sort", "sort_by", metavar="METRIC", help="Sort by this column (default: the objective).")
@click.option("--with", "with_configs", multiple=True, type=click.Path(dir_okay=False), help="Another sweep's config: put its best trials beside these.")
def compare(config: str, fmt: str, top: int | None, sort_by: str | None, with_configs: tuple[str, ...]) -> None:
    """One row per trial: state, objective value(s), params, job, tokens, cost, duration."""
    _not_yet("compare")


@cli.command()
@config_argument
@click.argument("trial", type=int)
def show(config: str, trial: int) -> None:
    """One trial: params, attempts with job ids, events, per-epoch metrics, error."""
    _not_yet("show")


@cli.command()
@config_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
def report(config: str, out: str) -> None:
    """Write a self-contained HTML report (history, loss curves, importances, table)."""
    _not_yet("report")


@cli.command()
@config_argument
@click.option("--trial", type=int, help="Only this trial's job.")
def cancel(config: str, trial: int | None) -> None:
    """Cancel in-flight jobs (all, or one trial's) and close their trials."""
    _not_yet("cancel")


@cli.command()
@config_argument
@click.option("--yes", is_flag=True, help="Cancel the orphans instead of only listing them.")
def gc(config: str, yes: bool) -> None:
    """List (and with --yes cancel) provider jobs of this sweep that no trial owns."""
    _not_yet("gc")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where files and jobs persist.")
def serve(host: str, port: int, state_dir: str | None) -> None:
    """Run the local fine-tuning service (a Nebius-compatible API whose jobs really train)."""
    _not_yet("serve")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@config_argument
def db_upgrade(config: str) -> None:
    """Apply sweeper's migrations to the storage CONFIG names."""
    _not_yet("db upgrade")


def main() -> None:
    """Console entry point: SweeperError becomes one line and its exit code."""
    debug = "--debug" in sys.argv[1:]
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
