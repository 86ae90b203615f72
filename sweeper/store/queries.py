"""Reads and writes of sweeper's tables. Each function takes a session inside a transaction the
caller opened (``db.transaction`` / ``db.write_transaction``) and never calls the network."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sweeper.api.models import Checkpoint, Event
from sweeper.store.models import (
    CLAIMED,
    CLOSED,
    IN_FLIGHT_STATES,
    OPEN_STATES,
    Attempt,
    CheckpointRow,
    EventRow,
    Sweep,
    UploadedFile,
    Worker,
)


def utcnow() -> datetime:
    """Naive UTC: the one timestamp convention of the sweep_ tables."""
    return datetime.now(UTC).replace(tzinfo=None)


# --- sweeps and workers -----------------------------------------------------------------------


def get_sweep(session: Session, name: str) -> Sweep | None:
    return session.scalars(select(Sweep).where(Sweep.name == name)).one_or_none()


def create_sweep(
    session: Session, name: str, config: dict[str, Any], fingerprint: dict[str, Any]
) -> Sweep:
    now = utcnow()
    sweep = Sweep(
        name=name,
        study_name=name,
        config=config,
        fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
    )
    session.add(sweep)
    session.flush()
    return sweep


def register_worker(session: Session, sweep_id: int) -> tuple[str, int]:
    """A new worker row; returns its id and its ordinal (workers this sweep had before it)."""
    ordinal = session.scalar(
        select(func.count()).select_from(Worker).where(Worker.sweep_id == sweep_id)
    )
    now = utcnow()
    worker = Worker(
        id=uuid.uuid4().hex,
        sweep_id=sweep_id,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        started_at=now,
        heartbeat_at=now,
    )
    session.add(worker)
    return worker.id, int(ordinal or 0)


def heartbeat(session: Session, worker_id: str, *, stopped: bool = False) -> None:
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if stopped:
        values["stopped_at"] = utcnow()
    session.execute(update(Worker).where(Worker.id == worker_id).values(**values))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Workers running in this process (several can, in threads); one of our pid that is not
# here any more is a run that ended or crashed in this process.
LIVE_IN_PROCESS: set[str] = set()


def stale_worker_ids(session: Session, sweep_id: int, me: str, lease: timedelta) -> list[str]:
    """Workers of this sweep that are gone: stopped, dead on this host, or silent past the lease."""
    host, pid, now = socket.gethostname(), os.getpid(), utcnow()
    stale = []
    for w in session.scalars(select(Worker).where(Worker.sweep_id == sweep_id, Worker.id != me)):
        gone = w.stopped_at is not None or now - w.heartbeat_at > lease
        # same host: a dead pid is gone at once, and so is a past run of this very process
        ours = w.pid == pid and w.id not in LIVE_IN_PROCESS
        dead_here = w.hostname == host and (ours or (w.pid != pid and not _pid_alive(w.pid)))
        if gone or dead_here:
            stale.append(w.id)
    return stale


def adopt_attempts(session: Session, sweep_id: int, me: str, lease: timedelta) -> int:
    """Take over the open attempts of workers that are gone (or that never had one)."""
    stale = stale_worker_ids(session, sweep_id, me, lease)
    cond = or_(Attempt.worker_id.is_(None), Attempt.worker_id.in_(stale))
    result = session.execute(
        update(Attempt)
        .where(Attempt.sweep_id == sweep_id, Attempt.state.in_(OPEN_STATES), cond)
        .values(worker_id=me)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- counting (inside the claim lock) ---------------------------------------------------------


def count_trials(session: Session, sweep_id: int) -> int:
    """Trials claimed so far: first attempts only (retries re-run the same trial)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.sweep_id == sweep_id, Attempt.attempt_no == 1)
        )
        or 0
    )


def count_in_flight(session: Session, sweep_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.sweep_id == sweep_id, Attempt.state.in_(IN_FLIGHT_STATES))
        )
        or 0
    )


def count_open(session: Session, sweep_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.sweep_id == sweep_id, Attempt.state.in_(OPEN_STATES))
        )
        or 0
    )


def count_failed_trials(session: Session, sweep_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(
                Attempt.sweep_id == sweep_id,
                Attempt.state == CLOSED,
                Attempt.trial_state == "FAIL",
            )
        )
        or 0
    )


def token_totals(session: Session, sweep_id: int) -> tuple[int, int]:
    """(tokens trained so far by every attempt, estimated tokens still to come in flight)."""
    trained = func.coalesce(Attempt.trained_tokens, 0)
    estimated = func.coalesce(Attempt.estimated_tokens, 0)
    to_come = case(
        (Attempt.state.in_(IN_FLIGHT_STATES) & (estimated > trained), estimated - trained),
        else_=0,
    )
    spent, pending = session.execute(
        select(func.coalesce(func.sum(trained), 0), func.coalesce(func.sum(to_come), 0)).where(
            Attempt.sweep_id == sweep_id
        )
    ).one()
    return int(spent), int(pending)


def calibration(session: Session, sweep_id: int) -> float | None:
    """Trained tokens per estimated token over succeeded jobs (None before the first)."""
    trained, base = session.execute(
        select(func.sum(Attempt.trained_tokens), func.sum(Attempt.base_tokens)).where(
            Attempt.sweep_id == sweep_id,
            Attempt.job_status == "succeeded",
            Attempt.trained_tokens.is_not(None),
            Attempt.base_tokens.is_not(None),
        )
    ).one()
    return float(trained) / float(base) if trained and base else None


def repeat_key(model: str | None, hyperparameters: dict[str, Any]) -> str:
    """Identity of a launch's resolved settings (migration 0002 keeps a frozen copy)."""
    blob = json.dumps({"model": model, "hyperparameters": hyperparameters}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- attempts ---------------------------------------------------------------------------------


def new_attempt(
    session: Session,
    sweep: Sweep,
    worker_id: str,
    *,
    trial_number: int | None = None,
    trial_id: int | None = None,
    attempt_no: int = 1,
    params: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    model: str | None = None,
    estimated_tokens: int | None = None,
    base_tokens: int | None = None,
    repeat_key: str | None = None,
) -> Attempt:
    ref = uuid.uuid4().hex
    attempt = Attempt(
        sweep_id=sweep.id,
        launch_ref=ref,
        suffix="",
        attempt_no=attempt_no,
        state=CLAIMED,
        worker_id=worker_id,
        trial_number=trial_number,
        trial_id=trial_id,
        params=params,
        hyperparameters=hyperparameters,
        model=model,
        estimated_tokens=estimated_tokens,
        base_tokens=base_tokens,
        repeat_key=repeat_key,
        created_at=utcnow(),
    )
    attempt.suffix = make_suffix(sweep.name, trial_number, ref)
    session.add(attempt)
    session.flush()
    return attempt


def make_suffix(sweep_name: str, trial_number: int | None, ref: str) -> str:
    """At most 64 characters, names sweep and trial, unique to the launch ref.

    ``sw-<sweep>-t<trial>-<12 hex of the ref>``; the ``sw-`` prefix and the ref let `sweep gc`
    recognise this sweep's jobs among the provider's.
    """
    trial = f"t{trial_number}" if trial_number is not None else "t"
    tail = f"-{trial}-{ref[:12]}"
    return "sw-" + sweep_name[: 64 - len(tail) - 3] + tail


def attempts_of(
    session: Session, sweep_id: int, worker_id: str, states: Sequence[str]
) -> list[Attempt]:
    return list(
        session.scalars(
            select(Attempt)
            .where(
                Attempt.sweep_id == sweep_id,
                Attempt.worker_id == worker_id,
                Attempt.state.in_(states),
            )
            .order_by(Attempt.id)
        )
    )


def move(session: Session, attempt_id: int, from_state: str, to_state: str, **values: Any) -> bool:
    """Compare-and-set an attempt's state; False if another worker moved it first."""
    result = session.execute(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.state == from_state)
        .values(state=to_state, **values)
    )
    return bool(getattr(result, "rowcount", 0))


def set_fields(session: Session, attempt_id: int, **values: Any) -> None:
    session.execute(update(Attempt).where(Attempt.id == attempt_id).values(**values))


def set_trial(session: Session, launch_ref: str, sweep_name: str, **values: Any) -> None:
    """Record the Optuna trial of a claimed attempt (once); the suffix then names the trial."""
    number = values.get("trial_number")
    session.execute(
        update(Attempt)
        .where(
            Attempt.launch_ref == launch_ref,
            Attempt.state == CLAIMED,
            Attempt.trial_number.is_(None),
        )
        .values(suffix=make_suffix(sweep_name, number, launch_ref), **values)
    )


def store_checkpoints(session: Session, attempt_id: int, checkpoints: Sequence[Checkpoint]) -> int:
    """Insert the checkpoints not stored yet; returns how many were new."""
    known = set(
        session.scalars(
            select(CheckpointRow.checkpoint_id).where(CheckpointRow.attempt_id == attempt_id)
        )
    )
    new = 0
    for ck in checkpoints:
        if ck.id in known:
            continue
        known.add(ck.id)
        new += 1
        session.add(
            CheckpointRow(
                attempt_id=attempt_id,
                checkpoint_id=ck.id,
                step_number=ck.step_number,
                train_loss=ck.metrics.train_loss,
                valid_loss=ck.metrics.valid_loss,
                metrics=ck.metrics.model_dump(mode="json"),
                created_at=ck.created_at,
            )
        )
    return new


def store_events(session: Session, attempt_id: int, events: Sequence[Event]) -> int:
    if not events:
        return 0
    rows = [
        {
            "attempt_id": attempt_id,
            "event_id": e.id,
            "created_at": e.created_at,
            "level": e.level,
            "message": e.message,
            "type": e.type,
            "data": e.data,
        }
        for e in events
    ]
    dialect = session.get_bind().dialect.name
    ins = pg_insert(EventRow) if dialect == "postgresql" else sqlite_insert(EventRow)
    stmt = ins.values(rows).on_conflict_do_nothing(index_elements=["attempt_id", "event_id"])
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


def checkpoints_of(session: Session, attempt_id: int) -> list[CheckpointRow]:
    return list(
        session.scalars(
            select(CheckpointRow)
            .where(CheckpointRow.attempt_id == attempt_id)
            .order_by(CheckpointRow.step_number)
        )
    )


def find_repeat(session: Session, sweep_id: int, key: str) -> Attempt | None:
    """A closed COMPLETE attempt of this sweep with exactly these resolved settings."""
    return session.scalars(
        select(Attempt)
        .where(
            Attempt.sweep_id == sweep_id,
            Attempt.repeat_key == key,
            Attempt.state == CLOSED,
            Attempt.trial_state == "COMPLETE",
            Attempt.values.is_not(None),
        )
        .order_by(Attempt.id)
        .limit(1)
    ).first()


# --- files ------------------------------------------------------------------------------------


def cached_file(session: Session, base_url: str, sha256: str) -> UploadedFile | None:
    return session.scalars(
        select(UploadedFile).where(UploadedFile.base_url == base_url, UploadedFile.sha256 == sha256)
    ).one_or_none()


def forget_file(session: Session, row_id: int) -> None:
    row = session.get(UploadedFile, row_id)
    if row is not None:
        session.delete(row)


def remember_file(session: Session, **values: Any) -> None:
    session.add(UploadedFile(created_at=utcnow(), **values))
