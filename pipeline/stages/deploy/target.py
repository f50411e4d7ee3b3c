"""Where a deploy goes: the environment's kubeconfig and kube context, its Helm release, and the deploy lock."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.kubeconfig import resolve_cluster
from pipeline.core.lock import exclusive_or_fail
from pipeline.core.vocab import now_iso
from pipeline.local.cluster import kube_target
from pipeline.tools.kubectl import KubeTarget

DEFAULT_TIMEOUT_S = 300
HISTORY_MAX = 10


@dataclass(frozen=True)
class ReleaseTarget:
    """One Helm release of one environment on its cluster, with the limits of every Helm call on it.

    timeout_s: Helm's --timeout for upgrade/rollback/uninstall waits (seconds); history_max: --history-max;
    external: an external cluster (kube_context / kubeconfig_env): none of the local shortcuts apply to it."""

    env: Environment
    kube: KubeTarget
    release: str
    timeout_s: int = DEFAULT_TIMEOUT_S
    history_max: int = HISTORY_MAX
    external: bool = False

    @classmethod
    def of(cls, env: Environment, kubeconfig: Path | None = None, *, timeout_s: int = DEFAULT_TIMEOUT_S,
           history_max: int = HISTORY_MAX) -> ReleaseTarget:
        from pipeline.local.cluster import layout

        external = resolve_cluster(env, Path(layout.KUBECONFIG)).external
        return cls(env, kube_target(env, kubeconfig), env.helm_release, timeout_s, history_max, external)

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
    holder = f"{socket.gethostname()} pid={os.getpid()} since={now_iso()}"

    def busy(current: str) -> UsageError:
        return UsageError(f"another deploy to {env.name} runs on this machine ({current})", "wait for it to finish")

    with exclusive_or_fail(path, holder, busy) as previous:
        (path.parent / f"{path.name}.previous").write_text(previous + "\n")
        yield path
