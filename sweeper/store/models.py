"""SQLAlchemy 2.0 models of sweeper's own tables.

They live in the same database as Optuna's RDB storage, so every table is prefixed ``sweep_``
and our Alembic keeps its own version table (``sweep_alembic_version``).

An *attempt* is one launch of one fine-tuning job. A trial has one attempt, or more when a
transient provider failure is retried. The attempt's ``state`` moves forward only:

    claimed -> launching -> submitted -> finished -> closed
       (row)     (POST)      (job id)     (job ended,   (Optuna told,
                                           not told)     values stored)

``claimed`` and ``launching`` rows carry no job id: resume finds their job (if any) by the
attempt's unique ``suffix`` among the provider's jobs before it launches again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# attempt states
CLAIMED = "claimed"
LAUNCHING = "launching"
SUBMITTED = "submitted"
FINISHED = "finished"
CLOSED = "closed"
IN_FLIGHT_STATES = (CLAIMED, LAUNCHING, SUBMITTED)
OPEN_STATES = (CLAIMED, LAUNCHING, SUBMITTED, FINISHED)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Sweep(Base):
    __tablename__ = "sweep_sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    study_name: Mapped[str] = mapped_column(String(255))
    # canonical config without secrets, and the part of it a resume may not change
    config: Mapped[dict[str, object]] = mapped_column(JSON)
    fingerprint: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)

    attempts: Mapped[list[Attempt]] = relationship(back_populates="sweep")


class Worker(Base):
    """One `sweep run` process; its heartbeat tells others whether its attempts are orphaned."""

    __tablename__ = "sweep_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep_sweeps.id", ondelete="CASCADE"))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class Attempt(Base):
    __tablename__ = "sweep_attempts"
    __table_args__ = (
        UniqueConstraint("sweep_id", "trial_number", "attempt_no"),
        Index("ix_sweep_attempts_sweep_id_repeat_key", "sweep_id", "repeat_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(
        ForeignKey("sweep_sweeps.id", ondelete="CASCADE"), index=True
    )
    launch_ref: Mapped[str] = mapped_column(String(32), unique=True)
    suffix: Mapped[str] = mapped_column(String(64), unique=True)
    attempt_no: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), index=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)

    # Optuna's side
    trial_number: Mapped[int | None] = mapped_column(Integer, default=None)
    trial_id: Mapped[int | None] = mapped_column(Integer, default=None)
    trial_state: Mapped[str | None] = mapped_column(String(16), default=None)
    values: Mapped[list[float] | None] = mapped_column(JSON, default=None)
    params: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)  # sampled
    hyperparameters: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    model: Mapped[str | None] = mapped_column(String(255), default=None)
    # sha256 of (model, hyperparameters): finds an exact repeat with one indexed lookup
    repeat_key: Mapped[str | None] = mapped_column(String(64), default=None)

    # the provider's side
    job_id: Mapped[str | None] = mapped_column(String(128), unique=True, default=None)
    job_status: Mapped[str | None] = mapped_column(String(32), default=None)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    trained_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    estimated_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # dataset tokens x epochs, before calibration: SUM(trained) / SUM(base) calibrates
    base_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error_code: Mapped[str | None] = mapped_column(String(128), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    pruned: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    reused_from: Mapped[int | None] = mapped_column(Integer, default=None)  # attempt id

    created_at: Mapped[datetime] = mapped_column(DateTime)
    launched_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    sweep: Mapped[Sweep] = relationship(back_populates="attempts")
    checkpoints: Mapped[list[CheckpointRow]] = relationship(
        back_populates="attempt", order_by="CheckpointRow.step_number"
    )
    events: Mapped[list[EventRow]] = relationship(
        back_populates="attempt", order_by="EventRow.created_at"
    )


class CheckpointRow(Base):
    """One per-epoch checkpoint of a job, stored once (keyed by the provider's id)."""

    __tablename__ = "sweep_checkpoints"
    __table_args__ = (UniqueConstraint("attempt_id", "checkpoint_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("sweep_attempts.id", ondelete="CASCADE"), index=True
    )
    checkpoint_id: Mapped[str] = mapped_column(String(128))
    step_number: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float, default=None)
    valid_loss: Mapped[float | None] = mapped_column(Float, default=None)
    metrics: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)  # provider's unix seconds

    attempt: Mapped[Attempt] = relationship(back_populates="checkpoints")


class EventRow(Base):
    """One job event, stored once (keyed by the provider's id)."""

    __tablename__ = "sweep_events"
    __table_args__ = (UniqueConstraint("attempt_id", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("sweep_attempts.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(String(32), default=None)
    data: Mapped[object | None] = mapped_column(JSON, default=None)

    attempt: Mapped[Attempt] = relationship(back_populates="events")


class UploadedFile(Base):
    """A dataset uploaded once per (provider base URL, content hash)."""

    __tablename__ = "sweep_files"
    __table_args__ = (UniqueConstraint("base_url", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_url: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger)
    n_examples: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime)
