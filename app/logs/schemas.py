"""API shapes of task and component logs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

# Offsets are 64-bit integers (epoch nanoseconds in Airflow 2's stdout path); they travel as
# strings so that JavaScript clients do not lose precision, as Airflow's own UI does.
OFFSET_PATTERN = r"^\d{1,19}$"
MAX_TASK_PAGE = 10_000  # Elasticsearch's default max_result_window, Airflow's server limit
DEFAULT_TASK_PAGE = 1_000  # Airflow's page size
MAX_COMPONENT_PAGE = 1_000
DEFAULT_COMPONENT_PAGE = 100


class LogComponent(StrEnum):
    """The Airflow components whose logs are shipped (`app.observability.fluentd`)."""

    SCHEDULER = "scheduler"
    API_SERVER = "api_server"
    DAG_PROCESSOR = "dag_processor"
    TRIGGERER = "triggerer"
    WORKERS = "workers"


class LogLevel(StrEnum):
    """Python's levels, lowest first; a filter keeps its level and every level above it."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class TaskLogLine(TypedDict):
    """One line of a task try's log.

    A typed dict rather than a model: a page holds up to 10,000 lines, and plain dicts are built
    and serialized several times faster than model instances.
    """

    offset: Annotated[str, Field(description="Position in the try's log (a 64-bit integer)")]
    timestamp: Annotated[str | None, Field(description="When the line was written")]
    level: str | None
    message: Annotated[
        str, Field(description="The line: Airflow 3's `event`, Airflow 2's `message`")
    ]
    logger: str | None
    host: Annotated[str | None, Field(description="The worker that ran the try")]


class TaskLogPage(BaseModel):
    """Lines of a task try's log after a cursor, in offset order."""

    log_id: str = Field(description="The try's `log_id` (Airflow's log_id_template)")
    lines: list[TaskLogLine]
    next_after: str | None = Field(
        description="Pass as `after` for the lines that follow; the same `after` again when "
        "nothing followed yet (null when the try has no line yet)"
    )
    end_of_log: bool = Field(
        description="Airflow's end-of-log mark was seen: no line will follow (the mark itself is "
        "not listed)"
    )


class ComponentLogLine(BaseModel):
    """One line of an Airflow component's log."""

    timestamp: datetime
    component: str | None = None
    host: str | None = None
    level: str | None = None
    logger: str | None = None
    message: str


class ComponentLogPage(BaseModel):
    """Component log lines, newest first."""

    lines: list[ComponentLogLine]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page"
    )


class ComponentLogFilter(BaseModel):
    """What component log lines to show."""

    component: LogComponent | None = None
    level: LogLevel | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class TaskTry(BaseModel):
    """Which task try's log."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int = 1
    map_index: int = -1
