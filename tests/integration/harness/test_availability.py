"""A missing component skips, or fails under SEXTANT_REQUIRE_REAL=1; a failed start always fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.availability import (
    ComponentUnavailable,
    find_binary,
    report_unavailable,
    require_real,
    tools_dir,
)
from tests.harness.components import PrometheusServer
from tests.harness.plugin import ComponentFactory

MISSING = ComponentUnavailable("statsd_exporter", "`statsd_exporter` not found; install it")


@pytest.mark.parametrize("value", [None, "", "0", "no"])
def test_missing_component_skips_by_default(value: str | None) -> None:
    environ = {} if value is None else {"SEXTANT_REQUIRE_REAL": value}

    with pytest.raises(pytest.skip.Exception, match=r"statsd_exporter not available: .*install it"):
        report_unavailable(MISSING, environ)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_missing_component_fails_when_real_components_are_required(value: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"statsd_exporter not available: .*install it"):
        report_unavailable(MISSING, {"SEXTANT_REQUIRE_REAL": value})


def test_require_real_reads_the_variable() -> None:
    assert require_real({"SEXTANT_REQUIRE_REAL": "1"})
    assert not require_real({})


def test_tools_dir_prefers_sextant_tools_dir_then_xdg_cache_home() -> None:
    assert tools_dir({"SEXTANT_TOOLS_DIR": "/opt/t", "XDG_CACHE_HOME": "/c"}) == Path("/opt/t")
    assert tools_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/sextant")
    assert tools_dir({}) == Path.home() / ".cache" / "sextant"


def test_find_binary_falls_back_to_the_tools_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "bin" / "statsd_exporter"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("SEXTANT_TOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")

    assert find_binary("statsd_exporter", "statsd_exporter", hint="h") == binary


def test_find_binary_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEXTANT_TOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(ComponentUnavailable) as error:
        find_binary("redis", "redis-server", hint="apt-get install redis-server")

    assert str(error.value) == (
        f"redis not available: `redis-server` not found in $PATH, /usr/sbin, {tmp_path}/bin; "
        "apt-get install redis-server"
    )


@pytest.mark.parametrize(("require", "outcome"), [("", "skipped"), ("1", "errors")])
def test_fixture_of_a_missing_component_skips_or_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: str, outcome: str
) -> None:
    monkeypatch.setenv("SEXTANT_REQUIRE_REAL", require)
    monkeypatch.setenv("SEXTANT_TOOLS_DIR", str(pytester.path / "empty-tools"))
    monkeypatch.setenv("PATH", os.devnull)
    pytester.makeconftest('pytest_plugins = ["tests.harness.plugin"]')
    pytester.makepyfile("def test_needs_statsd(statsd_exporter):\n    pass\n")

    result = pytester.runpytest("-rs", "-p", "no:asyncio")

    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*statsd_exporter not available: `statsd_exporter` not found*"])


def test_component_that_fails_to_start_fails_even_without_require_real(
    prometheus_factory: ComponentFactory[..., PrometheusServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEXTANT_REQUIRE_REAL", raising=False)

    with pytest.raises(pytest.fail.Exception) as error:
        prometheus_factory(config="scrape_configs: not-a-list\n")

    assert "prometheus exited with status 2 before it was ready" in str(error.value)
    # The log tail names the problem.
    assert "cannot unmarshal !!str `not-a-list`" in str(error.value)
