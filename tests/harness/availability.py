"""Find the components' binaries, and decide what a missing one means for a test.

A developer without, say, Elasticsearch installed still gets a useful test run: tests that need
it are skipped, with the reason and the fix. CI sets SEXTANT_REQUIRE_REAL=1 so that a missing
component fails instead of silently shrinking the suite. The search order matches what
scripts/install-test-deps.sh installs: Debian paths, then PATH, then the tools dir.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SBIN_DIR = Path("/usr/sbin")
INSTALL_HINT = "run scripts/install-test-deps.sh"


class ComponentUnavailable(Exception):
    """A component cannot be run on this machine; `reason` says what to install."""

    def __init__(self, component: str, reason: str) -> None:
        super().__init__(f"{component} not available: {reason}")
        self.component = component
        self.reason = reason


def tools_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder where install-test-deps.sh puts what does not come from apt."""
    if environ.get("SEXTANT_TOOLS_DIR"):
        return Path(environ["SEXTANT_TOOLS_DIR"])
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sextant"


def find_binary(
    component: str, name: str, *, hint: str, preferred_dirs: Sequence[Path] = ()
) -> Path:
    """Find `name` in `preferred_dirs`, PATH, /usr/sbin, the tools dir; or ComponentUnavailable."""
    tools_bin = tools_dir() / "bin"
    for directory in preferred_dirs:
        if os.access(directory / name, os.X_OK):
            return directory / name
    found = shutil.which(name)
    if found:
        return Path(found)
    # /usr/sbin (pgbouncer) is often missing from a non-root user's PATH.
    for directory in (SBIN_DIR, tools_bin):
        if os.access(directory / name, os.X_OK):
            return directory / name
    searched = ", ".join(str(d) for d in [*preferred_dirs, Path("$PATH"), SBIN_DIR, tools_bin])
    raise ComponentUnavailable(component, f"`{name}` not found in {searched}; {hint}")


def require_real(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether SEXTANT_REQUIRE_REAL asks for a missing component to fail the test."""
    return environ.get("SEXTANT_REQUIRE_REAL", "").strip().lower() in {"1", "true", "yes"}


def report_unavailable(
    error: ComponentUnavailable, environ: Mapping[str, str] = os.environ
) -> NoReturn:
    """Skip the test for a missing component, or fail it under SEXTANT_REQUIRE_REAL=1."""
    if require_real(environ):
        pytest.fail(f"{error} (SEXTANT_REQUIRE_REAL=1 forbids skipping)", pytrace=False)
    pytest.skip(str(error))
