"""The Dockerfile's structure. No Docker engine (nor hadolint) runs on our machines, so the image
is never built here: these checks keep what matters for running it safely from regressing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY|PRIVATE_KEY)", re.IGNORECASE)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_every_stage_is_based_on_python_3_11_slim_and_uv_is_pinned() -> None:
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert bases == ["python:3.11-slim", "python:3.11-slim"]
    copies = [args for keyword, args in instructions() if keyword == "COPY"]
    uv = [c for c in copies if "astral-sh/uv" in c]
    assert uv
    assert re.search(r"astral-sh/uv:\d+\.\d+\.\d+ ", uv[0])


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    # Nothing after USER switches back.
    after = final_stage()[[k for k, _ in final_stage()].index("USER") :]
    assert all(keyword != "USER" or args == users[-1] for keyword, args in after)


def test_no_credential_is_baked_into_env_or_arg() -> None:
    for keyword, args in instructions():
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], (keyword, args)


def test_the_image_has_a_healthcheck_on_healthz_and_serves_on_8080() -> None:
    final = dict(final_stage())
    assert "/healthz" in final["HEALTHCHECK"]
    assert final["EXPOSE"] == "8080"
    assert final["ENTRYPOINT"] == '["sextant"]'
    assert "serve" in final["CMD"]


def test_the_dependencies_come_from_the_lock_file_without_dev_tools() -> None:
    runs = [args for keyword, args in instructions() if keyword == "RUN" and "uv sync" in args]
    assert runs
    assert all("--frozen" in r and "--no-dev" in r for r in runs)


@pytest.mark.parametrize("entry", [".env", ".git", ".venv", "tests", "*.db"])
def test_the_build_context_leaves_out_credentials_and_local_state(entry: str) -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert entry in ignored


def test_the_artifacts_sextant_reads_at_run_time_are_copied() -> None:
    copied = " ".join(args for keyword, args in instructions() if keyword == "COPY")
    for folder in ("app", "alert_rules", "dashboards", "deploy", "fluentd"):
        assert f"{folder} ./{folder}" in copied
