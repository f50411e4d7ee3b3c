"""Which cluster an environment deploys to, through which kubeconfig file and context.

Two kinds of target:
- **external**: a cluster of the user's kubeconfig. Chosen when the variable named by the environment's
  `kubeconfig_env` (pipeline.toml) holds a path — e.g. a CI job writes the secret store's kubeconfig to a file
  and exports its path there — or when `kube_context` is set (then the file is the first entry of
  KUBECONFIG, else ~/.kube/config: the order kubectl uses). The context is `kube_context`, or the file's
  current-context when it is empty. None of the pipeline's local shortcuts apply to it (no local infra,
  no hostPath volumes, no generated Secret, nothing provisioned).
- **the pipeline's own cluster** (`invoke cluster-up`): neither of the above.
Credentials stay in the kubeconfig file: they never enter argv, logs or the pipeline's state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.core.config import Environment
from pipeline.core.errors import UsageError
from pipeline.core.yamlfile import DatelessLoader


@dataclass(frozen=True)
class ClusterAccess:
    """kubeconfig file, context ("" = the file's current-context), external or the pipeline's own cluster,
    and where the file came from (for messages: "$PROD_KUBECONFIG", "KUBECONFIG", "~/.kube/config")."""

    kubeconfig: Path
    context: str
    external: bool
    source: str

    def describe(self) -> str:
        if not self.external:
            return "the pipeline's own cluster"
        ctx = f"context '{self.context}'" if self.context else "its current context"
        return f"{ctx} of {self.kubeconfig} (from {self.source})"


def resolve_cluster(env: Environment, local_kubeconfig: Path,
                    environ: Mapping[str, str] | None = None) -> ClusterAccess:
    """The cluster `env` deploys to (pure: reads no file). `local_kubeconfig` is the pipeline's own cluster's."""
    environ = os.environ if environ is None else environ
    var = env.kubeconfig_env
    if var and environ.get(var, "").strip():
        return ClusterAccess(Path(environ[var].strip()).expanduser(), env.kube_context, True, f"${var}")
    if env.kube_context:
        first = environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if first:
            return ClusterAccess(Path(first).expanduser(), env.kube_context, True, "KUBECONFIG")
        home = Path(environ.get("HOME", str(Path.home())))
        return ClusterAccess(home / ".kube" / "config", env.kube_context, True, "~/.kube/config")
    return ClusterAccess(local_kubeconfig, "", False, "the pipeline's own cluster")


def kubeconfig_contexts(text: str) -> tuple[list[str], str]:
    """(context names, current-context) of a kubeconfig document; parse errors raise yaml.YAMLError."""
    doc = yaml.load(text, Loader=DatelessLoader) or {}  # a SafeLoader subclass; dates stay text
    if not isinstance(doc, dict):
        return [], ""
    names = [str(c.get("name")) for c in doc.get("contexts") or [] if isinstance(c, dict)]
    return names, str(doc.get("current-context") or "")


def check_access(access: ClusterAccess) -> None:
    """Refuse (UsageError, exit 2, one line) an external kubeconfig that cannot be read or lacks the context
    (or, with no context named, has no current-context). The pipeline's own cluster is not checked here."""
    if not access.external:
        return
    where = f"{access.kubeconfig} (from {access.source})"
    try:
        names, current = kubeconfig_contexts(access.kubeconfig.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the kubeconfig {where}: {exc.__class__.__name__}",
                         "point the variable at a readable kubeconfig file, or unset it for the pipeline's "
                         "own cluster") from None
    wanted = access.context or current
    if not wanted:
        raise UsageError(f"the kubeconfig {where} has no current-context and kube_context is empty",
                         "set kube_context in pipeline.toml to one of: " + (", ".join(names) or "(none defined)"))
    if wanted not in names:
        raise UsageError(f"kube context '{wanted}' not found in {where} (has: {', '.join(names) or 'none'})",
                         "fix kube_context in pipeline.toml or the kubeconfig")
