"""API load benchmark: Sextant's recipients endpoints against a bare ASGI endpoint, same run.

Absolute requests per second depend on the machine; the ratio to a bare ASGI app served by the
same uvicorn settings on the same machine, measured minutes apart, does not much. So this script
starts a real PostgreSQL (the test harness's), migrates it and issues a system-admin token with
the `sextant` CLI, serves Sextant with `sextant serve`, and serves a bare ASGI app that returns
static JSON under uvicorn with the same arguments. One server runs at a time, so they never
compete for the two cores.

Phase 1, maximum throughput: `wrk`, closed loop (a fixed number of connections, each sending its
next request as soon as the previous answer arrives), for the bare endpoint, the recipients list
and the recipients create (a unique address per request, from a Lua script).

Phase 2, latency under load: at half of each Sextant endpoint's phase-1 throughput, an open-loop
generator (in its own process) sends requests on a fixed schedule, whatever the answers do, and
measures each latency from the moment the request was due, not from when it was sent, whenever
it had to wait for a free connection, so that a stalled server cannot hide its queue (the
"coordinated omission" correction of wrk2, which Debian does not package). The bare endpoint is
driven at the same rates for the baseline p99.

Targets (from the issue): Sextant's throughput >= 0.4x the bare endpoint's, and Sextant's p99 at
half its maximum <= 3x the bare endpoint's p99 at that rate.

Run with `uv run python -m bench.api_load` (root, or a user that can run PostgreSQL); it installs
`wrk` with apt-get when missing and running as root. Everything listens on 127.0.0.1, everything it
starts is stopped, and the whole run is bounded by `--deadline` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKSPACE = "bench"
LIST_DEPLOYMENT = "bench-list"
CREATE_DEPLOYMENT = "bench-create"
# The listed deployment holds a fixed set of recipients, so every list answer is the same size.
LISTED_RECIPIENTS = 20

THROUGHPUT_TARGET = 0.4
P99_TARGET = 3.0
# The event loop's timers fire up to about a millisecond late; below this, lateness is ours.
TIMER_SLACK = 0.002

BARE_BODY = json.dumps({"items": [], "total": 0, "limit": 50, "offset": 0}).encode()


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: a bare ASGI app that reads the request and answers static JSON."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BARE_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BARE_BODY})


def fastapi_app() -> Any:
    """A reference, not a target: the same static JSON from a plain FastAPI route."""
    from fastapi import FastAPI

    app = FastAPI()
    body = json.loads(BARE_BODY)

    @app.get("/{path:path}")
    async def static(path: str) -> dict[str, Any]:
        return body

    return app


def serve_baseline(kind: str, port: int) -> None:
    """Serve a baseline app with the uvicorn arguments that `sextant serve` uses."""
    import uvicorn

    uvicorn.run(
        "bench.api_load:bare_app" if kind == "bare" else "bench.api_load:fastapi_app",
        factory=kind != "bare",
        host=HOST,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )


# --- load generators -------------------------------------------------------------------------

WRK_SCRIPT = """
local counter = 0
local tag = "run"

function init(args)
  tag = args[1] or tag
  wrk.method = args[2] or wrk.method
end

function request()
  if wrk.method ~= "POST" then
    return wrk.format()
  end
  counter = counter + 1
  local body = string.format(
    '{"email":"wrk-%s-%d@example.com","min_severity":"warning"}', tag, counter)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """What to send: method, URL and, for POST, the recipient-create body."""

    label: str
    method: str
    url: str
    token: str | None = None

    @property
    def port(self) -> int:
        """The server's port, from the URL."""
        return int(self.url.split(":")[2].split("/")[0])

    @property
    def path(self) -> str:
        """The request target, from the URL."""
        return "/" + self.url.split("/", 3)[3]


@dataclass(frozen=True)
class Result:
    """One measurement: completed requests per second and latency percentiles."""

    label: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    offered: float | None = None


def wrk_max_throughput(
    load: Load, *, seconds: float, connections: int, script: Path, tag: str
) -> Result:
    """Closed-loop maximum throughput with wrk (one thread: the server needs the other core)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    argv += ["-s", str(script), "-H", "Connection: keep-alive"]
    if load.token:
        argv += ["-H", f"Authorization: Bearer {load.token}"]
    if load.method == "POST":
        argv += ["-H", "Content-Type: application/json"]
    argv += [load.url, "--", tag, load.method]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if run.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    data = json.loads(line.removeprefix("RESULT "))
    return Result(
        label=load.label,
        rate=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["status_errors"] + data["socket_errors"],
    )


def open_loop(load: Load, *, rate: float, seconds: float, connections: int, tag: str) -> Result:
    """Constant-rate latency, from the open-loop generator in a process of its own."""
    argv = [sys.executable, "-m", "bench.api_load", "open-loop", json.dumps(load.__dict__)]
    argv += [f"--rate={rate}", f"--seconds={seconds}", f"--connections={connections}"]
    argv += [f"--tag={tag}"]
    run = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO_ROOT, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"open-loop generator failed:\n{run.stdout}\n{run.stderr}")
    data = json.loads(run.stdout.strip().splitlines()[-1])
    return Result(
        label=load.label,
        rate=data["completed_rate"],
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
        errors=data["errors"],
        offered=rate,
    )


async def _open_loop(load: Load, rate: float, seconds: float, connections: int, tag: str) -> dict:
    """Send `rate` requests per second for `seconds`; latency counts from each due time."""
    total = max(1, int(rate * seconds))
    host_header = f"{HOST}:{load.port}"
    auth = f"Authorization: Bearer {load.token}\r\n" if load.token else ""

    def request(index: int) -> bytes:
        if load.method != "POST":
            return f"GET {load.path} HTTP/1.1\r\nHost: {host_header}\r\n{auth}\r\n".encode()
        body = f'{{"email":"open-{tag}-{index}@example.com","min_severity":"warning"}}'.encode()
        head = (
            f"POST {load.path} HTTP/1.1\r\nHost: {host_header}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    latencies: list[float] = []
    errors = 0
    next_index = 0
    # uvloop's loop.time() has millisecond resolution; latencies need the precise clock.
    clock = time.perf_counter
    start = clock() + 0.3
    last_done = start

    async def connection() -> None:
        nonlocal next_index, errors, last_done
        reader, writer = await asyncio.open_connection(HOST, load.port)
        try:
            while next_index < total:
                index = next_index
                next_index += 1
                due = start + index / rate
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = clock()
                writer.write(request(index))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                now = clock()
                # Timer jitter of the client itself is not the server's; a request that waited
                # longer than that (no free connection) counts from when it was due.
                latencies.append(now - (sent if sent - due <= TIMER_SLACK else due))
                last_done = max(last_done, now)
                if status >= 400:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    latencies.sort()
    return {
        "completed_rate": len(latencies) / max(last_done - start, 1e-9),
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "errors": errors,
    }


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered)) - 1))
    return ordered[rank]


# --- the servers -----------------------------------------------------------------------------


@dataclass
class Stack:
    """What the run started: PostgreSQL and the scratch folder; the servers come and go."""

    workdir: Path
    database_url: str
    token: str = ""


def _child_env(database_url: str, log_level: str) -> dict[str, str]:
    # Nothing from the caller's SEXTANT_* leaks in; the children run in a scratch folder, so no
    # developer's .env is read either.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEXTANT_")}
    env.update(
        SEXTANT_DATABASE_URL=database_url,
        SEXTANT_LOG_LEVEL=log_level,
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def _sextant(stack: Stack, *args: str, log_level: str = "WARNING") -> str:
    """Run the `sextant` CLI of this environment; return its standard output."""
    exe = Path(sys.executable).parent / "sextant"
    run = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env=_child_env(stack.database_url, log_level),
        cwd=stack.workdir,
        timeout=60,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"sextant {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run.stdout


@contextmanager
def server(name: str, argv: list[str], stack: Stack, log_level: str) -> Iterator[str]:
    """Start a server on a free port and yield its base URL; stop it on the way out."""
    from tests.harness.process import ManagedProcess, free_port, http_ok

    port = free_port()
    process = ManagedProcess(
        name,
        [arg.replace("{port}", str(port)) for arg in argv],
        log_path=stack.workdir / f"{name}.log",
        ready=http_ok(f"http://{HOST}:{port}/healthz"),
        env=_child_env(stack.database_url, log_level),
        cwd=stack.workdir,
        start_timeout=30,
    )
    process.start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        process.stop()


def sextant_server(stack: Stack, log_level: str) -> Any:
    """`sextant serve` on a free port."""
    exe = str(Path(sys.executable).parent / "sextant")
    return server("sextant", [exe, "serve", "--port", "{port}"], stack, log_level)


def baseline_server(kind: str, stack: Stack, log_level: str) -> Any:
    """The bare ASGI app (or the FastAPI reference) under the same uvicorn arguments."""
    argv = [sys.executable, "-m", "bench.api_load", "serve-baseline", kind, "--port", "{port}"]
    return server(kind, argv, stack, log_level)


def seed(base_url: str, token: str) -> None:
    """The workspace, the two deployments and the listed deployment's recipients."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url + "/api/v1", headers=headers, timeout=30) as client:
        steps: list[tuple[str, dict[str, Any]]] = [
            ("/workspaces", {"name": WORKSPACE}),
            (f"/workspaces/{WORKSPACE}/deployments", {"name": LIST_DEPLOYMENT}),
            (f"/workspaces/{WORKSPACE}/deployments", {"name": CREATE_DEPLOYMENT}),
        ]
        steps += [
            (f"/deployments/{LIST_DEPLOYMENT}/alert-recipients", {"email": f"r{i}@example.com"})
            for i in range(LISTED_RECIPIENTS)
        ]
        for path, body in steps:
            response = client.post(path, json=body)
            if response.status_code != 201:
                raise RuntimeError(f"seeding {path}: {response.status_code} {response.text}")


# --- the run ---------------------------------------------------------------------------------


def ensure_wrk() -> None:
    """Install Debian's wrk when it is missing and we are root; otherwise say how."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `apt-get install wrk` as root")
    print("wrk not found; installing it with apt-get (Debian package `wrk`) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, timeout=300, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, timeout=300, check=True)
        subprocess.run(install, env=env, timeout=300, check=True)


class DeadlineExceeded(Exception):
    """The whole run took longer than --deadline."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise DeadlineExceeded("benchmark deadline exceeded")


def run(options: argparse.Namespace) -> int:
    """Start everything, measure both phases, print the table; True when both targets hold."""
    from tests.harness.components import ComponentDirs, start_postgres

    ensure_wrk()
    options.load_before = os.getloadavg()[0]
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(options.deadline)
    dirs = ComponentDirs.create()
    workdir = Path(tempfile.mkdtemp(prefix="sextant-bench-"))
    postgres = None
    began = time.monotonic()
    try:
        postgres = start_postgres(dirs)
        if options.durable:
            # The harness trades durability for speed; production does not.
            postgres.psql("ALTER SYSTEM SET fsync = on")
            postgres.psql("ALTER SYSTEM SET synchronous_commit = on")
            postgres.psql("ALTER SYSTEM SET full_page_writes = on")
            postgres.psql("SELECT pg_reload_conf()")
        stack = Stack(workdir=workdir, database_url=postgres.create_database("sextant_bench"))
        _sextant(stack, "db", "upgrade")
        stack.token = _sextant(stack, "tokens", "create", "--role", "system-admin").splitlines()[-1]
        script = workdir / "load.lua"
        script.write_text(WRK_SCRIPT)
        closed = {"seconds": options.seconds, "connections": options.connections, "script": script}
        log_level = options.log_level

        with baseline_server("bare", stack, log_level) as url:
            bare = Load("bare ASGI, GET static JSON", "GET", url + "/bare")
            wrk_max_throughput(bare, **closed | {"seconds": options.warmup}, tag="warm")
            bare_max = wrk_max_throughput(bare, **closed, tag="bare")

        with baseline_server("fastapi", stack, log_level) as url:
            reference = Load("FastAPI, GET static JSON", "GET", url + "/static")
            wrk_max_throughput(reference, **closed | {"seconds": options.warmup}, tag="warm")
            fastapi_max = wrk_max_throughput(reference, **closed, tag="fastapi")

        with sextant_server(stack, log_level) as url:
            seed(url, stack.token)
            api = url + "/api/v1/deployments"
            listing = Load(
                "GET recipients (list)",
                "GET",
                f"{api}/{LIST_DEPLOYMENT}/alert-recipients",
                stack.token,
            )
            creating = Load(
                "POST recipients (create)",
                "POST",
                f"{api}/{CREATE_DEPLOYMENT}/alert-recipients",
                stack.token,
            )
            wrk_max_throughput(listing, **closed | {"seconds": options.warmup}, tag="warm")
            list_max = wrk_max_throughput(listing, **closed, tag="max")
            create_max = wrk_max_throughput(creating, **closed, tag="max")
            paced = {"seconds": options.paced_seconds, "connections": options.connections}
            list_paced = open_loop(listing, rate=list_max.rate / 2, **paced, tag="paced")
            create_paced = open_loop(creating, rate=create_max.rate / 2, **paced, tag="paced")

        with baseline_server("bare", stack, log_level) as url:
            bare = Load("bare ASGI, GET static JSON", "GET", url + "/bare")
            bare_at_list = open_loop(bare, rate=list_max.rate / 2, **paced, tag="b1")
            bare_at_create = open_loop(bare, rate=create_max.rate / 2, **paced, tag="b2")
    finally:
        signal.alarm(0)
        if postgres is not None:
            postgres.stop()
        dirs.remove()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    ok = report(
        bare_max,
        fastapi_max,
        [(list_max, list_paced, bare_at_list), (create_max, create_paced, bare_at_create)],
        options,
        elapsed=time.monotonic() - began,
    )
    return 0 if ok else 1


def report(
    bare: Result,
    reference: Result,
    rows: list[tuple[Result, Result, Result]],
    options: argparse.Namespace,
    *,
    elapsed: float,
) -> bool:
    """Print both phases as tables with PASS/FAIL; True when every target holds."""
    durability = "fsync on" if options.durable else "harness settings: fsync off"
    print(
        f"\nSextant API load, PostgreSQL ({durability}), SEXTANT_LOG_LEVEL={options.log_level}, "
        f"{os.cpu_count()} CPUs, {elapsed:.0f} s in all, load average before/after "
        f"{options.load_before:.1f}/{os.getloadavg()[0]:.1f} (other work on the machine skews "
        "the ratios)\n"
    )
    print(
        f"Phase 1 - maximum throughput (wrk, closed loop, {options.connections} connections, "
        f"{options.seconds:g} s each)"
    )
    print(f"{'endpoint':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}  target")
    print(f"{bare.label:<28} {bare.rate:>9.0f} {bare.p50_ms:>8.2f} {bare.p99_ms:>8.2f} {1:>8.2f}")
    print(
        f"{reference.label:<28} {reference.rate:>9.0f} {reference.p50_ms:>8.2f} "
        f"{reference.p99_ms:>8.2f} {reference.rate / bare.rate:>8.2f}  (reference only)"
    )
    ok = True
    for maximum, _, _ in rows:
        ratio = maximum.rate / bare.rate
        passed = ratio >= THROUGHPUT_TARGET and maximum.errors == 0
        ok &= passed
        verdict = f"{'PASS' if passed else 'FAIL'} (>= {THROUGHPUT_TARGET:g}x)"
        if maximum.errors:
            verdict += f", {maximum.errors} errors"
        print(
            f"{maximum.label:<28} {maximum.rate:>9.0f} {maximum.p50_ms:>8.2f} "
            f"{maximum.p99_ms:>8.2f} {ratio:>8.2f}  {verdict}"
        )
    print(
        f"\nPhase 2 - latency at half of each Sextant endpoint's maximum (open loop, constant "
        f"rate, {options.paced_seconds:g} s each, latency from each request's due time)"
    )
    print(
        f"{'endpoint':<28} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'bare p99':>9} {'ratio':>7}  target"
    )
    for _, paced, baseline in rows:
        ratio = paced.p99_ms / baseline.p99_ms
        passed = ratio <= P99_TARGET and paced.errors == 0
        ok &= passed
        verdict = f"{'PASS' if passed else 'FAIL'} (<= {P99_TARGET:g}x)"
        if paced.errors:
            verdict += f", {paced.errors} errors"
        print(
            f"{paced.label:<28} {paced.rate:>9.0f} {paced.p50_ms:>8.2f} {paced.p99_ms:>8.2f} "
            f"{baseline.p99_ms:>9.2f} {ratio:>7.2f}  {verdict}"
        )
    print(f"\n{'PASS' if ok else 'FAIL'}: every target {'holds' if ok else 'does not hold'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the benchmark, or one of its helper processes."""
    parser = argparse.ArgumentParser(prog="python -m bench.api_load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="each phase-1 measurement")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up before phase 1")
    parser.add_argument("--paced-seconds", type=float, default=8, help="each phase-2 run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="SEXTANT_LOG_LEVEL of the servers (INFO, Sextant's default, logs every request)",
    )
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on")
    parser.add_argument("--deadline", type=int, default=170, help="stop everything after this")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs")
    sub = parser.add_subparsers(dest="helper")
    baseline = sub.add_parser("serve-baseline", help=argparse.SUPPRESS)
    baseline.add_argument("kind", choices=["bare", "fastapi"])
    baseline.add_argument("--port", type=int, required=True)
    paced = sub.add_parser("open-loop", help=argparse.SUPPRESS)
    paced.add_argument("load")
    paced.add_argument("--rate", type=float, required=True)
    paced.add_argument("--seconds", type=float, required=True)
    paced.add_argument("--connections", type=int, required=True)
    paced.add_argument("--tag", default="paced")
    options = parser.parse_args(argv)

    if options.helper == "serve-baseline":
        serve_baseline(options.kind, options.port)
        return 0
    if options.helper == "open-loop":
        import uvloop

        load = Load(**json.loads(options.load))
        result = uvloop.run(
            _open_loop(load, options.rate, options.seconds, options.connections, options.tag)
        )
        print(json.dumps(result))
        return 0
    try:
        return run(options)
    except DeadlineExceeded:
        print(f"stopped after --deadline {options.deadline} s; everything started was stopped")
        return 2


if __name__ == "__main__":
    sys.exit(main())
