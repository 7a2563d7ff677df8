"""Airflow's `[logging]`/`[elasticsearch]` settings for one deployment, as environment
variables (Kubernetes pods, local processes) or as airflow.cfg text.

What the settings make Airflow do (reference: airflow.md section 4, provider
`apache-airflow-providers-elasticsearch`):

- **Write.** Airflow never indexes: `write_to_es` stays off, because the provider's bulk writer
  sends `index` operations without `@timestamp`, and the deployment's data stream accepts only
  `create` operations of documents that carry one. Instead `write_stdout` is on with
  `json_format`: on Airflow 3 the supervisor's `ElasticsearchRemoteLogIO.upload()` prints every
  line of a finished try as JSON with `log_id` and `offset` (line number 1, 2, 3...) on the
  worker's standard output (Airflow 2's handler prints each record as it is emitted, with an
  epoch-nanosecond offset and a final `end_of_log` record). Sextant's FluentD configuration
  ships those lines, adds `@timestamp`, `component` and `host`, and creates the documents in
  `airflow-logs-<deployment>` (`app.observability.fluentd`).
- **Component logs.** Scheduler, api-server, dag-processor, triggerer and workers log to
  standard output too; from Airflow 3.2, `json_logs` turns those into JSON lines (`timestamp`,
  `level`, `event`, `logger`), which FluentD parses into fields. Earlier versions print text,
  which FluentD keeps whole as `event`.
- **Read.** The api-server reads task logs back with `index_patterns` set to the deployment's
  own data stream, so each read touches that deployment's one or two shards instead of every
  index in the cluster (the provider's default `_all`). The `log_id_template` is the same
  template FluentD and Sextant's log API use, and is never changed: Airflow stores the template
  per DAG run, so a change would only apply to new runs.

The same options serve both runtimes: Kubernetes puts `env()` in every Airflow container, the
local runtime in every process's environment (or `cfg()` in its airflow.cfg). Credentials are not
part of it: the URL given here must have none, and a runtime whose Elasticsearch needs them sets
`CREDENTIALS_ENV` (base64 of `user:password`, which the Elasticsearch client sends as basic auth)
from its secret store, as FluentD gets its own from its environment.

Requirements on the Airflow side: the provider `apache-airflow-providers-elasticsearch` >=
`PROVIDER_MIN_VERSION` (its handler registers the upload path itself, #49863, and the provider
version the reference describes), and `[logging] remote_base_log_folder` left empty, which is
what makes Airflow choose the Elasticsearch handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.core.names import NAME_PATTERN
from app.observability.elasticsearch_target import log_data_stream
from app.observability.fluentd import LOG_ID_TEMPLATE

# Airflow's default; the log API hides the line that carries it and reports the end of the log.
END_OF_LOG_MARK = "end_of_log"
OFFSET_FIELD = "offset"
HOST_FIELD = "host"
PROVIDER_MIN_VERSION = "6.5.4"
# Set by the runtime from its secret store when Elasticsearch needs credentials.
CREDENTIALS_ENV = "AIRFLOW__ELASTICSEARCH_CONFIGS__BASIC_AUTH"
# Airflow's own default fields for the Airflow 2 JSON formatter (the offset is appended by it).
AIRFLOW2_JSON_FIELDS = "asctime, filename, lineno, levelname, message"

_VERSION = re.compile(r"^(\d+)\.(\d+)")
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Option:
    """One Airflow configuration option."""

    section: str
    key: str
    value: str

    @property
    def env_name(self) -> str:
        """Airflow's environment variable for the option (`AIRFLOW__SECTION__KEY`)."""
        return f"AIRFLOW__{self.section.upper()}__{self.key.upper()}"


@dataclass(frozen=True, slots=True)
class AirflowLogging:
    """The logging options of one deployment, in the order they are rendered."""

    deployment: str
    airflow_version: str
    options: tuple[Option, ...]

    def env(self) -> dict[str, str]:
        """The options as environment variables."""
        return {option.env_name: option.value for option in self.options}

    def cfg(self) -> str:
        """The options as airflow.cfg sections."""
        lines = [
            f"# Logging of Airflow deployment {self.deployment} (Airflow {self.airflow_version}),",
            f"# to and from Elasticsearch data stream {log_data_stream(self.deployment)}.",
            "# Rendered by Sextant (app/logs/airflow_config.py).",
        ]
        section = None
        for option in self.options:
            if option.section != section:
                section = option.section
                lines += ["", f"[{section}]"]
            # airflow.cfg values go through configparser interpolation, where % is special.
            lines.append(f"{option.key} = {option.value.replace('%', '%%')}")
        return "\n".join(lines) + "\n"

    def value(self, section: str, key: str) -> str | None:
        """One option's value, or None when it is not set."""
        for option in self.options:
            if (option.section, option.key) == (section, key):
                return option.value
        return None


def render(deployment: str, airflow_version: str, *, elasticsearch_url: str) -> AirflowLogging:
    """The logging options of a deployment whose Airflow reaches Elasticsearch at the URL."""
    if not _NAME.match(deployment):
        raise ValueError(f"deployment name {deployment!r} is not a DNS-1123 label")
    version = _VERSION.match(airflow_version)
    if version is None:
        raise ValueError(f"{airflow_version!r} is not an Airflow version")
    major_minor = (int(version.group(1)), int(version.group(2)))
    stream = log_data_stream(deployment)
    logging = [
        Option("logging", "remote_logging", "True"),
        # Any remote_base_log_folder (s3://, gs://...) would win over Elasticsearch.
        Option("logging", "remote_base_log_folder", ""),
        # The worker's own file serves a running try (Airflow reads it through the worker's log
        # server); Elasticsearch has the try once it has ended.
        Option("logging", "delete_local_logs", "False"),
        # Escape codes would end up in the shipped lines.
        Option("logging", "colored_console_log", "False"),
    ]
    if major_minor >= (3, 2):
        logging.append(Option("logging", "json_logs", "True"))
    elasticsearch = [
        Option("elasticsearch", "host", _without_credentials(elasticsearch_url)),
        Option("elasticsearch", "json_format", "True"),
        Option("elasticsearch", "write_stdout", "True"),
        Option("elasticsearch", "write_to_es", "False"),
        # Unused while write_to_es is off; should it be switched on, it names the right stream.
        Option("elasticsearch", "target_index", stream),
        # The deployment's stream and nothing else: never `_all`, never a wildcard.
        Option("elasticsearch", "index_patterns", stream),
        # A callable would take precedence over index_patterns.
        Option("elasticsearch", "index_patterns_callable", ""),
        Option("elasticsearch", "log_id_template", LOG_ID_TEMPLATE),
        Option("elasticsearch", "end_of_log_mark", END_OF_LOG_MARK),
        Option("elasticsearch", "offset_field", OFFSET_FIELD),
        Option("elasticsearch", "host_field", HOST_FIELD),
        Option("elasticsearch", "json_fields", AIRFLOW2_JSON_FIELDS),
    ]
    client = [
        # Keyword arguments of the provider's Elasticsearch client (the api-server's reads).
        Option("elasticsearch_configs", "request_timeout", "30"),
        Option("elasticsearch_configs", "max_retries", "3"),
        Option("elasticsearch_configs", "retry_on_timeout", "True"),
    ]
    return AirflowLogging(deployment, airflow_version, tuple(logging + elasticsearch + client))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.username or parts.password:
        raise ValueError(
            f"the Elasticsearch URL must not carry credentials; set {CREDENTIALS_ENV} instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if any(c in url for c in "\n\r"):
        raise ValueError("the Elasticsearch URL must be one line")
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
