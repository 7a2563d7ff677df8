"""Fixtures of the alerting tests: the real SMTP sink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.components import ComponentDirs
from tests.harness.plugin import start_component
from tests.harness.smtp import SmtpSink, start_smtp_sink


@pytest.fixture
def smtp_sink(component_dirs: ComponentDirs) -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1, keeping every accepted message as a file."""
    sink = start_component(lambda: start_smtp_sink(component_dirs))
    yield sink
    sink.stop()
