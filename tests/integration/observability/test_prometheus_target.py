"""The "prometheus" provisioning target against a real Prometheus reading what it writes."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.settings import PrometheusSettings
from app.integrations.errors import TransientError
from app.observability.prometheus_target import (
    FLOWER_PORT_NAME,
    RELOAD_STAMP,
    SCRAPE_PORT_NAME,
    PrometheusTarget,
    file_sd_scrape_config,
    kubernetes_scrape_config,
    kubernetes_service_metadata,
)
from app.observability.rules import RULES_DIR, load_catalogue
from tests.harness.availability import ComponentUnavailable, find_binary, report_unavailable
from tests.harness.components import PrometheusServer, StatsdExporter
from tests.observability_replay import deployment_view, prometheus_config, wait_for


def api(prometheus: PrometheusServer, path: str) -> Any:
    with urllib.request.urlopen(f"{prometheus.url}{path}", timeout=10) as response:
        return json.load(response)["data"]


def reloads(prometheus: PrometheusServer) -> float:
    """When Prometheus last reloaded its configuration successfully (its own /metrics)."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(
        r"^prometheus_config_last_reload_success_timestamp_seconds (\S+)$", text, re.M
    )
    assert match
    return float(match.group(1))


def loaded_rules(prometheus: PrometheusServer) -> dict[str, dict[str, Any]]:
    groups = api(prometheus, "/api/v1/rules")["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    file_sd, rules = tmp_path / "file_sd", tmp_path / "rules"
    file_sd.mkdir()
    rules.mkdir()
    return file_sd, rules


@pytest.fixture
def prometheus(
    prometheus_factory: Callable[..., PrometheusServer], folders: tuple[Path, Path]
) -> PrometheusServer:
    file_sd, rules = folders
    return prometheus_factory(config=prometheus_config(file_sd, str(rules / "*.yml")))


def settings_for(prometheus: PrometheusServer, folders: tuple[Path, Path]) -> PrometheusSettings:
    file_sd, rules = folders
    return PrometheusSettings(url=prometheus.url, file_sd_dir=file_sd, rules_dir=rules)


async def test_file_sd_scrape_target_carries_workspace_and_deployment(
    prometheus: PrometheusServer,
    statsd_exporter: StatsdExporter,
    folders: tuple[Path, Path],
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = deployment_view(f"{statsd_exporter.host}:{statsd_exporter.web_port}")
    await target.apply(view, target.render(view))
    wait_for(
        lambda: bool(prometheus.query('up{workspace="data-eng",deployment="etl-prod"} == 1')),
        what="the file_sd target to be scraped",
    )
    (active,) = api(prometheus, "/api/v1/targets")["activeTargets"]
    assert active["labels"]["workspace"] == "data-eng"
    assert active["labels"]["deployment"] == "etl-prod"
    assert active["labels"]["instance"] == f"{statsd_exporter.host}:{statsd_exporter.web_port}"
    # Every series of the target gets the identity, e.g. the exporter's own metrics.
    assert prometheus.query('statsd_exporter_build_info{deployment="etl-prod"}')


async def test_a_celery_deployments_flower_is_scraped_with_the_same_identity(
    prometheus: PrometheusServer,
    statsd_exporter_factory: Callable[..., StatsdExporter],
    folders: tuple[Path, Path],
) -> None:
    # A second exporter stands in for Flower's /metrics (same text format, another port).
    exporter, flower = statsd_exporter_factory(), statsd_exporter_factory()
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = replace(
        deployment_view(f"{exporter.host}:{exporter.web_port}"),
        flower_address=f"{flower.host}:{flower.web_port}",
    )
    await target.apply(view, target.render(view))
    flower.send("flower_worker_online:1|g|#worker:workers-1@etl-prod")
    wait_for(
        lambda: bool(prometheus.query('flower_worker_online{deployment="etl-prod"}')),
        what="Flower's gauge with the deployment's identity",
    )
    active = api(prometheus, "/api/v1/targets")["activeTargets"]
    assert sorted(t["labels"]["instance"] for t in active) == sorted(
        [f"{exporter.host}:{exporter.web_port}", f"{flower.host}:{flower.web_port}"]
    )
    assert {(t["labels"]["workspace"], t["labels"]["deployment"]) for t in active} == {
        ("data-eng", "etl-prod")
    }
    [series] = prometheus.query('flower_worker_online{deployment="etl-prod"}')
    assert series["metric"]["worker"] == "workers-1@etl-prod"
    assert series["metric"]["workspace"] == "data-eng"
    assert series["metric"]["component"] == "flower"
    # The exporter's series carry no component label.
    assert {t["labels"].get("component") for t in active} == {None, "flower"}


async def test_first_apply_installs_rules_and_reloads_once(
    prometheus: PrometheusServer, folders: tuple[Path, Path]
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = deployment_view("127.0.0.1:9102")
    assert loaded_rules(prometheus) == {}
    applied = await target.apply(view, target.render(view))
    # The file_sd file, two rule files, one reload.
    assert applied.writes == 4
    assert applied.detail == "reloaded"
    assert sorted(p.name for p in folders[1].glob("*.yml")) == [
        "sextant-airflow.rules.yml",
        "sextant-fleet.rules.yml",
    ]
    assert set(loaded_rules(prometheus)) == set(target.rules.names())


async def test_an_unchanged_apply_writes_nothing_and_does_not_reload(
    prometheus: PrometheusServer, folders: tuple[Path, Path]
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = deployment_view("127.0.0.1:9102")
    await target.apply(view, target.render(view))
    reloaded_at = reloads(prometheus)
    files = {p: p.stat().st_mtime_ns for p in folders[0].iterdir()} | {
        p: p.stat().st_mtime_ns for p in folders[1].iterdir()
    }
    again = await target.apply(view, target.render(view))
    assert again.writes == 0
    assert reloads(prometheus) == reloaded_at
    assert {p: p.stat().st_mtime_ns for p in files} == files


async def test_a_second_deployment_shares_the_rules_without_a_reload(
    prometheus: PrometheusServer, folders: tuple[Path, Path]
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    first = deployment_view("127.0.0.1:9102")
    await target.apply(first, target.render(first))
    second = replace(first, name="ml-prod", workspace="ml", metrics_address="127.0.0.1:9103")
    applied = await target.apply(second, target.render(second))
    assert applied.writes == 1  # only its own file_sd file
    assert sorted(p.name for p in folders[0].glob("*.json")) == [
        "sextant-etl-prod.json",
        "sextant-ml-prod.json",
    ]


async def test_a_changed_catalogue_is_written_and_reloaded(
    prometheus: PrometheusServer, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    view = deployment_view("127.0.0.1:9102")
    first = PrometheusTarget(settings_for(prometheus, folders))
    await first.apply(view, first.render(view))
    # A new catalogue: the scheduler waits 90 s, and the fleet file is gone.
    changed = tmp_path / "catalogue"
    changed.mkdir()
    text = (RULES_DIR / "airflow.rules.yml").read_text()
    (changed / "airflow.rules.yml").write_text(text.replace("for: 0s\n", "for: 90s\n", 1))
    second = PrometheusTarget(settings_for(prometheus, folders), rules=load_catalogue(changed))
    applied = await second.apply(view, second.render(view))
    assert applied.writes == 3  # one rule file rewritten, one removed, one reload
    assert [p.name for p in folders[1].glob("*.yml")] == ["sextant-airflow.rules.yml"]
    rules = loaded_rules(prometheus)
    assert "AirflowManySchedulersUnhealthy" not in rules
    assert rules["AirflowSchedulerHeartbeatMissing"]["duration"] == 90


async def test_a_failed_reload_is_retried_by_the_next_apply(
    prometheus: PrometheusServer, folders: tuple[Path, Path]
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = deployment_view("127.0.0.1:9102")
    prometheus.stop()
    with pytest.raises(TransientError, match="prometheus: reload"):
        await target.apply(view, target.render(view))
    assert not (folders[1] / RELOAD_STAMP).exists()
    prometheus.start()
    # The files are in place already; the reload is still owed.
    applied = await target.apply(view, target.render(view))
    assert applied.writes == 1
    assert applied.detail == "reloaded"
    assert set(loaded_rules(prometheus)) == set(target.rules.names())


async def test_remove_deletes_only_that_deployment_s_target(
    prometheus: PrometheusServer,
    statsd_exporter_factory: Callable[..., StatsdExporter],
    folders: tuple[Path, Path],
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    exporters = [statsd_exporter_factory(), statsd_exporter_factory()]
    views = [
        replace(deployment_view(f"{e.host}:{e.web_port}"), name=name)
        for e, name in zip(exporters, ["etl-prod", "ml-prod"], strict=True)
    ]
    for view in views:
        await target.apply(view, target.render(view))
    removed = await target.remove(views[0])
    assert removed.writes == 1
    assert [p.name for p in folders[0].glob("*.json")] == ["sextant-ml-prod.json"]
    assert len(list(folders[1].glob("*.yml"))) == 2  # shared rules stay
    wait_for(
        lambda: (
            {t["labels"]["deployment"] for t in api(prometheus, "/api/v1/targets")["activeTargets"]}
            == {"ml-prod"}
        ),
        what="Prometheus to scrape the remaining deployment only",
    )
    assert (await target.remove(views[0])).writes == 0


async def test_an_address_going_away_empties_the_target_list(
    prometheus: PrometheusServer,
    statsd_exporter: StatsdExporter,
    folders: tuple[Path, Path],
) -> None:
    target = PrometheusTarget(settings_for(prometheus, folders))
    view = deployment_view(f"{statsd_exporter.host}:{statsd_exporter.web_port}")
    await target.apply(view, target.render(view))
    wait_for(lambda: bool(api(prometheus, "/api/v1/targets")["activeTargets"]), what="a target")
    gone = replace(view, metrics_address=None)
    assert (await target.apply(gone, target.render(gone))).writes == 1
    assert json.loads((folders[0] / "sextant-etl-prod.json").read_text()) == []
    wait_for(
        lambda: not api(prometheus, "/api/v1/targets")["activeTargets"],
        what="Prometheus to drop the target",
    )


def test_scrape_configs_pass_promtool_check_config(tmp_path: Path) -> None:
    try:
        promtool = find_binary("prometheus", "promtool", hint="apt-get install prometheus")
    except ComponentUnavailable as error:
        report_unavailable(error)
    # Debian's Prometheus is built without Kubernetes service discovery, so the Kubernetes
    # job's relabelling is checked on a file_sd job here (and run for real below).
    relabelling = {
        "job_name": "kubernetes",
        "file_sd_configs": [{"files": [str(tmp_path / "k8s-*.json")]}],
        "relabel_configs": kubernetes_scrape_config()["relabel_configs"],
    }
    config = {"scrape_configs": [file_sd_scrape_config(tmp_path / "file_sd", "local"), relabelling]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # An invalid relabel action fails the same check (the check can fail).
    relabelling["relabel_configs"] = [{"action": "keep-if-you-like"}]
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def test_kubernetes_relabelling_maps_service_labels_to_identity(
    prometheus_factory: Callable[..., PrometheusServer],
    statsd_exporter_factory: Callable[..., StatsdExporter],
    tmp_path: Path,
) -> None:
    # What Kubernetes SD would discover for four Service ports, given as file_sd targets with
    # the same __meta_ labels: only the annotated Services' `metrics` and Flower's `flower-ui`
    # ports are kept, and their Service labels become the target's workspace and deployment.
    exporters = [statsd_exporter_factory() for _ in range(4)]
    view = deployment_view("unused")
    metadata = kubernetes_service_metadata(view)

    def discovered(exporter: StatsdExporter, port_name: str, annotated: bool) -> dict[str, Any]:
        labels = {
            f"__meta_kubernetes_service_label_{_meta(k)}": v for k, v in metadata.labels.items()
        }
        if annotated:
            labels |= {
                f"__meta_kubernetes_service_annotation_{_meta(k)}": v
                for k, v in metadata.annotations.items()
            }
        labels["__meta_kubernetes_endpointslice_port_name"] = port_name
        return {"targets": [f"{exporter.host}:{exporter.web_port}"], "labels": labels}

    groups = [
        discovered(exporters[0], SCRAPE_PORT_NAME, annotated=True),
        discovered(exporters[1], "statsd-ingest", annotated=True),
        discovered(exporters[2], SCRAPE_PORT_NAME, annotated=False),
        discovered(exporters[3], FLOWER_PORT_NAME, annotated=True),
    ]
    (tmp_path / "k8s-services.json").write_text(json.dumps(groups))
    job = {
        "job_name": "kubernetes",
        "scrape_interval": "1s",
        "file_sd_configs": [{"files": [str(tmp_path / "k8s-*.json")]}],
        "relabel_configs": kubernetes_scrape_config()["relabel_configs"],
    }
    prometheus = prometheus_factory(config=yaml.safe_dump({"scrape_configs": [job]}))
    wait_for(lambda: len(prometheus.query("up == 1")) == 2, what="the kept targets to be scraped")
    active = api(prometheus, "/api/v1/targets")["activeTargets"]
    assert sorted(t["labels"]["instance"] for t in active) == sorted(
        f"{e.host}:{e.web_port}" for e in (exporters[0], exporters[3])
    )
    for each in active:
        assert each["labels"]["workspace"] == "data-eng"
        assert each["labels"]["deployment"] == "etl-prod"
        assert not [k for k in each["labels"] if k.startswith("sextant")]


def _meta(name: str) -> str:
    # How Kubernetes SD turns a label or annotation name into a meta label suffix.
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)
