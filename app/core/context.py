"""The long-lived resources of one running Sextant, and the request dependencies that reach them.

The app factory's lifespan builds one `AppContext` and stores it on `app.state`; requests and jobs
get their sessions from it. Nothing is built at import time, so tests can create apps freely.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    clock: Clock
    started_at: datetime
    # Written by the scheduler's heartbeat job; /readyz reads it.
    scheduler_heartbeat: datetime | None = None
    # Who this process is when it takes leases and claims work (unique per process).
    instance_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    )
    extras: dict[str, object] = field(default_factory=dict)


async def get_context(request: Request) -> AppContext:
    """The running app's context."""
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    """A session for one request: committed once when the handler succeeds, else rolled back."""
    async with context.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def get_clock(context: ContextDep) -> Clock:
    """The app's clock (a fixed one in tests)."""
    return context.clock


# scope="function": commit before the response is sent, so a failed commit is the request's error.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ClockDep = Annotated[Clock, Depends(get_clock)]
