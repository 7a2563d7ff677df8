"""Sextant's settings: one root read from `SEXTANT_*` environment variables (and `.env`).

Groups are nested models, addressed with a single underscore after the group name:
`SEXTANT_DATABASE_URL` is `database.url`, `SEXTANT_SMTP_FROM` is `smtp.sender`. Credentials are
`SecretStr` so they never end up in logs or reprs, and placeholder secrets are refused outside
development.
"""

from __future__ import annotations

import json
import os
import warnings
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "changethis", "secret", "password", "admin", "token"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Group(BaseModel):
    """Base of every settings group: unknown keys are errors, aliases and names both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatabaseSettings(Group):
    url: str = "sqlite:///./sextant.db"
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False
    # An embedded SQLite database is migrated on start; PostgreSQL only by `sextant db upgrade`.
    auto_migrate: bool = True


class ServerSettings(Group):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # How Prometheus, Alertmanager and e-mail links reach this Sextant.
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    graceful_timeout: float = Field(default=30.0, ge=0)


class LogSettings(Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class SchedulerSettings(Group):
    enabled: bool = True
    heartbeat_interval: float = Field(default=5.0, gt=0)
    # /readyz calls the scheduler stale after this many seconds without a heartbeat.
    heartbeat_stale_after: float = Field(default=30.0, gt=0)


class AlertsSettings(Group):
    # How often every rule is evaluated for the whole fleet.
    interval: float = Field(default=15.0, gt=0)
    repeat_interval: float = Field(default=4 * 3600, gt=0)
    # How long Prometheus may be unreachable before SextantMonitoringUnavailable fires.
    monitoring_grace: float = Field(default=60.0, ge=0)
    # Addresses that receive fleet-wide and Sextant's own alerts.
    system_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    delivery_interval: float = Field(default=2.0, gt=0)
    delivery_batch: int = Field(default=200, ge=1, le=10_000)
    delivery_concurrency: int = Field(default=4, ge=1, le=64)
    # How long a delivery round owns the rows it claimed; a process that dies releases them
    # after this long. A round stops sending before its claim runs out.
    claim_ttl: float = Field(default=30.0, ge=2)
    # Seconds before retry N of a transient delivery failure (the last value repeats).
    delivery_backoff: list[float] = Field(default=[10, 30, 60, 120, 300, 600], min_length=1)

    @field_validator("system_recipients", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # `a@example.com,b@example.com` as well as a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class ProvisioningSettings(Group):
    # How often due deployments are reconciled.
    interval: float = Field(default=10.0, gt=0)
    # Seconds to wait before retry N of a failed target (the last value repeats).
    backoff: list[float] = Field(default=[5, 15, 60, 300, 900], min_length=1)


class ScalingSettings(Group):
    # How often the worker autoscaler decides, for the whole fleet at once.
    interval: float = Field(default=10.0, gt=0)
    # A load sample scraped longer ago than this is stale: the autoscaler changes nothing.
    max_sample_age: float = Field(default=90.0, gt=0)
    # Scaling decisions older than this are deleted.
    decision_retention_days: int = Field(default=14, ge=1, le=3650)


class PrometheusSettings(Group):
    url: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    # file_sd folder Prometheus watches; Sextant writes one target file per deployment there.
    file_sd_dir: Path | None = None
    # Folder Prometheus loads rule files from; Sextant keeps the catalogue there and reloads.
    rules_dir: Path | None = None
    reload: bool = True


class AlertmanagerSettings(Group):
    url: str | None = None


class GrafanaSettings(Group):
    url: str | None = None
    token: SecretStr | None = None
    # Prometheus as Grafana reaches it (defaults to SEXTANT_PROMETHEUS_URL).
    datasource_url: str | None = None
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout: float = Field(default=10.0, gt=0)


class ElasticsearchSettings(Group):
    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=10.0, gt=0)
    # Default per-deployment log retention.
    retention_days: int = Field(default=15, ge=1, le=3650)


class KubernetesSettings(Group):
    # Without a kubeconfig, Sextant uses its pod's service account when it runs in a cluster.
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    # HTTP connections to the API server, and requests in flight while applying one deployment.
    connections: int = Field(default=16, ge=1, le=256)
    concurrency: int = Field(default=8, ge=1, le=64)
    # Images; Airflow's tag is the deployment's Airflow version.
    airflow_image: str = "apache/airflow"
    statsd_image: str = "quay.io/prometheus/statsd-exporter:v0.28.0"
    redis_image: str = "redis:7.2-bookworm"
    pgbouncer_image: str = "apache/airflow:airflow-pgbouncer-2025.03.05-1.23.1"
    pgbouncer_exporter_image: str = "apache/airflow:airflow-pgbouncer-exporter-2025.03.05-0.18.0"
    # The PostgreSQL server holding every deployment's metadata database, behind its PgBouncer.
    metadata_host: str = "postgresql.sextant.svc"
    metadata_port: int = Field(default=5432, ge=1, le=65535)
    # Namespaces whose pods the NetworkPolicy admits (Prometheus scraping, the ingress controller).
    prometheus_namespace: str = "monitoring"
    ingress_namespace: str = "ingress-nginx"


def _default_state_dir() -> Path:
    # PostgreSQL and PgBouncer run as `postgres` under root, and must reach their folders:
    # root's home (0700) is out of their reach, so root keeps state where daemons do.
    if os.geteuid() == 0:
        return Path("/var/lib/sextant")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sextant"


def _default_tools_dir() -> Path:
    # The same folder scripts/install-test-deps.sh and scripts/airflow-env.sh use.
    if os.environ.get("SEXTANT_TOOLS_DIR"):
        return Path(os.environ["SEXTANT_TOOLS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sextant"


class LocalSettings(Group):
    """The local runtime: Airflow deployments as supervised processes on this machine."""

    # Per deployment `<state_dir>/<deployment>/` (logs, AIRFLOW_HOME, dags, pid files) and the
    # shared PostgreSQL server in `<state_dir>/_postgres/`.
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Where `sextant local setup` puts the Airflow virtual environment (airflow-<version>).
    tools_dir: Path = Field(default_factory=_default_tools_dir)
    airflow_version: str = Field(default="3.3.2", pattern=r"^3\.\d+\.\d+$")
    # Folder of PostgreSQL's server binaries (initdb, postgres, psql).
    postgres_bin_dir: Path = Path("/usr/lib/postgresql/15/bin")
    # Seconds a Celery worker gets to finish its running tasks after SIGTERM (warm shutdown).
    worker_grace: float = Field(default=600.0, ge=0)
    # Each process's log file is kept under this size, with one rotated copy (`<log>.1`).
    log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)


class SmtpSettings(Group):
    host: str | None = None
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(default="sextant@localhost", alias="from")
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False


class Runtime(StrEnum):
    NONE = "none"
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class Settings(BaseSettings):
    """The root of every setting Sextant reads."""

    model_config = SettingsConfigDict(
        env_prefix="SEXTANT_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    runtime: Runtime = Runtime.NONE
    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    alerts: AlertsSettings = AlertsSettings()
    scaling: ScalingSettings = ScalingSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    grafana: GrafanaSettings = GrafanaSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    local: LocalSettings = Field(default_factory=LocalSettings)
    smtp: SmtpSettings = SmtpSettings()

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        found = [name for name, value in self._secrets() if value.lower() in PLACEHOLDER_SECRETS]
        if found:
            message = f"placeholder secret in {', '.join(found)}; set a real value"
            if self.environment is Environment.PRODUCTION:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        return self

    def _secrets(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for group_name in ("grafana", "elasticsearch", "smtp"):
            group = getattr(self, group_name)
            for field_name in type(group).model_fields:
                value = getattr(group, field_name)
                if isinstance(value, SecretStr):
                    pairs.append(
                        (
                            f"SEXTANT_{group_name.upper()}_{field_name.upper()}",
                            value.get_secret_value(),
                        )
                    )
        password = _url_password(self.database.url)
        if password is not None:
            pairs.append(("SEXTANT_DATABASE_URL (password)", password))
        return pairs

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database.url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None for in-memory or PostgreSQL databases."""
        if not self.is_sqlite:
            return None
        _, _, path = self.database.url.partition(":///")
        return Path(path) if path and path != ":memory:" else None


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL fails later with a clear error
        return None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
