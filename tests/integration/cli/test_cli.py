"""The `sextant` command line against real databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.components import PostgresServer


def sextant(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, with only the database configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEXTANT_")}
    env["SEXTANT_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_tokens_create_prints_the_token_alone_on_the_last_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sextant.db"
    result = sextant("tokens", "create", "--role", "system-admin", database_url=url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("sxt_")
    assert " " not in last_line

    listed = sextant("tokens", "list", database_url=url, cwd=tmp_path)
    token_id = last_line.split("_")[1]
    assert token_id in listed.stdout
    assert last_line not in listed.stdout

    revoked = sextant("tokens", "revoke", token_id, database_url=url, cwd=tmp_path)
    assert revoked.returncode == 0
    assert "yes" in sextant("tokens", "list", database_url=url, cwd=tmp_path).stdout


def test_tokens_create_for_an_unknown_workspace_fails_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sextant.db"
    result = sextant(
        "tokens", "create", "--role", "workspace-admin", "--workspace", "nope",
        database_url=url, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "workspace 'nope' not found" in result.stderr


def test_unmigrated_postgresql_is_refused_with_what_to_run(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("sextant_cli_fresh")

    refused = sextant("serve", "--port", "1", database_url=url, cwd=tmp_path)
    assert refused.returncode == 1
    assert "run `sextant db upgrade`" in refused.stderr

    upgraded = sextant("db", "upgrade", database_url=url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    created = sextant("tokens", "create", "--role", "system-admin", database_url=url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr


@pytest.mark.parametrize("role", ["owner", "SYSTEM-ADMIN"])
def test_unknown_role_is_refused(tmp_path: Path, role: str) -> None:
    url = f"sqlite:///{tmp_path}/sextant.db"
    result = sextant("tokens", "create", "--role", role, database_url=url, cwd=tmp_path)
    assert result.returncode == 2
    assert "--role" in result.stderr


def test_render_writes_the_shared_artifacts_of_an_empty_installation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sextant.db"
    result = sextant("render", "--out", str(tmp_path / "out"), database_url=url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "statsd" / "mappings.yml").read_text().startswith("#")
    assert "webhook" in (tmp_path / "out" / "alertmanager" / "alertmanager.yml").read_text()
