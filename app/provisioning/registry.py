"""The targets a running Sextant provisions into, built once from the settings.

Order matters: deployments are applied in this order and torn down in reverse (the runtime
first, so that there is something to observe; observability after it). Every target is built,
configured or not: an unconfigured one records `skipped`, and `sextant render` still renders it.
"""

from __future__ import annotations

from app.core.settings import Runtime, Settings
from app.observability.elasticsearch_target import ElasticsearchTarget
from app.observability.grafana_target import GrafanaTarget
from app.observability.prometheus_target import PrometheusTarget
from app.provisioning.targets import Target


def build_targets(settings: Settings) -> list[Target]:
    """Every target, in apply order."""
    targets: list[Target] = []
    if settings.runtime is Runtime.LOCAL:
        from app.runtime.local import LocalRuntime

        targets.append(LocalRuntime.from_settings(settings))
    elif settings.runtime is Runtime.KUBERNETES:
        from app.runtime.kubernetes import KubernetesRuntime

        targets.append(KubernetesRuntime.from_settings(settings))
    return [
        *targets,
        PrometheusTarget(settings.prometheus),
        GrafanaTarget.from_settings(settings),
        ElasticsearchTarget.from_settings(settings),
    ]


async def start_targets(targets: list[Target]) -> None:
    """Let targets that supervise something pick it up again (the local runtime re-adopts the
    processes a previous Sextant left running), in apply order."""
    for target in targets:
        start = getattr(target, "start", None)
        if start is not None:
            await start()


async def close_targets(targets: list[Target]) -> None:
    """Release what targets hold (HTTP sessions), in reverse order."""
    for target in reversed(targets):
        close = getattr(target, "aclose", None)
        if close is not None:
            await close()
