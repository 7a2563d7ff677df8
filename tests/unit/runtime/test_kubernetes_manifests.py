"""Rendering of a deployment's Kubernetes objects: schema-valid for every Kubernetes version we
support, labelled, with the chart's safe defaults and the fixes its users need; pure."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from app.core.settings import KubernetesSettings
from app.deployments.spec import CATALOGUE, Component, Executor, components_for
from app.observability.fluentd import AIRFLOW_COMPONENTS
from app.observability.prometheus_target import FLOWER_PORT_NAME, kubernetes_scrape_config
from app.observability.statsd import mapping_text
from app.provisioning.targets import DeploymentView
from app.runtime import kubernetes_manifests as manifests
from app.runtime.kubernetes import KubernetesRuntime

# The Kubernetes minor versions Sextant supports (kubernetes-validate's offline schemas);
# the test API server is v1.35.
SUPPORTED_VERSIONS = ["1.30", "1.31", "1.32", "1.33", "1.34", "1.35"]


def view(
    name: str = "etl",
    executor: Executor = Executor.CELERY,
    components: dict[str, dict[str, Any]] | None = None,
    **extra: Any,
) -> DeploymentView:
    spec = {
        c.value: {
            "replicas": CATALOGUE[c].replicas,
            "cpu": CATALOGUE[c].cpu,
            "memory": CATALOGUE[c].memory,
        }
        for c in components_for(executor)
    }
    for component, overrides in (components or {}).items():
        spec[component].update(overrides)
    return DeploymentView(
        name=name,
        workspace="data-eng",
        executor=executor.value,
        airflow_version="3.3.2",
        components=spec,
        generation=1,
        extra={"worker_concurrency": 16, "max_workers": 10, **extra},
    )


def render(deployment: DeploymentView | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return manifests.render_objects(
        deployment or view(), KubernetesSettings(), elasticsearch_url="http://es:9200", **kwargs
    )


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def secrets_of(deployment: DeploymentView) -> list[dict[str, Any]]:
    executor = Executor(deployment.executor)
    roots = manifests.generate_root_secrets(deployment.name, manifests.root_secret_names(executor))
    derived = manifests.derive_secrets(manifests.derived_secret_names(executor), roots)
    return [
        manifests.secret_manifest(deployment, name, data)
        for name, data in {**roots, **derived}.items()
    ]


def container(workload: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][index]  # type: ignore[no-any-return]


# --- validity --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("executor", list(Executor))
def test_every_object_validates_strictly_against_the_kubernetes_schemas(
    version: str, executor: Executor
) -> None:
    deployment = view(executor=executor, components={"scheduler": {"replicas": 2}})
    for obj in [*render(deployment), *secrets_of(deployment)]:
        # Strict: a misspelt field is an error, not something the server silently drops.
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_artifacts_round_trip_through_yaml_and_leave_no_placeholder() -> None:
    runtime = KubernetesRuntime(KubernetesSettings(), elasticsearch_url="http://es:9200")
    artifacts = runtime.render(view())

    assert len({a.path for a in artifacts}) == len(artifacts)
    assert [yaml.safe_load(a.content) for a in artifacts] == render()
    assert all("{{" not in a.content for a in artifacts)
    # airflow.cfg and the StatsD mapping are literal blocks people can read in `sextant render`.
    config = next(a for a in artifacts if a.path.endswith("configmap-airflow-config.yaml"))
    assert "airflow.cfg: |" in config.content
    mapping = next(a for a in artifacts if a.path.endswith("configmap-statsd-mapping.yaml"))
    assert "mappings.yml: |" in mapping.content


def test_rendering_is_pure_and_holds_no_secret_value() -> None:
    first, second = render(), render()

    assert first == second
    assert not [o for o in first if o["kind"] == "Secret"]
    # Credentials reach pods through secretKeyRef only: no URL with a password anywhere.
    assert not re.search(r"://[^/@\s\"]+:[^/@\s\"]+@", json.dumps(first))


# --- labels and names ------------------------------------------------------------------------


def test_every_object_is_in_the_deployments_namespace_with_the_standard_labels() -> None:
    for obj in render():
        metadata = obj["metadata"]
        if obj["kind"] != "Namespace":
            assert metadata["namespace"] == "sextant-etl"
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/name"] == "airflow"
        assert labels["app.kubernetes.io/instance"] == "etl"
        assert labels["app.kubernetes.io/managed-by"] == "sextant"
        assert labels["app.kubernetes.io/version"] == "3.3.2"
        assert labels["sextant.io/workspace"] == "data-eng"
        assert labels["sextant.io/deployment"] == "etl"
        assert manifests.APPLIED_HASH in metadata["annotations"]


def test_pods_carry_the_component_label_fluentd_selects_on() -> None:
    objects = by_key(render())
    for component in Component:
        kind, name = manifests.WORKLOADS[component]
        labels = objects[(kind, name)]["spec"]["template"]["metadata"]["labels"]
        assert labels["sextant.io/component"] == component.value
        assert labels["app.kubernetes.io/component"] == component.value
        selector = objects[(kind, name)]["spec"]["selector"]["matchLabels"]
        # A selector is immutable: it must not carry what changes (the version).
        assert selector == {"sextant.io/deployment": "etl", "sextant.io/component": component.value}
    assert set(AIRFLOW_COMPONENTS) <= {c.value for c in Component}


def test_local_executor_renders_no_workers_redis_flower_nor_celery_settings() -> None:
    objects = by_key(render(view(executor=Executor.LOCAL)))

    names = {name for _, name in objects}
    assert not names & {"workers", "redis", "flower"}
    env = {e["name"] for e in container(objects[("Deployment", "scheduler")])["env"]}
    assert "AIRFLOW__CELERY__BROKER_URL" not in env
    assert "[celery]" not in objects[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]


# --- the chart's defaults and the fixes ------------------------------------------------------


def test_workers_get_warm_shutdown_grace_and_signals() -> None:
    workers = by_key(render())[("Deployment", "workers")]
    pod = workers["spec"]["template"]["spec"]
    main = container(workers)

    assert pod["terminationGracePeriodSeconds"] == 600
    assert {"name": "DUMB_INIT_SETSID", "value": "0"} in main["env"]
    assert main["args"] == ["bash", "-c", "exec airflow celery worker"]
    assert "inspect ping -d celery@$(hostname)" in main["livenessProbe"]["exec"]["command"][2]
    cfg = by_key(render())[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]
    assert "worker_enable_remote_control = True" in cfg


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("scheduler", "SchedulerJob"),
        ("dag-processor", "DagProcessorJob"),
        ("triggerer", "TriggererJob"),
    ],
)
def test_job_liveness_checks_this_host_with_local_not_hostname(name: str, job: str) -> None:
    probe = container(by_key(render())[("Deployment", name)])["livenessProbe"]

    command = probe["exec"]["command"][2]
    assert f"airflow jobs check --job-type {job} --local" in command
    assert "--hostname" not in command
    assert "CONNECTION_CHECK_MAX_COUNT=0" in command
    assert (probe["periodSeconds"], probe["failureThreshold"], probe["timeoutSeconds"]) == (
        60,
        5,
        20,
    )


def test_api_server_probes_do_not_depend_on_the_scheduler() -> None:
    api = container(by_key(render())[("Deployment", "api-server")])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"] == {"path": "/api/v2/version", "port": 8080}


def test_statsd_exporter_is_wired_to_airflow_and_to_prometheus_discovery() -> None:
    objects = by_key(render())
    service = objects[("Service", "statsd")]
    cfg = objects[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]

    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "statsd-ingest": 9125,
        "metrics": 9102,
    }
    assert service["metadata"]["annotations"]["sextant.io/scrape"] == "true"
    assert "statsd_host = statsd\nstatsd_port = 9125" in cfg
    assert objects[("ConfigMap", "statsd-mapping")]["data"]["mappings.yml"] == mapping_text()
    pod = objects[("Deployment", "statsd")]["spec"]["template"]["metadata"]
    assert pod["annotations"]["sextant.io/mapping-hash"]


def test_flower_service_is_discovered_for_scraping_on_its_ui_port() -> None:
    objects = by_key(render())
    service = objects[("Service", "flower")]
    container_ports = container(objects[("Deployment", "flower")])["ports"]

    assert service["metadata"]["annotations"]["sextant.io/scrape"] == "true"
    assert service["metadata"]["labels"]["sextant.io/workspace"] == "data-eng"
    assert service["metadata"]["labels"]["sextant.io/deployment"] == "etl"
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"]) == (FLOWER_PORT_NAME, 5555)
    assert [(p["name"], p["containerPort"]) for p in container_ports] == [(FLOWER_PORT_NAME, 5555)]
    # The scrape job keeps exactly the exporter's and Flower's port names.
    [keep_port] = [
        r for r in kubernetes_scrape_config()["relabel_configs"]
        if r.get("source_labels") == ["__meta_kubernetes_endpointslice_port_name"]
        and r.get("action") == "keep"
    ]  # fmt: skip
    assert re.fullmatch(keep_port["regex"], port["name"])
    assert not re.fullmatch(keep_port["regex"], "statsd-ingest")


def test_remote_logging_points_at_the_deployments_data_stream() -> None:
    with_es = by_key(render())[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]
    secret_url = manifests.render_objects(
        view(), KubernetesSettings(), elasticsearch_url="http://user:pw@es:9200"
    )
    without = manifests.render_objects(view(), KubernetesSettings(), elasticsearch_url=None)

    assert "remote_logging = True" in with_es
    assert "index_patterns = airflow-logs-etl" in with_es
    assert "pw@" not in json.dumps(secret_url)
    cfg = by_key(without)[("ConfigMap", "airflow-config")]["data"]["airflow.cfg"]
    assert "remote_logging = False" in cfg


def test_a_config_change_rolls_the_pods() -> None:
    before = by_key(render())[("Deployment", "scheduler")]
    after = by_key(render(view(worker_concurrency=32)))[("Deployment", "scheduler")]

    def config_hash(workload: dict[str, Any]) -> str:
        return workload["spec"]["template"]["metadata"]["annotations"]["sextant.io/config-hash"]  # type: ignore[no-any-return]

    assert config_hash(before) != config_hash(after)


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    objects = render()
    namespace = by_key(objects)[("Namespace", "sextant-etl")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] not in manifests.WORKLOAD_KINDS:
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for each in pod.get("initContainers", []) + pod["containers"]:
            assert each["securityContext"]["allowPrivilegeEscalation"] is False
            assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert each["resources"]["requests"] == each["resources"]["limits"]


def test_the_network_policy_admits_the_namespace_prometheus_and_the_ingress_only() -> None:
    policy = by_key(render())[("NetworkPolicy", "airflow")]["spec"]

    assert policy["podSelector"] == {}
    assert policy["policyTypes"] == ["Ingress"]
    sources = [rule["from"][0] for rule in policy["ingress"]]
    assert sources == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    # The exporter, PgBouncer's exporter and Flower (its /metrics is on its UI port).
    assert [p["port"] for p in policy["ingress"][1]["ports"]] == [9102, 9127, 5555]


# --- quota and disruption budgets ------------------------------------------------------------


def test_the_quota_is_twice_the_spec_with_workers_at_the_policy_maximum() -> None:
    deployment = view(
        executor=Executor.LOCAL,
        components={
            "scheduler": {"cpu": "1", "memory": "1Gi"},
            "api_server": {"cpu": "500m", "memory": "1Gi"},
            "dag_processor": {"cpu": "500m", "memory": "512Mi"},
            "triggerer": {"replicas": 0},
            "pgbouncer": {"cpu": "100m", "memory": "128Mi"},
            "statsd": {"cpu": "100m", "memory": "128Mi"},
        },
    )
    hard = by_key(render(deployment))[("ResourceQuota", "airflow")]["spec"]["hard"]

    # 1000 + 500 + 500 + 0 + (100 + 50 exporter) + 100 = 2250m; 1024+1024+512+0+(128+64)+128 Mi.
    assert hard["requests.cpu"] == hard["limits.cpu"] == "4500m"
    assert hard["requests.memory"] == hard["limits.memory"] == "5760Mi"
    assert hard["pods"] == "10"

    celery = by_key(render(view(max_workers=4)))[("ResourceQuota", "airflow")]["spec"]["hard"]
    one = by_key(render(view(max_workers=1)))[("ResourceQuota", "airflow")]["spec"]["hard"]
    assert int(celery["pods"]) - int(one["pods"]) == 2 * 3


def test_a_malformed_quantity_is_left_for_the_api_server_to_refuse() -> None:
    objects = by_key(render(view(components={"scheduler": {"cpu": "one core"}})))

    resources = container(objects[("Deployment", "scheduler")])["resources"]
    assert resources["limits"]["cpu"] == "one core"
    assert objects[("ResourceQuota", "airflow")]["spec"]["hard"]["pods"]


@pytest.mark.parametrize(
    ("components", "budgets"),
    [
        ({}, {"workers"}),
        (
            {"scheduler": {"replicas": 2}, "api_server": {"replicas": 3}},
            {"workers", "scheduler", "api-server"},
        ),
        ({"workers": {"replicas": 0}}, {"workers"}),
    ],
)
def test_disruption_budgets_exist_where_they_mean_something(
    components: dict[str, dict[str, Any]], budgets: set[str]
) -> None:
    objects = render(view(components=components))

    found = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert set(found) == budgets
    assert all(pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1} for pdb in found.values())


# --- secrets ---------------------------------------------------------------------------------


def test_generated_secrets_are_consistent_with_each_other() -> None:
    roots = manifests.generate_root_secrets(
        "etl-prod", manifests.root_secret_names(Executor.CELERY)
    )
    derived = manifests.derive_secrets(manifests.derived_secret_names(Executor.CELERY), roots)

    assert len(base64.urlsafe_b64decode(roots["airflow-fernet-key"]["fernet-key"])) == 32
    metadata = roots["airflow-metadata"]
    assert metadata["user"] == metadata["database"] == "airflow_etl_prod"
    assert metadata["connection"] == (
        f"postgresql://airflow_etl_prod:{metadata['password']}@pgbouncer:6543/airflow-metadata"
    )
    assert metadata["result-backend"] == "db+" + metadata["connection"]
    assert derived["airflow-pgbouncer-users"]["users.txt"] == (
        f'"airflow_etl_prod" "{metadata["password"]}"\n'
    )
    assert metadata["password"] in derived["airflow-pgbouncer-stats"]["connection"]
    assert derived["airflow-broker-url"]["connection"] == (
        f"redis://:{roots['airflow-redis-password']['password']}@redis:6379/0"
    )
    again = manifests.generate_root_secrets("etl-prod", ["airflow-fernet-key"])
    assert again["airflow-fernet-key"] != roots["airflow-fernet-key"]


def test_pgbouncer_ini_names_the_upstream_and_holds_no_password() -> None:
    ini = by_key(render())[("ConfigMap", "pgbouncer-config")]["data"]["pgbouncer.ini"]

    assert (
        "airflow-metadata = host=postgresql.sextant.svc port=5432 "
        "dbname=airflow_etl pool_size=10" in ini
    )
    assert "pool_mode = transaction" in ini
    assert "auth_file = /etc/pgbouncer/users.txt" in ini


# --- the template language and the in-sync check ---------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{n}}", 3),
        ("x-{{n}}-y", "x-3-y"),
        (["a", "{{items}}", "d"], ["a", "b", "c", "d"]),
        ({"{{labels}}": None, "k": "{{n}}"}, {"app": "x", "k": 3}),
        ({"deep": [{"v": "{{labels}}"}]}, {"deep": [{"v": {"app": "x"}}]}),
    ],
)
def test_fill_replaces_placeholders_after_parsing(template: Any, expected: Any) -> None:
    values = {"n": 3, "items": ["b", "c"], "labels": {"app": "x"}}
    assert manifests.fill(template, values) == expected


def test_fill_refuses_an_unknown_placeholder() -> None:
    with pytest.raises(KeyError):
        manifests.fill({"a": "{{missing}}"}, {})


def _with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"]["annotations"] = {
        manifests.APPLIED_HASH: manifests.manifest_digest(manifest)
    }
    return manifest


@pytest.mark.parametrize(
    ("live_change", "in_sync"),
    [
        (lambda o: None, True),
        # Defaults and server-side fields the manifest does not set.
        (lambda o: o["spec"].update(progressDeadlineSeconds=600), True),
        # The canonical form of a quantity.
        (lambda o: o["spec"]["resources"]["limits"].update(cpu="1"), True),
        # Zero values the server omits.
        (lambda o: o["spec"].pop("delay"), True),
        (lambda o: o["spec"].update(replicas=5), False),
        (lambda o: o["spec"]["list"].append("extra"), False),
        (lambda o: o["metadata"]["annotations"].update({manifests.APPLIED_HASH: "old"}), False),
        (lambda o: o["spec"]["resources"]["limits"].update(cpu="2"), False),
    ],
)
def test_in_sync_says_whether_an_apply_could_change_anything(
    live_change: Any, in_sync: bool
) -> None:
    manifest = _with_hash(
        {
            "kind": "X",
            "metadata": {"name": "x"},
            "spec": {
                "replicas": 1,
                "delay": 0,
                "list": ["a"],
                "resources": {"limits": {"cpu": "1000m"}},
            },
        }
    )
    live = json.loads(json.dumps(manifest))
    live["metadata"]["resourceVersion"] = "7"
    live_change(live)

    assert manifests.in_sync(live, manifest) is in_sync


# --- wiring ----------------------------------------------------------------------------------


def test_the_kubernetes_runtime_is_the_first_target_when_selected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core.settings import Runtime, Settings
    from app.provisioning.registry import build_targets

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    selected = Settings(
        _env_file=None,  # type: ignore[call-arg]
        runtime=Runtime.KUBERNETES,
        kubernetes=KubernetesSettings(kubeconfig="/etc/sextant/kubeconfig"),
    )
    unconfigured = KubernetesRuntime(KubernetesSettings())

    targets = build_targets(selected)
    others = build_targets(Settings(_env_file=None))  # type: ignore[call-arg]

    assert isinstance(targets[0], KubernetesRuntime)
    assert targets[0].name == "runtime"
    assert targets[0].configured()
    assert not unconfigured.configured()
    assert not any(isinstance(t, KubernetesRuntime) for t in others)
    assert targets[0].metrics_address("etl") is None
