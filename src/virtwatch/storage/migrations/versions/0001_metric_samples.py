"""metric catalogue and raw samples

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "metric",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("vm_uuid", sa.String(36), nullable=False),
        sa.Column("vm_name", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric")),
    )
    op.create_index("uq_metric_host_vm_name", "metric", ["host", "vm_uuid", "name"], unique=True)
    op.create_table(
        "metric_sample",
        sa.Column("metric_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["metric_id"],
            ["metric.id"],
            ondelete="CASCADE",
            name=op.f("fk_metric_sample_metric_id_metric"),
        ),
        sa.PrimaryKeyConstraint("metric_id", "ts_ms", name=op.f("pk_metric_sample")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("metric_sample")
    op.drop_index("uq_metric_host_vm_name", table_name="metric")
    op.drop_table("metric")
