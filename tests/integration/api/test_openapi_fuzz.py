"""Fuzz the whole API from its own OpenAPI document: no 500 ever, and every answer as documented.

Schemathesis sends schema-derived requests, valid and invalid, to every operation of the
in-process app as a system administrator. Each response must not be a server error and must match
what the document promises: a declared status code, a declared content type, a body that validates
against the declared schema (the JSON error envelope included), and the checks that go with them
(invalid input rejected, valid input accepted, 405 for a method a path does not have).

The document is the one the app serves at `/openapi.json` (checked against the running app). It
is loaded at import time, from an app that is built but never started, because Schemathesis makes
one pytest item per operation while collecting (`schemathesis.pytest.from_fixture` would load it
from a fixture, but it sets `Node._nodeid`, which pytest 9.2 no longer has). The requests go to a
started app on the database under test, through Schemathesis' ASGI client.

Three refusals of schema-valid input are documented behaviour that JSON Schema cannot state, and
are let through (`filter_failure`): cross-field rules of the services (min_workers <= max_workers),
addresses on special-use domains (.test, .local, ...), and NUL characters on PostgreSQL.

Random names would only ever reach "not found". So a workspace, a deployment, a recipient on each
and a workspace token are created first, and about half of the cases with valid path parameters are
pointed at those real objects (a pure function of the generated case, so Hypothesis can replay and
shrink). A case that renames or deletes one of them is followed by a repair, so that later cases
still find them.

Bounded for CI: a fixed seed, deterministic generation and a small number of examples per
operation keep each backend's run to about 20 seconds on two cores.
"""

from __future__ import annotations

import asyncio
import copy
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import requests.adapters
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData, ServerError
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi
from sqlalchemy import delete

from app.core.clock import FrozenClock
from app.core.database import Base, create_engine, create_sessionmaker
from app.core.security import Role
from app.core.settings import DatabaseSettings, SchedulerSettings, Settings
from app.main import create_app
from app.tokens.service import CLI_PRINCIPAL, tokens

WORKSPACE = "fuzz-ws"
DEPLOYMENT = "fuzz-dep"
API = "/api/v1"
BASE_URL = f"http://{asgi.HOST}"

# Per operation, in the fuzzing phase; the examples and coverage phases add their own cases.
MAX_EXAMPLES = 30
SEED = 20261124

FUZZ_CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        # No example database: a run depends on the seed alone and leaves nothing behind.
        "database": "none",
    },
    # Link-following scenarios are a separate Schemathesis engine feature, not used here.
    "phases": {"stateful": {"enabled": False}},
}


def _unstarted_app_settings() -> Settings:
    # Only used to render the document; the app it configures is never started.
    database = DatabaseSettings(url="sqlite:///:memory:")
    return Settings(_env_file=None, database=database)  # type: ignore[call-arg]


DOCUMENT = create_app(_unstarted_app_settings()).openapi()
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT), config=schemathesis.Config.from_dict(FUZZ_CONFIG)
)


@dataclass
class RealObjects:
    """Ids of the seeded objects that generated cases may address; updated after each repair."""

    deployment_recipient: int = 0
    workspace_recipient: int = 0
    token_id: str = ""
    rule: str = ""
    silence_id: int = 0
    # Status codes answered per operation, to show that both real and missing objects were hit.
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def reset(self) -> None:
        """Forget the previous backend's objects."""
        self.deployment_recipient, self.workspace_recipient, self.token_id = 0, 0, ""
        self.rule, self.silence_id = "", 0
        self.statuses.clear()
        self.failed.clear()


REAL = RealObjects()
"""Read when a case is sent; the module's fixture fills it in for each backend."""


@dataclass
class SeededApi:
    """The started app's client, an administrator's headers, and upkeep of the seeded objects."""

    client: requests.Session
    headers: dict[str, str]
    repairs: int = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request to the API as the administrator."""
        return self.client.request(method, API + path, headers=self.headers, **kwargs)

    def ensure(self) -> None:
        """Create whichever seeded object is missing (at the start, or after a fuzzed delete)."""
        if self.request("GET", f"/workspaces/{WORKSPACE}").status_code == 404:
            _expect(self.request("POST", "/workspaces", json={"name": WORKSPACE}), 201)
        if self.request("GET", f"/deployments/{DEPLOYMENT}").status_code == 404:
            body = {"name": DEPLOYMENT}
            _expect(self.request("POST", f"/workspaces/{WORKSPACE}/deployments", json=body), 201)
        on_deployment = f"/deployments/{DEPLOYMENT}/alert-recipients"
        if self.request("GET", f"{on_deployment}/{REAL.deployment_recipient}").status_code != 200:
            REAL.deployment_recipient = self._add_recipient(on_deployment, "deployment")
        on_workspace = f"/workspaces/{WORKSPACE}/alert-recipients"
        if self.request("GET", f"{on_workspace}/{REAL.workspace_recipient}").status_code != 200:
            REAL.workspace_recipient = self._add_recipient(on_workspace, "workspace")
        if not REAL.token_id or self._token_revoked():
            body = {"name": "fuzz-token", "role": Role.WORKSPACE_VIEWER.value}
            created = self.request("POST", f"/workspaces/{WORKSPACE}/tokens", json=body)
            REAL.token_id = _expect(created, 201)["id"]
        if not REAL.rule:
            REAL.rule = _expect(self.request("GET", f"/deployments/{DEPLOYMENT}/alert-rules"))[0][
                "name"
            ]
        if self.request("GET", f"/silences/{REAL.silence_id}").status_code != 200:
            matchers = [{"label": "deployment", "value": DEPLOYMENT}]
            body = {"matchers": matchers, "ends_at": "2100-01-01T00:00:00Z"}
            REAL.silence_id = _expect(self.request("POST", "/silences", json=body), 201)["id"]

    def repair(self, case: schemathesis.Case, response: schemathesis.Response) -> None:
        """Undo a successful rename or delete of a seeded object."""
        method = case.method.upper()
        if method not in ("PATCH", "DELETE") or response.status_code >= 300:
            return
        params = case.path_parameters or {}
        seeded = (
            params.get("workspace") == WORKSPACE
            or params.get("name") == DEPLOYMENT
            or params.get("silence_id") == REAL.silence_id
        )
        if not seeded:
            return
        self.repairs += 1
        if method == "PATCH" and case.path == f"{API}/workspaces/{{workspace}}":
            renamed = response.json()["name"]
            if renamed != WORKSPACE:
                _expect(self.request("PATCH", f"/workspaces/{renamed}", json={"name": WORKSPACE}))
        self.ensure()

    def _add_recipient(self, path: str, kind: str) -> int:
        body = {"email": f"fuzz-{kind}-{self.repairs}@example.com", "min_severity": "critical"}
        return int(_expect(self.request("POST", path, json=body), 201)["id"])

    def _token_revoked(self) -> bool:
        listed = _expect(self.request("GET", f"/workspaces/{WORKSPACE}/tokens?limit=500"))
        mine = [t for t in listed["items"] if t["id"] == REAL.token_id]
        return not mine or mine[0]["revoked_at"] is not None


def _expect(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"seeding: {response.status_code} {response.text}"
    return response.json()


def _addresses_real_objects(case: schemathesis.Case) -> bool:
    """Whether this case should address the seeded objects: about half, chosen by its content."""
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.PATH):
        # Invalid path parameters stay invalid: they test validation, not the lookup.
        return False
    fingerprint = case.method + repr(sorted((k, repr(v)) for k, v in case.path_parameters.items()))
    return zlib.crc32(fingerprint.encode()) % 2 == 0


@schema.hook
def filter_failure(
    context: schemathesis.HookContext,
    failure: Any,
    case: schemathesis.Case,
    response: schemathesis.Response,
) -> bool:
    """Keep every failure except documented answers that JSON Schema cannot predict."""
    status = response.status_code
    if isinstance(failure, ServerError):
        # 503 is how an operation says that an integration it needs (SMTP, ...) is not there;
        # it is fine where documented. Anything else, a 500 above all, is a failure.
        return not (status == 503 and "503" in case.operation.responses.status_codes)
    if not isinstance(failure, RejectedPositiveData | AcceptedNegativeData):
        return True
    if status == 413:
        # Over the body size limit (documented everywhere): a long enough array of valid items
        # is refused before validation, whatever the schema's maxItems.
        return False
    if not isinstance(failure, RejectedPositiveData) or status != 422:
        return True
    details = response.json()["error"]["details"]
    return not details or not all(_is_domain_rule(detail) for detail in details)


def _is_domain_rule(detail: dict[str, Any]) -> bool:
    """Whether a 422 detail comes from a rule that JSON Schema cannot state."""
    # Services raise InvalidInput (no validator type) for rules across fields, such as
    # min_workers <= max_workers; request validation always names its pydantic error type.
    if detail.get("type") is None:
        return True
    # PostgreSQL cannot store NUL (\u0000) in text, which a JSON string may hold.
    if detail.get("type") == "nul":
        return True
    # Recipients must be deliverable: email-validator refuses special-use domains (.test,
    # .local, .invalid, ...) that `format: email` allows.
    return "special-use or reserved name" in str(detail.get("message", ""))


def address_real_objects(case: schemathesis.Case) -> None:
    """Point about half of the cases with valid path parameters at the seeded objects."""
    params = case.path_parameters
    if not params or not _addresses_real_objects(case):
        return
    # Only valid values replace valid ones, so the case stays as valid as it was generated.
    if "workspace" in params:
        params["workspace"] = WORKSPACE
    if "name" in params:
        params["name"] = DEPLOYMENT
    if "recipient_id" in params:
        on_deployment = "name" in params
        params["recipient_id"] = (
            REAL.deployment_recipient if on_deployment else REAL.workspace_recipient
        )
    if "token_id" in params:
        params["token_id"] = REAL.token_id
    if "rule" in params:
        params["rule"] = REAL.rule
    if "silence_id" in params:
        params["silence_id"] = REAL.silence_id


class InProcessAdapter(requests.adapters.BaseAdapter):
    """Hands each request to Schemathesis' ASGI adapter, as a plain adapter without a pool.

    urllib3-future (grafana-client -> niquests) replaces urllib3 when the interpreter starts,
    and its pool manager lacks the `pools.keys()` that Schemathesis reads from every
    `HTTPAdapter` of a session to count connections. An in-process app has none to count.
    """

    def __init__(self, inner: requests.adapters.BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Send through the wrapped adapter."""
        return self.inner.send(request, *args, **kwargs)

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.inner.close()


async def _prepare_database(url: str) -> dict[str, str]:
    """Empty every table and issue a system administrator's token, as `sextant tokens` would."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(delete(table))
        async with create_sessionmaker(engine)() as session:
            created = await tokens.create(
                session,
                CLI_PRINCIPAL,
                name="fuzzer",
                role=Role.SYSTEM_ADMIN,
                workspace_name=None,
                deployment_name=None,
            )
            await session.commit()
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {created.token}"}


@pytest.fixture(scope="module")
def sextant(database_url: str) -> Iterator[SeededApi]:
    """One started app per backend for every operation's test, with the seeded objects in it."""
    headers = asyncio.run(_prepare_database(database_url))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database=DatabaseSettings(url=database_url),
        scheduler=SchedulerSettings(heartbeat_interval=0.2),
    )
    app = create_app(settings, FrozenClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC)))
    REAL.reset()
    try:
        # Schemathesis' client runs the app, lifespan included, on its own event-loop thread, so
        # the engine's connections are only ever used from that loop.
        with asgi.get_client(app) as client:
            for scheme in ("http://", "https://"):
                client.mount(scheme, InProcessAdapter(client.adapter))
            served = client.get("/openapi.json")
            assert served.json() == DOCUMENT, "the fuzzed document is not the one the app serves"
            api = SeededApi(client=client, headers=headers)
            api.ensure()
            yield api
    finally:
        # Ends the lifespan (scheduler stopped, engine disposed) before the database goes away.
        asgi.shutdown_lifespans()


@schema.parametrize()
def test_operation_answers_as_documented(case: schemathesis.Case, sextant: SeededApi) -> None:
    address_real_objects(case)
    sent = {"base_url": BASE_URL, "session": sextant.client, "headers": sextant.headers}
    response = case.call(**sent)
    if case.method.upper() == case.operation.method.upper():
        REAL.statuses.setdefault(case.operation.label, set()).add(response.status_code)
    try:
        # Checks that send follow-up requests (e.g. an undeclared method) reuse the same client.
        case.validate_response(response, headers=sextant.headers, transport_kwargs=sent)
    except BaseException:  # Schemathesis' FailureGroup is a BaseExceptionGroup.
        # Hypothesis stops this operation at its first failure; the summary test below says so.
        REAL.failed.add(case.operation.label)
        raise
    sextant.repair(case, response)


def test_fuzzing_reached_both_real_and_missing_objects(sextant: SeededApi) -> None:
    """Every operation was answered; each one with path parameters both found and missed."""
    if not REAL.statuses:
        pytest.skip("meaningful only after the fuzzed operations, in the same run")
    for path, operations in DOCUMENT["paths"].items():
        for method in operations:
            label = f"{method.upper()} {path}"
            if label in REAL.failed:
                continue  # Already reported by its own test, cut short at the first failure.
            statuses = REAL.statuses.get(label, set())
            assert statuses, f"{label} was never called"
            if "{" in path:
                assert 404 in statuses, f"{label} never missed: {sorted(statuses)}"
                # 409: a conflict with the object; 503: found, but SMTP (say) is not configured.
                found = {s for s in statuses if s < 300 or s in (409, 503)}
                assert found, f"{label} never reached a seeded object: {sorted(statuses)}"
