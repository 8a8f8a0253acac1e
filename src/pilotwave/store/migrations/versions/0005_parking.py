"""parked workflow drivers: what each waits for, so it can hold no slot while it waits

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("wait", sa.Text(), nullable=True))
    op.add_column("workflows", sa.Column("wait_deadline", sa.Float(precision=53), nullable=True))
    op.add_column("workflows", sa.Column("wait_left", sa.Integer(), nullable=True))
    op.add_column("workflows", sa.Column("ready_at", sa.Float(precision=53), nullable=True))
    op.create_index(op.f("ix_workflows_wait_deadline"), "workflows", ["wait_deadline"])
    op.add_column("pilots", sa.Column("parkable", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("pilots") as batch_op:
        batch_op.drop_column("parkable")
    op.drop_index(op.f("ix_workflows_wait_deadline"), table_name="workflows")
    for column in ("ready_at", "wait_left", "wait_deadline", "wait"):
        op.drop_column("workflows", column)
