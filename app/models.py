"""Imports every table module so that the metadata is complete (for Alembic and tests)."""

from __future__ import annotations


def load_all_models() -> None:
    """Register every domain's tables on the shared metadata."""
    import app.alerting.models
    import app.audit.models
    import app.core.leases
    import app.deployments.models
    import app.provisioning.models
    import app.recipients.models
    import app.scaling.models
    import app.tokens.models
    import app.workspaces.models  # noqa: F401
