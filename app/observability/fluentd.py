"""FluentD configuration for one deployment, rendered from the templates in `fluentd/`.

The configuration tails the deployment's logs (its namespace's containers on Kubernetes, or
the local runtime's per-component files), keeps the Airflow components' logs only, parses
Airflow's JSON lines, gives every record the fields Airflow's Elasticsearch log reader needs
(`log_id`, `offset`, `@timestamp`) and writes it to the deployment's own data stream. One file per
deployment, every tag, `@id`, position and buffer path carrying the deployment's name, so that
a FluentD DaemonSet can `@include` the files of all deployments side by side.

FluentD (and Fluent Bit) cannot be obtained on our machines: no reachable package registry
carries it. The rendered configuration is therefore checked for its structure by the tests, and
the read path is tested by indexing Airflow-shaped documents into a real Elasticsearch.
Rendering is pure: the same arguments always give the same text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.core.names import NAME_PATTERN
from app.deployments.spec import Component
from app.observability.elasticsearch_target import log_data_stream

FLUENTD_DIR = Path(__file__).resolve().parents[2] / "fluentd"
# Airflow's default `[elasticsearch] log_id_template`.
LOG_ID_TEMPLATE = "{dag_id}-{task_id}-{run_id}-{map_index}-{try_number}"
# Pods carry `sextant.io/component: <component>`; local log files are named after it.
AIRFLOW_COMPONENTS: tuple[str, ...] = tuple(
    c.value
    for c in (
        Component.SCHEDULER,
        Component.API_SERVER,
        Component.DAG_PROCESSOR,
        Component.TRIGGERER,
        Component.WORKERS,
    )
)
NAMESPACE_PREFIX = "sextant-"

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_LOG_ID_FIELD = re.compile(r"\{(\w+)\}")
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class KubernetesContainers:
    """Tail the container logs of the deployment's namespace on each node (a DaemonSet)."""

    container_log_dir: str = "/var/log/containers"
    state_dir: str = "/var/log/fluentd-sextant"


@dataclass(frozen=True, slots=True)
class LocalFiles:
    """Tail the local runtime's per-component files, `<state_dir>/<deployment>/logs/*.log`."""

    state_dir: str


LogSource = KubernetesContainers | LocalFiles


def namespace(deployment: str) -> str:
    """The Kubernetes namespace a deployment runs in."""
    return f"{NAMESPACE_PREFIX}{deployment}"


def render(
    deployment: str,
    workspace: str,
    *,
    elasticsearch_url: str,
    source: LogSource | None = None,
    log_id_template: str = LOG_ID_TEMPLATE,
    components: Sequence[str] = AIRFLOW_COMPONENTS,
) -> str:
    """The FluentD configuration that ships one deployment's Airflow logs to its data stream."""
    for what, name in (("deployment", deployment), ("workspace", workspace)):
        if not _NAME.match(name):
            raise ValueError(f"{what} name {name!r} is not a DNS-1123 label")
    source = source if source is not None else KubernetesContainers()
    fields, expression = log_id_ruby(log_id_template)
    values = {
        "deployment": deployment,
        "workspace": workspace,
        "id": f"sextant-{deployment}",
        "data_stream": log_data_stream(deployment),
        "elasticsearch_url": _without_credentials(elasticsearch_url),
        "components": "|".join(re.escape(c) for c in components),
        "log_id_fields": fields,
        "log_id_expression": expression,
    }
    if isinstance(source, KubernetesContainers):
        source_file = "source-kubernetes.conf"
        state = f"{source.state_dir.rstrip('/')}/{deployment}"
        values |= {
            "container_log_dir": source.container_log_dir.rstrip("/"),
            "namespace": namespace(deployment),
        }
        origin = f"containers of namespace {namespace(deployment)}"
    else:
        source_file = "source-local.conf"
        state = f"{source.state_dir.rstrip('/')}/{deployment}/fluentd"
        values["logs_dir"] = f"{source.state_dir.rstrip('/')}/{deployment}/logs"
        origin = f"files in {values['logs_dir']}"
    values |= {"position_dir": state, "buffer_dir": f"{state}/buffer"}
    header = (
        f"# FluentD configuration of Airflow deployment {deployment} (workspace {workspace}):\n"
        f"# the Airflow components' logs from the {origin}\n"
        f"# to Elasticsearch data stream {values['data_stream']}.\n"
        "# Rendered by Sextant from fluentd/*.conf; edit those, not this file.\n"
    )
    parts = [header] + [
        substitute(_template(name), values) for name in (source_file, "pipeline.conf")
    ]
    return "\n".join(parts)


def log_id_ruby(template: str) -> tuple[str, str]:
    """Ruby for a record's log_id under Airflow's `log_id_template`: (required fields, value).

    The first is an array of the fields that must be present (all but `map_index`, which is
    -1 for an unmapped task); the second joins them with the template's literal text.
    """
    if "{{" in template or "}}" in template:
        raise ValueError("only str.format log_id templates ({dag_id}-...) are supported")
    parts: list[str] = []
    required: list[str] = []
    position = 0
    for match in _LOG_ID_FIELD.finditer(template):
        if match.start() > position:
            parts.append(_ruby_string(template[position : match.start()]))
        field = match.group(1)
        if field == "map_index":
            parts.append('(record["map_index"] || -1)')
        else:
            parts.append(f'record["{field}"]')
            required.append(f'record["{field}"]')
        position = match.end()
    if position < len(template):
        parts.append(_ruby_string(template[position:]))
    if not required:
        raise ValueError(f"log_id template {template!r} names no field")
    return f"[{', '.join(required)}]", f"[{', '.join(parts)}].join"


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Fill `{{name}}` placeholders; a placeholder without a value is an error."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(value, template)


def _template(name: str) -> str:
    return (FLUENTD_DIR / name).read_text()


def _ruby_string(text: str) -> str:
    # Single quotes: no interpolation, only \\ and \' are escapes.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _without_credentials(url: str) -> str:
    # Credentials reach FluentD through its environment; a URL's user:password stays out.
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if any(c in url for c in "\n\r#\"' "):
        raise ValueError(f"{url!r} cannot go into a FluentD configuration value")
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def examples() -> dict[str, str]:
    """The renderings committed in `fluentd/examples/` (file name: text), for reviewers."""
    url = "http://elasticsearch:9200"
    return {
        "etl.kubernetes.conf": render("etl", "data-team", elasticsearch_url=url),
        "etl.local.conf": render(
            "etl", "data-team", elasticsearch_url=url, source=LocalFiles("/var/lib/sextant")
        ),
    }
