"""The migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from app.core.database import Base, create_engine
from app.core.migrations import head_revision
from app.core.settings import DatabaseSettings


async def test_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=database_url))

    def diff(connection: Connection) -> tuple[list[object], str | None]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata), context.get_current_revision()

    try:
        async with engine.connect() as connection:
            differences, revision = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert revision == head_revision()
    assert differences == []
