"""why a job ended as it did, as a field (cancelled with its workflow, upstream failed, pruned)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("reason", sa.String(32), nullable=True))
    # Reasons that were written into the error text or the result before.
    op.execute(
        "UPDATE jobs SET reason = 'upstream_failed', error = substr(error, 18) "
        "WHERE state = 'cancelled' AND error LIKE 'upstream_failed: %'"
    )
    op.execute(
        "UPDATE jobs SET reason = 'pruned', result = replace(result, '\"$pw_pruned\"', '\"pruned\"') "
        "WHERE state = 'succeeded' AND result LIKE '{\"$pw_pruned\":%'"
    )
    op.execute(
        "UPDATE jobs SET reason = 'cancelled' WHERE state = 'cancelled' AND reason IS NULL "
        "AND error = 'cancelled by user'"
    )
    op.execute(
        "UPDATE jobs SET reason = 'workflow_cancelled' WHERE state = 'cancelled' "
        "AND reason IS NULL AND error LIKE 'workflow % cancelled'"
    )
    op.execute(
        "UPDATE jobs SET reason = 'other_path' WHERE state = 'cancelled' AND reason IS NULL "
        "AND error = 'its workflow took another path on retry'"
    )
    op.execute(
        "UPDATE jobs SET reason = 'workflow_ended' WHERE state = 'cancelled' "
        "AND reason IS NULL AND error LIKE 'workflow % succeeded'"
    )


def downgrade() -> None:
    op.drop_column("jobs", "reason")
