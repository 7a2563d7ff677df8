"""The alert rules with the real promtool, and evaluated by a real Prometheus on real metrics.

`promtool check rules` and every `promtool test rules` file run here; a mutated copy of a rule
shows the tests can fail. Then Prometheus evaluates the whole catalogue over the replayed Airflow
capture: every rule evaluates without error, the rules that should be quiet are, and the one
condition the capture really has (a DAG file that does not import) is pending with the
deployment's identity.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.observability.rules import RULES_DIR, catalogue
from tests.harness.availability import ComponentUnavailable, find_binary, report_unavailable
from tests.harness.components import ComponentDirs
from tests.observability_replay import DEPLOYMENT, WORKSPACE, Replayed, replayed_capture, wait_for

TESTS_DIR = RULES_DIR / "tests"
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))


def promtool() -> Path:
    try:
        return find_binary("prometheus", "promtool", hint="apt-get install prometheus")
    except ComponentUnavailable as error:
        report_unavailable(error)


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules_accepts_the_catalogue() -> None:
    result = run_promtool("check", "rules", *sorted(RULES_DIR.glob("*.rules.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(list(RULES_DIR.glob("*.rules.yml")))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_tests_pass(test_file: Path) -> None:
    result = run_promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    # The heartbeat tests pin the 60 s threshold: a rule waiting 10 minutes must fail them.
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    text = (rules / "airflow.rules.yml").read_text()
    (rules / "airflow.rules.yml").write_text(text.replace(") > 60\n", ") > 600\n"))
    result = run_promtool("test", "rules", rules / "tests" / "heartbeats.test.yml")
    assert result.returncode != 0
    assert "AirflowSchedulerHeartbeatMissing" in result.stdout + result.stderr


def covered_cases() -> dict[str, dict[str, int]]:
    """For each alert, how many test cases expect it firing and how many expect none."""
    cases: dict[str, dict[str, int]] = {}
    for path in TEST_FILES:
        document = yaml.safe_load(path.read_text())
        for test in document["tests"]:
            for case in test.get("alert_rule_test") or []:
                counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
                counts["firing" if case.get("exp_alerts") else "quiet"] += 1
    return cases


def test_every_rule_has_firing_and_quiet_test_cases() -> None:
    cases = covered_cases()
    for name in catalogue().names():
        assert cases.get(name, {}).get("firing", 0) >= 1, f"{name}: no firing case"
        assert cases.get(name, {}).get("quiet", 0) >= 1, f"{name}: no quiet case"


def test_firing_cases_expect_routing_labels_and_every_annotation() -> None:
    rules = {rule.name: rule for rule in catalogue().rules}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test") or []:
                rule = rules[case["alertname"]]
                for alert in case.get("exp_alerts") or []:
                    labels: dict[str, Any] = alert["exp_labels"]
                    assert labels["severity"] == rule.severity.value
                    if rule.scope.value == "deployment":
                        assert {"workspace", "deployment"} <= set(labels), rule.name
                    assert set(alert["exp_annotations"]) == set(rule.annotations), rule.name


@pytest.fixture(scope="module")
def replayed(
    component_dirs: ComponentDirs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replayed]:
    """The capture replayed once, into a Prometheus evaluating the rule catalogue.

    12 times faster than recorded (about 23 s): heartbeat counters then rise for longer than
    the heartbeat rules' 10 s comparison offset plus one 10 s step, so the rules see real
    increases rather than a series too young to compare.
    """
    workdir = tmp_path_factory.mktemp("rules")
    with replayed_capture(component_dirs, workdir, speedup=12, with_rules=True) as result:
        yield result


def evaluated_rules(replayed: Replayed) -> dict[str, dict[str, Any]]:
    groups = replayed.api("/api/v1/rules?type=alert")["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


def test_prometheus_evaluates_every_rule_without_error(replayed: Replayed) -> None:
    expected = set(catalogue().names())
    wait_for(
        lambda: (
            set(evaluated_rules(replayed)) == expected
            and all(
                r.get("lastEvaluation", "").startswith("2")
                for r in evaluated_rules(replayed).values()
            )
        ),
        what="Prometheus to evaluate every rule",
    )
    for name, rule in evaluated_rules(replayed).items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def test_the_capture_s_import_error_is_pending_for_the_deployment(replayed: Replayed) -> None:
    # broken_syntax.py fails to parse in the capture; `for: 5m` keeps it pending here.
    wait_for(
        lambda: evaluated_rules(replayed)["AirflowDagImportErrors"]["state"] == "pending",
        what="AirflowDagImportErrors to be pending",
    )
    (alert,) = evaluated_rules(replayed)["AirflowDagImportErrors"]["alerts"]
    assert alert["labels"]["deployment"] == DEPLOYMENT
    assert alert["labels"]["workspace"] == WORKSPACE
    assert alert["labels"]["severity"] == "warning"
    assert "1 DAG file(s) of deployment etl-prod" in alert["annotations"]["description"]


def test_a_healthy_deployment_raises_nothing_else(replayed: Replayed) -> None:
    rules = evaluated_rules(replayed)
    active = {name for name, rule in rules.items() if rule["state"] != "inactive"}
    assert active <= {"AirflowDagImportErrors"}


def measure_values(replayed: Replayed, name: str) -> list[float]:
    rule = catalogue().get(name)
    assert rule.measure is not None
    result = replayed.query(rule.measure)
    for item in result:
        assert item["metric"]["deployment"] == DEPLOYMENT, name
    return [float(item["value"][1]) for item in result]


def test_heartbeat_measures_are_seconds_since_the_last_increase(replayed: Replayed) -> None:
    for component in ("scheduler", "dag_processor", "triggerer"):
        metric = f"airflow_{component}_heartbeat"
        # The measure's first branch found real increases (not only "watched for N seconds").
        assert replayed.query(
            f"max_over_time(timestamp({metric} > {metric} offset 10s)[30m:10s])"
        ), metric
        name = {
            "scheduler": "AirflowSchedulerHeartbeatMissing",
            "dag_processor": "AirflowDagProcessorHeartbeatMissing",
            "triggerer": "AirflowTriggererHeartbeatMissing",
        }[component]
        (seconds,) = measure_values(replayed, name)
        assert 0 <= seconds < 60, (name, seconds)


def test_capacity_and_import_measures_read_the_capture(replayed: Replayed) -> None:
    assert measure_values(replayed, "AirflowDagImportErrors") == [1.0]
    (capacity_left,) = measure_values(replayed, "AirflowTriggererCapacityLow")
    assert capacity_left == pytest.approx(0.999)
    (lag,) = measure_values(replayed, "AirflowSchedulerLagHigh")
    assert lag != lag or 0 <= lag < 120  # NaN once no run started in the window
