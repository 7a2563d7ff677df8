"""The local runtime's log shipper: what FluentD does on Kubernetes, for processes on one machine.

FluentD cannot be had everywhere Sextant runs locally, so Sextant ships its own deployments'
log files itself, with the same rules as `fluentd/pipeline.conf` (one document shape whatever
shipped it):

- every `<home>/logs/<component>[-N].log` of an Airflow component (scheduler, api_server,
  dag_processor, triggerer, workers-N), followed from where the last round stopped; a file that
  was replaced or truncated is read again from its start;
- a JSON line becomes the document's fields; any other line is kept whole as `event`;
- `component` (the file's name without its replica number), `host`, `deployment`, `workspace`;
  `@timestamp` from Airflow 3's `timestamp`, else the time the line was read; an integer
  `offset` (the line's own, else the read time in nanoseconds); a `log_id` from Airflow's
  log_id_template when the line has the task's fields but none.

Task logs: with remote logging on, a worker prints each finished try as JSON lines carrying
`log_id` and `offset` 1..N (Airflow 3's upload path). Airflow 3 prints no end-of-log mark, so the
shipper adds one (offset N+1, Airflow's `end_of_log`) once it has shipped line N of a try whose
local file holds exactly N lines: the upload reads that file after the try has ended, so the
try's log is complete and the log API can say so.

Delivery is at least once and duplicate-free: documents are created with an `_id` derived from
the file, its inode and generation, the line's byte offset and the line itself (a resent batch
is answered 409 and counts as written), and a file's position advances only after Elasticsearch
accepted its lines. While Elasticsearch is down nothing advances; the next round sends the same
lines.

A line Elasticsearch refuses for what it holds (a field of another type than the stream has
for it) goes again as a plain line: its text in `event`, its other fields as JSON text in
`sextant_fields`, the reason in `sextant_refused`. One refused even so is dropped with a warning
and counted (`sextant_log_dropped_lines_total`): a poison line must not stop a file for ever.

Rotation: the local supervisor keeps each log under a size cap by copying it to `<log>.1` and
emptying it (`rotate_log`). A new copy (another inode) tells the shipper that the file was
rotated since its last round: it first ships the copy from where it had read the file to, then
the emptied file from its start, in a new generation (the same offsets hold other lines now).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from app.integrations.elasticsearch import Refused
from app.logs.airflow_config import END_OF_LOG_MARK, OFFSET_FIELD
from app.observability.elasticsearch_target import log_data_stream
from app.observability.fluentd import AIRFLOW_COMPONENTS, LOG_ID_TEMPLATE

logger = logging.getLogger(__name__)

# A round reads at most this much of one file (a later round takes the rest).
MAX_READ_BYTES = 2 * 1024 * 1024
POSITIONS_FILE = "log-positions.json"
# The local supervisor's rotated copy of a log (`app.runtime.local_supervisor.rotate_log`).
ROTATED_SUFFIX = ".1"
TASK_FIELDS = ("dag_id", "task_id", "run_id", "map_index", "try_number")
# What a refused line keeps as fields when it goes again as a plain line.
PLAIN_FIELDS = frozenset(
    {"@timestamp", "level", "event", "message", "log_id", "offset", "deployment", "workspace",
     "component", "host"}
)  # fmt: skip
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")

SHIPPED = Counter(
    "sextant_log_shipped_lines_total", "Log lines the local log shipper sent", ["deployment"]
)
DROPPED = Counter(
    "sextant_log_dropped_lines_total",
    "Log lines Elasticsearch refused even as plain lines (dropped, with a warning)",
    ["deployment"],
)
SHIP_FAILURES = Counter(
    "sextant_log_ship_failures_total",
    "Shipping rounds of a deployment that Elasticsearch refused (retried next round)",
    ["deployment"],
)


class DocumentSink(Protocol):
    """Where documents go (`ElasticsearchClient` in production)."""

    async def create_documents(
        self,
        data_stream: str,
        documents: Sequence[Mapping[str, Any]],
        *,
        refresh: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Refused]: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a line comes from, and who it belongs to."""

    deployment: str
    workspace: str
    component: str
    host: str


@dataclass(slots=True)
class Chunk:
    """The complete lines read from one file, and where its position moves once they are in."""

    path: Path
    inode: int
    end: int
    lines: list[tuple[int, str]] = field(default_factory=list)  # (byte offset, text)
    # Read from the start because the file is another one or was truncated.
    restarted: bool = False


def component_of(path: Path) -> str | None:
    """The Airflow component a log file belongs to (`workers-2.log` → workers), else None."""
    stem = path.stem
    base, _, replica = stem.rpartition("-")
    name = base if replica.isdigit() and base else stem
    return name if name in AIRFLOW_COMPONENTS else None


def document(line: str, source: Source, read_at: datetime, nth: int = 0) -> dict[str, Any]:
    """The document one log line becomes (the rules of fluentd/pipeline.conf); `nth` keeps the
    offsets of lines read at the same time (and carrying none) in file order."""
    record: dict[str, Any]
    try:
        parsed = json.loads(line)
    except ValueError:
        parsed = None
    record = dict(parsed) if isinstance(parsed, dict) else {"event": line}
    if "log_id" not in record and all(record.get(f) is not None for f in TASK_FIELDS):
        record["log_id"] = LOG_ID_TEMPLATE.format(**{f: record[f] for f in TASK_FIELDS})
    if not isinstance(record.get(OFFSET_FIELD), int):
        record[OFFSET_FIELD] = _nanos(read_at) + nth
    stamp = record.get("timestamp")
    record["@timestamp"] = stamp if isinstance(stamp, str) and stamp else _iso(read_at)
    if record.get("event") is None and record.get("message") is None:
        record["event"] = line
    record.update(
        deployment=source.deployment,
        workspace=source.workspace,
        component=source.component,
        host=source.host,
    )
    return record


def plain_document(refused: Mapping[str, Any], reason: str, source: Source) -> dict[str, Any]:
    """A refused document as a plain line: the fields every line has, the rest kept as text."""
    fields = {k: v for k, v in refused.items() if k not in PLAIN_FIELDS}
    plain: dict[str, Any] = {
        "@timestamp": refused.get("@timestamp"),
        "level": str(refused["level"]) if refused.get("level") is not None else None,
        "event": str(refused.get("event", refused.get("message", ""))),
        "sextant_refused": reason[:1000],
        "sextant_fields": json.dumps(fields, default=str)[:32_000],
        "deployment": source.deployment,
        "workspace": source.workspace,
        "component": source.component,
        "host": source.host,
    }
    if isinstance(refused.get("log_id"), str):
        plain["log_id"] = refused["log_id"]
    if isinstance(refused.get(OFFSET_FIELD), int):
        plain[OFFSET_FIELD] = refused[OFFSET_FIELD]
    stamp = plain["@timestamp"]
    if not isinstance(stamp, str) or not _ISO.match(stamp):
        plain["@timestamp"] = _iso(datetime.now(UTC))
    return {k: v for k, v in plain.items() if v is not None}


def end_mark(last: Mapping[str, Any]) -> dict[str, Any]:
    """The end-of-log document after a try's last line."""
    keep = ("log_id", "deployment", "workspace", "component", "host", *TASK_FIELDS)
    mark = {k: last[k] for k in keep if k in last}
    mark.update(
        {"event": END_OF_LOG_MARK, OFFSET_FIELD: int(last[OFFSET_FIELD]) + 1},
        **{"@timestamp": last["@timestamp"], "level": "info"},
    )
    return mark


def task_log_file(base: Path, record: Mapping[str, Any]) -> Path:
    """A try's local log file under Airflow's default `log_filename_template`."""
    path = base / f"dag_id={record['dag_id']}" / f"run_id={record['run_id']}"
    path = path / f"task_id={record['task_id']}"
    if int(record["map_index"]) >= 0:
        path = path / f"map_index={record['map_index']}"
    return path / f"attempt={record['try_number']}.log"


def count_lines(path: Path) -> int | None:
    """Non-empty lines of a file (what Airflow's upload prints), or None if it is not there."""
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def read_new(path: Path, position: Mapping[str, Any] | None, limit: int) -> Chunk | None:
    """The complete lines after the position (from the start if the file changed)."""
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            start, restarted = 0, bool(position)
            if position and position.get("inode") == stat.st_ino:
                start, restarted = int(position.get("offset", 0)), False
                if start > stat.st_size:  # truncated: what is there now is new
                    start, restarted = 0, True
            if start >= stat.st_size:
                return Chunk(path, stat.st_ino, start, restarted=restarted)
            handle.seek(start)
            data = handle.read(limit)
    except OSError:
        return None
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        if len(data) < limit:  # half a line: wait for the rest
            return Chunk(path, stat.st_ino, start, restarted=restarted)
        cut = len(data)  # one line longer than a whole read: ship it as it is
    chunk = Chunk(path, stat.st_ino, start + cut, restarted=restarted)
    offset = start
    for raw in data[:cut].split(b"\n"):
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            chunk.lines.append((offset, text))
        offset += len(raw) + 1
    return chunk


@dataclass(slots=True)
class ShipReport:
    """One deployment's round."""

    lines: int = 0
    end_marks: int = 0
    plain: int = 0  # refused as they were, stored as plain lines
    dropped: int = 0  # refused even as plain lines


class LogShipper:
    """Ships the log files of local deployments into their data streams (module docstring)."""

    def __init__(self, sink: DocumentSink, *, host: str | None = None, batch: int = 2000) -> None:
        self.sink = sink
        self.host = host or socket.gethostname()
        self.batch = batch

    async def ship(self, deployment: str, workspace: str, home: Path) -> ShipReport:
        """Send what the deployment's log files gained since the last round."""
        positions_path = home / POSITIONS_FILE
        positions = await asyncio.to_thread(_read_positions, positions_path)
        files = sorted(p for p in (home / "logs").glob("*.log") if component_of(p))
        report = ShipReport()

        async def save(name: str, position: dict[str, Any]) -> None:
            positions[name] = position
            await asyncio.to_thread(_write_positions, positions_path, positions)

        for path in files:
            component = component_of(path)
            assert component is not None
            source = Source(deployment, workspace, component, self.host)
            position = dict(positions.get(path.name) or {})
            copy = path.with_name(path.name + ROTATED_SUFFIX)
            copy_inode = await asyncio.to_thread(_inode, copy)
            if position and copy_inode is not None and copy_inode != position.get("rotated"):
                # Rotated since the last round: the rest of what was read is in the copy.
                await self._drain(copy, position, source, home, report)
                gen = int(position.get("gen", 0)) + 1
                position = {"inode": position["inode"], "offset": 0, "gen": gen}
                position["rotated"] = copy_inode
                await save(path.name, position)
            while True:
                chunk = await asyncio.to_thread(read_new, path, position or None, MAX_READ_BYTES)
                if chunk is None:
                    break
                gen = int(position.get("gen", 0))
                if position and chunk.restarted:
                    gen += 1  # the same offsets hold other lines now: other document ids
                moved = {"inode": chunk.inode, "offset": chunk.end, "gen": gen,
                         "rotated": copy_inode}  # fmt: skip
                if moved == position:
                    break
                if chunk.lines:
                    await self._send(chunk, (chunk.inode, gen), source, home, report)
                position = moved
                await save(path.name, position)
        SHIPPED.labels(deployment).inc(report.lines)
        return report

    async def _drain(
        self, copy: Path, position: Mapping[str, Any], source: Source, home: Path,
        report: ShipReport,
    ) -> None:  # fmt: skip
        """Ship a rotated copy from where its live file had been read to (same document ids)."""
        key = (int(position["inode"]), int(position.get("gen", 0)))
        offset = int(position.get("offset", 0))
        live_name = copy.name.removesuffix(ROTATED_SUFFIX)
        while True:
            copy_inode = await asyncio.to_thread(_inode, copy)
            at = {"inode": copy_inode, "offset": offset}
            chunk = await asyncio.to_thread(read_new, copy, at, MAX_READ_BYTES)
            if chunk is None or chunk.restarted or chunk.end == offset:
                return
            if chunk.lines:
                await self._send(chunk, key, source, home, report, name=live_name)
            offset = chunk.end

    async def _send(
        self,
        chunk: Chunk,
        key: tuple[int, int],
        source: Source,
        home: Path,
        report: ShipReport,
        name: str | None = None,
    ) -> None:
        read_at = datetime.now(UTC)
        documents = [document(text, source, read_at, n) for n, (_, text) in enumerate(chunk.lines)]
        name = name or chunk.path.name
        ids = [_id(name, key, at, text) for at, text in chunk.lines]
        marks = await asyncio.to_thread(_end_marks, documents, home / "airflow" / "logs")
        documents += marks
        ids += [_id(name, (0, 0), 0, str(mark["log_id"])) for mark in marks]
        stream = log_data_stream(source.deployment)
        try:
            for start in range(0, len(documents), self.batch):
                batch = documents[start : start + self.batch]
                batch_ids = ids[start : start + self.batch]
                refused = await self.sink.create_documents(stream, batch, ids=batch_ids)
                if refused:
                    await self._refused(stream, batch, batch_ids, refused, source, report)
        except Exception:
            SHIP_FAILURES.labels(source.deployment).inc()
            raise
        report.lines += len(chunk.lines)
        report.end_marks += len(marks)

    async def _refused(
        self,
        stream: str,
        batch: Sequence[Mapping[str, Any]],
        ids: Sequence[str],
        refused: Sequence[Refused],
        source: Source,
        report: ShipReport,
    ) -> None:
        """Lines Elasticsearch will not take as they are (a field of another type than the
        stream has) go again as plain lines, whole in `event`; a line refused even so is
        counted and dropped, so that it cannot hold back the lines after it for ever."""
        plain = [plain_document(batch[r.position], r.reason, source) for r in refused]
        again = await self.sink.create_documents(
            stream, plain, ids=[ids[r.position] for r in refused]
        )
        report.plain += len(refused) - len(again)
        if again:
            report.dropped += len(again)
            DROPPED.labels(source.deployment).inc(len(again))
            logger.warning(
                "log lines dropped",
                extra={"deployment": source.deployment, "lines": len(again),
                       "reason": again[0].reason},
            )  # fmt: skip


def _end_marks(documents: Sequence[Mapping[str, Any]], task_logs: Path) -> list[dict[str, Any]]:
    """End marks for the tries whose whole log is among the documents."""
    last: dict[str, Mapping[str, Any]] = {}
    for doc in documents:
        if "log_id" in doc and all(doc.get(f) is not None for f in TASK_FIELDS):
            seen = last.get(str(doc["log_id"]))
            if seen is None or int(doc[OFFSET_FIELD]) > int(seen[OFFSET_FIELD]):
                last[str(doc["log_id"])] = doc
    marks = []
    for doc in last.values():
        if str(doc.get("event", doc.get("message"))).strip() == END_OF_LOG_MARK:
            continue  # Airflow 2 writes its own
        try:
            expected = count_lines(task_log_file(task_logs, doc))
        except (KeyError, ValueError):
            continue
        if expected is not None and expected == int(doc[OFFSET_FIELD]):
            marks.append(end_mark(doc))
    return marks


def _id(name: str, key: tuple[int, int], at: int, extra: str = "") -> str:
    inode, gen = key
    text = f"{name}:{inode}:{gen}:{at}:{extra}".encode()
    return hashlib.blake2b(text, digest_size=15).hexdigest()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _read_positions(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}


def _write_positions(path: Path, positions: Mapping[str, Mapping[str, Any]]) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".positions-")
    with os.fdopen(fd, "w") as handle:
        json.dump(positions, handle)
    os.replace(temporary, path)


def _nanos(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
