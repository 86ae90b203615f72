"""`sweep status`: where a (possibly running) sweep stands, from one read-only snapshot."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sweeper.report.compare import fmt_duration, fmt_value, mark_best, objective_columns
from sweeper.report.context import ReportContext
from sweeper.report.data import (
    TRIAL_STATES,
    TrialRow,
    count_unnumbered,
    load_sweep,
    load_trials,
    load_workers,
    read_session,
    safe_url,
    utcnow,
)

ACTIVE_WORKER_WINDOW = timedelta(minutes=2)


@dataclass
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    heartbeat_age_s: float


@dataclass
class SweepStatus:
    ctx: ReportContext
    counts: dict[str, int]
    in_flight: list[TrialRow]
    best: list[TrialRow]
    trained_tokens: int
    cost: float
    failed: int
    workers: list[WorkerInfo]
    stop_reason: str | None
    finished_at: datetime | None
    started_at: datetime
    now: datetime = field(default_factory=utcnow)

    @property
    def elapsed_s(self) -> float:
        return (self.now - self.started_at).total_seconds()


def sweep_status(ctx: ReportContext, now: datetime | None = None) -> SweepStatus:
    """Read the sweep once: counts by state, jobs in flight, best so far, spend, live workers."""
    now = now or utcnow()
    with read_session(ctx.storage_url) as session:
        sweep = load_sweep(session, ctx)
        rows = load_trials(session, sweep.id, ctx.price_per_million_tokens)
        waiting_unnumbered = count_unnumbered(session, sweep.id)
        workers = [
            WorkerInfo(w.id, w.hostname, w.pid, (now - w.heartbeat_at).total_seconds())
            for w in load_workers(session, sweep.id)
            if w.stopped_at is None and now - w.heartbeat_at <= ACTIVE_WORKER_WINDOW
        ]
        stop_reason, finished_at = sweep.stop_reason, sweep.finished_at
        started_at = sweep.created_at
    mark_best(rows, ctx.directions)
    counts = Counter(r.state for r in rows)
    counts["WAITING"] += waiting_unnumbered
    return SweepStatus(
        ctx=ctx,
        counts={s: counts.get(s, 0) for s in TRIAL_STATES},
        in_flight=[r for r in rows if r.state in ("RUNNING", "WAITING")],
        best=sorted((r for r in rows if r.best or r.pareto), key=lambda r: r.values or []),
        trained_tokens=sum(r.trained_tokens for r in rows),
        cost=sum(r.cost for r in rows),
        failed=counts.get("FAIL", 0),
        workers=workers,
        stop_reason=stop_reason,
        finished_at=finished_at,
        started_at=started_at,
        now=now,
    )


def _left(limit: float | None, used: float, fmt: str) -> str:
    if limit is None:
        return "no limit"
    return f"{format(max(limit - used, 0), fmt)} left of {format(limit, fmt)}"


def render_status(st: SweepStatus) -> list[Any]:
    """rich renderables, top to bottom; the CLI prints them."""
    from rich.table import Table

    ctx = st.ctx
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("sweep", f"{ctx.sweep_name}  ({safe_url(ctx.storage_url)})")
    head.add_row("trials", "  ".join(f"{s} {n}" for s, n in st.counts.items()))
    state = "finished" if st.finished_at else ("running" if st.workers else "not running")
    head.add_row("state", state + (f"; stopped: {st.stop_reason}" if st.stop_reason else ""))
    head.add_row(
        "elapsed",
        fmt_duration(st.elapsed_s)
        + (f" ({_left(ctx.budget.timeout, st.elapsed_s, '.0f')} s)" if ctx.budget.timeout else ""),
    )
    head.add_row(
        "tokens",
        f"{st.trained_tokens:,} trained; "
        + _left(ctx.budget.max_trained_tokens, st.trained_tokens, ",d"),
    )
    head.add_row(
        "cost",
        f"{st.cost:.4f} at {ctx.price_per_million_tokens:g}/M tokens; "
        + _left(ctx.budget.max_cost, st.cost, ".4f"),
    )
    limit = ctx.budget.max_failed_trials
    head.add_row("failed", f"{st.failed}" + (f" of at most {limit}" if limit is not None else ""))
    head.add_row(
        "workers",
        ", ".join(
            f"{w.id} ({w.hostname} pid {w.pid}, heartbeat {w.heartbeat_age_s:.0f}s ago)"
            for w in st.workers
        )
        or "none active",
    )
    out: list[Any] = [head]

    best = Table(
        title="best so far" if not ctx.multi_objective else f"Pareto front ({len(st.best)} trials)"
    )
    best.add_column("trial", justify="right")
    for name in objective_columns(ctx.metrics):
        best.add_column(name, justify="right")
    best.add_column("params")
    best.add_column("job id")
    for r in st.best[:20]:
        vals = r.values or []
        best.add_row(
            str(r.number),
            *[fmt_value(v) for v in vals],
            ", ".join(f"{k}={fmt_value(v)}" for k, v in r.params.items()),
            r.job_id or "-",
        )
    out.append(best if st.best else "no COMPLETE trial yet")

    if st.in_flight:
        jobs = Table(title=f"jobs in flight ({len(st.in_flight)})")
        for name in ("trial", "state", "job id", "job status", "progress", "elapsed"):
            jobs.add_column(name, justify="right" if name in ("trial", "elapsed") else "left")
        for r in st.in_flight:
            progress = (
                f"{r.trained_steps or 0}/{r.total_steps} steps"
                if r.total_steps
                else f"{r.trained_steps or 0} steps"
            )
            elapsed = (st.now - r.launched_at).total_seconds() if r.launched_at else None
            jobs.add_row(
                str(r.number),
                r.state,
                r.job_id or "-",
                r.job_status or "-",
                progress,
                fmt_duration(elapsed),
            )
        out.append(jobs)
    return out
