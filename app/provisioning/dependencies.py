"""Request dependencies of the provisioning engine."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.provisioning.targets import Target


def get_targets(request: Request) -> list[Target]:
    """The targets the running app provisions into (built in the lifespan)."""
    targets: list[Target] = request.app.state.targets
    return targets


TargetsDep = Annotated[list[Target], Depends(get_targets)]
