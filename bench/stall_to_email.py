"""Stall-to-e-mail benchmark: a scheduler heartbeat stops; how long until the alert e-mail is in
the mailbox, through Sextant and through Prometheus rule + Alertmanager with stock defaults, in
the same run, from the same metrics.

Why: the issue promises e-mails "within seconds of the threshold being crossed — not minutes".
Target: Sextant <= threshold + `for` + evaluation interval + scrape interval + 2 s, and <= 0.3x
the Alertmanager path. Both paths use the same rule, AirflowSchedulerHeartbeatMissing from
alert_rules/ as shipped (read from the catalogue: threshold 60 s of seconds since the heartbeat
counter last increased, `for: 0s`). Prometheus evaluates the rule's measure as written (10 s
subquery steps); Sextant measures the same silence from the increases it remembers, in 1 s steps
(app/alerting/heartbeat.py).

Every hop is real, on 127.0.0.1:

    heartbeat sender --UDP--> statsd_exporter (deploy/statsd/mappings.yml), one per deployment
        --scrape every 5 s (file_sd targets with `workspace` and `deployment`, as Sextant
          renders them)--> Prometheus 2.42
        |-- Sextant (`sextant serve`, configured by SEXTANT_* only: SQLite, runtime none,
        |   SEXTANT_ALERTS_INTERVAL=5, delivery every 2 s, its real APScheduler loop)
        |   --aiosmtplib--> aiosmtpd sink      to oncall@<deployment>.example.com
        '-- Prometheus rule evaluation (the catalogue's rule files, stock evaluation_interval 1m)
            --> Alertmanager 0.25 (stock route timers: group_wait 30 s, group_interval 5 m;
            group_by alertname, deployment; e-mail receiver, smtp_require_tls false)
            --> the same aiosmtpd sink       to alertmanager@<deployment>.example.com

The sender plays an Airflow scheduler: `airflow.scheduler_heartbeat:1|c` every 5 s (Airflow's
`[scheduler] scheduler_heartbeat_sec` default). After a warm-up in which Prometheus has seen
every counter rise, the deployments stop one after the other, `--stagger` seconds apart, so that
the stops fall at different phases of the 1-minute evaluation grid. Latency is measured from a
deployment's last heartbeat (its last sign of life, what Airflow's own health check counts from)
until the sink wrote the e-mail (the sink names each file with the time it accepted it). The
breakdown shows when each path saw the alert pending and firing (Sextant's API, Prometheus'
/api/v1/alerts polled every second). A path that has not delivered `--cap` seconds (default 330)
after the stop is reported as "> cap".

Run: `uv run python -m bench.stall_to_email [--deployments 3] [--stagger 20]` (about 5-6 minutes,
under 8 by construction: the Alertmanager path takes minutes with stock defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from app.observability.prometheus_target import file_sd_name, file_sd_scrape_config, render_file_sd
from app.observability.rules import catalogue
from app.provisioning.targets import DeploymentView
from bench._alerting_common import REPO_ROOT, load_average, mailbox, median, table, verdict
from tests.harness.components import (
    HOST,
    AlertmanagerServer,
    Component,
    ComponentDirs,
    PrometheusServer,
    StatsdExporter,
    start_alertmanager,
    start_prometheus,
    start_statsd_exporter,
)
from tests.harness.process import ManagedProcess, free_port, http_ok
from tests.harness.smtp import SmtpSink, start_smtp_sink

RULE = "AirflowSchedulerHeartbeatMissing"
MAPPING = REPO_ROOT / "deploy" / "statsd" / "mappings.yml"
HEARTBEAT = "airflow.scheduler_heartbeat:1|c"
WORKSPACE = "data-eng"
SCRAPE = 5  # seconds, both paths (one Prometheus)
SEXTANT_INTERVAL = 5  # SEXTANT_ALERTS_INTERVAL
SEXTANT_DELIVERY = 2  # SEXTANT_ALERTS_DELIVERY_INTERVAL (its default)
PROMETHEUS_EVALUATION = 60  # Prometheus' default evaluation_interval
GROUP_WAIT = 30  # Alertmanager's default
RESOLUTION = 10  # the rule's subquery step: Prometheus' measure lags the truth by up to this
TARGET_RATIO = 0.3
_RULE = catalogue().get(RULE)
assert _RULE.threshold is not None
THRESHOLD = _RULE.threshold.value
FOR = _RULE.for_.total_seconds()


@dataclass
class Stall:
    """One deployment's heartbeat, its stop, and what each path did about it."""

    deployment: str
    exporter: StatsdExporter
    stop_at: float = 0.0  # when the sender must stop (Unix time)
    last_beat: float = 0.0  # when it sent its last heartbeat (Unix time)
    sextant_mail: float | None = None
    alertmanager_mail: float | None = None
    sextant_pending: float | None = None
    sextant_firing: float | None = None
    prometheus_pending: float | None = None
    prometheus_firing: float | None = None
    beats: int = 0
    extra: dict[str, str] = field(default_factory=dict)


# --- Sextant as operators run it -------------------------------------------------------------


@dataclass(kw_only=True)
class SextantServer(Component):
    url: str
    token: str


def start_sextant(dirs: ComponentDirs, prometheus: str, sink: SmtpSink) -> SextantServer:
    """`sextant db upgrade`, `sextant tokens create`, then `sextant serve`, by SEXTANT_* only."""
    home = dirs.make("sextant")
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEXTANT_")}
    env.update({
        "SEXTANT_DATABASE_URL": f"sqlite:///{home / 'sextant.db'}",
        "SEXTANT_RUNTIME": "none",
        "SEXTANT_PROMETHEUS_URL": prometheus,
        "SEXTANT_SMTP_HOST": sink.host,
        "SEXTANT_SMTP_PORT": str(sink.port),
        "SEXTANT_SMTP_FROM": "sextant@example.com",
        "SEXTANT_ALERTS_INTERVAL": str(SEXTANT_INTERVAL),
        "SEXTANT_SERVER_PUBLIC_URL": url,
        "SEXTANT_LOG_LEVEL": "WARNING",
        "SEXTANT_LOG_FORMAT": "text",
        "PYTHONPATH": str(REPO_ROOT),
    })  # fmt: skip
    cli = [sys.executable, "-m", "app.cli"]
    for args in (["db", "upgrade"], ["tokens", "create", "--role", "system-admin"]):
        done = subprocess.run([*cli, *args], env=env, cwd=home, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"sextant {' '.join(args)} failed: {done.stderr[-2000:]}")
    token = done.stdout.strip().splitlines()[-1]
    process = ManagedProcess(
        "sextant", [*cli, "serve", "--port", str(port)], log_path=home / "sextant.log",
        ready=http_ok(f"{url}/healthz"), env=env, cwd=home,
        start_timeout=60,
    )  # fmt: skip
    process.start()
    return SextantServer(process=process, url=url, token=token)


# --- the configuration of the peer path --------------------------------------------------------


def alertmanager_config(sink: SmtpSink) -> str:
    """Stock timers; e-mail for the heartbeat rule, nothing for the rest."""
    return yaml.safe_dump({
        "global": {
            "smtp_smarthost": f"{sink.host}:{sink.port}",
            "smtp_from": "alertmanager@example.com",
            "smtp_require_tls": False,
        },
        "route": {
            "receiver": "blackhole",
            "group_by": ["alertname", "deployment"],
            "routes": [{"receiver": "email", "matchers": [f'alertname="{RULE}"']}],
        },
        "receivers": [
            {"name": "blackhole"},
            {"name": "email", "email_configs": [
                {"to": "alertmanager@{{ .GroupLabels.deployment }}.example.com"}]},
        ],
    }, sort_keys=False)  # fmt: skip


def prometheus_config(file_sd_dir: Path, alertmanager: AlertmanagerServer) -> str:
    """Scrape every 5 s; stock evaluation interval; the catalogue's rule files; Alertmanager."""
    config = {
        "global": {"scrape_interval": f"{SCRAPE}s"},  # evaluation_interval: default (1m)
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"{alertmanager.host}:{alertmanager.port}"]}]}]},
        "rule_files": sorted(catalogue().files),
        "scrape_configs": [file_sd_scrape_config(file_sd_dir)],
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=False)


# --- the scheduler stand-in ----------------------------------------------------------------------


async def heartbeat(stall: Stall, every: float, offset: float) -> None:
    """Send a heartbeat every `every` seconds until `stall.stop_at` (set later) has passed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await asyncio.sleep(offset)
        next_beat = time.time()
        while True:
            now = time.time()
            if stall.stop_at and now >= stall.stop_at:
                return
            sock.sendto(HEARTBEAT.encode(), (stall.exporter.host, stall.exporter.statsd_port))
            stall.last_beat, stall.beats = now, stall.beats + 1
            next_beat += every
            await asyncio.sleep(max(0.0, next_beat - time.time()))


def _prometheus_alerts(prometheus: PrometheusServer) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/alerts", timeout=5) as response:
        alerts: list[dict[str, object]] = json.load(response)["data"]["alerts"]
    return alerts


def _measure_now(prometheus: PrometheusServer, deployment: str) -> float | None:
    """The rule's measure (seconds since the last increase) for one deployment, now."""
    measure = catalogue().get(RULE).measure
    only = f'label_replace(vector(1), "deployment", "{deployment}", "", "")'
    query = urllib.parse.urlencode({"query": f"({measure}) and on (deployment) {only}"})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}", timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def run(args: argparse.Namespace) -> int:
    if not MAPPING.exists():
        print(f"{MAPPING} does not exist; cannot run")
        return 1
    dirs = ComponentDirs.create()
    components: list[Component] = []
    tasks: list[asyncio.Task[None]] = []
    started_all = time.monotonic()
    try:
        sink = await asyncio.to_thread(start_smtp_sink, dirs)
        components.append(sink)
        alertmanager = await asyncio.to_thread(start_alertmanager, dirs, alertmanager_config(sink))
        components.append(alertmanager)
        stalls = []
        for index in range(args.deployments):
            exporter = await asyncio.to_thread(start_statsd_exporter, dirs, MAPPING)
            components.append(exporter)
            stalls.append(Stall(f"etl-{index + 1}", exporter))
        file_sd = dirs.make("file_sd")
        for stall in stalls:
            view = DeploymentView(
                name=stall.deployment, workspace=WORKSPACE, executor="CeleryExecutor",
                airflow_version="3.0.0", components={}, generation=1,
                metrics_address=f"{stall.exporter.host}:{stall.exporter.web_port}",
            )  # fmt: skip
            (file_sd / file_sd_name(stall.deployment)).write_text(render_file_sd(view))
        for index, stall in enumerate(stalls):
            offset = args.beat * index / max(1, len(stalls))
            tasks.append(asyncio.create_task(heartbeat(stall, args.beat, offset)))
        prometheus = await asyncio.to_thread(
            start_prometheus, dirs, prometheus_config(file_sd, alertmanager), catalogue().files
        )
        components.append(prometheus)
        sextant = await asyncio.to_thread(start_sextant, dirs, prometheus.url, sink)
        components.append(sextant)
        async with httpx.AsyncClient(
            base_url=sextant.url, headers={"Authorization": f"Bearer {sextant.token}"}, timeout=30
        ) as api:
            await _register(api, stalls)
            return await _measure(args, stalls, prometheus, sink, api, started_all)
    finally:
        for task in tasks:
            task.cancel()
        for component in reversed(components):
            component.stop()
        dirs.remove()


async def _register(api: httpx.AsyncClient, stalls: list[Stall]) -> None:
    calls = [("/api/v1/workspaces", {"name": WORKSPACE})]
    for stall in stalls:
        calls.append((f"/api/v1/workspaces/{WORKSPACE}/deployments", {"name": stall.deployment}))
        calls.append((f"/api/v1/deployments/{stall.deployment}/alert-recipients",
                      {"email": f"oncall@{stall.deployment}.example.com",
                       "min_severity": "critical"}))  # fmt: skip
    for path, body in calls:
        response = await api.post(path, json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")


async def _measure(
    args: argparse.Namespace,
    stalls: list[Stall],
    prometheus: PrometheusServer,
    sink: SmtpSink,
    api: httpx.AsyncClient,
    started_all: float,
) -> int:
    # Warm-up: every counter seen rising by Prometheus (the measure is small), then a margin.
    deadline = time.monotonic() + 120
    while True:
        values = [await asyncio.to_thread(_measure_now, prometheus, s.deployment) for s in stalls]
        if all(v is not None and v < 30 for v in values) and all(s.beats >= 6 for s in stalls):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"heartbeats not seen rising by Prometheus: {values}")
        await asyncio.sleep(1)
    await asyncio.sleep(args.warmup)
    if mailbox(sink.maildir):
        raise RuntimeError("an e-mail arrived before any heartbeat stopped")
    print(
        f"stall_to_email: {len(stalls)} deployments, heartbeat every {args.beat:g} s, scrape "
        f"every {SCRAPE} s; Sextant evaluation every {SEXTANT_INTERVAL} s, delivery every "
        f"{SEXTANT_DELIVERY} s; Prometheus evaluation_interval {PROMETHEUS_EVALUATION} s "
        f"(default), Alertmanager group_wait {GROUP_WAIT} s (default); rule {RULE}: threshold "
        f"{THRESHOLD:g} s, for {FOR:g} s; stops {args.stagger:g} s apart; load average "
        f"{load_average()}",
        flush=True,
    )
    first_stop = time.time() + 1
    for index, stall in enumerate(stalls):
        stall.stop_at = first_stop + index * args.stagger
    end = stalls[-1].stop_at + args.cap + 2
    while time.time() < end:
        now = time.time()
        for received in mailbox(sink.maildir):
            address = received.envelope_to
            for stall in stalls:
                if address.endswith(f"@{stall.deployment}.example.com") and "FIRING" in (
                    received.subject.upper()
                ):
                    at = received.received_ns / 1e9
                    if address.startswith("oncall@") and stall.sextant_mail is None:
                        stall.sextant_mail = at
                    if address.startswith("alertmanager@") and stall.alertmanager_mail is None:
                        stall.alertmanager_mail = at
        for alert in await asyncio.to_thread(_prometheus_alerts, prometheus):
            labels = alert.get("labels") or {}
            assert isinstance(labels, dict)
            if labels.get("alertname") != RULE:
                continue
            for stall in stalls:
                if labels.get("deployment") == stall.deployment:
                    if stall.prometheus_pending is None:
                        stall.prometheus_pending = _unix(str(alert["activeAt"]))
                    if alert.get("state") == "firing" and stall.prometheus_firing is None:
                        stall.prometheus_firing = now
        if all(s.sextant_mail and s.alertmanager_mail for s in stalls):
            break
        await asyncio.sleep(0.5)
    for stall in stalls:
        alerts = (await api.get(f"/api/v1/deployments/{stall.deployment}/alerts")).json()
        for alert in alerts:
            if alert["rule"] == RULE:
                stall.sextant_pending = _unix(alert["active_since"])
                stall.sextant_firing = _unix(alert["fired_at"]) if alert["fired_at"] else None
    _report(args, stalls, started_all)
    return 0


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _after(stall: Stall, at: float | None) -> float | None:
    return None if at is None else at - stall.last_beat


def _held(pending: float | None, firing: float | None) -> str:
    return "-" if pending is None or firing is None else f"{firing - pending:.1f}"


def _seconds(value: float | None, cap: float) -> str:
    return f"> {cap:.0f}" if value is None else f"{value:.1f}"


def _report(args: argparse.Namespace, stalls: list[Stall], started_all: float) -> None:
    cap = args.cap
    rows: list[list[object]] = []
    for stall in stalls:
        mine, peer = _after(stall, stall.sextant_mail), _after(stall, stall.alertmanager_mail)
        share = f"{mine / peer:.2f}" if mine and peer else (f"< {mine / cap:.2f}" if mine else "-")
        rows.append([
            stall.deployment,
            _seconds(_after(stall, stall.sextant_pending), cap),
            _seconds(_after(stall, stall.sextant_firing), cap),
            _seconds(mine, cap),
            _seconds(_after(stall, stall.prometheus_pending), cap),
            _seconds(_after(stall, stall.prometheus_firing), cap),
            _seconds(peer, cap),
            share,
        ])  # fmt: skip
    print("\nSeconds after the last heartbeat (pending/firing: when each path's alert state "
          "changed; e-mail: when the sink accepted it)")  # fmt: skip
    print(table(["deployment", "Sextant pending", "Sextant firing", "Sextant e-mail",
                 "Prometheus pending", "Prometheus firing", "Alertmanager e-mail",
                 "Sextant / AM"], rows))  # fmt: skip

    ours = [_after(s, s.sextant_mail) for s in stalls]
    peers = [_after(s, s.alertmanager_mail) for s in stalls]
    ours_known = [v for v in ours if v is not None]
    peers_or_cap = [cap if v is None else v for v in peers]
    threshold, for_ = THRESHOLD, FOR
    bound = threshold + for_ + SEXTANT_INTERVAL + SCRAPE + 2
    print(
        f"\n  Sextant bound (issue): threshold {threshold:g} + for {for_:g} + evaluation "
        f"{SEXTANT_INTERVAL} + scrape {SCRAPE} + 2 = {bound:g} s (Sextant's measure follows "
        f"the counter to the scrape: 1 s steps)"
    )
    rounded_for = math.ceil(for_ / PROMETHEUS_EVALUATION) * PROMETHEUS_EVALUATION
    print(
        f"  Alertmanager path, expected: threshold {threshold:g} + up to {RESOLUTION} (the "
        f"rule's subquery step) + up to {SCRAPE} + up to {PROMETHEUS_EVALUATION} (first "
        f"evaluation after the breach) + {rounded_for} (`for` rounded up to whole "
        f"evaluations) + group_wait {GROUP_WAIT} = {threshold + rounded_for + GROUP_WAIT:g}-"
        f"{threshold + RESOLUTION + SCRAPE + PROMETHEUS_EVALUATION + rounded_for + GROUP_WAIT:g}"
        " s"
    )
    held = [_held(s.sextant_pending, s.sextant_firing) for s in stalls]
    held_peer = [_held(s.prometheus_pending, s.prometheus_firing) for s in stalls]
    print(
        f"  pending -> firing (`for: {for_:g}s`): Sextant "
        f"{', '.join(held)} s (evaluations every {SEXTANT_INTERVAL} s); "
        f"Prometheus {', '.join(held_peer)} s (first seen firing, "
        f"polled every ~1 s; evaluations every {PROMETHEUS_EVALUATION} s)"
    )
    if ours_known:
        beyond = [o - threshold - for_ for o in ours_known]
        beyond_peer = [p - threshold - for_ for p in peers_or_cap]
        print(
            f"  beyond threshold + for: Sextant median {median(beyond):.1f} s, Alertmanager "
            f"median {median(beyond_peer):.1f} s{'+' if None in peers else ''} "
            f"(ratio {median(beyond) / median(beyond_peer):.2f})"
        )
    print("\nTargets")
    worst = max(ours_known) if len(ours_known) == len(ours) else None
    print(f"  Sextant, worst of {len(stalls)}: {_seconds(worst, cap)} s <= {bound:g} s: "
          f"{verdict(worst is not None and worst <= bound)}")  # fmt: skip
    if ours_known:
        ratio = median(ours_known) / median(peers_or_cap)
        qualifier = "<= " if None in peers else ""
        print(f"  Sextant / Alertmanager path, medians: {qualifier}{ratio:.2f} (target <= "
              f"{TARGET_RATIO}): {verdict(ratio <= TARGET_RATIO)}")  # fmt: skip
    print(f"  run time {time.monotonic() - started_all:.0f} s; load average {load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument("--stagger", type=float, default=20.0, help="seconds between stops")
    parser.add_argument("--beat", type=float, default=5.0, help="seconds between heartbeats")
    parser.add_argument("--warmup", type=float, default=15.0, help="extra healthy seconds")
    parser.add_argument("--cap", type=float, default=330.0, help="give up after (s)")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
