"""The Prometheus integration against a real Prometheus: answers, and failures mapped to errors."""

from __future__ import annotations

import pytest

from app.integrations.errors import PermanentError, TransientError
from app.integrations.prometheus import PrometheusClient, Sample
from tests.harness.components import PrometheusServer


@pytest.fixture
def client(prometheus_server: PrometheusServer) -> PrometheusClient:
    return PrometheusClient(prometheus_server.url, timeout=5)


async def test_instant_queries_return_labelled_samples(client: PrometheusClient) -> None:
    (sample,) = await client.query('label_replace(vector(42), "deployment", "etl-prod", "", "")')
    assert sample.labels == {"deployment": "etl-prod"}
    assert sample.value == 42
    assert await client.query("absent(nothing_here) unless vector(1)") == []


async def test_a_scalar_answer_is_one_unlabelled_sample(client: PrometheusClient) -> None:
    assert await client.query("scalar(vector(3))") == [Sample({}, 3.0)]


async def test_a_refused_query_is_permanent_with_prometheus_reason(
    client: PrometheusClient,
) -> None:
    with pytest.raises(PermanentError, match=r"prometheus: HTTP 400: .*parse error"):
        await client.query("sum(")


async def test_an_unreachable_prometheus_is_transient(
    client: PrometheusClient, prometheus_server: PrometheusServer
) -> None:
    prometheus_server.stop()
    with pytest.raises(TransientError, match="ConnectionError contacting Prometheus"):
        await client.metric_names()
    with pytest.raises(TransientError, match="ConnectionError contacting Prometheus"):
        await client.query("up")
    with pytest.raises(TransientError, match="prometheus: reload"):
        await client.reload()


async def test_a_reload_refused_by_prometheus_says_why(
    client: PrometheusClient, prometheus_server: PrometheusServer
) -> None:
    prometheus_server.config_path.write_text(
        prometheus_server.config_path.read_text() + "rule_files: [broken.yml]\n"
    )
    (prometheus_server.config_path.parent / "broken.yml").write_text(
        "groups: [{name: g, rules: [{alert: A, expr: 'sum('}]}]\n"
    )
    with pytest.raises(TransientError, match=r"HTTP 500: reload: failed to reload config"):
        await client.reload()
