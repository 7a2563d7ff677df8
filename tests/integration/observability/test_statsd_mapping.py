"""The StatsD mapping against the real statsd_exporter and a real Airflow 3.3.2's traffic.

`--check-config` validates the file; the replay sends the whole recorded capture through an
exporter running our mapping into a Prometheus that finds the exporter through the file_sd file
`PrometheusTarget` writes, and checks the series Sextant's rules and dashboards rely on.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.observability.statsd import MAPPING_PATH, mapping_text
from tests.harness.availability import ComponentUnavailable, find_binary, report_unavailable
from tests.harness.components import ComponentDirs, StatsdExporter
from tests.observability_replay import (
    DEPLOYMENT,
    WORKSPACE,
    Replayed,
    exporter_counter,
    read_capture,
    replay,
    replayed_capture,
    series_labels,
    wait_for,
)

IDENTITY = {"workspace": WORKSPACE, "deployment": DEPLOYMENT}


def statsd_exporter_binary() -> Path:
    try:
        return find_binary(
            "statsd_exporter", "statsd_exporter", hint="run scripts/install-test-deps.sh"
        )
    except ComponentUnavailable as error:
        report_unavailable(error)


def test_mapping_passes_statsd_exporter_check_config() -> None:
    result = subprocess.run(
        [
            str(statsd_exporter_binary()),
            "--check-config",
            f"--statsd.mapping-config={MAPPING_PATH}",
            "--statsd.listen-udp=127.0.0.1:0",
            "--statsd.listen-tcp=127.0.0.1:0",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Configuration check successful" in result.stderr


def test_check_config_rejects_a_broken_mapping(tmp_path: Path) -> None:
    # Proves the check above can fail: a mapping without a name is refused.
    broken = tmp_path / "broken.yml"
    broken.write_text(mapping_text() + "  - match: airflow.extra.*\n    labels: {x: $1}\n")
    result = subprocess.run(
        [
            str(statsd_exporter_binary()),
            "--check-config",
            f"--statsd.mapping-config={broken}",
            "--statsd.listen-udp=127.0.0.1:0",
            "--statsd.listen-tcp=127.0.0.1:0",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0


@pytest.fixture(scope="module")
def replayed(
    component_dirs: ComponentDirs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replayed]:
    """The capture replayed once for the whole module."""
    with replayed_capture(component_dirs, tmp_path_factory.mktemp("replay")) as result:
        yield result


def one(replayed: Replayed, expr: str) -> list[dict[str, str]]:
    labels = list(series_labels(replayed.query(expr)))
    assert labels, f"no series for {expr}"
    return labels


def assert_identity(labels: list[dict[str, str]]) -> None:
    for series in labels:
        assert {k: series.get(k) for k in IDENTITY} == IDENTITY, series


@dataclass
class Family:
    """One metric family of an exposition: its type and the label sets of its samples."""

    type: str
    label_sets: set[tuple[str, ...]] = field(default_factory=set)


def exposition(exporter: StatsdExporter) -> dict[str, Family]:
    """The exporter's airflow_* metric families (histogram sample suffixes folded in)."""
    text = exporter.metrics()
    families: dict[str, Family] = {}
    for name, kind in re.findall(r"^# TYPE (airflow_\S+) (\S+)$", text, re.MULTILINE):
        families[name] = Family(kind)
    for row in text.splitlines():
        match = re.match(r"(airflow_[a-zA-Z0-9_:]*)(?:\{(.*)\})? ", row)
        if not match:
            continue
        name, labels_text = match.groups()
        labels = {k for k, _ in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text or "")}
        for suffix in ("_bucket", "_sum", "_count"):
            base = name.removesuffix(suffix)
            if base != name and base in families and families[base].type != "counter":
                name = base
        families[name].label_sets.add(tuple(sorted(labels - {"le"})))
    return families


def test_every_line_is_received_and_the_scrape_never_fails(replayed: Replayed) -> None:
    assert exporter_counter(replayed.exporter, "statsd_exporter_lines_total") == replayed.lines_sent
    # A failed /metrics (e.g. two help texts for one name) would show as a 0 here.
    assert replayed.query(f'min_over_time(up{{deployment="{DEPLOYMENT}"}}[1h]) == 1')


def test_every_metric_name_has_exactly_one_label_set(replayed: Replayed) -> None:
    # Bare StatsD names next to their dotted forms (pool.open_slots and
    # pool.open_slots.default_pool) would give one name two label sets: double counting.
    families = exposition(replayed.exporter)
    assert len(families) > 50
    mixed = {name: f.label_sets for name, f in families.items() if len(f.label_sets) > 1}
    assert mixed == {}


def test_heartbeats_of_all_three_components_carry_the_deployment(replayed: Replayed) -> None:
    for component in ("scheduler", "dag_processor", "triggerer"):
        labels = one(replayed, f"airflow_{component}_heartbeat")
        assert len(labels) == 1
        assert_identity(labels)
        assert labels[0]["type"] == "counter"
        # The counter rose while the capture was replayed (rate()-based rules can evaluate).
        assert replayed.query(f"increase(airflow_{component}_heartbeat[1m]) > 0")


def test_executor_gauges_are_one_series_without_suffix_duplicates(replayed: Replayed) -> None:
    # Airflow 3.3.2 sends executor.open_slots and executor.open_slots.CeleryExecutor.
    for gauge in ("open_slots", "queued_tasks", "running_tasks"):
        labels = one(replayed, f"airflow_executor_{gauge}")
        assert len(labels) == 1, labels
        assert "executor" not in labels[0]
        assert_identity(labels)
    (open_slots,) = replayed.query("airflow_executor_open_slots")
    assert float(open_slots["value"][1]) == 32  # [core] parallelism with nothing running


def test_pool_gauges_are_labelled_by_pool(replayed: Replayed) -> None:
    for gauge in ("open", "queued", "running", "deferred", "scheduled"):
        pools = {s["pool"] for s in one(replayed, f"airflow_pool_{gauge}_slots")}
        assert pools == {"default_pool", "sextant_small"}, gauge
    (default_pool,) = replayed.query('airflow_pool_open_slots{pool="default_pool"}')
    assert default_pool["metric"]["deployment"] == DEPLOYMENT
    assert {s["pool"] for s in one(replayed, "airflow_pool_starving_tasks")} >= {"default_pool"}
    # The chart's dead pool.used_slots mapping is gone, and no pool name leaks into a name.
    names = replayed.api("/api/v1/label/__name__/values")
    assert not [n for n in names if n.startswith("airflow_pool_") and n.endswith("_pool")]
    assert "airflow_pool_used_slots" not in names


def test_task_instance_finishes_carry_dag_task_and_state(replayed: Replayed) -> None:
    finishes = one(replayed, "airflow_ti_finish")
    assert_identity(finishes)
    assert {"dag_id", "task_id", "state"} <= set(finishes[0])
    states = {(s["dag_id"], s["task_id"], s["state"]) for s in finishes}
    assert ("sextant_failing", "boom", "failed") in states
    assert ("sextant_failing", "ok", "success") in states
    assert ("sextant_deferrable", "wait_deferred", "deferred") in states
    starts = one(replayed, "airflow_ti_start")
    assert {"dag_id", "task_id"} <= set(starts[0])
    for counter in ("airflow_ti_failures", "airflow_ti_successes"):
        assert_identity(one(replayed, counter))


def test_operator_outcomes_carry_the_operator(replayed: Replayed) -> None:
    failures = one(replayed, "airflow_operator_failures")
    assert {s["operator"] for s in failures} == {"PythonOperator"}
    successes = {s["operator"] for s in one(replayed, "airflow_operator_successes")}
    assert {"BashOperator", "PythonOperator"} <= successes


def histogram_bounds(replayed: Replayed, metric: str) -> set[str]:
    return {s["le"] for s in one(replayed, f"{metric}_bucket")}


def test_schedule_delay_is_a_histogram_with_a_bucket_at_the_lag_threshold(
    replayed: Replayed,
) -> None:
    buckets = one(replayed, "airflow_dagrun_schedule_delay_bucket")
    assert_identity(buckets)
    assert {s["dag_id"] for s in buckets} == {"sextant_every_minute", "sextant_deferrable"}
    # AirflowSchedulerLagHigh compares the p95 with 120 s.
    assert {"60", "120", "300", "+Inf"} <= histogram_bounds(
        replayed, "airflow_dagrun_schedule_delay"
    )
    p95 = replayed.query(
        "histogram_quantile(0.95, sum by (deployment, le) "
        "(rate(airflow_dagrun_schedule_delay_bucket[5m])))"
    )
    assert p95
    assert p95[0]["metric"]["deployment"] == DEPLOYMENT


def test_timers_become_histograms_in_seconds(replayed: Replayed) -> None:
    expected: dict[str, set[str]] = {
        "airflow_dagrun_first_task_scheduling_delay": {"dag_id"},
        "airflow_dagrun_first_task_start_delay": set(),
        "airflow_dagrun_dependency_check": {"dag_id"},
        "airflow_dagrun_duration": {"dag_id"},
        "airflow_dagrun_failed": {"dag_id"},
        "airflow_task_duration": {"dag_id", "task_id"},
        "airflow_task_scheduled_duration": {"dag_id", "task_id"},
        "airflow_dag_processing_last_duration": {"bundle", "dag_file"},
        "airflow_scheduler_scheduler_loop_duration": set(),
        "airflow_scheduler_critical_section_duration": set(),
    }
    for metric, labels in expected.items():
        buckets = one(replayed, f"{metric}_bucket")
        generic = {"__name__", "le", "instance", "job", "workspace", "deployment"}
        assert set(buckets[0]) - generic == labels, metric
    # Milliseconds were converted: the failing DAG's runs took about half a minute, not 30000.
    (failed,) = replayed.query("airflow_dagrun_failed_sum / airflow_dagrun_failed_count")
    assert 1 < float(failed["value"][1]) < 120
    files = {s["dag_file"] for s in one(replayed, "airflow_dag_processing_last_duration_count")}
    assert "broken_syntax" in files


def test_dependency_check_is_mapped_per_dag(replayed: Replayed) -> None:
    # The chart's `dagrun.dependency-check.*.*` matched nothing for dag_ids without dots.
    dags = {s["dag_id"] for s in one(replayed, "airflow_dagrun_dependency_check_count")}
    assert {"sextant_parallel", "sextant_failing"} <= dags


def test_triggerer_capacity_and_import_errors(replayed: Replayed) -> None:
    (capacity,) = replayed.query("airflow_triggerer_capacity_left")
    assert capacity["metric"]["hostname"]  # the triggerer's host, whatever machine recorded it
    assert float(capacity["value"][1]) == 999
    assert (
        one(replayed, "airflow_triggers_running")[0]["hostname"] == capacity["metric"]["hostname"]
    )
    (errors,) = replayed.query("airflow_dag_processing_import_errors")
    assert float(errors["value"][1]) == 1  # broken_syntax.py
    assert_identity([errors["metric"]])


def test_task_instance_state_gauges_carry_queue_dag_and_task(replayed: Replayed) -> None:
    for state in ("running", "queued", "scheduled", "deferred"):
        labels = one(replayed, f"airflow_ti_{state}")
        assert {"queue", "dag_id", "task_id"} <= set(labels[0]), state
        assert {s["queue"] for s in labels} == {"default"}


def test_every_gauge_expires_and_no_counter_does(
    statsd_exporter_factory: Callable[..., StatsdExporter], tmp_path: Path
) -> None:
    # The mapping with every TTL cut to 1 s, fed every gauge and counter of the capture: after
    # the TTL no gauge is left (a dead component's gauges disappear), every counter is (a
    # frozen heartbeat counter is what the heartbeat rules detect).
    fast = tmp_path / "mappings.yml"
    fast.write_text(re.sub(r"(?m)^(\s+ttl:) (?!0$)\S+$", r"\1 1s", mapping_text()))
    assert "ttl: 1m" not in fast.read_text()
    exporter = statsd_exporter_factory(mapping_path=fast)
    lines = [item for item in read_capture() if item.line.split("|")[1] in ("g", "c")]
    replay(exporter, lines, speedup=None)
    wait_for(
        lambda: exporter_counter(exporter, "statsd_exporter_lines_total") >= len(lines),
        what="every line",
    )
    before = exposition(exporter)
    gauges = {name for name, family in before.items() if family.type == "gauge"}
    counters = {name for name, family in before.items() if family.type == "counter"}
    assert {
        "airflow_pool_open_slots",
        "airflow_executor_open_slots",
        "airflow_ti_running",
    } <= gauges
    assert {"airflow_scheduler_heartbeat", "airflow_ti_finish"} <= counters
    time.sleep(2.5)
    after = exposition(exporter)
    left = {name for name in gauges if after.get(name) and after[name].label_sets}
    assert left == set()
    assert counters <= {name for name, family in after.items() if family.label_sets}
