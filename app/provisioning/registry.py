"""The targets a running Sextant provisions into, built once from the settings.

Order matters: deployments are applied in this order and torn down in reverse (the runtime
first, so that there is something to observe; observability after it). Every target is built,
configured or not: an unconfigured one records `skipped`, and `sextant render` still renders it.
"""

from __future__ import annotations

from app.core.settings import Settings
from app.observability.elasticsearch_target import ElasticsearchTarget
from app.observability.grafana_target import GrafanaTarget
from app.observability.prometheus_target import PrometheusTarget
from app.provisioning.targets import Target


def build_targets(settings: Settings) -> list[Target]:
    """Every target, in apply order."""
    return [
        PrometheusTarget(settings.prometheus),
        GrafanaTarget.from_settings(settings),
        ElasticsearchTarget.from_settings(settings),
    ]


async def close_targets(targets: list[Target]) -> None:
    """Release what targets hold (HTTP sessions), in reverse order."""
    for target in reversed(targets):
        close = getattr(target, "aclose", None)
        if close is not None:
            await close()
