"""`sextant demo`: one command, a whole installation on this machine, gone on Ctrl-C.

It brings up Prometheus and Alertmanager (supervised processes), a small SMTP sink that keeps
e-mails as files, Sextant itself (API and periodic jobs, on its own SQLite file) with the local
runtime, and one real Airflow deployment with sample DAGs, set up through Sextant's API as a user
would. It says what it is waiting for while it waits, prints the URLs, the token, where the
e-mails land and what to try, and stops everything on Ctrl-C. What it needs but lacks it
installs (the Airflow environment; statsd_exporter when Go is there) or names exactly, with the
command that installs it.

Everything lives under `<state dir>/_demo/`, kept between runs: a second `sextant demo` starts
the same deployment again, faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from app.core.database import create_engine, create_sessionmaker, session_scope
from app.core.security import Role
from app.core.settings import (
    AlertmanagerSettings,
    DatabaseSettings,
    PrometheusSettings,
    Runtime,
    ServerSettings,
    Settings,
    SmtpSettings,
)
from app.demo.smtp_sink import SmtpSink
from app.integrations.airflow import AirflowApi
from app.integrations.errors import IntegrationError
from app.integrations.sextant import SextantApi
from app.main import create_app, ensure_schema
from app.observability import alertmanager
from app.observability.prometheus_target import file_sd_scrape_config
from app.runtime.local import LocalRuntime
from app.runtime.local_supervisor import (
    HOST,
    ProcessSpec,
    Readiness,
    ReadyKind,
    Supervisor,
    log_tail,
    wait_until,
)
from app.runtime.local_tools import (
    ToolMissing,
    find_program,
    install_statsd_exporter,
    missing_programs,
    setup,
)
from app.tokens.service import CLI_PRINCIPAL, tokens

DEMO_DAGS = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dags"
WORKSPACE = "demo"
DEPLOYMENT = "demo-airflow"
RECIPIENT = "oncall@example.com"
GROUP = "_demo"
READY_TIMEOUT = 300.0
BURST_DAG = "demo_burst"
# The demo's scale-down window: short, so that the workers come back down while one watches.
DEMO_SCALE_DOWN_WINDOW = 60

Say = Callable[[str], None]


class DemoFailed(Exception):
    """The demo cannot run; the message says why and what to do."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo stops everything in order itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _free_port(preferred: int | None = None) -> int:
    # The usual port if it is free, else one below the ephemeral range (which outgoing
    # connections use), else any.
    candidates = [preferred] if preferred else []
    candidates += random.sample(range(10000, 20000), 50)
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port or 0))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise DemoFailed("no free port on 127.0.0.1")


@dataclass
class Demo:
    base: Settings
    say: Say
    port: int = 8080

    def __post_init__(self) -> None:
        self.home = self.base.local.state_dir / GROUP
        self.supervisor = Supervisor()

    # --- what is needed -----------------------------------------------------------------------

    def check(self) -> tuple[Path, Path]:
        """Install what can be installed, name what cannot; the Prometheus and AM binaries."""
        local = self.base.local.model_copy(update={"state_dir": self.home / "runtime"})
        self.say("checking what the demo needs")
        try:
            setup(local, self.say)
            install_statsd_exporter(local, self.say)
        except ToolMissing as exc:
            raise DemoFailed(str(exc)) from None
        problems = missing_programs(local)
        prometheus = find_program("prometheus", local)
        am = find_program("prometheus-alertmanager", local) or find_program("alertmanager", local)
        apt = []
        if prometheus is None:
            apt.append("prometheus")
        if am is None:
            apt.append("prometheus-alertmanager")
        if apt:
            problems.append(f"{' and '.join(apt)} not found: apt-get install {' '.join(apt)}")
        if problems:
            raise DemoFailed(
                "missing:\n  " + "\n  ".join(problems) + "\n(Debian/Ubuntu: apt-get install "
                "postgresql pgbouncer redis-server prometheus prometheus-alertmanager)"
            )
        assert prometheus is not None
        assert am is not None
        return prometheus, am

    # --- the monitoring stack -----------------------------------------------------------------

    def monitoring_specs(
        self, prometheus: Path, am: Path, ports: dict[str, int], token_file: Path
    ) -> list[ProcessSpec]:
        folders = {name: self.home / name for name in ("prometheus", "alertmanager", "logs")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        (self.home / "prometheus" / "file_sd").mkdir(exist_ok=True)
        (self.home / "prometheus" / "rules").mkdir(exist_ok=True)
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": [str(self.home / "prometheus" / "rules" / "*.yml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{ports['am']}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "sextant",
                    "static_configs": [{"targets": [f"{HOST}:{ports['sextant']}"]}],
                },
                file_sd_scrape_config(self.home / "prometheus" / "file_sd"),
            ],
        }
        (self.home / "prometheus" / "prometheus.yml").write_text(
            yaml.safe_dump(config, sort_keys=False)
        )
        (self.home / "alertmanager" / "alertmanager.yml").write_text(
            alertmanager.render(
                f"http://{HOST}:{ports['sextant']}", credentials_file=str(token_file)
            )
        )
        plain = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        return [
            ProcessSpec(
                name="prometheus",
                component="prometheus",
                argv=(
                    str(prometheus),
                    f"--config.file={self.home / 'prometheus' / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.home / 'prometheus' / 'data'}",
                    f"--web.listen-address={HOST}:{ports['prometheus']}",
                    "--web.enable-lifecycle",
                ),
                log_path=str(folders["logs"] / "prometheus.log"),
                readiness=Readiness(
                    ReadyKind.HTTP, url=f"http://{HOST}:{ports['prometheus']}/-/ready"
                ),
                env=plain,
                cwd=str(self.home / "prometheus"),
                title=f"Prometheus on {HOST}:{ports['prometheus']}",
            ),
            ProcessSpec(
                name="alertmanager",
                component="alertmanager",
                argv=(
                    str(am),
                    f"--config.file={self.home / 'alertmanager' / 'alertmanager.yml'}",
                    f"--storage.path={self.home / 'alertmanager' / 'data'}",
                    f"--web.listen-address={HOST}:{ports['am']}",
                    # Without it Alertmanager opens a gossip port on 0.0.0.0:9094.
                    "--cluster.listen-address=",
                ),
                log_path=str(folders["logs"] / "alertmanager.log"),
                readiness=Readiness(ReadyKind.HTTP, url=f"http://{HOST}:{ports['am']}/-/ready"),
                env=plain,
                cwd=str(self.home / "alertmanager"),
                title=f"Alertmanager on {HOST}:{ports['am']}",
            ),
        ]

    async def wait_ready(self, names: list[str], timeout: float = 60.0) -> None:
        last = {"at": 0.0}

        def ready() -> bool:
            return all(
                (u := self.supervisor.unit(GROUP, name)) is not None and u.satisfied()
                for name in names
            )

        def progress(elapsed: float) -> None:
            if elapsed - last["at"] >= 5:
                last["at"] = elapsed
                for name in names:
                    unit = self.supervisor.unit(GROUP, name)
                    if unit is not None and not unit.satisfied():
                        self.say(f"  {name}: {unit.reason}")

        if not await wait_until(ready, timeout, progress):
            for name in names:
                unit = self.supervisor.unit(GROUP, name)
                if unit is not None and not unit.satisfied():
                    raise DemoFailed(
                        f"{name} did not start: {unit.reason}\n{log_tail(unit.spec.log_path)}"
                    )

    # --- Sextant ------------------------------------------------------------------------------

    def settings(self, ports: dict[str, int], smtp_port: int) -> Settings:
        public = f"http://{HOST}:{ports['sextant']}"
        return self.base.model_copy(
            update={
                "runtime": Runtime.LOCAL,
                "database": DatabaseSettings(url=f"sqlite:///{self.home / 'sextant.db'}"),
                "server": ServerSettings(host=HOST, port=ports["sextant"], public_url=public),
                "prometheus": PrometheusSettings(
                    url=f"http://{HOST}:{ports['prometheus']}",
                    file_sd_dir=self.home / "prometheus" / "file_sd",
                    rules_dir=self.home / "prometheus" / "rules",
                ),
                "alertmanager": AlertmanagerSettings(url=f"http://{HOST}:{ports['am']}"),
                "smtp": SmtpSettings(
                    host=HOST, port=smtp_port, **{"from": "sextant-demo@localhost"}
                ),
                "local": self.base.local.model_copy(update={"state_dir": self.home / "runtime"}),
                "grafana": self.base.grafana.model_copy(update={"url": None}),
                "elasticsearch": self.base.elasticsearch.model_copy(update={"url": None}),
            }
        )

    async def tokens(self, settings: Settings) -> tuple[str, str]:
        """A system-admin token for the user and an alertmanager token for its webhook."""
        await ensure_schema(settings)
        engine = create_engine(settings.database)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                admin = await tokens.create(
                    session, CLI_PRINCIPAL, name="demo", role=Role.SYSTEM_ADMIN,
                    workspace_name=None, deployment_name=None,
                )  # fmt: skip
                hook = await tokens.create(
                    session, CLI_PRINCIPAL, name="demo-alertmanager", role=Role.ALERTMANAGER,
                    workspace_name=None, deployment_name=None,
                )  # fmt: skip
        finally:
            await engine.dispose()
        return admin.token, hook.token

    async def register(self, api: SextantApi, runtime: LocalRuntime) -> None:
        """Workspace, deployment (with the sample DAGs) and a recipient, through the API."""
        await api.call("POST", "/api/v1/workspaces", {"name": WORKSPACE}, accept=(409,))
        dags = runtime.dags_folder(DEPLOYMENT)
        dags.mkdir(parents=True, exist_ok=True)
        for dag in sorted(DEMO_DAGS.glob("*.py")):
            shutil.copy(dag, dags / dag.name)
        body = {
            "name": DEPLOYMENT,
            "description": "the sextant demo's Airflow",
            "worker_concurrency": 4,
            "min_workers": 1,
            "max_workers": 3,
        }
        status, _ = await api.call(
            "POST", f"/api/v1/workspaces/{WORKSPACE}/deployments", body, accept=(409,)
        )
        self.say(
            f"deployment {DEPLOYMENT}: "
            + ("registered" if status == 201 else "already registered, starting it again")
        )
        await api.call(
            "POST", f"/api/v1/deployments/{DEPLOYMENT}/alert-recipients",
            {"email": RECIPIENT}, accept=(409,),
        )  # fmt: skip
        await api.call("POST", f"/api/v1/deployments/{DEPLOYMENT}/provisioning/sync")

    async def wait_healthy(self, api: SextantApi, runtime: LocalRuntime) -> None:
        started = time.monotonic()
        said = ""
        last_report = 0.0
        while True:
            _, deployment = await api.call("GET", f"/api/v1/deployments/{DEPLOYMENT}")
            status, reason = deployment["status"], deployment["status_reason"]
            elapsed = time.monotonic() - started
            if status == "healthy":
                self.say(f"  [{elapsed:3.0f} s] healthy: {reason}")
                return
            line = f"{status}: {reason}"
            if line != said:
                self.say(f"  [{elapsed:3.0f} s] {line}")
                said = line
            report = runtime.failure_report(DEPLOYMENT, lines=8)
            if report and elapsed - last_report > 30:
                self.say(f"  something keeps failing:\n{report}")
                last_report = elapsed
            if elapsed > READY_TIMEOUT:
                raise DemoFailed(
                    f"{DEPLOYMENT} not healthy after {READY_TIMEOUT:.0f} s ({line})\n"
                    + (report or "\n".join(runtime.progress(DEPLOYMENT)))
                )
            await asyncio.sleep(2)

    # --- the whole demo -----------------------------------------------------------------------

    async def run(self) -> None:
        prometheus, am = self.check()
        self.home.mkdir(parents=True, exist_ok=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ports = {
            "sextant": _free_port(self.port),
            "prometheus": _free_port(9090),
            "am": _free_port(9093),
        }
        if ports["sextant"] != self.port:
            self.say(f"port {self.port} is taken; Sextant listens on {ports['sextant']}")
        sink = SmtpSink(self.home / "mail", notify=lambda line: self.say(f"  ✉ {line}"))
        await sink.start(HOST)
        settings = self.settings(ports, sink.port)
        admin_token, hook_token = await self.tokens(settings)
        token_file = self.home / "alertmanager-token"
        token_file.write_text(hook_token)
        token_file.chmod(0o600)
        server: _Server | None = None
        serving: asyncio.Task[None] | None = None
        runtime: LocalRuntime | None = None
        try:
            self.say("starting Prometheus and Alertmanager")
            self.supervisor.start()
            self.supervisor.ensure(
                GROUP, self.monitoring_specs(prometheus, am, ports, token_file), self.home / "run"
            )
            await self.wait_ready(["prometheus", "alertmanager"])
            self.say(f"starting Sextant on http://{HOST}:{ports['sextant']}")
            app = create_app(settings)
            server = _Server(
                uvicorn.Config(app, host=HOST, port=ports["sextant"], log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            if not await wait_until(lambda: server is not None and server.started, 60):
                raise DemoFailed("Sextant did not start listening")
            runtime = app.state.targets[0]
            assert isinstance(runtime, LocalRuntime)
            api = SextantApi(f"http://{HOST}:{ports['sextant']}", admin_token)
            await self.register(api, runtime)
            self.say(f"starting Airflow ({DEPLOYMENT}); the first start takes about a minute")
            await self.wait_healthy(api, runtime)
            self.summary(ports, runtime, admin_token)
            scene = asyncio.create_task(self.scaling_scene(api, runtime, stop))
            await stop.wait()
            scene.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await scene
            self.say("stopping everything (Ctrl-C again is not needed)")
        except IntegrationError as exc:
            raise DemoFailed(str(exc)) from None
        finally:
            if runtime is not None:
                await runtime.shutdown()
            if server is not None:
                server.should_exit = True
            if serving is not None:
                with contextlib.suppress(Exception):
                    await serving
            await self.supervisor.shutdown()
            await sink.stop()
            self.say("stopped")

    async def scaling_scene(
        self, api: SextantApi, runtime: LocalRuntime, stop: asyncio.Event
    ) -> None:
        """Turn autoscaling on, trigger a burst of parallel tasks, and narrate each decision
        until the workers are back at the minimum."""
        policy = {"enabled": True, "scale_down_window_seconds": DEMO_SCALE_DOWN_WINDOW}
        await api.call("PUT", f"/api/v1/deployments/{DEPLOYMENT}/scaling-policy", policy)
        url = runtime.api_url(DEPLOYMENT)
        if url is None:
            return
        airflow = AirflowApi(url, timeout=30)
        started = time.monotonic()
        while not await airflow.dag_exists(BURST_DAG):
            if time.monotonic() - started > 180 or stop.is_set():
                self.say(f"scaling scene skipped: {BURST_DAG} was not parsed within 3 minutes")
                return
            await asyncio.sleep(3)
        await airflow.unpause(BURST_DAG)
        run_id = await airflow.trigger(BURST_DAG)
        self.say(
            f"\nscaling scene: autoscaling on, {BURST_DAG} triggered ({run_id}): 12 tasks of 30 s "
            "on workers of 4 slots; each decision of the autoscaler follows"
        )
        seen: set[int] = set()
        went_up = False
        while not stop.is_set():
            _, page = await api.call(
                "GET", f"/api/v1/deployments/{DEPLOYMENT}/scaling-decisions?limit=20"
            )
            for decision in reversed(page["items"]):
                if decision["id"] in seen:
                    continue
                seen.add(decision["id"])
                load = (decision["queued"] or 0) + (decision["running"] or 0)
                self.say(
                    f"  [{time.monotonic() - started:4.0f} s] {decision['reason']}: load "
                    f"{load:g}, workers {decision['current']} -> {decision['desired']}"
                    + (f" ({decision['detail']})" if decision["detail"] else "")
                )
                went_up = went_up or decision["desired"] > decision["current"]
                if went_up and decision["reason"] == "scale_down" and decision["desired"] == 1:
                    self.say("  back to one worker; every task finished (warm shutdown)")
                    return
            await asyncio.sleep(2)

    def summary(self, ports: dict[str, int], runtime: LocalRuntime, token: str) -> None:
        sextant = f"http://{HOST}:{ports['sextant']}"
        scheduler = runtime.supervisor.unit(DEPLOYMENT, "scheduler")
        pid = scheduler.pid if scheduler is not None else None
        lines = [
            "",
            "Sextant demo is up:",
            f"  Sextant API      {sextant}/docs   (token below)",
            f"  Airflow UI       {runtime.api_url(DEPLOYMENT)}   (every user is an admin)",
            f"  Flower           {runtime.flower_url(DEPLOYMENT)}",
            f"  Prometheus       http://{HOST}:{ports['prometheus']}",
            f"  Alertmanager     http://{HOST}:{ports['am']}",
            f"  e-mails          {self.home / 'mail'}/*.eml (new ones are announced here)",
            f"  component logs   {runtime.logs_dir(DEPLOYMENT)}/",
            f"  DAG files        {runtime.dags_folder(DEPLOYMENT)}/",
            "",
            "  export SEXTANT_TOKEN=" + token,
            "",
            "What to try:",
            f'  curl -H "Authorization: Bearer $SEXTANT_TOKEN" '
            f"{sextant}/api/v1/deployments/{DEPLOYMENT}",
            f'  curl -H "Authorization: Bearer $SEXTANT_TOKEN" '
            f"{sextant}/api/v1/deployments/{DEPLOYMENT}/provisioning",
            "  demo_burst is triggered for you: watch the workers scale up and back down below,",
            f'    or: curl -H "Authorization: Bearer $SEXTANT_TOKEN" '
            f"{sextant}/api/v1/deployments/{DEPLOYMENT}/scaling-decisions",
            f"  stall the scheduler: kill -STOP {pid}  -> a FIRING e-mail in a minute or two;",
            f"    kill -CONT {pid} -> RESOLVED",
            "  Prometheus: airflow_scheduler_heartbeat, airflow_executor_running_tasks",
            "",
            "Ctrl-C stops everything.",
        ]
        for line in lines:
            self.say(line)


def run_demo(settings: Settings, say: Say, port: int = 8080) -> None:
    """Run the demo until Ctrl-C; DemoFailed says what went wrong."""
    asyncio.run(Demo(settings, say, port).run())
