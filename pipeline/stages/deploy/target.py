"""Where a deploy goes: the environment's kubeconfig and kube context, its Helm release, and the deploy lock."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.vocab import now_iso
from pipeline.tools.kubectl import KubeTarget

DEFAULT_TIMEOUT_S = 300
HISTORY_MAX = 10


def kubeconfig_path(env: Environment) -> Path | None:
    """The kubeconfig of an environment: with a kube_context, the user's; without one, the pipeline's own local
    cluster's (pipeline.local.cluster decides)."""
    from pipeline.local.cluster import kubeconfig_for

    return Path(kubeconfig_for(env.kube_context))


def kube_target(env: Environment, kubeconfig: Path | None = None) -> KubeTarget:
    """The KubeTarget (kubeconfig, context, namespace) of an environment; `kubeconfig` overrides the lookup."""
    return KubeTarget(kubeconfig=kubeconfig if kubeconfig is not None else kubeconfig_path(env),
                      context=env.kube_context, namespace=env.namespace)


@dataclass(frozen=True)
class ReleaseTarget:
    """One Helm release of one environment on its cluster, with the limits of every Helm call on it.

    timeout_s: Helm's --timeout for upgrade/rollback/uninstall waits (seconds); history_max: --history-max."""

    env: Environment
    kube: KubeTarget
    release: str
    timeout_s: int = DEFAULT_TIMEOUT_S
    history_max: int = HISTORY_MAX

    @classmethod
    def of(cls, env: Environment, kubeconfig: Path | None = None, *, timeout_s: int = DEFAULT_TIMEOUT_S,
           history_max: int = HISTORY_MAX) -> ReleaseTarget:
        return cls(env, kube_target(env, kubeconfig), env.helm_release, timeout_s, history_max)

    @property
    def namespace(self) -> str:
        return self.env.namespace

    @property
    def selector(self) -> str:
        """The label selector of every object the chart makes for this release."""
        return f"app.kubernetes.io/instance={self.release}"


@contextmanager
def deploy_lock(cfg: Config, env: Environment) -> Iterator[Path]:
    """One deploy per environment on this machine (flock on <state_dir>/locks/deploy-ENV-NS.lock).

    The kernel frees the lock when the holder dies, so a lock file naming a dead process proves its pending
    release is abandoned: the previous holder's line is kept beside it in `<lock>.previous`.
    Raises UsageError when another deploy to the environment holds it."""
    path = cfg.state_dir / "locks" / f"deploy-{env.name}-{env.namespace}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip()
            raise UsageError(f"another deploy to {env.name} runs on this machine ({holder})",
                             "wait for it to finish") from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid={os.getpid()} since={now_iso()}\n".encode(), 0)
        (path.parent / f"{path.name}.previous").write_text(previous + "\n")
        yield path
    finally:
        os.close(fd)
