"""Typed SQLAlchemy models. Alembic migrations under `migrations/` own the schema;
these classes describe it for queries and must match the latest revision (a test
compares them). Times are integer epoch milliseconds (`*_ms`), portable to PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# autoincrement ids: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite
Id = BigInteger().with_variant(Integer, "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Metric(Base):
    """The metric catalogue: one row per (host, VM, metric name). VM '' is the host itself."""

    __tablename__ = "metric"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    vm_uuid: Mapped[str] = mapped_column(String(36))
    vm_name: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(64))
    __table_args__ = (
        Index("uq_metric_host_vm_name", "host", "vm_uuid", "name", unique=True),
        Index("ix_metric_vm_uuid", "vm_uuid"),
    )


class MetricSample(Base):
    """Raw performance samples: epoch milliseconds, one value. WITHOUT ROWID on SQLite."""

    __tablename__ = "metric_sample"
    metric_id: Mapped[int] = mapped_column(
        ForeignKey("metric.id", ondelete="CASCADE"), primary_key=True
    )
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    __table_args__ = ({"sqlite_with_rowid": False},)


class _Aggregate:
    """Performance aggregates of one metric over one bucket [ts_ms, ts_ms + width).

    Sum and count (not a mean) so tiers add up exactly; p95 is exact (nearest rank
    over the raw values of the bucket), never an average of p95s.
    """

    metric_id: Mapped[int] = mapped_column(
        ForeignKey("metric.id", ondelete="CASCADE"), primary_key=True
    )
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    sum: Mapped[float] = mapped_column(Double)
    min: Mapped[float] = mapped_column(Double)
    max: Mapped[float] = mapped_column(Double)
    p95: Mapped[float] = mapped_column(Double)


class MetricMinute(_Aggregate, Base):
    __tablename__ = "metric_minute"
    __table_args__ = ({"sqlite_with_rowid": False},)


class MetricHour(_Aggregate, Base):
    __tablename__ = "metric_hour"
    __table_args__ = ({"sqlite_with_rowid": False},)


class RollupState(Base):
    """How far each tier has consumed the raw samples of one host (exclusive, epoch ms).

    Written in the same transaction as the aggregates it accounts for.
    """

    __tablename__ = "rollup_state"
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    watermark_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class ErrorLog(Base):
    """One row per incident: a fingerprint first seen at `first_at_ms`, seen `count` times.

    Upserted on (fingerprint, first_at_ms) as core/incidents.py describes: count and
    last seen only grow, the wording is the newest, `closed` marks the incident's end.
    """

    __tablename__ = "error_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(512))
    code: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    severity: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    hint: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(Json)
    host: Mapped[str | None] = mapped_column(String(255))
    vm: Mapped[str | None] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer)
    first_at_ms: Mapped[int] = mapped_column(BigInteger)
    last_at_ms: Mapped[int] = mapped_column(BigInteger)
    closed: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (
        Index("uq_error_log_fingerprint_first", "fingerprint", "first_at_ms", unique=True),
        Index("ix_error_log_last_at_ms", "last_at_ms"),
    )


class DomainEventRow(Base):
    __tablename__ = "domain_event"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    vm_uuid: Mapped[str] = mapped_column(String(36))
    vm_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(Json)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_domain_event_at_ms", "at_ms"),
        Index("ix_domain_event_vm_uuid_at_ms", "vm_uuid", "at_ms"),
    )


class TaskLog(Base):
    """The background task log: one row per state change of a task."""

    __tablename__ = "task_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    started_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    next_try_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    vm_name: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (
        Index("ix_task_log_at_ms", "at_ms"),
        Index("ix_task_log_task_id", "task_id"),
    )


class Audit(Base):
    """The action audit: who did what to which VM, and the verified outcome."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    vm_uuid: Mapped[str] = mapped_column(String(36))
    vm_name: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(255))
    client: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    started_at_ms: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("ix_audit_started_at_ms", "started_at_ms"),)


class HealthResultRow(Base):
    """One run of one health check."""

    __tablename__ = "health_result"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    check: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    state: Mapped[int] = mapped_column(Integer)
    raw_state: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Double)
    unit: Mapped[str] = mapped_column(String(16))
    warn: Mapped[float | None] = mapped_column(Double)
    crit: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_health_result_at_ms", "at_ms"),
        Index("ix_health_result_check_subject_at", "check", "subject", "at_ms"),
    )


class HealthAlertRow(Base):
    """A health check's damped state changed."""

    __tablename__ = "health_alert"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    check: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    previous: Mapped[int] = mapped_column(Integer)
    current: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_health_alert_at_ms", "at_ms"),)


class HostConnectionRow(Base):
    """A host's connection state changes, as its pool saw them."""

    __tablename__ = "host_connection"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    since_ms: Mapped[int] = mapped_column(BigInteger)
    next_retry_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_host_connection_at_ms", "at_ms"),)


class WriterClaim(Base):
    """A running writer's claim on a host (storage/lease.py): one row per (host, holder).

    Of a host's live claims (heartbeat younger than the TTL) one process writes the
    host's history; `writing` says this holder writes it until its next renew.
    """

    __tablename__ = "writer_claim"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int] = mapped_column(Integer)
    nodename: Mapped[str] = mapped_column(String(255))
    started_ms: Mapped[int] = mapped_column(BigInteger)
    heartbeat_ms: Mapped[int] = mapped_column(BigInteger)
    writing: Mapped[bool] = mapped_column(Boolean)
    process_ns: Mapped[str] = mapped_column(String(64))  # kernel boot and pid namespace
