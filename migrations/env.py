"""Alembic environment: runs on the connection jan_server.storage.db.migrate hands over, or on `sqlalchemy.url`."""

from alembic import context
from sqlalchemy import create_engine

from jan_server.storage.tables import metadata


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with create_engine(context.config.get_main_option("sqlalchemy.url")).connect() as own_connection:
        run(own_connection)
        own_connection.commit()
