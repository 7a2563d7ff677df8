"""A failed test's report carries the log tail of every component it used."""

from __future__ import annotations

import pytest


def test_failed_test_shows_the_logs_of_its_components(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.harness.plugin"]')
    pytester.makepyfile(
        """
        def test_fails(redis_server, prometheus_factory):
            prometheus_factory()
            assert False
        """
    )

    result = pytester.runpytest("-p", "no:asyncio")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*redis log (last 60 lines of *redis.log)*",
            "*Ready to accept connections*",
            "*prometheus log (last 60 lines of *prometheus.log)*",
            "*Server is ready to receive web requests*",
        ],
        consecutive=False,
    )


def test_passing_test_report_has_no_component_logs(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.harness.plugin"]')
    pytester.makepyfile("def test_passes(redis_server):\n    pass\n")

    result = pytester.runpytest("-rA", "-p", "no:asyncio")

    result.assert_outcomes(passed=1)
    assert "redis log (last" not in result.stdout.str()
