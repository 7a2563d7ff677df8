"""Settings from the environment: nested groups, fixed names, placeholder secrets."""

from __future__ import annotations

import pytest

from app.core.settings import Environment, Runtime, Settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database.url == "sqlite:///./sextant.db"
    assert settings.runtime is Runtime.NONE
    assert settings.prometheus.url is None
    assert settings.server.port == 8080


def test_documented_variable_names_reach_their_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SEXTANT_DATABASE_URL": "postgresql://sextant@db/sextant",
        "SEXTANT_PROMETHEUS_URL": "http://prometheus:9090",
        "SEXTANT_GRAFANA_URL": "http://grafana:3000",
        "SEXTANT_GRAFANA_TOKEN": "glsa_real",
        "SEXTANT_ELASTICSEARCH_URL": "http://es:9200",
        "SEXTANT_SMTP_HOST": "mail",
        "SEXTANT_SMTP_PORT": "2525",
        "SEXTANT_SMTP_FROM": "alerts@example.com",
        "SEXTANT_RUNTIME": "local",
        "SEXTANT_LOG_LEVEL": "DEBUG",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database.url == "postgresql://sextant@db/sextant"
    assert settings.prometheus.url == "http://prometheus:9090"
    assert settings.grafana.token is not None
    assert settings.grafana.token.get_secret_value() == "glsa_real"
    assert "glsa_real" not in repr(settings)
    assert settings.smtp.port == 2525
    assert settings.smtp.sender == "alerts@example.com"
    assert settings.runtime is Runtime.LOCAL
    assert settings.log.level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SEXTANT_GRAFANA_TOKEN", "changeme"),
        ("SEXTANT_SMTP_PASSWORD", "password"),
        ("SEXTANT_DATABASE_URL", "postgresql://sextant:changethis@db/sextant"),
    ],
)
def test_placeholder_secrets_are_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("SEXTANT_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="placeholder secret"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_placeholder_secrets_only_warn_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEXTANT_GRAFANA_TOKEN", "changeme")
    with pytest.warns(UserWarning, match="placeholder secret"):
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment is Environment.DEVELOPMENT


@pytest.mark.parametrize(
    "value", ["a@example.com, b@example.com", '["a@example.com", "b@example.com"]']
)
def test_system_recipients_take_a_list_or_commas(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SEXTANT_ALERTS_SYSTEM_RECIPIENTS", value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.alerts.system_recipients == ["a@example.com", "b@example.com"]
