"""Persistence: SQLAlchemy models, Alembic migrations, the batched writer. Imports core only."""
