"""The targets a running Sextant provisions into, built once from the settings.

Order matters: deployments are applied in this order and torn down in reverse (the runtime
first, so that there is something to observe; observability after it).
"""

from __future__ import annotations

from app.core.settings import Settings
from app.provisioning.targets import Target


def build_targets(settings: Settings) -> list[Target]:
    """Every target, configured or not (an unconfigured one records `skipped`)."""
    del settings  # targets are added here as their integrations land
    return []
