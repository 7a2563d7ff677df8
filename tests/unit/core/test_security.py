"""The permission table and token format."""

from __future__ import annotations

import pytest

from app.core.errors import Forbidden, NotFound
from app.core.security import (
    PERMISSIONS,
    Action,
    Principal,
    Role,
    issue_token,
    secret_matches,
    split_token,
)


def principal(role: Role, workspace: int | None = 1, deployment: int | None = None) -> Principal:
    return Principal("t", "test", role, workspace, deployment)


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    [
        (Role.SYSTEM_ADMIN, Action.WORKSPACE_DELETE, True),
        (Role.WORKSPACE_ADMIN, Action.WORKSPACE_DELETE, False),
        (Role.WORKSPACE_ADMIN, Action.TOKEN_MANAGE, True),
        (Role.WORKSPACE_EDITOR, Action.DEPLOYMENT_CREATE, True),
        (Role.WORKSPACE_EDITOR, Action.TOKEN_MANAGE, False),
        (Role.WORKSPACE_VIEWER, Action.DEPLOYMENT_UPDATE, False),
        (Role.WORKSPACE_VIEWER, Action.WORKSPACE_RECIPIENT_READ, True),
        (Role.DEPLOYMENT_ADMIN, Action.DEPLOYMENT_DELETE, True),
        (Role.DEPLOYMENT_ADMIN, Action.DEPLOYMENT_CREATE, False),
        (Role.DEPLOYMENT_EDITOR, Action.RECIPIENT_WRITE, True),
        (Role.DEPLOYMENT_EDITOR, Action.WORKSPACE_RECIPIENT_READ, False),
        (Role.DEPLOYMENT_VIEWER, Action.RECIPIENT_WRITE, False),
    ],
)
def test_permission_table(role: Role, action: Action, allowed: bool) -> None:
    assert (action in PERMISSIONS[role]) is allowed


def test_every_role_bound_to_something_can_read_what_it_sees() -> None:
    for role in Role:
        if role is not Role.ALERTMANAGER:
            assert {Action.WORKSPACE_READ, Action.DEPLOYMENT_READ} <= PERMISSIONS[role]


def test_the_alertmanager_role_sees_nothing_and_may_only_post_alerts() -> None:
    webhook = principal(Role.ALERTMANAGER, None)
    assert PERMISSIONS[Role.ALERTMANAGER] == {Action.ALERTMANAGER_WEBHOOK}
    assert not webhook.can_see(1)
    assert not principal(Role.WORKSPACE_ADMIN).can_grant(Role.ALERTMANAGER)


@pytest.mark.parametrize(
    ("who", "workspace", "deployment", "visible"),
    [
        (principal(Role.SYSTEM_ADMIN, None), 7, 9, True),
        (principal(Role.WORKSPACE_VIEWER, 1), 1, 9, True),
        (principal(Role.WORKSPACE_VIEWER, 1), 2, None, False),
        (principal(Role.DEPLOYMENT_VIEWER, 1, 5), 1, 5, True),
        (principal(Role.DEPLOYMENT_VIEWER, 1, 5), 1, 6, False),
        (principal(Role.DEPLOYMENT_VIEWER, 1, 5), 1, None, True),
    ],
)
def test_visibility(who: Principal, workspace: int, deployment: int | None, visible: bool) -> None:
    assert who.can_see(workspace, deployment) is visible


def test_authorize_hides_before_it_forbids() -> None:
    viewer = principal(Role.WORKSPACE_VIEWER, 1)
    with pytest.raises(NotFound):
        viewer.authorize(Action.DEPLOYMENT_UPDATE, workspace_id=2, not_found="gone")
    with pytest.raises(Forbidden):
        viewer.authorize(Action.DEPLOYMENT_UPDATE, workspace_id=1, not_found="gone")


@pytest.mark.parametrize(
    ("granter", "role", "allowed"),
    [
        (Role.SYSTEM_ADMIN, Role.SYSTEM_ADMIN, True),
        (Role.WORKSPACE_ADMIN, Role.SYSTEM_ADMIN, False),
        (Role.WORKSPACE_ADMIN, Role.WORKSPACE_ADMIN, True),
        (Role.DEPLOYMENT_ADMIN, Role.DEPLOYMENT_ADMIN, True),
        (Role.DEPLOYMENT_ADMIN, Role.WORKSPACE_VIEWER, False),
        (Role.WORKSPACE_EDITOR, Role.WORKSPACE_VIEWER, False),
    ],
)
def test_no_token_grants_more_than_its_issuer_may(granter: Role, role: Role, allowed: bool) -> None:
    assert principal(granter).can_grant(role) is allowed


def test_issued_token_round_trips_and_only_its_secret_matches() -> None:
    issued = issue_token()
    parts = split_token(issued.plaintext)
    assert parts is not None
    token_id, secret = parts
    assert token_id == issued.token_id
    assert secret_matches(secret, issued.secret_hash)
    assert not secret_matches(secret + "x", issued.secret_hash)
    assert secret not in issued.secret_hash


@pytest.mark.parametrize(
    "plaintext",
    ["", "sxt", "sxt_", "abc_0123456789abcdef_s", "sxt_short_secret", "sxt_0123456789abcdef_"],
)
def test_malformed_tokens_are_rejected(plaintext: str) -> None:
    assert split_token(plaintext) is None
