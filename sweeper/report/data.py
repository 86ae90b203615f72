"""Read-only access to a sweep: open the storage without writing, load trials with set queries.

Nothing here writes: SQLite connections run with ``PRAGMA query_only``, PostgreSQL sessions are
``READ ONLY``, a missing SQLite file is reported instead of created, and missing tables mean
"no such sweep" (we never create them). Every query is set-based (one per table), so a
10,000-trial sweep loads in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from sweeper.errors import StoreError
from sweeper.report.context import ReportContext
from sweeper.store.models import (
    CLAIMED,
    CLOSED,
    FINISHED,
    LAUNCHING,
    Attempt,
    CheckpointRow,
    EventRow,
    Sweep,
    Worker,
)

TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
QUEUED_JOB_STATUSES = ("validating_files", "queued")


class SweepNotFound(StoreError):
    """The storage has no sweep of that name (or no sweeper tables at all)."""


def safe_url(storage_url: str) -> str:
    """The storage URL with any password hidden, fit for messages."""
    try:
        return make_url(storage_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid storage URL>"


def utcnow() -> datetime:
    """Naive UTC, as the store writes its timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


@contextmanager
def read_session(storage_url: str) -> Iterator[Session]:
    """A session that cannot write, on an engine disposed when the block ends.

    Raises :class:`SweepNotFound` when the SQLite file or sweeper's tables do not exist.
    """
    from sweeper.store.db import (
        check_state,
        make_engine,
        make_sessionmaker,
        read_only_session,
        schema_state,
    )

    try:
        url = make_url(storage_url)
    except ArgumentError as exc:
        raise StoreError(f"invalid storage URL {storage_url!r}") from exc
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise SweepNotFound(
            f"no database at {path} (storage {safe_url(storage_url)}); run `sweep run CONFIG` first"
        )
    engine = make_engine(storage_url, read_only=True)
    try:
        try:
            if not inspect(engine).has_table(Sweep.__tablename__):
                raise SweepNotFound(
                    f"no sweeper tables in {safe_url(storage_url)}; run `sweep run CONFIG` first"
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"reading {safe_url(storage_url)} failed: {exc}") from exc
        check_state(engine, schema_state(engine))  # outdated: the `sweep db upgrade` hint
        with read_only_session(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def load_sweep(session: Session, ctx: ReportContext) -> Sweep:
    sweep = session.scalars(select(Sweep).where(Sweep.name == ctx.sweep_name)).one_or_none()
    if sweep is None:
        raise SweepNotFound(
            f"no sweep named {ctx.sweep_name!r} in {safe_url(ctx.storage_url)}; "
            "run `sweep run CONFIG` first"
        )
    return sweep


@dataclass(slots=True)
class TrialRow:
    """One trial as the read side shows it: its last attempt, with totals over all attempts."""

    number: int
    state: str
    values: list[float] | None
    params: dict[str, Any]
    job_id: str | None
    job_status: str | None
    attempts: int
    trained_tokens: int
    cost: float
    duration_s: float | None
    model: str | None = None
    attempt_state: str = ""
    launched_at: datetime | None = None
    finished_at: datetime | None = None
    trained_steps: int | None = None
    total_steps: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempt_ids: list[int] = field(default_factory=list)
    best: bool = False
    pareto: bool = False


def trial_state(attempt_state: str, trial_state_: str | None, job_status: str | None) -> str:
    """Map a trial's last attempt to COMPLETE/PRUNED/FAIL/RUNNING/WAITING."""
    if trial_state_ in ("COMPLETE", "PRUNED", "FAIL"):
        return trial_state_
    if attempt_state == CLOSED:
        return "FAIL"  # closed without a verdict: nothing usable came out of it
    if attempt_state in (CLAIMED, LAUNCHING):
        return "WAITING"
    if attempt_state == FINISHED:
        return "RUNNING"  # the job ended; the runner has not told Optuna yet
    if job_status in QUEUED_JOB_STATUSES:
        return "WAITING"
    return "RUNNING"


_ATTEMPT_COLUMNS = (
    Attempt.id,
    Attempt.trial_number,
    Attempt.attempt_no,
    Attempt.state,
    Attempt.trial_state,
    Attempt.values,
    Attempt.params,
    Attempt.model,
    Attempt.job_id,
    Attempt.job_status,
    Attempt.trained_tokens,
    Attempt.trained_steps,
    Attempt.total_steps,
    Attempt.error_code,
    Attempt.error_message,
    Attempt.launched_at,
    Attempt.finished_at,
)


def load_trials(session: Session, sweep_id: int, price_per_million: float) -> list[TrialRow]:
    """Every numbered trial of the sweep, in trial-number order, from one query."""
    stmt = (
        select(*_ATTEMPT_COLUMNS)
        .where(Attempt.sweep_id == sweep_id, Attempt.trial_number.is_not(None))
        .order_by(Attempt.trial_number, Attempt.attempt_no)
    )
    rows: list[TrialRow] = []
    current: TrialRow | None = None
    for a in session.execute(stmt):
        tokens = a.trained_tokens or 0
        if current is None or current.number != a.trial_number:
            current = TrialRow(
                number=a.trial_number,
                state="",
                values=None,
                params={},
                job_id=None,
                job_status=None,
                attempts=0,
                trained_tokens=0,
                cost=0.0,
                duration_s=None,
            )
            rows.append(current)
        # the last attempt (highest attempt_no) decides; tokens and cost add up over all
        current.attempts += 1
        current.attempt_ids.append(a.id)
        current.trained_tokens += tokens
        current.state = trial_state(a.state, a.trial_state, a.job_status)
        current.values = [float(v) for v in a.values] if a.values is not None else None
        current.params = dict(a.params or {})
        current.model = a.model
        current.attempt_state = a.state
        current.job_id = a.job_id
        current.job_status = a.job_status
        current.trained_steps = a.trained_steps
        current.total_steps = a.total_steps
        current.error_code = a.error_code
        current.error_message = a.error_message
        current.launched_at = a.launched_at
        current.finished_at = a.finished_at
        current.duration_s = (
            (a.finished_at - a.launched_at).total_seconds()
            if a.launched_at is not None and a.finished_at is not None
            else None
        )
    for row in rows:
        row.cost = row.trained_tokens / 1e6 * price_per_million
    return rows


def count_unnumbered(session: Session, sweep_id: int) -> int:
    """Attempts claimed but not yet asked (no trial number yet): they count as WAITING."""
    stmt = select(Attempt.id).where(
        Attempt.sweep_id == sweep_id, Attempt.trial_number.is_(None), Attempt.state != CLOSED
    )
    return len(session.scalars(stmt).all())


def load_workers(session: Session, sweep_id: int) -> list[Worker]:
    stmt = select(Worker).where(Worker.sweep_id == sweep_id).order_by(Worker.started_at)
    return list(session.scalars(stmt))


def load_checkpoints(
    session: Session, attempt_ids: Sequence[int]
) -> dict[int, list[CheckpointRow]]:
    """Checkpoints of these attempts, by attempt id, in step order (one query per 500 ids)."""
    out: dict[int, list[CheckpointRow]] = {}
    for chunk in _chunks(attempt_ids, 500):
        stmt = (
            select(CheckpointRow)
            .where(CheckpointRow.attempt_id.in_(chunk))
            .order_by(CheckpointRow.attempt_id, CheckpointRow.step_number)
        )
        for ck in session.scalars(stmt):
            out.setdefault(ck.attempt_id, []).append(ck)
    return out


def load_events(session: Session, attempt_ids: Sequence[int]) -> dict[int, list[EventRow]]:
    out: dict[int, list[EventRow]] = {}
    for chunk in _chunks(attempt_ids, 500):
        stmt = (
            select(EventRow)
            .where(EventRow.attempt_id.in_(chunk))
            .order_by(EventRow.attempt_id, EventRow.created_at, EventRow.id)
        )
        for ev in session.scalars(stmt):
            out.setdefault(ev.attempt_id, []).append(ev)
    return out


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
