"""The PostgreSQL server the local runtime owns: one cluster, one database per deployment.

Every local deployment gets its own database and role (with its own password) in one cluster
that Sextant initialises and runs from `<state_dir>/_postgres/`; Airflow reaches it through the
deployment's own PgBouncer. The cluster listens on 127.0.0.1 with password (SCRAM) logins only;
Sextant administers it as `postgres` over the Unix socket in `_postgres/run/`, which only the
local superuser account can use without a password (`--auth-local=trust` on a socket folder
only its owner can reach).

PostgreSQL refuses to run as root: when Sextant runs as root, the cluster runs as the `postgres`
account (the Debian package creates it) and its folders belong to it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import stat
import subprocess
from pathlib import Path

from app.integrations.errors import PermanentError, TransientError
from app.runtime.local_supervisor import ProcessSpec, Readiness, ReadyKind

UPSTREAM = "local postgresql"
GROUP = "_postgres"
UNIT = "postgresql"
ACCOUNT = "postgres"
READY_LINE = "database system is ready to accept connections"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Unix socket paths are limited to 107 bytes.
_SOCKET_PATH_MAX = 100


def run_as() -> str | None:
    """The account PostgreSQL and PgBouncer run as: `postgres` under root, else ourselves."""
    return ACCOUNT if os.geteuid() == 0 else None


def chown_to_service(path: Path) -> None:
    """Give `path` to the account PostgreSQL/PgBouncer run as (only matters under root)."""
    account = run_as()
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def unreachable_ancestor(path: Path) -> Path | None:
    """The first folder above `path` that the `postgres` account cannot traverse, if any."""
    if run_as() is None:
        return None
    entry = pwd.getpwnam(ACCOUNT)
    for folder in reversed(path.resolve().parents):
        info = folder.stat()
        if info.st_uid == entry.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == entry.pw_gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            return folder
    return None


def quote_literal(value: str) -> str:
    """An SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres:
    """Initialise, describe (as a supervised unit) and administer the shared cluster."""

    def __init__(self, state_dir: Path, bin_dir: Path, port: int) -> None:
        self.home = state_dir / GROUP
        self.data = self.home / "data"
        self.socket_dir = self.home / "run"
        self.run_dir = self.home / "pids"
        self.log_path = state_dir / GROUP / "postgresql.log"
        self.bin_dir = bin_dir
        self.port = port

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def initialise(self) -> None:
        """Create the cluster with initdb (once); PermanentError with initdb's words if it fails."""
        if self.initialised():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        blocked = unreachable_ancestor(self.home)
        if blocked is not None:
            raise PermanentError(
                UPSTREAM,
                f"PostgreSQL runs as the `{ACCOUNT}` account, which cannot reach {self.home} "
                f"({blocked} is closed to it); set SEXTANT_LOCAL_STATE_DIR to a folder it can "
                "reach, e.g. /var/lib/sextant",
            )
        if len(str(self.socket_dir)) + 16 > _SOCKET_PATH_MAX:
            raise PermanentError(
                UPSTREAM,
                f"the state dir {self.home.parent} is too long for PostgreSQL's Unix socket "
                "path (about 80 characters at most); choose a shorter SEXTANT_LOCAL_STATE_DIR",
            )
        for folder in (self.home, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            chown_to_service(folder)
        # Only the cluster's account may use the password-less socket.
        os.chmod(self.socket_dir, 0o700)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        result = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise PermanentError(
                UPSTREAM, f"initdb failed: {result.stderr.strip() or result.stdout}"
            )

    def spec(self) -> ProcessSpec:
        """The server as a supervised unit."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "300",
            "shared_buffers": "64MB",
            # Trial data on one machine: a crash may lose the last commits, not the cluster.
            "synchronous_commit": "off",
            "logging_collector": "off",
        }
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return ProcessSpec(
            name=UNIT,
            component=UNIT,
            argv=tuple(argv),
            log_path=str(self.log_path),
            readiness=Readiness(ReadyKind.LOG, pattern=READY_LINE),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PGDATA": str(self.data)},
            cwd=str(self.home),
            run_as=run_as(),
            # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
            stop_signal=int(signal.SIGINT),
            stop_grace=30.0,
            title=f"PostgreSQL on 127.0.0.1:{self.port}",
        )

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        account = run_as()
        entry = pwd.getpwnam(account) if account else None
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(self.home),
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=[] if entry else None,
            check=False,
        )

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the socket; TransientError with PostgreSQL's words."""
        result = self._run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-c",
                sql,
            ],
            timeout=60,
        )
        if result.returncode != 0:
            raise TransientError(UPSTREAM, f"psql: {result.stderr.strip() or result.stdout}")
        return result.stdout.strip()

    async def ensure_database(self, name: str, password: str) -> bool:
        """Create the role and database `name` (the role owns it) unless they exist.

        The password is set every time, so a lost secrets file heals. True if created.
        """
        _check_identifier(name)
        role_exists = await asyncio.to_thread(
            self.psql, f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(name)}"
        )
        verb = "ALTER" if role_exists == "1" else "CREATE"
        await asyncio.to_thread(
            self.psql, f'{verb} ROLE "{name}" LOGIN PASSWORD {quote_literal(password)}'
        )
        db_exists = await asyncio.to_thread(
            self.psql, f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"
        )
        if db_exists == "1":
            return False
        await asyncio.to_thread(self.psql, f'CREATE DATABASE "{name}" OWNER "{name}"')
        return True

    async def drop_database(self, name: str) -> bool:
        """Drop database and role `name` (disconnecting its clients); True if it existed."""
        _check_identifier(name)
        existed = await asyncio.to_thread(
            self.psql, f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"
        )
        await asyncio.to_thread(self.psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await asyncio.to_thread(self.psql, f'DROP ROLE IF EXISTS "{name}"')
        return existed == "1"


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe PostgreSQL identifier: {name!r}")
