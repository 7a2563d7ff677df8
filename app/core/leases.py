"""Leases in the database, so that periodic work runs once across several Sextant replicas.

A lease is a row (name, holder, expires_at). Taking it is one conditional UPDATE — it succeeds
only if the lease is free, expired, or already ours — or an INSERT for a lease never taken. Both
SQLite and PostgreSQL make that atomic, so no two replicas hold a lease at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import String, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


async def acquire(
    session: AsyncSession, name: str, holder: str, now: datetime, ttl: timedelta
) -> bool:
    """Take or renew the lease `name` for `holder` until now + ttl; False if another holds it."""
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at <= now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    inserted = await session.execute(
        insert(Lease)
        .values(name=name, holder=holder, expires_at=now + ttl)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return bool(inserted.rowcount)  # type: ignore[attr-defined]


async def release(session: AsyncSession, name: str, holder: str) -> None:
    """Give the lease up if we hold it."""
    await session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
    )
