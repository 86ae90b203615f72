"""Attempts get an indexed repeat key and their uncalibrated token estimate.

Both turn per-ask scans of every finished attempt into one indexed lookup and one aggregate:
``repeat_key`` finds an exact repeat of (model, resolved hyperparameters); ``base_tokens``
(dataset tokens x epochs) lets the token estimate calibrate itself with SUM() alone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _repeat_key(model: str | None, hyperparameters: object) -> str:
    # frozen copy of sweeper.store.queries.repeat_key at this revision
    blob = json.dumps({"model": model, "hyperparameters": hyperparameters}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("sweep_attempts") as batch:
        batch.add_column(sa.Column("repeat_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("base_tokens", sa.BigInteger(), nullable=True))
        batch.create_index(
            batch.f("ix_sweep_attempts_sweep_id_repeat_key"), ["sweep_id", "repeat_key"]
        )
    attempts = sa.table(
        "sweep_attempts",
        sa.column("id", sa.Integer()),
        sa.column("model", sa.String()),
        sa.column("hyperparameters", sa.JSON()),
        sa.column("repeat_key", sa.String()),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(attempts.c.id, attempts.c.model, attempts.c.hyperparameters).where(
            attempts.c.hyperparameters.is_not(None)
        )
    ).all()
    for row_id, model, hyperparameters in rows:
        conn.execute(
            attempts.update()
            .where(attempts.c.id == row_id)
            .values(repeat_key=_repeat_key(model, hyperparameters))
        )


def downgrade() -> None:
    with op.batch_alter_table("sweep_attempts") as batch:
        batch.drop_index(batch.f("ix_sweep_attempts_sweep_id_repeat_key"))
        batch.drop_column("base_tokens")
        batch.drop_column("repeat_key")
