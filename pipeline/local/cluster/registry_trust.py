"""The local cluster's node trusts the CA of each environment's registry that it pulls from.

The node's runtime is dockershim on this machine's engine (components.kubelet), so the node's registry trust is
the engine's: every `*.crt` file in /etc/docker/certs.d/<host:port>/ is a CA the engine accepts for that registry
(Docker's "certs.d" rule; read at each pull, no restart). `cluster_up(env)` writes `veza-<env>.crt` there from
the environment's `registry_ca_file` (pipeline.toml; `$VAR` is a CI file variable), one file per environment, so
a CA someone else put there (`ca.crt`) is never overwritten or removed. The files written are recorded under the
cluster's state (TRUST_RECORD) and removed by `cluster-down` (stop.py) or `forget`.

An external cluster's nodes are its operators' (README, "CI"): nothing is written for one.
Note: the engine treats registries on 127.0.0.0/8 as insecure (no certificate check), so the CA matters for a
registry on any other address (tests/integration/cluster/test_node_registry_trust.py shows it on a 10.x one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError
from pipeline.local.cluster import layout

if TYPE_CHECKING:
    from pipeline.core.config import Environment

CERTS_D = Path("/etc/docker/certs.d")   # the engine's (root) certs.d: fixed in dockerd, not configurable
TRUST_RECORD = layout.STATE / "registry-trust.json"
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


def trust_path(env_name: str, address: str) -> Path:
    """Where the node's trust of `address` for environment `env_name` lives: certs.d/<address>/veza-<env>.crt."""
    return CERTS_D / address / f"veza-{env_name}.crt"


def _recorded() -> list[str]:
    try:
        data = json.loads(TRUST_RECORD.read_text())
    except (OSError, ValueError):
        return []
    return [str(p) for p in data] if isinstance(data, list) else []


def _record(paths: list[str]) -> None:
    TRUST_RECORD.parent.mkdir(parents=True, exist_ok=True)
    tmp = TRUST_RECORD.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(set(paths)), indent=2) + "\n")
    tmp.replace(TRUST_RECORD)


def node_trusts(env: Environment) -> Path | None:
    """Make the local node trust `env.registry_ca_file` for `env.registry`; returns the file written, or None when
    the environment names no CA (the system store; a loopback registry may be plain http). Idempotent.
    UsageError (exit 2, one line naming the environment, the registry and the file) when the CA file cannot be
    read or holds no PEM certificate."""
    ca = env.registry_ca_file
    if ca is None:
        return None
    where = f"environment {env.name}: registry {env.registry}"
    try:
        text = ca.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: cannot read its CA file {ca} ({exc.__class__.__name__})",
                         f"set registry_ca_file of [environments.{env.name}] (or the variable it names) "
                         "to the registry's PEM CA") from None
    if _PEM_CERT not in text:
        raise UsageError(f"{where}: its CA file {ca} holds no PEM certificate",
                         "give the CA that signed the registry's certificate, in PEM")
    dest = trust_path(env.name, env.registry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(dest)
    _record([*_recorded(), str(dest)])
    return dest


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()   # only when nothing else is in it (another party's ca.crt stays, and its directory)
    except OSError:
        pass


def forget(env_name: str, address: str) -> None:
    """Remove the node's trust `node_trusts` wrote for (env_name, address); nothing when there is none."""
    path = trust_path(env_name, address)
    _remove(path)
    left = [p for p in _recorded() if p != str(path)]
    if left:
        _record(left)
    else:
        TRUST_RECORD.unlink(missing_ok=True)


def forget_all() -> list[str]:
    """Remove every trust file the record lists (cluster-down); returns the paths removed."""
    paths = _recorded()
    for p in paths:
        _remove(Path(p))
    TRUST_RECORD.unlink(missing_ok=True)
    return paths
