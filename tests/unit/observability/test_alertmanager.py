"""The Alertmanager configuration Sextant renders: receiver, grouping, secrets, committed copy.

`amtool check-config` and a real Alertmanager load it in
tests/integration/observability/test_alertmanager_config.py.
"""

from __future__ import annotations

import pytest
import yaml

from app.observability import alertmanager


def test_every_alert_goes_to_sextants_webhook_grouped_per_deployment_and_rule() -> None:
    config = yaml.safe_load(alertmanager.render("https://sextant.example.com/"))
    route = config["route"]
    assert route["receiver"] == "sextant"
    assert route["group_by"] == ["deployment", "alertname"]
    assert "routes" not in route
    (receiver,) = config["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "https://sextant.example.com/api/v1/alertmanager/webhook"
    assert webhook["send_resolved"] is True


def test_timings_are_alertmanagers_defaults_unless_given() -> None:
    route = yaml.safe_load(alertmanager.render("http://sextant:8080"))["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s",
        "5m",
        "4h",
    )
    fast = alertmanager.Timing(group_wait="1s", group_interval="1s", repeat_interval="1m")
    route = yaml.safe_load(alertmanager.render("http://sextant:8080", timing=fast))["route"]
    assert route["group_wait"] == "1s"


def test_the_token_is_read_from_a_file_never_written_into_the_config() -> None:
    text = alertmanager.render("http://sextant:8080", credentials_file="/run/secrets/token")
    webhook = yaml.safe_load(text)["receivers"][0]["webhook_configs"][0]
    authorization = webhook["http_config"]["authorization"]
    assert authorization == {"type": "Bearer", "credentials_file": "/run/secrets/token"}
    assert "credentials:" not in text


def test_a_critical_alert_inhibits_the_same_rules_warning_of_the_same_deployment() -> None:
    (rule,) = yaml.safe_load(alertmanager.render("http://sextant:8080"))["inhibit_rules"]
    assert rule["source_matchers"] == ['severity="critical"']
    assert rule["target_matchers"] == ['severity="warning"']
    assert rule["equal"] == ["deployment", "alertname"]


@pytest.mark.parametrize(
    "url", ["sextant:8080", "ftp://sextant", "https://user:pw@sextant.example.com", ""]
)
def test_a_public_url_that_alertmanager_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="public URL"):
        alertmanager.render(url)


def test_rendering_is_deterministic() -> None:
    assert alertmanager.render("http://a:1") == alertmanager.render("http://a:1")


def test_committed_example_is_what_the_code_renders() -> None:
    assert alertmanager.EXAMPLE_PATH.read_text() == alertmanager.example(), (
        "deploy/alertmanager/alertmanager.yml is stale"
    )
