"""Fixtures shared by every test: the database under test, the app, clients and tokens.

Integration tests run once on the embedded SQLite database and once on a real PostgreSQL server
that the harness starts (`tests/harness`). Each test gets a fresh app on an emptied database.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from app.core.clock import FrozenClock
from app.core.database import Base, create_engine
from app.core.migrations import upgrade
from app.core.security import Role
from app.core.settings import DatabaseSettings, SchedulerSettings, Settings
from app.main import create_app
from app.models import load_all_models
from app.tokens.service import CLI_PRINCIPAL, tokens

pytest_plugins = ["tests.harness.plugin"]

load_all_models()

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database: an SQLite file, or a database on the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/sextant.db"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database("sextant_test")
    upgrade(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a test app: the database under test and nothing else configured."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database=DatabaseSettings(url=database_url),
        scheduler=SchedulerSettings(heartbeat_interval=0.2),
    )


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that only moves when a test says so."""
    return FrozenClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


async def _empty_tables(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(delete(table))
    finally:
        await engine.dispose()


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock) -> AsyncIterator[object]:
    """A running app (lifespan entered) on an empty database."""
    await _empty_tables(settings.database.url)
    application = create_app(settings, clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://sextant.test") as c:
        yield c


TokenFactory = Callable[..., Awaitable[dict[str, str]]]
_names = itertools.count(1)


@pytest.fixture
def make_token(app: object) -> TokenFactory:
    """Issue a token as the CLI would and return its Authorization header."""

    async def issue(
        role: Role | str, workspace: str | None = None, deployment: str | None = None
    ) -> dict[str, str]:
        context = app.state.context  # type: ignore[attr-defined]
        async with context.sessionmaker() as session:
            created = await tokens.create(
                session,
                CLI_PRINCIPAL,
                name=f"test-{next(_names)}",
                role=Role(role),
                workspace_name=workspace,
                deployment_name=deployment,
            )
            await session.commit()
        return {"Authorization": f"Bearer {created.token}"}

    return issue


@pytest.fixture
async def admin(make_token: TokenFactory) -> dict[str, str]:
    """Headers of a system administrator."""
    return await make_token(Role.SYSTEM_ADMIN)
