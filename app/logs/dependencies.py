"""Request dependency of the logs domain: the Elasticsearch client the lifespan opened.

The lifespan puts it in the app context's extras when Elasticsearch is configured; when it is
not, the dependency is None and every log read answers 503.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.context import AppContext, ContextDep
from app.logs.service import LogStore

LOG_STORE = "log_store"


def log_store_of(context: AppContext) -> LogStore | None:
    """The log store (Elasticsearch), when configured."""
    return context.extras.get(LOG_STORE)  # type: ignore[return-value]


async def get_log_store(context: ContextDep) -> LogStore | None:
    """The log store of the running app, or None."""
    return log_store_of(context)


LogStoreDep = Annotated[LogStore | None, Depends(get_log_store)]
