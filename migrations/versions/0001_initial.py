"""sweeper's tables: sweeps, workers, attempts, checkpoints, events, uploaded files.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep_sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("study_name", sa.String(255), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_sweeps")),
        sa.UniqueConstraint("name", name=op.f("uq_sweep_sweeps_name")),
    )
    op.create_table(
        "sweep_workers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweep_sweeps.id"],
            name=op.f("fk_sweep_workers_sweep_id_sweep_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_workers")),
    )
    op.create_table(
        "sweep_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("launch_ref", sa.String(32), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("trial_id", sa.Integer(), nullable=True),
        sa.Column("trial_state", sa.String(16), nullable=True),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("hyperparameters", sa.JSON(), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("job_id", sa.String(128), nullable=True),
        sa.Column("job_status", sa.String(32), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("trained_steps", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("estimated_tokens", sa.BigInteger(), nullable=True),
        sa.Column("error_code", sa.String(128), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.String(64), nullable=True),
        sa.Column("reused_from", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("launched_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweep_sweeps.id"],
            name=op.f("fk_sweep_attempts_sweep_id_sweep_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_attempts")),
        sa.UniqueConstraint("job_id", name=op.f("uq_sweep_attempts_job_id")),
        sa.UniqueConstraint("launch_ref", name=op.f("uq_sweep_attempts_launch_ref")),
        sa.UniqueConstraint("suffix", name=op.f("uq_sweep_attempts_suffix")),
        sa.UniqueConstraint(
            "sweep_id",
            "trial_number",
            "attempt_no",
            name=op.f("uq_sweep_attempts_sweep_id_trial_number_attempt_no"),
        ),
    )
    op.create_index(op.f("ix_sweep_attempts_state"), "sweep_attempts", ["state"])
    op.create_index(op.f("ix_sweep_attempts_sweep_id"), "sweep_attempts", ["sweep_id"])
    op.create_table(
        "sweep_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.String(128), nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("valid_loss", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["sweep_attempts.id"],
            name=op.f("fk_sweep_checkpoints_attempt_id_sweep_attempts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_checkpoints")),
        sa.UniqueConstraint(
            "attempt_id",
            "checkpoint_id",
            name=op.f("uq_sweep_checkpoints_attempt_id_checkpoint_id"),
        ),
    )
    op.create_index(op.f("ix_sweep_checkpoints_attempt_id"), "sweep_checkpoints", ["attempt_id"])
    op.create_table(
        "sweep_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("type", sa.String(32), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["sweep_attempts.id"],
            name=op.f("fk_sweep_events_attempt_id_sweep_attempts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_events")),
        sa.UniqueConstraint(
            "attempt_id", "event_id", name=op.f("uq_sweep_events_attempt_id_event_id")
        ),
    )
    op.create_index(op.f("ix_sweep_events_attempt_id"), "sweep_events", ["attempt_id"])
    op.create_table(
        "sweep_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_url", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_files")),
        sa.UniqueConstraint("base_url", "sha256", name=op.f("uq_sweep_files_base_url_sha256")),
    )


def downgrade() -> None:
    # children first; their indexes go with them
    for table in (
        "sweep_files",
        "sweep_events",
        "sweep_checkpoints",
        "sweep_attempts",
        "sweep_workers",
        "sweep_sweeps",
    ):
        op.drop_table(table)
