"""Typed SQLAlchemy models. Alembic migrations under `migrations/` own the schema;
these classes describe it for queries and must match the latest revision.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, ForeignKey, Index, Integer, MetaData, String
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
    __table_args__ = (Index("uq_metric_host_vm_name", "host", "vm_uuid", "name", unique=True),)


class MetricSample(Base):
    """Raw performance samples: epoch milliseconds, one value. WITHOUT ROWID on SQLite."""

    __tablename__ = "metric_sample"
    metric_id: Mapped[int] = mapped_column(
        ForeignKey("metric.id", ondelete="CASCADE"), primary_key=True
    )
    ts_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    __table_args__ = ({"sqlite_with_rowid": False},)
