"""API shapes of scaling: the policy, its decisions, and the what-if simulation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LimitKindName = Literal["pods", "percent"]


class PolicyUpdate(BaseModel):
    """A deployment's whole scaling policy (PUT replaces it; omitted fields take defaults)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    min_workers: int | None = Field(
        default=None, ge=0, le=100, description="Default: the deployment's min_workers"
    )
    max_workers: int | None = Field(
        default=None, ge=1, le=100, description="Default: the deployment's max_workers"
    )
    tasks_per_worker: int | None = Field(
        default=None, ge=1, le=256, description="Default: the deployment's worker_concurrency"
    )
    scale_up_limit: int = Field(
        default=10, ge=1, le=1000, description="Most workers (or percent) added per decision"
    )
    scale_up_limit_kind: LimitKindName = "pods"
    scale_down_window_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Scale down only to the highest recommendation of this window",
    )
    scale_down_window_max_seconds: int = Field(
        default=1200,
        ge=0,
        le=86400,
        description="Flap damping: each time workers come back within a window of going down, "
        "the window doubles, up to this; each window they stay down halves it again "
        "(no damping when not above scale_down_window_seconds)",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Count only the tasks of this Celery queue",
    )


class EffectivePolicy(BaseModel):
    """The numbers the loop uses: the policy's own or the deployment's."""

    min_workers: int
    max_workers: int
    tasks_per_worker: int


class PolicyRead(PolicyUpdate):
    model_config = ConfigDict(extra="ignore")

    deployment: str
    effective: EffectivePolicy
    current_workers: int
    updated_at: datetime | None


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    decided_at: datetime
    queued: float | None
    running: float | None
    tasks_per_worker: int
    min_workers: int
    max_workers: int
    current: int
    recommended: int | None
    desired: int
    applied: bool
    reason: str
    detail: str


class SimulationRequest(BaseModel):
    """Replay the deployment's real load of the last `hours` through a proposed policy."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyUpdate = Field(default_factory=PolicyUpdate)
    hours: float = Field(default=24.0, gt=0, le=14 * 24)
    step_seconds: float | None = Field(
        default=None, ge=1, le=3600, description="Default: the decision interval"
    )
    worker_startup_seconds: float = Field(
        default=0.0, ge=0, le=3600, description="Delay before a new worker takes tasks"
    )


class TimelineEntry(BaseModel):
    at: datetime
    load: float | None
    workers: int
    reason: str


class SimulationOutcome(BaseModel):
    effective: EffectivePolicy
    # Decisions that changed the number of workers (and the first one).
    timeline: list[TimelineEntry]
    replica_changes: int
    worker_minutes: float
    longest_wait_seconds: float
    peak_workers: int
    fail_static_points: int


class SimulationResult(BaseModel):
    start: datetime
    end: datetime
    step_seconds: float
    points: int
    proposed: SimulationOutcome
    current: SimulationOutcome
