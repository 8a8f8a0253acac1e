"""pilots shared between users: tokens for every user's jobs, how each pilot isolates them,
and an index counting a user's jobs in flight (quotas)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tokens", sa.Column("all_users", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column(
        "pilots", sa.Column("isolation", sa.String(16), server_default="none", nullable=False)
    )
    owner = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.add_column("pilots", sa.Column("serves_owner", owner, nullable=True))
    op.create_index("ix_jobs_owner_state", "jobs", ["owner_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_state", table_name="jobs")
    with op.batch_alter_table("pilots") as batch_op:
        batch_op.drop_column("serves_owner")
        batch_op.drop_column("isolation")
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.drop_column("all_users")
