"""Alembic environment: run programmatically on a connection handed in through
`config.attributes["connection"]` (the async template's asyncio.run() cannot run
inside Textual's loop)."""

from __future__ import annotations

from alembic import context

from virtwatch.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("virtwatch runs its migrations itself: use `virtwatch db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
