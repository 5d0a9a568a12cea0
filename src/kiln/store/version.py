"""The schema version this Kiln expects, without importing SQLAlchemy.

:data:`SCHEMA_HEAD` names the newest migration (``migrations/versions``); ``kiln.store.schema``
re-exports it next to the table definitions, and a test checks it equals Alembic's script
head. It lives here so that opening an up-to-date history with the standard library's
``sqlite3`` (:meth:`kiln.store.builds.BuildStore.open`) can check the version cheaply.
"""

from __future__ import annotations

#: The newest migration. The store compares it with ``alembic_version`` on open and only imports
#: Alembic when the database is new or behind.
SCHEMA_HEAD = "0010"
