"""Start a real kube-apiserver, with etcd embedded, for the tests of the Kubernetes runtime.

The server is `sextant-kube-apiserver`, built by scripts/install-test-deps.sh from the Go module
in tests/harness/kube (k8s.io/kubernetes; see its README.md for what it does and does not do).
It listens on 127.0.0.1 only, with TLS, RBAC and two identities:

- admin: user `sextant-admin` in `system:masters` (kubeconfig_path, admin_token);
- restricted: user `sextant-limited` in no group (restricted_kubeconfig_path, restricted_token);
  RBAC grants it nothing until a test binds a role to it, so it gets 403 Forbidden.

There is no kubelet and no controller: objects are stored and validated, never acted on.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness.availability import INSTALL_HINT, ComponentUnavailable, find_binary, tools_dir
from tests.harness.components import HOST, Component, ComponentDirs
from tests.harness.process import ManagedProcess, ReadinessCheck, free_port

BINARY = "sextant-kube-apiserver"
SOURCE_DIR = Path(__file__).resolve().parent / "kube"
ADMIN_USER = "sextant-admin"
RESTRICTED_USER = "sextant-limited"


@dataclass(kw_only=True)
class KubeApiServer(Component):
    """A kube-apiserver on https://127.0.0.1:PORT; data and credentials survive stop()/start()."""

    host: str
    port: int
    kubeconfig_path: Path
    restricted_kubeconfig_path: Path
    data_dir: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. https://127.0.0.1:PORT."""
        return f"https://{self.host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The CA that signed the serving certificate (also embedded in both kubeconfigs)."""
        return self.data_dir / "pki" / "ca.crt"

    @property
    def admin_token(self) -> str:
        """Bearer token of `sextant-admin` (group system:masters)."""
        return (self.data_dir / "pki" / "admin.token").read_text().strip()

    @property
    def restricted_token(self) -> str:
        """Bearer token of `sextant-limited` (no group)."""
        return (self.data_dir / "pki" / "restricted.token").read_text().strip()

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the server's CA (and nothing else)."""
        return ssl.create_default_context(cafile=self.ca_path)

    def client(self, *, restricted: bool = False, timeout: float = 30) -> httpx.Client:
        """An httpx client on `url` with the admin's (or the restricted user's) bearer token."""
        token = self.restricted_token if restricted else self.admin_token
        return httpx.Client(
            base_url=self.url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )


def start_kube_apiserver(dirs: ComponentDirs, extra_args: Sequence[str] = ()) -> KubeApiServer:
    """Start the API server with a fresh etcd; ready in ~3 s. `extra_args` go to kube-apiserver."""
    binary = find_binary(
        "kube-apiserver", BINARY, hint=f"{INSTALL_HINT} (builds it from tests/harness/kube with Go)"
    )
    check_up_to_date(binary)
    home = dirs.make("kube-apiserver")
    data = home / "data"
    kubeconfig = home / "admin.kubeconfig"
    restricted_kubeconfig = home / "restricted.kubeconfig"
    port = free_port()
    argv: list[str | os.PathLike[str]] = [
        binary,
        f"--port={port}",
        f"--data-dir={data}",
        f"--kubeconfig={kubeconfig}",
        f"--restricted-kubeconfig={restricted_kubeconfig}",
    ]
    if extra_args:
        argv += ["--", *extra_args]
    env = dict(os.environ)
    env["HOME"] = str(home)
    process = ManagedProcess(
        "kube-apiserver",
        argv,
        log_path=home / "kube-apiserver.log",
        ready=_ready(port, data / "pki" / "ca.crt", kubeconfig),
        env=env,
        cwd=home,
        # ~3 s on an idle machine; a busy CI machine with 2 cores can take much longer.
        start_timeout=120,
        stop_timeout=30,
    )
    process.start()
    return KubeApiServer(
        process=process,
        host=HOST,
        port=port,
        kubeconfig_path=kubeconfig,
        restricted_kubeconfig_path=restricted_kubeconfig,
        data_dir=data,
    )


def sources_hash(source_dir: Path = SOURCE_DIR) -> str:
    """The digest install-test-deps.sh records: `sha256sum go.mod go.sum *.go | sha256sum`."""
    names = ["go.mod", "go.sum", *sorted(p.name for p in source_dir.glob("*.go"))]
    listing = "".join(
        f"{hashlib.sha256((source_dir / name).read_bytes()).hexdigest()}  {name}\n"
        for name in names
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def check_up_to_date(binary: Path, source_dir: Path = SOURCE_DIR) -> None:
    """Refuse a binary that install-test-deps.sh built from other sources than the current ones.

    A binary without the install script's stamp (built by hand, see tests/harness/kube/README.md)
    is taken as it is.
    """
    stamp = tools_dir() / f"{BINARY}.stamp"
    if binary.parent != tools_dir() / "bin" or not stamp.is_file():
        return
    recorded = next(
        (line.split()[1] for line in stamp.read_text().splitlines() if line.startswith("sources ")),
        None,
    )
    if recorded != sources_hash(source_dir):
        raise ComponentUnavailable(
            "kube-apiserver",
            f"{binary} was built from other sources than {source_dir}; {INSTALL_HINT}",
        )


def _ready(port: int, ca_path: Path, kubeconfig: Path) -> ReadinessCheck:
    # The binary writes the kubeconfigs once /readyz answers; after a restart the old ones are
    # still there for a moment, so /readyz is asked too.
    url = f"https://{HOST}:{port}/readyz"

    def check() -> bool:
        if not (kubeconfig.is_file() and ca_path.is_file()):
            return False
        try:
            context = ssl.create_default_context(cafile=ca_path)
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ssl.SSLError, OSError):
            return False

    return check
