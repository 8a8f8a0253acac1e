"""intermediate reports from running jobs, and the progress a workflow's driver publishes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 06:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sa.Column("stop", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_reports_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint(
            "job_id", "attempt", "step", name=op.f("uq_reports_job_id_attempt_step")
        ),
    )
    # A plain ALTER TABLE (not batch mode): batch mode rebuilds the table on SQLite and
    # drops the DESC of its indexes.
    op.add_column("workflows", sa.Column("progress", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("workflows", "progress")
    op.drop_table("reports")
