"""Sextant's own REST API as a client, for `sextant demo` (it sets a deployment up as a user
would, over HTTP, with a token)."""

from __future__ import annotations

from typing import Any

import httpx

from app.integrations.errors import TransientError, for_status

UPSTREAM = "sextant"


class SextantApi:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    async def call(
        self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = ()
    ) -> tuple[int, Any]:
        """(status, JSON body); a status outside 2xx and `accept` raises IntegrationError."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.request(
                    method, self.base_url + path, json=body, headers=self.headers
                )
        except httpx.HTTPError as exc:
            raise TransientError(UPSTREAM, f"{type(exc).__name__} on {method} {path}") from exc
        if not response.is_success and response.status_code not in accept:
            raise for_status(UPSTREAM, response.status_code, f"{method} {path}: {response.text}")
        try:
            return response.status_code, response.json() if response.content else None
        except ValueError:
            return response.status_code, response.text
