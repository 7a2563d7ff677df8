"""The `sextant` command line: serve the API, migrate the database, manage tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import SystemClock
from app.core.database import create_engine, create_sessionmaker, session_scope
from app.core.errors import AppError
from app.core.logging import configure_logging
from app.core.migrations import DatabaseNotMigrated, upgrade
from app.core.security import Role
from app.core.settings import get_settings
from app.main import ensure_schema
from app.provisioning.registry import build_targets
from app.provisioning.render import render_files, write_files
from app.tokens.service import CLI_PRINCIPAL, tokens

cli = typer.Typer(
    help="Sextant: observability and alerting control for Airflow fleets.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
tokens_cli = typer.Typer(help="API tokens.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(tokens_cli, name="tokens")
local_cli = typer.Typer(help="The local runtime (Airflow as processes on this machine).")
cli.add_typer(local_cli, name="local")

T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8080]")] = None,
) -> None:
    """Serve the API (and run the periodic jobs)."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log)
    try:
        asyncio.run(ensure_schema(settings))
    except DatabaseNotMigrated as exc:
        raise _fail(str(exc)) from None
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.server.graceful_timeout),
        proxy_headers=False,
    )


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Migrate the database to the newest schema (or REVISION)."""
    settings = get_settings()
    upgrade(settings.database.url, revision)
    typer.echo(f"database at {revision}")


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    settings = get_settings()

    async def run() -> T:
        await ensure_schema(settings)
        engine = create_engine(settings.database)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (AppError, DatabaseNotMigrated) as exc:
        raise _fail(str(exc)) from None


@tokens_cli.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="Role of the token")],
    workspace: Annotated[str | None, typer.Option(help="Workspace it is bound to")] = None,
    deployment: Annotated[str | None, typer.Option(help="Deployment it is bound to")] = None,
    name: Annotated[str, typer.Option(help="A name to recognise it by")] = "cli",
) -> None:
    """Create a token; the token itself is printed alone on the last line."""

    async def work(session: AsyncSession) -> str:
        created = await tokens.create(
            session,
            CLI_PRINCIPAL,
            name=name,
            role=role,
            workspace_name=workspace,
            deployment_name=deployment,
        )
        bound = created.deployment or created.workspace or "the whole installation"
        typer.echo(f"created token {created.id} ({created.role.value}, {bound}); it is shown once:")
        return created.token

    typer.echo(_with_session(work))


@tokens_cli.command("list")
def tokens_list(
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's")] = None,
) -> None:
    """List tokens (never their secrets)."""
    from app.core.pagination import PageParams

    async def work(session: AsyncSession) -> None:
        page = await tokens.list(session, CLI_PRINCIPAL, PageParams(limit=500, offset=0), workspace)
        typer.echo(f"{'ID':<17} {'ROLE':<18} {'BOUND TO':<30} {'REVOKED':<8} NAME")
        for token in page.items:
            bound = token.deployment or token.workspace or "-"
            revoked = "yes" if token.revoked_at else "no"
            typer.echo(
                f"{token.id:<17} {token.role.value:<18} {bound:<30} {revoked:<8} {token.name}"
            )

    _with_session(work)


@tokens_cli.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="Token id")]) -> None:
    """Revoke a token; it stops working at once."""

    async def work(session: AsyncSession) -> None:
        await tokens.revoke(session, CLI_PRINCIPAL, token_id, SystemClock())

    _with_session(work)
    typer.echo(f"revoked {token_id}")


@cli.command()
def lint(
    prometheus: Annotated[
        str | None,
        typer.Option(help="Prometheus to check against [default: SEXTANT_PROMETHEUS_URL]"),
    ] = None,
    window: Annotated[
        str, typer.Option(help="Look for series this far back (Prometheus duration)")
    ] = "1h",
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="Check only these sources (airflow, pgbouncer, sextant, prometheus); "
            "default: every source the Prometheus has metrics of"
        ),
    ] = None,
    dashboards: Annotated[bool, typer.Option(help="Check the dashboards' queries too")] = True,
) -> None:
    """Check that every alert rule and dashboard query reads series that exist."""
    from datetime import timedelta

    from app.integrations.errors import IntegrationError
    from app.observability import lint as linting
    from app.observability.promql import PromQLError, parse_duration
    from app.observability.rules import CatalogueError, catalogue

    settings = get_settings()
    try:
        queries = linting.rule_queries(catalogue())
        if dashboards:
            queries += linting.dashboard_queries()
        look_back: timedelta = parse_duration(window)
        sources = None if not source else [linting.Source(s) for s in source]
    except (CatalogueError, PromQLError, ValueError) as exc:
        raise _fail(str(exc)) from None
    url = prometheus or settings.prometheus.url
    if url is None:
        findings = linting.static_findings(queries)
        for finding in findings:
            typer.echo(str(finding))
        typer.echo(
            f"{len(queries)} queries parsed, {len(findings)} finding(s); live checks skipped "
            "(give --prometheus or set SEXTANT_PROMETHEUS_URL)"
        )
        if findings:
            raise typer.Exit(code=1)
        return
    try:
        report = asyncio.run(
            linting.lint_prometheus(
                url, queries, window=look_back, sources=sources, timeout=settings.prometheus.timeout
            )
        )
    except IntegrationError as exc:
        raise _fail(str(exc)) from None
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(code=1)


@cli.command()
def render(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the artifacts into")],
) -> None:
    """Write every artifact of every deployment under OUT, deterministically (for GitOps)."""
    settings = get_settings()

    async def work(session: AsyncSession) -> dict[str, str]:
        return await render_files(session, build_targets(settings), settings)

    files = _with_session(work)
    written = write_files(files, out)
    typer.echo(f"wrote {len(written)} files under {out}")


@cli.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of Sextant's API (another if taken)")] = 8080,
) -> None:
    """Run Prometheus, Alertmanager, an SMTP sink, Sextant and one real Airflow; Ctrl-C stops."""
    from app.demo.run import DemoFailed, run_demo

    def say(line: str) -> None:
        typer.echo(line)

    try:
        run_demo(get_settings(), say, port)
    except DemoFailed as exc:
        raise _fail(str(exc)) from None


@local_cli.command("setup")
def local_setup(
    airflow_version: Annotated[
        str | None, typer.Option(help="Airflow version [default: SEXTANT_LOCAL_AIRFLOW_VERSION]")
    ] = None,
) -> None:
    """Create the Airflow virtual environment and check the programs the local runtime runs."""
    from app.runtime.local_tools import (
        ToolMissing,
        install_statsd_exporter,
        missing_programs,
        setup,
    )

    settings = get_settings().local

    def say(line: str) -> None:
        typer.echo(line, err=True)

    say(f"state dir: {settings.state_dir}; tools dir: {settings.tools_dir}")
    try:
        venv = setup(settings, say, airflow_version)
        install_statsd_exporter(settings, say)
    except ToolMissing as exc:
        raise _fail(str(exc)) from None
    problems = missing_programs(settings)
    for problem in problems:
        say(f"missing: {problem}")
    if problems:
        raise _fail(f"Airflow is ready in {venv}, but {len(problems)} program(s) are missing")
    typer.echo(f"local runtime ready: Airflow in {venv}")


def main() -> None:
    """Entry point of the `sextant` console script."""
    cli(prog_name="sextant")


if __name__ == "__main__":
    main()
