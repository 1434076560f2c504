"""Alembic environment: always handed a live connection by `mpchat.storage.migrations`."""

from alembic import context

from mpchat.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
