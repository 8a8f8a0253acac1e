"""who holds which blob (the per-user blob quota): the owners of the jobs that refer to each
blob so far, as sandbox or artifact, hold it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BACKFILL = """
INSERT INTO blob_holdings (user_id, sha256, held_at)
SELECT owner_id, sha256, MAX(created_at) FROM (
    SELECT jobs.owner_id AS owner_id, blobs.sha256 AS sha256, blobs.created_at AS created_at
    FROM jobs JOIN blobs ON blobs.sha256 = jobs.sandbox
    UNION
    SELECT jobs.owner_id, blobs.sha256, blobs.created_at
    FROM artifacts JOIN jobs ON jobs.id = artifacts.job_id
    JOIN blobs ON blobs.sha256 = artifacts.sha256
) AS held
GROUP BY owner_id, sha256
"""


def upgrade() -> None:
    user = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "blob_holdings",
        sa.Column("user_id", user, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("held_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_blob_holdings_user_id_users"),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["blobs.sha256"],
            name="fk_blob_holdings_sha256_blobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "sha256", name="pk_blob_holdings"),
    )
    op.create_index("ix_blob_holdings_sha256", "blob_holdings", ["sha256"])
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_index("ix_blob_holdings_sha256", table_name="blob_holdings")
    op.drop_table("blob_holdings")
