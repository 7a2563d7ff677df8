"""How every integration reports a failure: retry it, or do not.

    IntegrationError
    ├── TransientError   the upstream may answer next time (timeouts, 5xx, 429, connection refused)
    └── PermanentError   asking again will not help (4xx other than 408/409/429, a refused object)

Integrations raise these with the library's error chained as `__cause__`, and with a message
that names the upstream and what it said, never credentials or whole bodies.
"""

from __future__ import annotations

MAX_UPSTREAM_MESSAGE = 300


class IntegrationError(Exception):
    """A call to an outside service failed."""

    def __init__(self, upstream: str, message: str) -> None:
        self.upstream = upstream
        self.message = truncate(message)
        super().__init__(f"{upstream}: {self.message}")


class TransientError(IntegrationError):
    """A failure worth retrying with backoff."""


class PermanentError(IntegrationError):
    """A failure that will repeat until something changes."""


def truncate(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    """An upstream message cut to a length that is safe to store and show."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def for_status(upstream: str, status: int, message: str) -> IntegrationError:
    """The error class an HTTP status deserves."""
    if status in (408, 409, 425, 429) or status >= 500:
        return TransientError(upstream, f"HTTP {status}: {message}")
    return PermanentError(upstream, f"HTTP {status}: {message}")
