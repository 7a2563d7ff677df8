"""Factories: build workspaces, deployments and recipients through the API, with sane defaults."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

_serial = itertools.count(1)


def unique(prefix: str) -> str:
    """A name that no other object in the test has."""
    return f"{prefix}-{next(_serial)}"


async def create_workspace(
    client: httpx.AsyncClient, headers: dict[str, str], name: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A workspace, created through the API."""
    body = {"name": name or unique("ws"), **fields}
    response = await client.post("/api/v1/workspaces", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def create_deployment(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    workspace: str,
    name: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A deployment in `workspace`, created through the API."""
    body = {"name": name or unique("dep"), **fields}
    response = await client.post(
        f"/api/v1/workspaces/{workspace}/deployments", json=body, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def add_recipient(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    path: str,
    email: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A recipient added at `path` (a deployment's or a workspace's alert-recipients)."""
    body = {"email": email or f"{unique('user')}@example.com", **fields}
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
