"""error log, domain events, background task log, audit, health, host connections

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "error_log",
        _id(),
        sa.Column("fingerprint", sa.String(512), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("hint", sa.Text(), nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("vm", sa.String(255), nullable=True),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_log")),
    )
    op.create_index(
        "uq_error_log_fingerprint_first", "error_log", ["fingerprint", "first_at_ms"], unique=True
    )
    op.create_index("ix_error_log_last_at_ms", "error_log", ["last_at_ms"])

    op.create_table(
        "domain_event",
        _id(),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("vm_uuid", sa.String(36), nullable=False),
        sa.Column("vm_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_event")),
    )
    op.create_index("ix_domain_event_at_ms", "domain_event", ["at_ms"])
    op.create_index("ix_domain_event_vm_uuid_at_ms", "domain_event", ["vm_uuid", "at_ms"])

    op.create_table(
        "task_log",
        _id(),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("next_try_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("vm_name", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_log")),
    )
    op.create_index("ix_task_log_at_ms", "task_log", ["at_ms"])
    op.create_index("ix_task_log_task_id", "task_log", ["task_id"])

    op.create_table(
        "audit",
        _id(),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("vm_uuid", sa.String(36), nullable=False),
        sa.Column("vm_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("client", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("started_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index("ix_audit_started_at_ms", "audit", ["started_at_ms"])

    op.create_table(
        "health_result",
        _id(),
        sa.Column("check", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("raw_state", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("warn", sa.Double(), nullable=True),
        sa.Column("crit", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_result")),
    )
    op.create_index("ix_health_result_at_ms", "health_result", ["at_ms"])
    op.create_index(
        "ix_health_result_check_subject_at", "health_result", ["check", "subject", "at_ms"]
    )

    op.create_table(
        "health_alert",
        _id(),
        sa.Column("check", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("previous", sa.Integer(), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_alert")),
    )
    op.create_index("ix_health_alert_at_ms", "health_alert", ["at_ms"])

    op.create_table(
        "host_connection",
        _id(),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_retry_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_connection")),
    )
    op.create_index("ix_host_connection_at_ms", "host_connection", ["at_ms"])


def downgrade() -> None:
    for table in (
        "host_connection",
        "health_alert",
        "health_result",
        "audit",
        "task_log",
        "domain_event",
        "error_log",
    ):
        op.drop_table(table)
