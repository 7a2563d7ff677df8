"""Airflow's logging settings rendered per deployment (app/logs/airflow_config.py)."""

from __future__ import annotations

import configparser

import pytest

from app.logs import airflow_config
from app.logs.airflow_config import CREDENTIALS_ENV, END_OF_LOG_MARK
from app.observability import fluentd

URL = "http://elasticsearch.logging.svc:9200"


def test_airflow_reads_only_the_deployments_own_data_stream() -> None:
    rendered = airflow_config.render("etl", "3.3.2", elasticsearch_url=URL)
    assert rendered.value("elasticsearch", "index_patterns") == "airflow-logs-etl"
    assert rendered.value("elasticsearch", "index_patterns_callable") == ""
    assert "_all" not in rendered.cfg()
    assert "*" not in rendered.cfg()


def test_a_deployment_sharing_a_prefix_gets_a_pattern_that_excludes_the_other() -> None:
    etl = airflow_config.render("etl", "3.3.2", elasticsearch_url=URL)
    etl_prod = airflow_config.render("etl-prod", "3.3.2", elasticsearch_url=URL)
    assert etl.value("elasticsearch", "index_patterns") != etl_prod.value(
        "elasticsearch", "index_patterns"
    )
    assert etl.value("elasticsearch", "target_index") == "airflow-logs-etl"


def test_airflow_writes_json_to_stdout_for_the_shipper_and_never_indexes_itself() -> None:
    rendered = airflow_config.render("etl", "3.3.2", elasticsearch_url=URL)
    expected = {
        ("logging", "remote_logging"): "True",
        ("logging", "remote_base_log_folder"): "",
        ("elasticsearch", "json_format"): "True",
        ("elasticsearch", "write_stdout"): "True",
        ("elasticsearch", "write_to_es"): "False",
        ("elasticsearch", "offset_field"): "offset",
        ("elasticsearch", "host_field"): "host",
        ("elasticsearch", "end_of_log_mark"): END_OF_LOG_MARK,
        ("elasticsearch", "host"): URL,
    }
    for (section, key), value in expected.items():
        assert rendered.value(section, key) == value, f"[{section}] {key}"


def test_the_log_id_template_is_the_one_fluentd_builds_log_ids_with() -> None:
    rendered = airflow_config.render("etl", "3.3.2", elasticsearch_url=URL)
    assert rendered.value("elasticsearch", "log_id_template") == fluentd.LOG_ID_TEMPLATE
    assert fluentd.LOG_ID_TEMPLATE == "{dag_id}-{task_id}-{run_id}-{map_index}-{try_number}"


@pytest.mark.parametrize(
    ("version", "json_logs"),
    [("3.0.6", None), ("3.1.3", None), ("3.2.0", "True"), ("3.3.2", "True"), ("2.10.5", None)],
)
def test_component_logs_are_json_where_airflow_can_write_them(
    version: str, json_logs: str | None
) -> None:
    rendered = airflow_config.render("etl", version, elasticsearch_url=URL)
    assert rendered.value("logging", "json_logs") == json_logs


def test_environment_variables_use_airflows_naming() -> None:
    env = airflow_config.render("etl", "3.3.2", elasticsearch_url=URL).env()
    assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
    assert env["AIRFLOW__ELASTICSEARCH__INDEX_PATTERNS"] == "airflow-logs-etl"
    assert env["AIRFLOW__ELASTICSEARCH_CONFIGS__MAX_RETRIES"] == "3"
    assert CREDENTIALS_ENV not in env


def test_cfg_text_parses_back_to_the_same_options_as_airflows_configparser_would() -> None:
    rendered = airflow_config.render(
        "etl", "3.3.2", elasticsearch_url="https://es.example.com:9243/pre%2Ffix/"
    )
    parser = configparser.ConfigParser()  # Airflow's parser interpolates like this one
    parser.read_string(rendered.cfg())
    for option in rendered.options:
        assert parser.get(option.section, option.key) == option.value
    assert parser.get("elasticsearch", "host") == "https://es.example.com:9243/pre%2Ffix"


@pytest.mark.parametrize(
    "url",
    ["http://elastic:s3cret@es:9200", "ftp://es:9200", "es:9200", "http://es:9200\nx = 1"],
)
def test_unusable_urls_are_refused_without_repeating_a_password(url: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        airflow_config.render("etl", "3.3.2", elasticsearch_url=url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("name", "version"), [("Etl", "3.3.2"), ("etl_1", "3.3.2"), ("etl", "x")])
def test_bad_names_and_versions_are_refused(name: str, version: str) -> None:
    with pytest.raises(ValueError, match="not"):
        airflow_config.render(name, version, elasticsearch_url=URL)
