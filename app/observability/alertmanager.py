"""Alertmanager configuration for users who keep Alertmanager: every alert goes to Sextant.

Prometheus evaluates the rules in `alert_rules/` and may send what fires to an Alertmanager;
this configuration makes that Alertmanager hand every group to Sextant's webhook, where
recipients, silences and per-deployment mutes are applied. Alerts are grouped per deployment
and rule (`group_by: [deployment, alertname]`), so one deployment's storm never holds back
another's notification, and resolutions are sent too (Sextant's e-mails say when an alert ends).

The webhook needs a Sextant API token of role `alertmanager` (it may post alerts and nothing
else). It is read from a file (`credentials_file`), never written into the configuration: the
file comes from a Kubernetes Secret or the host, and the rendered configuration can be
committed and reviewed without a secret in it.
Rendering is pure: the same arguments always give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

WEBHOOK_PATH = "/api/v1/alertmanager/webhook"
RECEIVER = "sextant"
GROUP_BY = ("deployment", "alertname")
DEFAULT_CREDENTIALS_FILE = "/etc/alertmanager/secrets/sextant-webhook-token"
EXAMPLE_PATH = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
EXAMPLE_PUBLIC_URL = "https://sextant.example.com"


@dataclass(frozen=True, slots=True)
class Timing:
    """How long Alertmanager waits before, between and after notifications of a group."""

    # Alertmanager's own defaults: Sextant de-duplicates and repeats e-mails itself, so these
    # only bound how late it hears of a change.
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"


def webhook_url(public_url: str) -> str:
    """Sextant's Alertmanager webhook under its public URL."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"public URL {public_url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("the public URL must not carry credentials")
    return public_url.rstrip("/") + WEBHOOK_PATH


def config(
    public_url: str,
    *,
    credentials_file: str = DEFAULT_CREDENTIALS_FILE,
    timing: Timing | None = None,
) -> dict[str, Any]:
    """The Alertmanager configuration as data."""
    timing = timing if timing is not None else Timing()
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(GROUP_BY),
            "group_wait": timing.group_wait,
            "group_interval": timing.group_interval,
            "repeat_interval": timing.repeat_interval,
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    {
                        "url": webhook_url(public_url),
                        "send_resolved": True,
                        # Every alert of a group in one post: Sextant needs them all.
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": credentials_file,
                            },
                        },
                    }
                ],
            }
        ],
        # While a deployment's rule fires as critical, its warning of the same rule is noise.
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": list(GROUP_BY),
            }
        ],
    }


def render(
    public_url: str,
    *,
    credentials_file: str = DEFAULT_CREDENTIALS_FILE,
    timing: Timing | None = None,
) -> str:
    """The Alertmanager configuration (alertmanager.yml) sending every alert to Sextant."""
    body = yaml.safe_dump(
        config(public_url, credentials_file=credentials_file, timing=timing),
        sort_keys=False,
        default_flow_style=False,
    )
    header = (
        "# Alertmanager configuration: every alert goes to Sextant's webhook, grouped per\n"
        "# deployment and rule. Rendered by Sextant (app/observability/alertmanager.py).\n"
        f"# The Sextant API token is read from {credentials_file}\n"
        "# (create one with: sextant tokens create --role alertmanager --name alertmanager).\n"
    )
    return header + body


def example() -> str:
    """The rendering committed as `deploy/alertmanager/alertmanager.yml`."""
    return render(EXAMPLE_PUBLIC_URL)
