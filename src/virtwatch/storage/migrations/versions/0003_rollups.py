"""per-minute and per-hour aggregates, rollup watermarks, metric lookup by VM

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Ref = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _aggregate_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("metric_id", Ref, nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("min", sa.Double(), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("p95", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["metric_id"],
            ["metric.id"],
            ondelete="CASCADE",
            name=op.f(f"fk_{name}_metric_id_metric"),
        ),
        sa.PrimaryKeyConstraint("metric_id", "ts_ms", name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    op.create_table(
        "rollup_state",
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("watermark_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tier", "host", name=op.f("pk_rollup_state")),
    )
    _aggregate_table("metric_minute")
    _aggregate_table("metric_hour")
    op.create_index("ix_metric_vm_uuid", "metric", ["vm_uuid"])


def downgrade() -> None:
    op.drop_index("ix_metric_vm_uuid", table_name="metric")
    op.drop_table("metric_hour")
    op.drop_table("metric_minute")
    op.drop_table("rollup_state")
