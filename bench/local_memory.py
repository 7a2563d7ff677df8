"""Resident memory of one local Celery deployment with one worker, and of Sextant supervising it.

Issue 5's memory target: one deployment on the local runtime (scheduler, api-server,
dag-processor, triggerer, one Celery worker, Flower, PgBouncer, Redis, statsd_exporter, and its
share of the local PostgreSQL) in at most 1.2 GB, and the figure for Sextant itself.

What runs, all on 127.0.0.1 and all stopped at the end: `sextant serve` as its own process with
`SEXTANT_RUNTIME=local` on a scratch SQLite file and state folder; a workspace and a deployment
are created through its API as a user would; once every component is up the script waits for
the processes to settle (`--settle`), then samples `/proc/<pid>/smaps_rollup` of every process of
the deployment (the leaders the supervisor records in its pid files and all their descendants:
Celery's pool children, gunicorn/uvicorn workers, PostgreSQL's backends) `--samples` times.

PSS (proportional set size) splits a page shared by N processes N ways, so it sums to what the
deployment really holds; RSS counts a shared page in every process that maps it (forked workers
count their parent's pages again) and is printed for comparison. Sextant's own figure is its
server process alone (its children are the deployment's processes).

    uv run python -m bench.local_memory [--settle 60] [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.runtime.local_supervisor import Memory, tree_memory

DEPLOYMENT = "mem-bench"
WORKSPACE = "bench"
TARGET_BYTES = 1.2e9
MIB = 2**20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sextant(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"sextant {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _leaders(state_dir: Path) -> list[int]:
    """The pids the supervisor recorded for the deployment and for the shared PostgreSQL."""
    pid_files = [
        *(state_dir / DEPLOYMENT / "run").glob("*.json"),
        *(state_dir / "_postgres" / "pids").glob("*.json"),
    ]
    pids = []
    for path in pid_files:
        record = json.loads(path.read_text())
        if isinstance(record.get("pid"), int):
            pids.append(record["pid"])
    return pids


def _own_memory(pid: int) -> Memory:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(("Rss:", "Pss:")):
                values[line.split(":")[0]] = int(line.split()[1]) * 1024
    return Memory(1, values.get("Rss", 0), values.get("Pss", 0))


def _wait_serving(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"sextant serve exited:\n{log.read_text()[-2000:]}")
        try:
            client.get("/healthz")
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("sextant serve did not answer in 120 s")


def _wait_up(client: httpx.Client, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/deployments/{DEPLOYMENT}")
        reason = response.json().get("status_reason", "") if response.is_success else response.text
        if reason != last:
            print(f"  {reason}", flush=True)
            last = reason
        if reason.startswith("components up"):
            return
        time.sleep(2)
    raise SystemExit(f"the deployment did not come up in time: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after start-up")
    parser.add_argument("--samples", type=int, default=5, help="samples, 5 s apart")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds to come up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sextant-mem-") as scratch:
        # As root, the local PostgreSQL runs as `postgres`, which must reach its folder.
        os.chmod(scratch, 0o755)
        state_dir = Path(scratch) / "state"
        port = _free_port()
        env = {
            **os.environ,
            "SEXTANT_DATABASE_URL": f"sqlite:///{scratch}/sextant.db",
            "SEXTANT_RUNTIME": "local",
            "SEXTANT_LOCAL_STATE_DIR": str(state_dir),
            "SEXTANT_LOG_LEVEL": "WARNING",
        }
        _sextant(env, "db", "upgrade")
        token = _sextant(env, "tokens", "create", "--role", "system-admin").strip().splitlines()[-1]
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(scratch) / "serve.log", "w"),
        )
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as client:
                _wait_serving(client, server, Path(scratch) / "serve.log")
                client.post("/api/v1/workspaces", json={"name": WORKSPACE}).raise_for_status()
                body = {"name": DEPLOYMENT, "components": {"workers": {"replicas": 1}}}
                created = client.post(f"/api/v1/workspaces/{WORKSPACE}/deployments", json=body)
                created.raise_for_status()
                print(f"deployment {DEPLOYMENT}: waiting for its components", flush=True)
                _wait_up(client, time.monotonic() + args.timeout)
                print(f"settling {args.settle:.0f} s", flush=True)
                time.sleep(args.settle)
                deployment, sextant = [], []
                for _ in range(args.samples):
                    deployment.append(tree_memory(_leaders(state_dir)))
                    sextant.append(_own_memory(server.pid))
                    time.sleep(5)
                client.delete(f"/api/v1/deployments/{DEPLOYMENT}")
                time.sleep(5)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()

    def row(label: str, samples: list[Memory]) -> float:
        pss = statistics.median(m.pss_bytes for m in samples)
        rss = statistics.median(m.rss_bytes for m in samples)
        processes = max(m.processes for m in samples)
        print(f"{label:<44} {processes:>9} {pss / MIB:>9.0f} {rss / MIB:>9.0f}")
        return pss

    print(f"\n{'median of ' + str(args.samples) + ' samples':<44} {'processes':>9} "
          f"{'PSS MiB':>9} {'RSS MiB':>9}")  # fmt: skip
    pss = row("one Celery deployment, one worker (+ its PG)", deployment)
    row("Sextant (sextant serve, supervising it)", sextant)
    verdict = "PASS" if pss <= TARGET_BYTES else "FAIL"
    print(f"\ndeployment PSS {pss / 1e9:.2f} GB vs target 1.2 GB: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
