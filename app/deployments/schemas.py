"""API shapes of deployments."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.core.names import ResourceName
from app.deployments.spec import Executor

CPU_PATTERN = r"^\d+(\.\d{1,3})?m?$"
MEMORY_PATTERN = r"^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
AIRFLOW_VERSION_PATTERN = r"^3\.\d+\.\d+$"
DEFAULT_AIRFLOW_VERSION = "3.3.2"


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DELETING = "deleting"


class ComponentSpecIn(BaseModel):
    """Replicas and resources of one component; absent fields keep their current value."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(default=None, ge=0, le=100)
    cpu: str | None = Field(default=None, pattern=CPU_PATTERN, max_length=16, examples=["500m"])
    memory: str | None = Field(
        default=None, pattern=MEMORY_PATTERN, max_length=16, examples=["1Gi"]
    )


class ComponentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduler: ComponentSpecIn | None = None
    api_server: ComponentSpecIn | None = None
    dag_processor: ComponentSpecIn | None = None
    triggerer: ComponentSpecIn | None = None
    workers: ComponentSpecIn | None = None
    flower: ComponentSpecIn | None = None
    pgbouncer: ComponentSpecIn | None = None
    redis: ComponentSpecIn | None = None
    statsd: ComponentSpecIn | None = None


class ComponentSpec(BaseModel):
    replicas: int
    cpu: str
    memory: str


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ResourceName
    description: str = Field(default="", max_length=2000)
    executor: Executor = Executor.CELERY
    airflow_version: str = Field(
        default=DEFAULT_AIRFLOW_VERSION, pattern=AIRFLOW_VERSION_PATTERN, max_length=16
    )
    components: ComponentsIn = Field(default_factory=ComponentsIn)
    worker_concurrency: int = Field(
        default=16, ge=1, le=256, description="Celery worker concurrency (task slots per worker)"
    )
    min_workers: int = Field(default=1, ge=0, le=100)
    max_workers: int = Field(default=10, ge=1, le=100)
    log_retention_days: int = Field(
        default=15, ge=1, le=3650, description="Days task and component logs are kept"
    )


class DeploymentUpdate(BaseModel):
    """A change of the desired spec; absent fields stay as they are. The name cannot change."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=2000)
    executor: Executor | None = None
    airflow_version: str | None = Field(
        default=None, pattern=AIRFLOW_VERSION_PATTERN, max_length=16
    )
    components: ComponentsIn | None = None
    worker_concurrency: int | None = Field(default=None, ge=1, le=256)
    min_workers: int | None = Field(default=None, ge=0, le=100)
    max_workers: int | None = Field(default=None, ge=1, le=100)
    log_retention_days: int | None = Field(default=None, ge=1, le=3650)


class DeploymentRead(BaseModel):
    name: str
    workspace: str
    description: str
    executor: Executor
    airflow_version: str
    components: dict[str, ComponentSpec]
    worker_concurrency: int
    min_workers: int
    max_workers: int
    log_retention_days: int
    status: DeploymentStatus
    status_reason: str
    generation: int
    created_at: datetime
    updated_at: datetime
