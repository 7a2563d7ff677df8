"""The rendered Alertmanager configuration against the real amtool and a real Alertmanager.

The end-to-end test points the configuration at a small webhook sink on 127.0.0.1 standing in
for Sextant's webhook endpoint, and checks what Alertmanager really sends: one post per
deployment and rule, the bearer token read from its file, and the resolution.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.observability import alertmanager
from tests.harness.availability import ComponentUnavailable, find_binary, report_unavailable
from tests.harness.components import HOST, AlertmanagerServer
from tests.harness.plugin import ComponentFactory

TOKEN = "sextant-test-token-0123456789"


@pytest.fixture(scope="module")
def amtool() -> Path:
    """The real amtool (Debian prometheus-alertmanager)."""
    try:
        return find_binary("alertmanager", "amtool", hint="apt-get install prometheus-alertmanager")
    except ComponentUnavailable as error:
        report_unavailable(error)


def run_amtool(amtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(amtool), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager.render("https://sextant.example.com"))
    return path


def test_amtool_accepts_the_rendered_and_the_committed_configuration(
    amtool: Path, config_file: Path
) -> None:
    for path in (config_file, alertmanager.EXAMPLE_PATH):
        result = run_amtool(amtool, "check-config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 receivers" in result.stdout
        assert "1 inhibit rules" in result.stdout


def test_amtool_would_catch_a_mistake(amtool: Path, config_file: Path) -> None:
    config_file.write_text(config_file.read_text().replace("group_by:", "group_bye:"))
    result = run_amtool(amtool, "check-config", str(config_file))
    assert result.returncode != 0
    assert "group_bye" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "labels",
    [
        ["deployment=etl", "alertname=AirflowSchedulerHeartbeatMissing", "severity=critical"],
        ["alertname=AirflowManySchedulersUnhealthy", "severity=warning"],
    ],
)
def test_deployment_and_fleet_alerts_route_to_sextant(
    amtool: Path, config_file: Path, labels: list[str]
) -> None:
    result = run_amtool(amtool, "config", "routes", "test", f"--config.file={config_file}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "sextant"


class WebhookSink:
    """Records every POST it receives: path, headers and JSON body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with sink._lock:
                    sink.posts.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.1)
        raise AssertionError(f"expected {count} webhook posts, got {len(self.posts)}")


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()
    yield sink
    sink.server.shutdown()
    sink.server.server_close()


def post_alerts(server: AlertmanagerServer, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{server.url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def alert(deployment: str, name: str, *, ends: datetime | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "labels": {
            "alertname": name,
            "deployment": deployment,
            "workspace": "data-team",
            "severity": "critical",
        },
        "annotations": {"summary": f"{name} on {deployment}"},
    }
    if ends is not None:
        result["startsAt"] = (ends - timedelta(minutes=5)).isoformat()
        result["endsAt"] = ends.isoformat()
    return result


def test_a_real_alertmanager_loads_it_and_posts_groups_to_sextant_with_the_token(
    alertmanager_factory: ComponentFactory[..., AlertmanagerServer],
    webhook_sink: WebhookSink,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    fast = alertmanager.Timing(group_wait="1s", group_interval="1s", repeat_interval="1h")
    text = alertmanager.render(webhook_sink.url, credentials_file=str(token_file), timing=fast)
    server = alertmanager_factory(config=text)

    with urllib.request.urlopen(f"{server.url}/api/v2/status", timeout=10) as response:
        status = json.load(response)
    assert f"{webhook_sink.url}/api/v1/alertmanager/webhook" in status["config"]["original"]

    post_alerts(
        server,
        [
            alert("etl", "AirflowSchedulerHeartbeatMissing"),
            alert("etl-prod", "AirflowSchedulerHeartbeatMissing"),
        ],
    )
    posts = webhook_sink.wait_for(2)
    assert {p["path"] for p in posts} == {"/api/v1/alertmanager/webhook"}
    assert {p["headers"]["Authorization"] for p in posts} == {f"Bearer {TOKEN}"}
    groups = sorted((p["body"]["groupLabels"]["deployment"], p["body"]["status"]) for p in posts)
    assert groups == [("etl", "firing"), ("etl-prod", "firing")]
    assert all(len(p["body"]["alerts"]) == 1 for p in posts)

    post_alerts(server, [alert("etl", "AirflowSchedulerHeartbeatMissing", ends=datetime.now(UTC))])
    resolved = [p for p in webhook_sink.wait_for(3)[2:] if p["body"]["status"] == "resolved"]
    assert resolved
    assert resolved[0]["body"]["groupLabels"]["deployment"] == "etl"
