"""Request dependencies of alerting: the rule catalogue, the mailer and the metric source.

The lifespan puts the long-lived ones (mailer, Prometheus client) in the app context's extras;
an integration that is not configured is simply absent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.alerting.measure import MetricSource
from app.core.context import AppContext, ContextDep
from app.integrations.smtp import Mailer
from app.observability.rules import RuleCatalogue, catalogue

MAILER = "mailer"
METRIC_SOURCE = "metric_source"


def mailer_of(context: AppContext) -> Mailer | None:
    """The pooled SMTP mailer, when SMTP is configured."""
    mailer = context.extras.get(MAILER)
    return mailer if isinstance(mailer, Mailer) else None


def metric_source_of(context: AppContext) -> MetricSource | None:
    """Prometheus' query API, when Prometheus is configured."""
    return context.extras.get(METRIC_SOURCE)  # type: ignore[return-value]


async def get_catalogue() -> RuleCatalogue:
    """The alert rule catalogue (alert_rules/), loaded once."""
    return catalogue()


async def get_mailer(context: ContextDep) -> Mailer | None:
    """The mailer, or None when SMTP is not configured."""
    return mailer_of(context)


CatalogueDep = Annotated[RuleCatalogue, Depends(get_catalogue)]
MailerDep = Annotated[Mailer | None, Depends(get_mailer)]
