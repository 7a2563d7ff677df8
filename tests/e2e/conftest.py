"""Fixtures of the end-to-end tests: the real SMTP sink and a migrated PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.core.migrations import upgrade
from tests.harness.components import ComponentDirs, PostgresServer
from tests.harness.plugin import start_component
from tests.harness.smtp import SmtpSink, start_smtp_sink


@pytest.fixture
def smtp_sink(component_dirs: ComponentDirs) -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1, keeping every accepted message as a file."""
    sink = start_component(lambda: start_smtp_sink(component_dirs))
    yield sink
    sink.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new database of its own on the real PostgreSQL, migrated to the newest schema."""
    url = postgres_server.create_database(f"sextant_e2e_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    return url
