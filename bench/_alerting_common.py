"""Shared pieces of the alerting benchmarks (alert_eval, email_fanout, stall_to_email).

Small and dependency-free on purpose: statistics, a plain-text table, the CPU time a component
process used (from /proc, so the peer's server-side cost can be compared too), a fleet of
workspaces, deployments and recipients written straight into Sextant's database (the API would
take longer than the benchmark itself for 1,000 deployments, and is not what is measured), and
reading back what the SMTP sink received.
"""

from __future__ import annotations

import email
import email.policy
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import session_scope
from app.deployments.models import Deployment
from app.recipients.models import AlertRecipient
from app.workspaces.models import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    """The median of `values` (NaN when empty)."""
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    """The 95th percentile of `values`, nearest rank (the maximum for fewer than 20 values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1))
    return ordered[rank]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned first column and right-aligned others, separated by two spaces."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])]
        parts += [value.rjust(widths[i]) for i, value in enumerate(row[1:], start=1)]
        lines.append("  " + "  ".join(parts).rstrip())
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds used so far by process `pid` (NaN if unknown)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load_average() -> str:
    """The 1-minute load average, to print next to the figures."""
    return f"{os.getloadavg()[0]:.2f}"


@dataclass(frozen=True, slots=True)
class SeededDeployment:
    id: int
    name: str
    workspace: str
    workspace_id: int


async def seed_fleet(
    sessionmaker: async_sessionmaker[AsyncSession],
    deployments: Sequence[tuple[str, str]],
    deployment_recipients: int = 1,
    workspace_recipients: int = 0,
) -> list[SeededDeployment]:
    """Workspaces, deployments (status healthy) and recipients, inserted in one transaction.

    `deployments` is (workspace, deployment) pairs. Each deployment gets `deployment_recipients`
    addresses `oncall-<n>@<deployment>.example.com` (minimum severity info, so every rule's
    alert reaches them) and each workspace `workspace_recipients` `team-<n>@<ws>.example.com`.
    """
    async with session_scope(sessionmaker) as session:
        workspaces: dict[str, Workspace] = {}
        for workspace_name, _ in deployments:
            if workspace_name not in workspaces:
                workspaces[workspace_name] = Workspace(name=workspace_name)
                session.add(workspaces[workspace_name])
        await session.flush()
        rows: list[tuple[Deployment, str]] = []
        for workspace_name, name in deployments:
            row = Deployment(
                name=name, workspace_id=workspaces[workspace_name].id, executor="CeleryExecutor",
                airflow_version="3.0.0", components={}, status="healthy", status_reason="",
            )  # fmt: skip
            session.add(row)
            rows.append((row, workspace_name))
        await session.flush()
        for row, _ in rows:
            for n in range(deployment_recipients):
                session.add(
                    AlertRecipient(
                        workspace_id=row.workspace_id, deployment_id=row.id,
                        email=f"oncall-{n}@{row.name}.example.com", min_severity="info",
                    )
                )  # fmt: skip
        for workspace in workspaces.values():
            for n in range(workspace_recipients):
                session.add(
                    AlertRecipient(
                        workspace_id=workspace.id, deployment_id=None,
                        email=f"team-{n}@{workspace.name}.example.com", min_severity="info",
                    )
                )  # fmt: skip
        return [SeededDeployment(r.id, r.name, w, r.workspace_id) for r, w in rows]


@dataclass(frozen=True, slots=True)
class Received:
    """One message file of the SMTP sink, with what the benchmarks check."""

    path: Path
    envelope_to: str
    message_id: str
    subject: str
    received_ns: int


def mailbox(maildir: Path) -> list[Received]:
    """Every message the sink has written, oldest first.

    The sink names each file `<time.time_ns()>-<serial>.eml` when it accepts the message, so the
    name says when the message reached the sink (wall clock of this machine).
    """
    received = []
    for path in sorted(maildir.glob("*.eml")):
        with path.open("rb") as handle:
            head = handle.read(16384).split(b"\r\n\r\n", 1)[0]
        parsed = email.message_from_bytes(head, policy=email.policy.default)
        received.append(
            Received(
                path,
                str(parsed.get("X-Envelope-To", "")),
                str(parsed.get("Message-ID", "")),
                str(parsed.get("Subject", "")),
                int(path.name.split("-", 1)[0]),
            )
        )
    return received
