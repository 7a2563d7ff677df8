"""Rendering of Prometheus scrape targets and rule files, and their atomic writes."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from app.core.settings import PrometheusSettings
from app.observability.prometheus_target import (
    PrometheusTarget,
    file_sd_scrape_config,
    kubernetes_scrape_config,
    kubernetes_service_metadata,
    render_file_sd,
    sync_rule_files,
    write_if_changed,
)
from app.observability.rules import RULES_DIR
from app.observability.statsd import MAPPING_PATH, exporter_args, mapping_artifact, mapping_text
from app.provisioning.targets import DeploymentView

VIEW = DeploymentView(
    name="etl-prod",
    workspace="data-eng",
    executor="CeleryExecutor",
    airflow_version="3.3.2",
    components={},
    generation=3,
    metrics_address="10.0.0.7:9102",
)


def test_file_sd_names_the_exporter_with_workspace_and_deployment() -> None:
    assert json.loads(render_file_sd(VIEW)) == [
        {
            "targets": ["10.0.0.7:9102"],
            "labels": {"workspace": "data-eng", "deployment": "etl-prod"},
        }
    ]


def test_file_sd_is_an_empty_list_while_the_address_is_unknown() -> None:
    assert json.loads(render_file_sd(replace(VIEW, metrics_address=None))) == []


def test_file_sd_adds_a_celery_deployments_flower_with_the_same_identity() -> None:
    with_flower = replace(VIEW, flower_address="10.0.0.7:5555")
    assert json.loads(render_file_sd(with_flower)) == [
        {
            "targets": ["10.0.0.7:9102"],
            "labels": {"workspace": "data-eng", "deployment": "etl-prod"},
        },
        {
            "targets": ["10.0.0.7:5555"],
            "labels": {"workspace": "data-eng", "deployment": "etl-prod", "component": "flower"},
        },
    ]
    # Flower alone is still scraped while the exporter's address is unknown.
    alone = json.loads(render_file_sd(replace(with_flower, metrics_address=None)))
    assert [group["targets"] for group in alone] == [["10.0.0.7:5555"]]


def test_file_sd_never_lists_flower_for_a_local_executor_deployment() -> None:
    local = replace(VIEW, executor="LocalExecutor", flower_address="10.0.0.7:5555")
    assert [group["targets"] for group in json.loads(render_file_sd(local))] == [["10.0.0.7:9102"]]


def test_rendering_is_deterministic_and_names_files_per_deployment() -> None:
    target = PrometheusTarget(PrometheusSettings())
    first = target.render(VIEW)
    assert first == target.render(replace(VIEW, generation=4))
    paths = [artifact.path for artifact in first]
    assert paths == [
        "prometheus/file_sd/sextant-etl-prod.json",
        "prometheus/rules/sextant-airflow.rules.yml",
        "prometheus/rules/sextant-fleet.rules.yml",
    ]
    rendered = {artifact.path: artifact.content for artifact in first}
    for path in RULES_DIR.glob("*.rules.yml"):
        assert rendered[f"prometheus/rules/sextant-{path.name}"] == path.read_text()


def test_configured_only_with_a_file_sd_folder(tmp_path: Path) -> None:
    assert not PrometheusTarget(PrometheusSettings()).configured()
    assert not PrometheusTarget(PrometheusSettings(rules_dir=tmp_path)).configured()
    assert PrometheusTarget(PrometheusSettings(file_sd_dir=tmp_path)).configured()


def test_write_if_changed_replaces_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "sextant-etl-prod.json"
    assert write_if_changed(path, "[]\n")
    inode = path.stat().st_ino
    assert not write_if_changed(path, "[]\n")
    assert path.stat().st_ino == inode
    assert write_if_changed(path, '[{"targets": []}]\n')
    # A rename, not an in-place rewrite: readers see the old file or the new one.
    assert path.stat().st_ino != inode
    assert os.listdir(tmp_path) == ["sextant-etl-prod.json"]  # no temporary file left


def test_sync_rule_files_removes_only_sextant_files_gone_from_the_catalogue(
    tmp_path: Path,
) -> None:
    (tmp_path / "sextant-old.rules.yml").write_text("groups: []\n")
    (tmp_path / "someone-elses.yml").write_text("groups: []\n")
    assert sync_rule_files(tmp_path, {"sextant-a.rules.yml": "groups: []\n"}) == 2
    assert sorted(os.listdir(tmp_path)) == ["sextant-a.rules.yml", "someone-elses.yml"]
    assert sync_rule_files(tmp_path, {"sextant-a.rules.yml": "groups: []\n"}) == 0


def test_kubernetes_service_carries_identity_as_labels() -> None:
    metadata = kubernetes_service_metadata(VIEW)
    assert metadata.labels["sextant.io/workspace"] == "data-eng"
    assert metadata.labels["sextant.io/deployment"] == "etl-prod"
    assert metadata.annotations == {"sextant.io/scrape": "true"}


def test_kubernetes_scrape_job_maps_service_labels_without_touching_addresses() -> None:
    job = kubernetes_scrape_config()
    assert job["kubernetes_sd_configs"] == [{"role": "endpointslice"}]
    relabel = job["relabel_configs"]
    assert {
        "action": "labelmap",
        "regex": "__meta_kubernetes_service_label_sextant_io_(workspace|deployment)",
    } in relabel
    assert {
        "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
        "action": "keep",
        "regex": "metrics|flower-ui",
    } in relabel
    # Flower's target is told apart from the exporter's (AirflowMetricsAbsent leaves it out).
    assert {
        "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
        "regex": "flower-ui",
        "target_label": "component",
        "replacement": "flower",
    } in relabel
    for rule in relabel:
        assert "__address__" not in rule.get("source_labels", [])
        assert rule.get("target_label") != "__address__"


def test_file_sd_job_reads_sextant_files(tmp_path: Path) -> None:
    assert file_sd_scrape_config(tmp_path) == {
        "job_name": "sextant-airflow",
        "file_sd_configs": [{"files": [str(tmp_path / "sextant-*.json")]}],
    }


def test_statsd_mapping_is_served_as_committed() -> None:
    assert mapping_text() == MAPPING_PATH.read_text()
    assert mapping_artifact().content == mapping_text()
    assert exporter_args("/etc/statsd/mappings.yml") == [
        "--statsd.mapping-config=/etc/statsd/mappings.yml"
    ]
