"""`sweep show TRIAL`: everything recorded about one trial, attempt by attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from sweeper.report.compare import fmt_duration, fmt_value, objective_columns
from sweeper.report.context import ReportContext
from sweeper.report.data import (
    load_checkpoints,
    load_events,
    load_sweep,
    read_session,
    trial_state,
)
from sweeper.store.models import Attempt


class UnknownTrial(LookupError):
    """The sweep has no trial with that number; ``known`` is the range it has."""

    def __init__(self, number: int, known: list[int]) -> None:
        self.number = number
        span = f"trials {min(known)}..{max(known)}" if known else "no trials yet"
        super().__init__(f"no trial {number} in this sweep ({span})")


@dataclass
class AttemptView:
    attempt_no: int
    state: str
    job_id: str | None
    job_status: str | None
    error_code: str | None
    error_message: str | None
    trained_tokens: int | None
    trained_steps: int | None
    total_steps: int | None
    created_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    cancel_reason: str | None
    events: list[tuple[int, str, str]]  # (unix seconds, level, message)
    metrics: list[dict[str, Any]]  # one per checkpoint, with `step`


@dataclass
class TrialView:
    ctx: ReportContext
    number: int
    state: str
    values: list[float] | None
    params: dict[str, Any]
    hyperparameters: dict[str, Any]
    model: str | None
    attempts: list[AttemptView]


METRIC_KEYS = (
    "train_loss",
    "valid_loss",
    "train_mean_token_accuracy",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def show_trial(ctx: ReportContext, number: int) -> TrialView:
    with read_session(ctx.storage_url) as session:
        sweep = load_sweep(session, ctx)
        attempts = list(
            session.scalars(
                select(Attempt)
                .where(Attempt.sweep_id == sweep.id, Attempt.trial_number == number)
                .order_by(Attempt.attempt_no)
            )
        )
        if not attempts:
            known = list(
                session.scalars(
                    select(Attempt.trial_number)
                    .where(Attempt.sweep_id == sweep.id, Attempt.trial_number.is_not(None))
                    .distinct()
                )
            )
            raise UnknownTrial(number, [k for k in known if k is not None])
        ids = [a.id for a in attempts]
        cks = load_checkpoints(session, ids)
        evs = load_events(session, ids)
        views = []
        for a in attempts:
            metrics = []
            for ck in cks.get(a.id, []):
                m = {k: ck.metrics.get(k) for k in METRIC_KEYS if k in ck.metrics}
                m.setdefault("train_loss", ck.train_loss)
                m.setdefault("valid_loss", ck.valid_loss)
                metrics.append({"step": ck.step_number, **m})
            views.append(
                AttemptView(
                    a.attempt_no,
                    a.state,
                    a.job_id,
                    a.job_status,
                    a.error_code,
                    a.error_message,
                    a.trained_tokens,
                    a.trained_steps,
                    a.total_steps,
                    a.created_at,
                    a.launched_at,
                    a.finished_at,
                    a.cancel_reason,
                    [(e.created_at, e.level, e.message) for e in evs.get(a.id, [])],
                    metrics,
                )
            )
        last = attempts[-1]
        return TrialView(
            ctx=ctx,
            number=number,
            state=trial_state(last.state, last.trial_state, last.job_status),
            values=list(last.values) if last.values is not None else None,
            params=dict(last.params or {}),
            hyperparameters=dict(last.hyperparameters or {}),
            model=last.model,
            attempts=views,
        )


def _ts(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def render_trial(view: TrialView) -> list[Any]:
    """rich renderables for the CLI."""
    from rich.rule import Rule
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("trial", f"{view.number} of sweep {view.ctx.sweep_name}")
    head.add_row("state", view.state)
    names = objective_columns(view.ctx.metrics)
    vals = view.values or []
    head.add_row(
        "objective",
        ", ".join(
            f"{n}={fmt_value(vals[i] if i < len(vals) else None)}" for i, n in enumerate(names)
        ),
    )
    head.add_row("model", view.model or "-")
    head.add_row("params", ", ".join(f"{k}={fmt_value(v)}" for k, v in view.params.items()))
    head.add_row(
        "hyperparameters", ", ".join(f"{k}={fmt_value(v)}" for k, v in view.hyperparameters.items())
    )
    out: list[Any] = [head]
    for a in view.attempts:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        t.add_row(
            "job",
            f"{a.job_id or '(not launched)'}  status {a.job_status or '-'}"
            f"  attempt state {a.state}",
        )
        if a.error_code or a.error_message:
            t.add_row("error", f"{a.error_code or '-'}: {a.error_message or ''}")
        if a.cancel_reason:
            t.add_row("cancelled", a.cancel_reason)
        steps = f"{a.trained_steps or 0}/{a.total_steps or '?'} steps"
        t.add_row("tokens", f"{a.trained_tokens or 0:,} trained, {steps}")
        dur = (
            (a.finished_at - a.launched_at).total_seconds()
            if a.finished_at and a.launched_at
            else None
        )
        t.add_row(
            "times",
            f"claimed {_ts(a.created_at)}, launched {_ts(a.launched_at)}, "
            f"finished {_ts(a.finished_at)} ({fmt_duration(dur)})",
        )
        out.append(Rule(f"attempt {a.attempt_no} of {len(view.attempts)}", align="left"))
        out.append(t)
        if a.metrics:
            keys = ["step", *[k for k in METRIC_KEYS if any(k in m for m in a.metrics)]]
            mt = Table(title="per-epoch metrics")
            for k in keys:
                mt.add_column(k, justify="right")
            for m in a.metrics:
                mt.add_row(*[fmt_value(m.get(k)) for k in keys])
            out.append(mt)
        if a.events:
            et = Table(title="events")
            for k in ("time", "level", "message"):
                et.add_column(k)
            for ts, level, msg in a.events:
                et.add_row(
                    datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S"), level, msg
                )
            out.append(et)
    return out
