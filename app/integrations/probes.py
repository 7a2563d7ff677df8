"""Reachability probes of the outside services Sextant talks to, for /readyz.

Each integration module of later features owns its client; these probes only answer "can this
service be reached right now", quickly and without credentials in any log line.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx


async def http_ready(
    base_url: str, path: str, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> str | None:
    """None if `GET base_url + path` answers 2xx, else a short reason."""
    url = base_url.rstrip("/") + path
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__} contacting {_redacted(base_url)}"
    if response.is_success:
        return None
    return f"HTTP {response.status_code} from {_redacted(base_url)}{path}"


async def tcp_ready(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None if a TCP connection to host:port opens, else a short reason."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__} connecting to {host}:{port}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


def _redacted(url: str) -> str:
    # Never echo credentials embedded in a URL.
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"
