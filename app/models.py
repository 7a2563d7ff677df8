"""Imports every table module so that the metadata is complete (for Alembic and tests)."""

from __future__ import annotations


def load_all_models() -> None:
    """Register every domain's tables on the shared metadata."""
    import app.audit.models  # noqa: F401
    import app.deployments.models  # noqa: F401
    import app.recipients.models  # noqa: F401
    import app.tokens.models  # noqa: F401
    import app.workspaces.models  # noqa: F401
