"""A deployment's Kubernetes objects, rendered from the templates in `deploy/templates/`.

The templates are plain Kubernetes YAML that a reviewer can read as manifests. Rendering fills
placeholders *after* the YAML is parsed, so a value can never break the YAML or inject a key:

- a string that is exactly `"{{name}}"` becomes the value itself (a number, a mapping, a list);
- `{{name}}` inside a longer string is replaced by the value's text;
- a list item that is exactly `"{{name}}"` with a list value is spliced into the list;
- a mapping key that is exactly `"{{name}}"` (value `~`) merges the mapping value into its parent.

Python decides what is rendered (which components an executor runs, which PodDisruptionBudgets
are meaningful) and computes what the templates cannot (quota sums, airflow.cfg, hashes), then a
last pass does what kustomize's transformers would: every object gets the deployment's namespace
and the common labels (`app.kubernetes.io/*`, `sextant.io/workspace`, `sextant.io/deployment`, and
`sextant.io/component` / `app.kubernetes.io/component` where the template names one), and pod
templates get the same labels as their workload.

Secrets are not rendered: their values are generated once, in the cluster, by the runtime (see
`generate_root_secrets`), so rendered artifacts (and `sextant render`) never hold a credential.
Rendering is pure: the same deployment and settings give the same objects.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from app.core.settings import KubernetesSettings
from app.deployments.spec import (
    CATALOGUE,
    Component,
    Executor,
    components_for,
    cpu_millicores,
    memory_bytes,
)
from app.logs import airflow_config as airflow_logging
from app.observability import fluentd, statsd
from app.observability.prometheus_target import kubernetes_service_metadata
from app.provisioning.targets import DeploymentView

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "templates"
MANAGED_BY = "sextant"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "sextant.io/component"
LABEL_DEPLOYMENT = "sextant.io/deployment"
LABEL_WORKSPACE = "sextant.io/workspace"
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# The digest of what Sextant last applied to an object (see `in_sync`).
APPLIED_HASH = "sextant.io/applied-hash"
# Fields the API server stores in canonical form (`1000m` comes back as `1`).
QUANTITY_KEYS = frozenset(
    {
        "cpu",
        "memory",
        "ephemeral-storage",
        "sizeLimit",
        "requests.cpu",
        "limits.cpu",
        "requests.memory",
        "limits.memory",
    }
)

SHARED_TEMPLATES = (
    "namespace.yaml",
    "serviceaccount.yaml",
    "airflow-config.yaml",
    "quota.yaml",
    "networkpolicy.yaml",
)
COMPONENT_TEMPLATES: dict[Component, str] = {
    Component.SCHEDULER: "scheduler.yaml",
    Component.API_SERVER: "api-server.yaml",
    Component.DAG_PROCESSOR: "dag-processor.yaml",
    Component.TRIGGERER: "triggerer.yaml",
    Component.WORKERS: "workers.yaml",
    Component.FLOWER: "flower.yaml",
    Component.PGBOUNCER: "pgbouncer.yaml",
    Component.REDIS: "redis.yaml",
    Component.STATSD: "statsd.yaml",
}
# The workload that runs each component (what `scale` and `status` act on).
WORKLOADS: dict[Component, tuple[str, str]] = {
    Component.SCHEDULER: ("Deployment", "scheduler"),
    Component.API_SERVER: ("Deployment", "api-server"),
    Component.DAG_PROCESSOR: ("Deployment", "dag-processor"),
    Component.TRIGGERER: ("Deployment", "triggerer"),
    Component.WORKERS: ("Deployment", "workers"),
    Component.FLOWER: ("Deployment", "flower"),
    Component.PGBOUNCER: ("Deployment", "pgbouncer"),
    Component.REDIS: ("StatefulSet", "redis"),
    Component.STATSD: ("Deployment", "statsd"),
}
# Components whose PodDisruptionBudget is worth having even with one replica: workers are
# autoscaled, and a drain should take them one warm shutdown at a time.
ALWAYS_PDB = frozenset({Component.WORKERS})
NO_PDB = frozenset({Component.REDIS, Component.STATSD, Component.FLOWER})
# Apply order: what pods need exists before the pods' owners do.
KIND_ORDER = (
    "Namespace",
    "ServiceAccount",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Secret",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Deployment",
    "PodDisruptionBudget",
)
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})
# Every kind the runtime may have created in a deployment's namespace: what pruning lists.
PRUNABLE_KINDS = tuple(k for k in KIND_ORDER if k != "Namespace")
ARTIFACT_PREFIX = "kubernetes/"

PGBOUNCER_EXPORTER_RESOURCES = {"cpu": "50m", "memory": "64Mi"}
LIMIT_DEFAULT = {"cpu": "100m", "memory": "128Mi"}
QUOTA_FACTOR = 2

SCHEDULER_CHECK = (
    "CONNECTION_CHECK_MAX_COUNT=0 AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR exec /entrypoint "
    "airflow jobs check --job-type {job} --local"
)
WORKER_CHECK = (
    "CONNECTION_CHECK_MAX_COUNT=0 exec /entrypoint python -m celery "
    "--app airflow.providers.celery.executors.celery_executor.app inspect ping "
    "-d celery@$(hostname)"
)

_PLACEHOLDER = re.compile(r"\{\{([\w.]+)\}\}")


# --- secrets -------------------------------------------------------------------------------

SECRET_FERNET = "airflow-fernet-key"
SECRET_API = "airflow-api-secret-key"
SECRET_METADATA = "airflow-metadata"
SECRET_REDIS = "airflow-redis-password"
SECRET_PGBOUNCER_USERS = "airflow-pgbouncer-users"
SECRET_PGBOUNCER_STATS = "airflow-pgbouncer-stats"
SECRET_BROKER = "airflow-broker-url"
PGBOUNCER_DATABASE = "airflow-metadata"


def root_secret_names(executor: Executor) -> list[str]:
    """Secrets whose values are generated once and never rotated by a re-apply."""
    names = [SECRET_FERNET, SECRET_API, SECRET_METADATA]
    if executor is Executor.CELERY:
        names.append(SECRET_REDIS)
    return names


def derived_secret_names(executor: Executor) -> list[str]:
    """Secrets computed from the root Secrets' live values (applied every time, no-op if same)."""
    names = [SECRET_PGBOUNCER_USERS, SECRET_PGBOUNCER_STATS]
    if executor is Executor.CELERY:
        names.append(SECRET_BROKER)
    return names


def metadata_role(deployment: str) -> str:
    """The deployment's PostgreSQL role and database name (`airflow_<name>`, `-` → `_`)."""
    return "airflow_" + deployment.replace("-", "_")


def fernet_key(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A Fernet key: 32 random bytes, URL-safe base64 (what `Fernet.generate_key()` returns)."""
    return base64.urlsafe_b64encode(token(32)).decode()


def generate_root_secrets(
    deployment: str,
    names: Sequence[str],
    token: Callable[[int], str] = secrets.token_urlsafe,
) -> dict[str, dict[str, str]]:
    """Fresh values for the named root Secrets (name → key → value)."""
    generated: dict[str, dict[str, str]] = {}
    for name in names:
        if name == SECRET_FERNET:
            generated[name] = {"fernet-key": fernet_key()}
        elif name == SECRET_API:
            generated[name] = {"api-secret-key": token(32), "jwt-secret": token(32)}
        elif name == SECRET_METADATA:
            role, password = metadata_role(deployment), token(24)
            # Airflow reaches its database through this namespace's PgBouncer.
            url = f"postgresql://{role}:{password}@pgbouncer:6543/{PGBOUNCER_DATABASE}"
            generated[name] = {
                "user": role,
                "password": password,
                "database": role,
                "connection": url,
                "result-backend": f"db+{url}",
            }
        elif name == SECRET_REDIS:
            generated[name] = {"password": token(24)}
        else:
            raise ValueError(f"{name} is not a generated Secret")
    return generated


def derive_secrets(
    names: Sequence[str], roots: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The derived Secrets' values from the root Secrets' live values."""
    derived: dict[str, dict[str, str]] = {}
    metadata = roots.get(SECRET_METADATA, {})
    for name in names:
        if name == SECRET_PGBOUNCER_USERS:
            derived[name] = {"users.txt": f'"{metadata["user"]}" "{metadata["password"]}"\n'}
        elif name == SECRET_PGBOUNCER_STATS:
            derived[name] = {
                "connection": f"postgresql://{metadata['user']}:{metadata['password']}"
                "@127.0.0.1:6543/pgbouncer?sslmode=disable"
            }
        elif name == SECRET_BROKER:
            password = roots[SECRET_REDIS]["password"]
            derived[name] = {"connection": f"redis://:{password}@redis:6379/0"}
        else:
            raise ValueError(f"{name} is not a derived Secret")
    return derived


def secret_manifest(view: DeploymentView, name: str, data: Mapping[str, str]) -> dict[str, Any]:
    """A Secret of the deployment with `data` (base64-encoded, as the API stores it)."""
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }
    return _finish(manifest, view)


def decode_secret(manifest: Mapping[str, Any]) -> dict[str, str]:
    """A live Secret's data, decoded."""
    return {
        key: base64.b64decode(value).decode() for key, value in (manifest.get("data") or {}).items()
    }


# --- rendering -----------------------------------------------------------------------------


def namespace(deployment: str) -> str:
    """The deployment's namespace, `sextant-<name>`."""
    return fluentd.namespace(deployment)


def selector(deployment: str) -> dict[str, str]:
    """The labels that select everything Sextant made for one deployment."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_DEPLOYMENT: deployment}


def common_labels(view: DeploymentView) -> dict[str, str]:
    """Labels on every object of a deployment."""
    return {
        "app.kubernetes.io/name": "airflow",
        "app.kubernetes.io/instance": view.name,
        "app.kubernetes.io/version": view.airflow_version,
        "app.kubernetes.io/part-of": "sextant",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WORKSPACE: view.workspace,
        LABEL_DEPLOYMENT: view.name,
    }


@lru_cache
def load_template(name: str) -> tuple[Any, ...]:
    """The parsed documents of one template file."""
    text = (TEMPLATES_DIR / name).read_text()
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def fill(node: Any, values: Mapping[str, Any]) -> Any:
    """`node` with its placeholders replaced (see the module docstring)."""
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return copy.deepcopy(values[whole[1]])
        return _PLACEHOLDER.sub(lambda m: str(values[m[1]]), node)
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            whole = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
            if whole and isinstance(values[whole[1]], list):
                items.extend(copy.deepcopy(values[whole[1]]))
            else:
                items.append(fill(item, values))
        return items
    if isinstance(node, dict):
        mapping: dict[str, Any] = {}
        for key, value in node.items():
            whole = _PLACEHOLDER.fullmatch(key) if isinstance(key, str) else None
            if whole:
                mapping.update(copy.deepcopy(values[whole[1]]))
            else:
                mapping[key] = fill(value, values)
        return mapping
    return node


def render_objects(
    view: DeploymentView, settings: KubernetesSettings, *, elasticsearch_url: str | None = None
) -> list[dict[str, Any]]:
    """Every object of the deployment except its Secrets, in apply order."""
    executor = Executor(view.executor)
    running = components_for(executor)
    values = _values(view, settings, running, elasticsearch_url)
    objects: list[dict[str, Any]] = []
    for template in (*SHARED_TEMPLATES, *(COMPONENT_TEMPLATES[c] for c in running)):
        objects.extend(fill(doc, values) for doc in load_template(template))
    for component in running:
        replicas = _replicas(view, component)
        if component in NO_PDB or (component not in ALWAYS_PDB and replicas < 2):
            continue
        pdb_values = {
            **values,
            "pdb_name": WORKLOADS[component][1],
            "pdb_component": component.value,
        }
        objects.extend(fill(doc, pdb_values) for doc in load_template("pdb.yaml"))
    finished = [_finish(obj, view) for obj in objects]
    return sorted(finished, key=order_key)


def order_key(manifest: Mapping[str, Any]) -> tuple[int, str]:
    """Sort key: kinds in apply order, then names."""
    kind = manifest["kind"]
    index = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return index, manifest["metadata"]["name"]


def artifact_path(manifest: Mapping[str, Any]) -> str:
    """Where `sextant render` writes an object: `kubernetes/<NN>-<kind>-<name>.yaml`."""
    index, name = order_key(manifest)
    return f"{ARTIFACT_PREFIX}{index:02d}-{manifest['kind'].lower()}-{name}.yaml"


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """YAML as people write it: keys in template order, multi-line strings as blocks."""
    return yaml.dump(dict(manifest), Dumper=_BlockDumper, sort_keys=False, width=100)


# libyaml's emitter and parser when PyYAML has them: ten times faster than pure Python, which
# matters when a fleet is force-synced (every deployment rendered and parsed again).
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BlockDumper(_SafeDumper):  # type: ignore[valid-type,misc]
    pass


def from_yaml(text: str) -> Any:
    """One YAML document (an artifact's content) parsed safely."""
    return yaml.load(text, Loader=_SafeLoader)


def _str_representer(dumper: Any, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    node: yaml.ScalarNode = dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)
    return node


_BlockDumper.add_representer(str, _str_representer)


def _finish(manifest: dict[str, Any], view: DeploymentView) -> dict[str, Any]:
    """Namespace and common labels, on the object and its pod template."""
    given = manifest.get("metadata") or {}
    labels = {**common_labels(view), **(given.get("labels") or {})}
    component = labels.get(LABEL_COMPONENT)
    if component:
        labels["app.kubernetes.io/component"] = component
    metadata: dict[str, Any] = {"name": given["name"]}
    if manifest["kind"] != "Namespace":
        metadata["namespace"] = namespace(view.name)
    metadata["labels"] = dict(sorted(labels.items()))
    metadata.update({k: v for k, v in given.items() if k not in ("name", "namespace", "labels")})
    manifest["metadata"] = metadata
    template = (manifest.get("spec") or {}).get("template")
    if manifest["kind"] in WORKLOAD_KINDS and isinstance(template, dict):
        pod_metadata = template.setdefault("metadata", {})
        pod_labels = {**labels, **(pod_metadata.get("labels") or {})}
        pod_metadata["labels"] = dict(sorted(pod_labels.items()))
    annotations = dict(metadata.get("annotations") or {})
    annotations.pop(APPLIED_HASH, None)
    metadata["annotations"] = annotations
    annotations[APPLIED_HASH] = manifest_digest(manifest)
    return manifest


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """A digest of a manifest without its own `APPLIED_HASH` annotation."""
    stripped = copy.deepcopy(dict(manifest))
    annotations = (stripped.get("metadata") or {}).get("annotations") or {}
    annotations.pop(APPLIED_HASH, None)
    return hashlib.sha256(json.dumps(stripped, sort_keys=True).encode()).hexdigest()[:32]


def in_sync(live: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    """Whether applying `manifest` could not change `live`, so the request can be skipped.

    Two conditions: the live object carries the digest of this very manifest (so nothing
    Sextant applied earlier has since been dropped from the render, which a server-side apply
    would remove), and every field of the manifest has its value in the live object (so nobody
    changed a field Sextant owns). Fields only others set are not Sextant's business, exactly
    as with server-side apply. A difference the comparison cannot see through (a value the
    server normalises in a way not handled here) only costs a no-op apply.
    """
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    wanted = ((manifest.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
    return annotations.get(APPLIED_HASH) == wanted and _contains(live, manifest, "")


def _contains(live: Any, wanted: Any, key: str) -> bool:
    if isinstance(wanted, dict):
        # The API server omits zero values (`initialDelaySeconds: 0`, `false`, `{}`).
        return isinstance(live, dict) and all(
            _contains(live[k], v, k) if k in live else v in (0, False, "", None, {}, [])
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(_contains(a, b, key) for a, b in zip(live, wanted, strict=True))
        )
    if live == wanted:
        return True
    if key in QUANTITY_KEYS and isinstance(live, str) and isinstance(wanted, str):
        for parse in (cpu_millicores, memory_bytes):
            a, b = parse(live), parse(wanted)
            if a is not None and a == b:
                return True
    return False


def _replicas(view: DeploymentView, component: Component) -> int:
    spec = view.components.get(component.value) or {}
    return int(spec.get("replicas", CATALOGUE[component].replicas))


def _size(view: DeploymentView, component: Component) -> tuple[str, str]:
    spec = view.components.get(component.value) or {}
    defaults = CATALOGUE[component]
    return str(spec.get("cpu", defaults.cpu)), str(spec.get("memory", defaults.memory))


def _resources(cpu: str, memory: str) -> dict[str, dict[str, str]]:
    # Requests equal limits (Astronomer's rule): a deployment gets what its quota says, no more.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _values(
    view: DeploymentView,
    settings: KubernetesSettings,
    running: Sequence[Component],
    elasticsearch_url: str | None,
) -> dict[str, Any]:
    executor = Executor(view.executor)
    airflow_image = f"{settings.airflow_image}:{view.airflow_version}"
    airflow_cfg = render_airflow_cfg(airflow_config(view, elasticsearch_url))
    env = airflow_env(executor)
    mounts = [
        {
            "name": "config",
            "mountPath": "/opt/airflow/airflow.cfg",
            "subPath": "airflow.cfg",
            "readOnly": True,
        },
        {"name": "logs", "mountPath": "/opt/airflow/logs"},
    ]
    container_security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    scraped = kubernetes_service_metadata(view)
    pgbouncer_ini = render_pgbouncer_ini(view, settings)
    values: dict[str, Any] = {
        "namespace": namespace(view.name),
        "deployment": view.name,
        "workspace": view.workspace,
        "airflow_image": airflow_image,
        "statsd_image": settings.statsd_image,
        "redis_image": settings.redis_image,
        "pgbouncer_image": settings.pgbouncer_image,
        "pgbouncer_exporter_image": settings.pgbouncer_exporter_image,
        "airflow_cfg": airflow_cfg,
        "config_hash": _digest(airflow_cfg),
        "airflow_env": env,
        "airflow_volume_mounts": mounts,
        "airflow_volumes": [
            {"name": "config", "configMap": {"name": "airflow-config"}},
            {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
        "pod_security_context": {
            # The Airflow image's user; group 0 owns $AIRFLOW_HOME in the image.
            "runAsNonRoot": True,
            "runAsUser": 50000,
            "runAsGroup": 0,
            "fsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": container_security,
        "statsd_mapping": statsd.mapping_text(),
        "statsd_mapping_hash": statsd.mapping_digest(),
        "scrape_service_labels": dict(scraped.labels),
        "statsd_service_annotations": {
            **scraped.annotations,
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(statsd.SCRAPE_PORT),
        },
        "flower_service_annotations": dict(scraped.annotations),
        "pgbouncer_ini": pgbouncer_ini,
        "pgbouncer_ini_hash": _digest(pgbouncer_ini),
        "pgbouncer_exporter_resources": _resources(
            PGBOUNCER_EXPORTER_RESOURCES["cpu"], PGBOUNCER_EXPORTER_RESOURCES["memory"]
        ),
        "prometheus_namespace": settings.prometheus_namespace,
        "ingress_namespace": settings.ingress_namespace,
        **_quota_values(view, running),
    }
    jobs = {
        Component.SCHEDULER: "SchedulerJob",
        Component.DAG_PROCESSOR: "DagProcessorJob",
        Component.TRIGGERER: "TriggererJob",
    }
    for component in running:
        cpu, memory = _size(view, component)
        key = component.value
        values[f"{key}.replicas"] = _replicas(view, component)
        values[f"{key}.resources"] = _resources(cpu, memory)
        values[f"{key}.wait_for_migrations"] = {
            "name": "wait-for-airflow-migrations",
            "image": airflow_image,
            "args": ["bash", "-c", "exec airflow db check-migrations --migration-wait-timeout=600"],
            "env": env,
            "resources": _resources(cpu, memory),
            "securityContext": container_security,
            "volumeMounts": mounts,
        }
        if component in jobs:
            values[f"{key}.check"] = ["sh", "-c", SCHEDULER_CHECK.format(job=jobs[component])]
    values["workers.check"] = ["sh", "-c", WORKER_CHECK]
    return values


def airflow_env(executor: Executor) -> list[dict[str, Any]]:
    """Airflow's credentials, as `AIRFLOW__*` variables read from the generated Secrets."""

    def from_secret(variable: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [
        from_secret("AIRFLOW__CORE__FERNET_KEY", SECRET_FERNET, "fernet-key"),
        from_secret("AIRFLOW__API__SECRET_KEY", SECRET_API, "api-secret-key"),
        from_secret("AIRFLOW__API_AUTH__JWT_SECRET", SECRET_API, "jwt-secret"),
        from_secret("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", SECRET_METADATA, "connection"),
        from_secret("AIRFLOW_CONN_AIRFLOW_DB", SECRET_METADATA, "connection"),
    ]
    if executor is Executor.CELERY:
        env += [
            from_secret("AIRFLOW__CELERY__BROKER_URL", SECRET_BROKER, "connection"),
            from_secret("AIRFLOW__CELERY__RESULT_BACKEND", SECRET_METADATA, "result-backend"),
        ]
    return env


Sections = dict[str, dict[str, str]]


def airflow_config(view: DeploymentView, elasticsearch_url: str | None) -> Sections:
    """airflow.cfg of a deployment on Kubernetes, as sections (credentials excluded)."""
    executor = Executor(view.executor)
    sections: Sections = {
        "core": {"executor": executor.value, "load_examples": "False"},
        "metrics": {
            # This namespace's exporter Service, by its short name.
            "statsd_on": "True",
            "statsd_host": "statsd",
            "statsd_port": str(statsd.INGEST_PORT),
            "statsd_prefix": "airflow",
        },
    }
    if executor is Executor.CELERY:
        sections["celery"] = {
            "worker_concurrency": str(view.extra.get("worker_concurrency", 16)),
            # The workers' liveness probe pings them through Celery's remote control.
            "worker_enable_remote_control": "True",
        }
    for section, options in remote_logging_config(view, elasticsearch_url).items():
        sections.setdefault(section, {}).update(options)
    return sections


def remote_logging_config(view: DeploymentView, elasticsearch_url: str | None) -> Sections:
    """Remote logging to the deployment's data stream, from the logs module's renderer.

    Without an Elasticsearch URL, logs stay on the pods' standard output only. Credentials in
    the URL are Sextant's own and never reach a ConfigMap: they are dropped here.
    """
    if not elasticsearch_url:
        return {"logging": {"remote_logging": "False"}}
    options = airflow_logging.render(
        view.name, view.airflow_version, elasticsearch_url=_without_credentials(elasticsearch_url)
    ).options
    sections: Sections = {}
    for option in options:
        sections.setdefault(option.section, {})[option.key] = option.value
    return sections


def render_airflow_cfg(sections: Sections) -> str:
    """Sections as airflow.cfg text, in the order given."""
    lines: list[str] = []
    for section, options in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        # airflow.cfg goes through configparser interpolation, where % is special.
        lines.extend(
            f"{key} = {value.replace('%', '%%')}".rstrip() for key, value in options.items()
        )
    return "\n".join(lines) + "\n"


def render_pgbouncer_ini(view: DeploymentView, settings: KubernetesSettings) -> str:
    """pgbouncer.ini (the chart's settings); the password is in users.txt, not here."""
    role = metadata_role(view.name)
    return (
        "[databases]\n"
        f"{PGBOUNCER_DATABASE} = host={settings.metadata_host} port={settings.metadata_port} "
        f"dbname={role} pool_size=10\n"
        "\n"
        "[pgbouncer]\n"
        "pool_mode = transaction\n"
        "listen_port = 6543\n"
        "listen_addr = *\n"
        "auth_type = scram-sha-256\n"
        "auth_file = /etc/pgbouncer/users.txt\n"
        f"stats_users = {role}\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "max_client_conn = 100\n"
        "verbose = 0\n"
        "log_disconnections = 0\n"
        "log_connections = 0\n"
        "server_tls_sslmode = prefer\n"
        "server_tls_ciphers = normal\n"
    )


@dataclass(frozen=True, slots=True)
class Footprint:
    """CPU (millicores), memory (bytes) and pods a deployment's spec adds up to."""

    cpu: int
    memory: int
    pods: int


def footprint(view: DeploymentView, running: Sequence[Component]) -> Footprint:
    """The sum over components of replicas times size, workers at the policy's maximum.

    A malformed quantity counts as zero here: the API server refuses the container with its own
    message, which is what the deployment's status should show.
    """
    cpu = memory = pods = 0
    for component in running:
        replicas = _replicas(view, component)
        if component is Component.WORKERS:
            replicas = max(replicas, int(view.extra.get("max_workers", replicas)))
        size_cpu, size_memory = _size(view, component)
        per_cpu = cpu_millicores(size_cpu) or 0
        per_memory = memory_bytes(size_memory) or 0
        if component is Component.PGBOUNCER:
            per_cpu += cpu_millicores(PGBOUNCER_EXPORTER_RESOURCES["cpu"]) or 0
            per_memory += memory_bytes(PGBOUNCER_EXPORTER_RESOURCES["memory"]) or 0
        cpu += replicas * per_cpu
        memory += replicas * per_memory
        pods += replicas
    return Footprint(cpu, memory, pods)


def _quota_values(view: DeploymentView, running: Sequence[Component]) -> dict[str, Any]:
    total = footprint(view, running)
    hard_cpu = f"{QUOTA_FACTOR * total.cpu}m"
    hard_memory = memory_quantity(QUOTA_FACTOR * total.memory)
    largest_cpu = max((cpu_millicores(_size(view, c)[0]) or 0 for c in running), default=0)
    largest_memory = max((memory_bytes(_size(view, c)[1]) or 0 for c in running), default=0)
    return {
        "quota_hard": {
            "pods": str(QUOTA_FACTOR * total.pods),
            "requests.cpu": hard_cpu,
            "limits.cpu": hard_cpu,
            "requests.memory": hard_memory,
            "limits.memory": hard_memory,
        },
        "limit_default": dict(LIMIT_DEFAULT),
        "limit_max": {
            "cpu": f"{max(largest_cpu, 100)}m",
            "memory": memory_quantity(max(largest_memory, memory_bytes("128Mi") or 0)),
        },
    }


def memory_quantity(value: int) -> str:
    """Bytes as a Kubernetes quantity, in Mi when exact."""
    mebibyte = 2**20
    return f"{value // mebibyte}Mi" if value % mebibyte == 0 else str(value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_credentials(url: str) -> str:
    # Airflow reads Elasticsearch credentials from a Secret, never from a ConfigMap.
    return re.sub(r"//[^/@]*@", "//", url)
