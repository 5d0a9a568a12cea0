"""Alembic environment for the Kiln runs database.

Kiln runs this itself (``kiln.store.migrate``), passing an open connection that is already
inside a write transaction through ``config.attributes["connection"]``, so the whole upgrade
commits or rolls back as one. To write a new revision, point an ``alembic.ini`` at this folder
(``script_location``) and a scratch database (``sqlalchemy.url``), then run
``alembic revision --autogenerate -m "..."`` and bump ``kiln.store.schema.SCHEMA_HEAD``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from kiln.store.schema import metadata

config = context.config


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: sa.Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    given = config.attributes.get("connection")
    if given is not None:
        run_online(given)
    else:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("set sqlalchemy.url, or let kiln.store run the migrations")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.connect() as conn:
            run_online(conn)
            conn.commit()
        engine.dispose()
