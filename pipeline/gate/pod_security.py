"""Pod Security gate: rendered manifests checked against the Pod Security Standards "restricted" profile.

Kubernetes 1.20 (the embedded cluster) has no Pod Security admission (it arrived as alpha in 1.22 and is
enabled by default from 1.23): the `pod-security.kubernetes.io/*` namespace labels are inert there. So the
pipeline checks the rendered chart itself, before anything is applied, on every cluster.

Source of the rules: the Kubernetes Pod Security Standards page,
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (profile "restricted" = every
"baseline" control plus the restricted ones), policy version "latest" as published for Kubernetes 1.31.
Each rule below names the control as the page titles it. Windows-only fields (hostProcess) are checked too;
Linux-only relaxations for `spec.os.name: windows` pods are not applied (the chart only ships Linux pods).

Input: the manifests as YAML text (`helm template` output, several documents) or parsed documents.
Output: a list of `Violation` (object kind/name, the exact field path, the control, what is wrong);
`enforce_restricted` raises `PolicyBlocked` (exit 3) with one line naming the first object and field.
Pure: no cluster, no subprocess.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.core.errors import PolicyBlocked

PROFILE = "restricted"
SOURCE = "https://kubernetes.io/docs/concepts/security/pod-security-standards/"

# Where each workload kind keeps its pod template (path of keys from the document root).
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Baseline "Capabilities": what a container may add at most. Restricted narrows it to NET_BIND_SERVICE.
RESTRICTED_ADD_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Restricted "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})
# Baseline "Sysctls": the safe set.
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                          "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                          "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
# Baseline "SELinux": allowed types (user and role must be unset).
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})


@dataclass(frozen=True)
class Violation:
    """One broken control: `field` is the path in the object, e.g. spec.template.spec.containers[0]
    (name=web).securityContext.privileged."""

    kind: str
    name: str
    namespace: str
    field: str
    control: str
    problem: str

    def line(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name}: {self.field} {self.problem} (Pod Security {PROFILE}: {self.control})"


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """The documents of a multi-document YAML stream (empty ones dropped, `kind: List` flattened)."""
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            docs += [d for d in doc.get("items") or [] if isinstance(d, dict)]
        else:
            docs.append(doc)
    return docs


def _dig(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _template_annotations(doc: dict[str, Any], spec_path: tuple[str, ...]) -> dict[str, Any]:
    meta = _dig(doc, (*spec_path[:-1], "metadata")) if len(spec_path) > 1 else doc.get("metadata")
    return dict((meta or {}).get("annotations") or {}) if isinstance(meta, dict) else {}


def _containers(spec: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in CONTAINER_LISTS:
        for i, c in enumerate(spec.get(key) or []):
            if isinstance(c, dict):
                yield f"{prefix}.{key}[{i}](name={c.get('name', '?')})", c


def check_pod_spec(spec: dict[str, Any], annotations: dict[str, Any], prefix: str) -> list[tuple[str, str, str]]:
    """The restricted profile's controls on one pod spec. Returns (field path, control, problem) triples."""
    out: list[tuple[str, str, str]] = []
    add = out.append
    psc: dict[str, Any] = spec.get("securityContext") or {}
    # --- baseline
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            add((f"{prefix}.{f}", "Host Namespaces", "is true; must be unset or false"))
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        add((f"{prefix}.securityContext.windowsOptions.hostProcess", "HostProcess", "is true; must be unset or false"))
    for i, v in enumerate(spec.get("volumes") or []):
        if not isinstance(v, dict):
            continue
        vpath = f"{prefix}.volumes[{i}](name={v.get('name', '?')})"
        sources = [k for k in v if k != "name"]
        if "hostPath" in sources:
            add((f"{vpath}.hostPath", "HostPath Volumes", "is set; hostPath volumes are forbidden"))
        for s in sources:
            if s not in RESTRICTED_VOLUME_TYPES and s != "hostPath":
                add((f"{vpath}.{s}", "Volume Types", f"is a '{s}' volume; allowed: "
                     + ", ".join(sorted(RESTRICTED_VOLUME_TYPES))))
    for i, s in enumerate(psc.get("sysctls") or []):
        name = (s or {}).get("name", "")
        if name not in SAFE_SYSCTLS:
            add((f"{prefix}.securityContext.sysctls[{i}].name", "Sysctls", f"'{name}' is not in the safe set"))
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (value == "runtime/default" or
                                                        str(value).startswith("localhost/")):
            add((f"metadata.annotations[{key}]", "AppArmor", f"is '{value}'; use runtime/default or localhost/*"))
    out += _selinux(psc, f"{prefix}.securityContext")
    out += _seccomp_not_unconfined(psc, f"{prefix}.securityContext")
    if "runAsUser" in psc and psc.get("runAsUser") == 0:
        add((f"{prefix}.securityContext.runAsUser", "Running as Non-root user", "is 0; must not be root"))
    # --- restricted, per container
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in SECCOMP_OK
    for cpath, c in _containers(spec, prefix):
        csc: dict[str, Any] = c.get("securityContext") or {}
        sc = f"{cpath}.securityContext"
        if csc.get("privileged"):
            add((f"{sc}.privileged", "Privileged Containers", "is true; must be unset or false"))
        for j, p in enumerate(c.get("ports") or []):
            if isinstance(p, dict) and p.get("hostPort"):
                add((f"{cpath}.ports[{j}].hostPort", "Host Ports", f"is {p['hostPort']}; must be unset or 0"))
        if csc.get("procMount") not in (None, "Default"):
            add((f"{sc}.procMount", "/proc Mount Type", f"is {csc['procMount']}; must be unset or Default"))
        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            add((f"{sc}.windowsOptions.hostProcess", "HostProcess", "is true; must be unset or false"))
        out += _selinux(csc, sc)
        out += _seccomp_not_unconfined(csc, sc)
        if csc.get("allowPrivilegeEscalation") is not False:
            add((f"{sc}.allowPrivilegeEscalation", "Privilege Escalation",
                 "is not false; must be set to false"))
        nonroot = csc.get("runAsNonRoot")
        if nonroot is False or (nonroot is None and not pod_nonroot):
            add((f"{sc}.runAsNonRoot", "Running as Non-root",
                 "is not true (nor spec.securityContext.runAsNonRoot); must be true"))
        if csc.get("runAsUser") == 0:
            add((f"{sc}.runAsUser", "Running as Non-root user", "is 0; must not be root"))
        if (csc.get("seccompProfile") or {}).get("type") not in SECCOMP_OK and not pod_seccomp:
            add((f"{sc}.seccompProfile.type", "Seccomp",
                 "is unset (pod too); must be RuntimeDefault or Localhost"))
        caps: dict[str, Any] = csc.get("capabilities") or {}
        if "ALL" not in [str(x) for x in caps.get("drop") or []]:
            add((f"{sc}.capabilities.drop", "Capabilities", "does not include ALL; must drop ALL"))
        for k, cap in enumerate(caps.get("add") or []):
            if str(cap) not in RESTRICTED_ADD_CAPABILITIES:
                add((f"{sc}.capabilities.add[{k}]", "Capabilities", f"adds {cap}; only NET_BIND_SERVICE may be added"))
    return out


def _selinux(sc: dict[str, Any], path: str) -> list[tuple[str, str, str]]:
    se: dict[str, Any] = sc.get("seLinuxOptions") or {}
    out = []
    if str(se.get("type", "")) not in SELINUX_TYPES:
        out.append((f"{path}.seLinuxOptions.type", "SELinux", f"is '{se['type']}'; not an allowed type"))
    for f in ("user", "role"):
        if se.get(f):
            out.append((f"{path}.seLinuxOptions.{f}", "SELinux", "is set; must be unset"))
    return out


def _seccomp_not_unconfined(sc: dict[str, Any], path: str) -> list[tuple[str, str, str]]:
    t = (sc.get("seccompProfile") or {}).get("type")
    return [(f"{path}.seccompProfile.type", "Seccomp", "is Unconfined")] if t == "Unconfined" else []


def check_restricted(docs: Iterable[dict[str, Any]]) -> list[Violation]:
    """Every violation of the restricted profile in the documents' pod templates (objects without one, such
    as Services or ConfigMaps, pass). Order: document order, then field order."""
    found: list[Violation] = []
    for doc in docs:
        kind = str(doc.get("kind", ""))
        path = POD_SPEC_PATHS.get(kind)
        if path is None:
            continue
        spec = _dig(doc, path)
        if not isinstance(spec, dict):
            continue
        meta = doc.get("metadata") or {}
        for field, control, problem in check_pod_spec(spec, _template_annotations(doc, path), ".".join(path)):
            found.append(Violation(kind, str(meta.get("name", "?")), str(meta.get("namespace", "") or ""),
                                   field, control, problem))
    return found


def enforce_restricted(manifests: str | Iterable[dict[str, Any]], *, where: str = "") -> int:
    """Raise PolicyBlocked (exit 3) on the first violation, naming the object and the field (and how many
    more there are); return the number of pod templates checked when none violates."""
    docs = parse_manifests(manifests) if isinstance(manifests, str) else list(manifests)
    violations = check_restricted(docs)
    if violations:
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        at = f" in {where}" if where else ""
        raise PolicyBlocked(f"Pod Security gate{at}: {violations[0].line()}{more}",
                            f"fix the chart or values so every pod meets the restricted profile ({SOURCE})")
    return sum(1 for d in docs if str(d.get("kind", "")) in POD_SPEC_PATHS)


# What the embedded Kubernetes 1.20 enforces of the chart's security intent, said in the deploy output and README.
ENFORCEMENT_NOTE_1_20 = (
    "Kubernetes 1.20 enforces each container's securityContext (non-root user, no privilege escalation, "
    "dropped capabilities, read-only root, seccomp RuntimeDefault) but has no Pod Security admission: the "
    "namespace's pod-security.kubernetes.io labels are not enforced there; the pipeline's Pod Security gate "
    "checked the rendered manifests instead. NetworkPolicies are applied but only a network plugin that "
    "implements them (none on the embedded cluster) enforces them.")


def enforcement_note(server_version: str) -> str:
    """One line saying what the target cluster enforces, from its version ("v1.20.2"); Pod Security admission
    is built in and on by default from 1.23 (beta; GA in 1.25)."""
    parts = server_version.lstrip("v").split(".")
    try:
        minor = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        minor = 0
    if parts[0] == "1" and minor < 23:
        return ENFORCEMENT_NOTE_1_20.replace("Kubernetes 1.20", f"Kubernetes {server_version}")
    return (f"Kubernetes {server_version} enforces the namespace's pod-security.kubernetes.io labels (Pod Security "
            "admission) as well as the pipeline's gate; NetworkPolicies are enforced only if the cluster's network "
            "plugin implements them.")
