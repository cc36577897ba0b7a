"""writer claims: which process writes each host's history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "writer_claim",
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("nodename", sa.String(255), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
        sa.Column("writing", sa.Boolean(), nullable=False),
        sa.Column("process_ns", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("host", "holder", name=op.f("pk_writer_claim")),
    )


def downgrade() -> None:
    op.drop_table("writer_claim")
