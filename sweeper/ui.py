"""How `sweep run` shows progress: a rich live view on a terminal, plain log lines otherwise.

The engine never prints; it calls an observer with ``(kind, **info)`` and these render it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def _fmt_params(params: dict[str, Any] | None) -> str:
    if not params:
        return ""
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _fmt_values(values: list[float] | None) -> str:
    if not values:
        return ""
    return ", ".join(f"{v:.4g}" for v in values)


class PlainObserver:
    """One line per thing that happened; for logs, pipes and CI."""

    def __init__(self, stream: TextIO | None = None, metric: str = "value") -> None:
        self.stream = stream or sys.stdout
        self.metric = metric

    def line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=self.stream, flush=True)

    def __call__(self, kind: str, **info: Any) -> None:
        text = describe(kind, info, self.metric)
        if text:
            self.line(text)


def describe(kind: str, info: dict[str, Any], metric: str) -> str | None:
    trial = info.get("trial")
    if kind == "started":
        how = "resuming" if info.get("resumed") else "starting"
        return f"{how} sweep {info['sweep']}"
    if kind == "launched":
        return f"trial {trial}: launched {info['job_id']} {_fmt_params(info.get('params'))}"
    if kind == "reattached":
        return f"re-attached to {info['job_id']} (suffix {info['suffix']})"
    if kind == "adopted":
        return f"took over {info['count']} attempt(s) of a worker that is gone"
    if kind == "closed":
        state = info["state"]
        if state == "COMPLETE":
            return f"trial {trial}: COMPLETE {metric}={_fmt_values(info.get('values'))}"
        if state == "FAIL":
            return f"trial {trial}: FAIL {info.get('error') or ''}".rstrip()
        return f"trial {trial}: {state}"
    if kind == "pruned":
        return f"trial {trial}: pruned after epoch {info['epoch']}; cancelling {info['job_id']}"
    if kind == "retry":
        return f"trial {trial}: provider failure, retrying ({info.get('error')})"
    if kind == "reused":
        return f"trial {trial}: same hyperparameters as trial {info['earlier']}; result reused"
    if kind == "budget_cancel":
        return f"trial {trial}: cancelling {info['job_id']} to stay within the token budget"
    if kind == "stopping":
        return f"stopping launches: {info['reason']}"
    if kind == "interrupted":
        if info.get("cancel"):
            return "interrupted: cancelling jobs in flight"
        return "interrupted: jobs in flight keep running; `sweep run` again re-attaches to them"
    return None


class LiveObserver:
    """A rich live view: jobs in flight with progress bars, counts by state, best so far."""

    def __init__(self, console: Console, metric: str, direction: str) -> None:
        self.console = console
        self.metric = metric
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.inflight: dict[int | None, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.best: tuple[float, int | None] | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveObserver:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, kind: str, **info: Any) -> None:
        trial = info.get("trial")
        if kind == "launched":
            self.inflight[trial] = {
                "job": info["job_id"],
                "status": "running",
                "steps": 0,
                "total": None,
                "params": _fmt_params(info.get("params")),
            }
        elif kind == "progress" and trial in self.inflight:
            self.inflight[trial].update(
                status=info["status"], steps=info.get("steps") or 0, total=info.get("total")
            )
        elif kind == "closed":
            self.inflight.pop(trial, None)
            state = info["state"]
            self.counts[state] = self.counts.get(state, 0) + 1
            values = info.get("values")
            if state == "COMPLETE" and values:
                score = self.sign * values[0]
                if self.best is None or score < self.sign * self.best[0]:
                    self.best = (values[0], trial)
        text = describe(kind, info, self.metric)
        if text and kind not in ("progress",):
            self.live.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)
        self.live.update(self._render())

    def _render(self) -> Group:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("trial", justify="right")
        table.add_column("job")
        table.add_column("status")
        table.add_column("progress", width=32)
        table.add_column("params")
        for trial, row in sorted(self.inflight.items(), key=lambda kv: kv[0] or -1):
            total = row["total"] or 0
            bar: Any = (
                ProgressBar(total=total, completed=row["steps"], width=20) if total else Text("…")
            )
            table.add_row(str(trial), row["job"], row["status"], bar, row["params"])
        counts = (
            "  ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "no trial closed yet"
        )
        best = (
            f"best {self.metric} = {self.best[0]:.4g} (trial {self.best[1]})"
            if self.best
            else "no result yet"
        )
        return Group(table, Text(f"{counts}   {best}", style="bold"))


# --- before and after a run -------------------------------------------------------------------


class _Quiet:
    def __init__(self, observer: Any) -> None:
        self.observer = observer

    def __enter__(self) -> Any:
        return self.observer

    def __exit__(self, *exc: object) -> None:
        return None


def observer_for(cfg: Any) -> Any:
    """The live view on an interactive terminal, plain lines otherwise (pipes, CI, logs)."""
    metric = ", ".join(cfg.sweep.metrics)
    console = Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveObserver(console, metric, cfg.sweep.directions[0])
    return _Quiet(PlainObserver(metric=metric))


def print_plan(cfg: Any, plan: Any) -> None:
    console = Console()
    table = Table(title=f"dry run: sweep {cfg.sweep.name} would launch {len(plan.trials)} trials")
    table.add_column("trial", justify="right")
    names = list(cfg.search)
    for name in names:
        table.add_column(name)
    table.add_column("est. tokens", justify="right")
    for t in plan.trials:
        row = [str(t["number"])]
        for name in names:
            v = t["params"].get(name)
            row.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        est = t["estimated_tokens"]
        row.append("?" if est is None else f"{est:,}")
        table.add_row(*row)
    console.print(table)
    if plan.total_tokens is not None:
        console.print(
            f"training data: {plan.n_examples:,} examples, ~{plan.tokens_per_epoch:,} tokens per "
            f"epoch; whole sweep ~{plan.total_tokens:,} trained tokens, "
            f"~${plan.total_cost:,.2f} at ${plan.price_per_million_tokens:g} per 1M tokens"
        )
    for note in plan.notes:
        console.print(f"note: {note}")
    console.print("nothing was uploaded, launched or written")


def print_result(cfg: Any, result: Any) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items())) or "no trials"
    if result.interrupted:
        print(f"sweep {cfg.sweep.name} interrupted ({counts})")
        return
    if result.stop_reason:
        print(f"sweep {cfg.sweep.name} stopped: {result.stop_reason} ({counts})")
    else:
        print(f"sweep {cfg.sweep.name} is complete: {counts}")
    print(f"compare trials with: sweep compare {cfg.path}")
