"""Dashboards: structure, identities, and the committed JSON being what the code renders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.observability import dashboards
from app.observability.dashboards import SELECTOR, SEXTANT_SELECTOR, SPECS

REPO_ROOT = Path(__file__).resolve().parents[3]
CAPTURE = REPO_ROOT / "tests/fixtures/statsd/airflow-3.3.2-celery.statsd"
MAPPING = REPO_ROOT / "deploy/statsd/mappings.yml"
UID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
SELECTOR_AFTER_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")

TEMPLATES = [dashboards.template(spec) for spec in SPECS]
INSTANCES = [dashboards.instance(spec, "data-eng") for spec in SPECS]
ALL = pytest.mark.parametrize("dashboard", TEMPLATES + INSTANCES, ids=lambda d: d["uid"])


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_there_are_the_six_dashboards_users_were_promised() -> None:
    assert [spec.key for spec in SPECS] == [
        "fleet-overview",
        "deployment-overview",
        "scheduler",
        "workers-capacity",
        "dag-processing",
        "database",
    ]


@ALL
def test_every_dashboard_has_a_current_schema_version(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39


@ALL
def test_every_dashboard_has_the_datasource_workspace_and_deployment_variables(
    dashboard: dict[str, Any],
) -> None:
    found = variables(dashboard)

    assert list(found) == ["datasource", "workspace", "deployment"]
    assert (found["datasource"]["type"], found["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    assert found["datasource"]["current"]["value"] == dashboards.DATASOURCE_UID
    for name in ("workspace", "deployment"):
        assert found[name]["type"] == "query"
        assert found[name]["query"].startswith("label_values(")
        assert found[name]["query"].endswith(f", {name})")
        assert found[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert '{workspace=~"$workspace"}' in found["deployment"]["query"]


@ALL
def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlapping(
    dashboard: dict[str, Any],
) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"]
        assert grid["x"] + grid["w"] <= 24
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, panel["title"]
        cells |= covered

    assert len(ids) == len(set(ids))


@ALL
def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


@ALL
def test_every_panel_has_a_title_a_description_a_unit_and_ordered_thresholds(
    dashboard: dict[str, Any],
) -> None:
    for panel in panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        steps = defaults["thresholds"]["steps"]
        assert panel["title"]
        assert panel["description"]
        assert panel["type"] in {"timeseries", "stat"}
        assert defaults["unit"]
        assert steps[0]["value"] is None
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values)


@ALL
def test_every_metric_is_filtered_by_workspace_and_deployment(dashboard: dict[str, Any]) -> None:
    for title, expr in dashboards.panel_queries(dashboard):
        selectors = SELECTOR_AFTER_METRIC.findall(expr)
        assert selectors, (title, expr)
        for metric, matchers in selectors:
            wanted = SEXTANT_SELECTOR if metric.startswith("sextant_") else SELECTOR
            assert matchers.startswith(wanted), (title, metric, matchers)


def test_the_workers_dashboard_shows_sextants_scaling_metrics() -> None:
    (workers,) = [d for d in TEMPLATES if d["uid"] == dashboards.template_uid("workers-capacity")]

    assert {
        "sextant_scaling_desired_workers",
        "sextant_scaling_current_workers",
        "sextant_scaling_max_workers",
        "sextant_scaling_decisions_total",
    } <= dashboards.metric_names(workers)


def test_histograms_are_read_through_their_buckets() -> None:
    for dashboard in TEMPLATES:
        for title, expr in dashboards.panel_queries(dashboard):
            if "histogram_quantile" in expr:
                assert "_bucket{" in expr, title
                assert "le)" in expr, title


def test_every_airflow_metric_is_one_the_statsd_mapping_produces_from_real_airflow_traffic() -> (
    None
):
    """Names only: `sextant lint` checks them against a Prometheus fed by the real capture."""
    mapping = yaml.safe_load(MAPPING.read_text())
    mapped = {rule["name"] for rule in mapping["mappings"] if rule.get("action") != "drop"}
    seen = {
        "airflow_" + line.split("\t", 1)[1].split(":", 1)[0].removeprefix("airflow.")
        for line in CAPTURE.read_text().splitlines()
        if "\t" in line
    }
    defaults = {re.sub(r"[^a-zA-Z0-9_]", "_", name) for name in seen}
    used = set().union(*(dashboards.metric_names(d) for d in TEMPLATES))
    airflow = {re.sub(r"_bucket$", "", name) for name in used if name.startswith("airflow_")}

    assert airflow - mapped - defaults == set()


# -- identities -------------------------------------------------------------------------------


def test_uids_are_stable_short_and_distinct_per_workspace_and_dashboard() -> None:
    uids = {
        dashboards.dashboard_uid(ws, spec.key) for ws in ("a", "b", "data-eng") for spec in SPECS
    }
    folders = {dashboards.folder_uid(ws) for ws in ("a", "b", "data-eng")}
    longest = "w" * 40

    assert len(uids) == 3 * len(SPECS)
    assert len(folders) == 3
    assert all(UID_PATTERN.match(uid) for uid in uids | folders)
    assert UID_PATTERN.match(dashboards.dashboard_uid(longest, "deployment-overview"))
    assert UID_PATTERN.match(dashboards.folder_uid(longest))
    # Changing these orphans every provisioned dashboard: it must be deliberate.
    assert dashboards.dashboard_uid("data-eng", "scheduler") == "sx-scheduler-d3aa853ffbd7"
    assert dashboards.folder_uid("data-eng") == "sx-data-eng-695045b8d5"


def test_an_instance_is_the_template_with_the_workspace_filled_in() -> None:
    for spec, template, instance in zip(SPECS, TEMPLATES, INSTANCES, strict=True):
        workspace = variables(instance)["workspace"]["current"]

        assert template["uid"] == f"sextant-{spec.key}"
        assert instance["uid"] == dashboards.dashboard_uid("data-eng", spec.key)
        assert instance["title"] == f"{spec.title} · data-eng"
        assert workspace["value"] == ["data-eng"]
        assert variables(template)["workspace"]["current"]["value"] == ["$__all"]
        assert instance["panels"] == template["panels"]
        assert "workspace-data-eng" in instance["tags"]
        assert instance["links"][0]["tags"] == ["workspace-data-eng"]


def test_rendering_is_deterministic_with_sorted_keys() -> None:
    first = dashboards.render_json(dashboards.instance(SPECS[0], "data-eng"))
    second = dashboards.render_json(dashboards.instance(SPECS[0], "data-eng"))
    parsed = json.loads(first)

    assert first == second
    assert list(parsed) == sorted(parsed)
    assert first.endswith("}\n")


def test_the_committed_dashboards_are_what_the_code_renders() -> None:
    committed = {path.name: path.read_text() for path in dashboards.DASHBOARDS_DIR.glob("*.json")}

    assert committed == dashboards.template_files(), (
        "dashboards/ is stale: run `uv run python -m app.observability.dashboards --write`"
    )


def test_write_then_check_round_trips(tmp_path: Path) -> None:
    (tmp_path / "old-dashboard.json").write_text("{}")

    dashboards.write_templates(tmp_path)

    assert dashboards.stale_templates(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(dashboards.template_files())
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "scheduler.json").write_text("{}")
    assert dashboards.main(["--check", "--out", str(tmp_path)]) == 1


def test_the_datasource_is_the_one_the_dashboards_default_to() -> None:
    datasource = dashboards.prometheus_datasource("http://prometheus:9090")

    assert (datasource["uid"], datasource["type"]) == (dashboards.DATASOURCE_UID, "prometheus")
    assert datasource["name"] == dashboards.DATASOURCE_NAME
