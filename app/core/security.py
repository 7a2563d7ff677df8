"""API tokens, roles and the permission table.

A token is `sxt_<id>_<secret>`: the id finds the row, the secret is stored only as a SHA-256 hash
and compared in constant time. Secrets are 256 random bits, so a plain hash is enough (there is
nothing to brute-force that a slow hash would protect).

Visibility and permission are separate questions. A caller that cannot see a workspace or
deployment gets 404 for it, exactly as if it did not exist; a caller that can see it but whose role
may not perform the action gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from app.core.errors import Forbidden, NotFound

TOKEN_PREFIX = "sxt"


class Role(StrEnum):
    SYSTEM_ADMIN = "system-admin"
    WORKSPACE_ADMIN = "workspace-admin"
    WORKSPACE_EDITOR = "workspace-editor"
    WORKSPACE_VIEWER = "workspace-viewer"
    DEPLOYMENT_ADMIN = "deployment-admin"
    DEPLOYMENT_EDITOR = "deployment-editor"
    DEPLOYMENT_VIEWER = "deployment-viewer"
    # Alertmanager's webhook credential: may post alerts and nothing else.
    ALERTMANAGER = "alertmanager"

    @property
    def scope(self) -> Scope:
        """Whether the role is bound to nothing, a workspace or a deployment."""
        if self is Role.SYSTEM_ADMIN:
            return Scope.SYSTEM
        if self is Role.ALERTMANAGER:
            return Scope.NONE
        return Scope.WORKSPACE if self.value.startswith("workspace-") else Scope.DEPLOYMENT


class Scope(StrEnum):
    NONE = "none"  # sees no workspace or deployment at all
    SYSTEM = "system"
    WORKSPACE = "workspace"
    DEPLOYMENT = "deployment"


class Action(StrEnum):
    WORKSPACE_CREATE = "workspace.create"
    WORKSPACE_READ = "workspace.read"
    WORKSPACE_UPDATE = "workspace.update"
    WORKSPACE_DELETE = "workspace.delete"
    DEPLOYMENT_CREATE = "deployment.create"
    DEPLOYMENT_READ = "deployment.read"
    DEPLOYMENT_UPDATE = "deployment.update"
    DEPLOYMENT_DELETE = "deployment.delete"
    RECIPIENT_READ = "recipient.read"
    RECIPIENT_WRITE = "recipient.write"
    WORKSPACE_RECIPIENT_READ = "workspace-recipient.read"
    WORKSPACE_RECIPIENT_WRITE = "workspace-recipient.write"
    TOKEN_MANAGE = "token.manage"
    AUDIT_READ = "audit.read"
    ALERTMANAGER_WEBHOOK = "alertmanager.webhook"


_READ = {Action.WORKSPACE_READ, Action.DEPLOYMENT_READ, Action.RECIPIENT_READ}
_DEPLOYMENT_WRITE = {Action.DEPLOYMENT_UPDATE, Action.RECIPIENT_WRITE}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.SYSTEM_ADMIN: frozenset(Action),
    Role.WORKSPACE_ADMIN: frozenset(
        set(Action) - {Action.WORKSPACE_CREATE, Action.WORKSPACE_DELETE}
    ),
    Role.WORKSPACE_EDITOR: frozenset(
        _READ
        | _DEPLOYMENT_WRITE
        | {
            Action.DEPLOYMENT_CREATE,
            Action.WORKSPACE_RECIPIENT_READ,
            Action.WORKSPACE_RECIPIENT_WRITE,
        }
    ),
    Role.WORKSPACE_VIEWER: frozenset(_READ | {Action.WORKSPACE_RECIPIENT_READ}),
    Role.DEPLOYMENT_ADMIN: frozenset(
        _READ
        | _DEPLOYMENT_WRITE
        | {Action.DEPLOYMENT_DELETE, Action.TOKEN_MANAGE, Action.AUDIT_READ}
    ),
    Role.DEPLOYMENT_EDITOR: frozenset(_READ | _DEPLOYMENT_WRITE),
    Role.DEPLOYMENT_VIEWER: frozenset(_READ),
    Role.ALERTMANAGER: frozenset({Action.ALERTMANAGER_WEBHOOK}),
}
"""What each role may do within what it can see (the README's roles table is this table)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a request: a token's identity, role and binding."""

    token_id: str
    name: str
    role: Role
    workspace_id: int | None = None
    deployment_id: int | None = None

    def can_see(self, workspace_id: int, deployment_id: int | None = None) -> bool:
        """Whether the workspace (and deployment, when given) is visible to this caller."""
        scope = self.role.scope
        if scope is Scope.SYSTEM:
            return True
        if scope is Scope.NONE or self.workspace_id != workspace_id:
            return False
        if scope is Scope.DEPLOYMENT and deployment_id is not None:
            return self.deployment_id == deployment_id
        return True

    def reach(self) -> tuple[int | None, int | None]:
        """(workspace id, deployment id) a listing is limited to; None where it is not."""
        scope = self.role.scope
        if scope is Scope.SYSTEM:
            return None, None
        if scope is Scope.NONE:
            return 0, 0  # ids start at 1: matches nothing
        return self.workspace_id, self.deployment_id if scope is Scope.DEPLOYMENT else None

    def may(self, action: Action) -> bool:
        """Whether the role allows the action at all."""
        return action in PERMISSIONS[self.role]

    def authorize(
        self,
        action: Action,
        *,
        workspace_id: int,
        deployment_id: int | None = None,
        not_found: str,
    ) -> None:
        """Raise NotFound for what the caller cannot see, Forbidden for what it may not do."""
        if not self.can_see(workspace_id, deployment_id):
            raise NotFound(not_found)
        if not self.may(action):
            raise Forbidden(f"role {self.role.value} may not {action.value}")

    def can_grant(self, role: Role) -> bool:
        """Whether this caller may create a token with the given role (never above its own)."""
        if self.role is Role.SYSTEM_ADMIN:
            return True
        if self.role is Role.WORKSPACE_ADMIN:
            return role.scope in (Scope.WORKSPACE, Scope.DEPLOYMENT)
        if self.role is Role.DEPLOYMENT_ADMIN:
            return role.scope is Scope.DEPLOYMENT
        return False


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token_id: str
    secret_hash: str
    plaintext: str


def issue_token() -> IssuedToken:
    """A new random token; the plaintext is shown once and never stored."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(token_id, hash_secret(secret), f"{TOKEN_PREFIX}_{token_id}_{secret}")


def hash_secret(secret: str) -> str:
    """The stored form of a token secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(plaintext: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, None otherwise."""
    prefix, _, rest = plaintext.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or len(token_id) != 16 or not secret:
        return None
    return token_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret against the stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
