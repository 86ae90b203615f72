"""What the CLI commands of the read side share: the context from a config, a wide console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.report.context import ReportContext, context_from_config


def load_context(config_path: str | Path) -> ReportContext:
    """Load the config (raising ConfigError) and keep only what reading a sweep needs."""
    from sweeper.config import load_config

    return context_from_config(load_config(config_path))


def console() -> Any:
    """A rich Console; when piped, wide enough that tables are not squeezed to 80 columns."""
    from rich.console import Console

    con = Console()
    if not con.is_terminal:
        con = Console(width=max(con.width, 240))
    return con
