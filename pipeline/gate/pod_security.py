"""Pod Security gate: rendered manifests checked against the Pod Security Standards, baseline and restricted.

Kubernetes 1.20 (the embedded cluster) has no Pod Security admission (it arrived as alpha in 1.22 and is
enabled by default from 1.23): the `pod-security.kubernetes.io/*` namespace labels are inert there. So the
pipeline checks the rendered chart itself, before anything is applied, on every cluster; `invoke lint` runs
the same controls (pipeline/lint/rules.py calls `check_pod_spec`).

Standard implemented: the Pod Security Standards page, https://kubernetes.io/docs/concepts/security/pod-security-standards/
(kubernetes/website content/en/docs/concepts/security/pod-security-standards.md), policy version **v1.34**:
every control of its Baseline table (12, the newest "Host Probes / Lifecycle Hooks (v1.34+)") and of its
Restricted table (6). Where the page leaves a set to the implementation, the values are those
kubernetes/pod-security-admission (policy/check_*.go) allows at v1.34: the safe sysctls up to the 1.32
additions (net.ipv4.tcp_rmem, net.ipv4.tcp_wmem) and the `image` volume source among the restricted volume
types. Each control below carries the page's title and the admission check's id.

Beyond the page's Restricted Fields, on purpose: the legacy annotations the fields replaced, which clusters
up to 1.26 honour (the embedded 1.20 does) and the page no longer lists. AppArmor's
(`container.apparmor.security.beta.kubernetes.io/*`, baseline) and seccomp's
(`seccomp.security.alpha.kubernetes.io/pod`, `container.seccomp.security.alpha.kubernetes.io/<container>`):
Seccomp, baseline and restricted, blocks one whose value is not runtime/default, docker/default or
localhost/<profile> (pod-security-admission's own check of them for policy versions before 1.19,
seccompProfileBaseline_1_0), so a container field left unset cannot be unconfined by an annotation. An
allowed annotation does not stand in for the field restricted requires (1.27+ ignores it).

Stricter than the standard, on purpose: the relaxations for `spec.os.name: windows` pods (privilege escalation,
seccomp, capabilities) and for user-namespace pods (`hostUsers: false`, from v1.35) are not applied. A cluster
older than the field ignores it (1.20 knows neither), so a pod that claims it would run unconfined on Linux
as root on the host.

Input: the manifests as YAML text (`helm template` output, several documents, `kind: List` / `*List`
flattened) or parsed documents. Output: a list of `Violation` (object kind/name, the exact field path, the
control, what is wrong); `enforce_restricted` raises `PolicyBlocked` (exit 3) with one line naming the first
object and field. Pure: no cluster, no subprocess.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.core.errors import PolicyBlocked

PROFILE = "restricted"
POLICY_VERSION = "v1.34"
SOURCE = "https://kubernetes.io/docs/concepts/security/pod-security-standards/"
LEVELS = ("baseline", "restricted")

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
CUSTOM_POD_SPEC_PATH = ("spec", "template", "spec")   # Argo Rollouts, OpenKruise CloneSets...: a PodTemplateSpec
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Baseline "Capabilities": what a container may add at most (Docker's default set).
BASELINE_ADD_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                       "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
# Restricted "Capabilities": drop ALL, add back NET_BIND_SERVICE at most.
RESTRICTED_ADD_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Restricted "Volume Types": the only volume sources allowed (`image`: pod-security-admission).
RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                                     "persistentVolumeClaim", "projected", "secret"})
# Baseline "Sysctls": the safe set at v1.34 (1.0 set, 1.27, 1.29 and 1.32 additions).
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                          "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                          "net.ipv4.tcp_keepalive_probes",
                          "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})
# Baseline "SELinux": allowed types (user and role must be unset or empty).
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# Baseline "AppArmor": the field (Kubernetes 1.30+) and the annotation it replaces.
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})
# Seccomp: the legacy annotations the field replaced (Kubernetes 1.19), honoured up to 1.26 (the embedded 1.20
# does): the pod-wide one, and one per container (`<prefix><container name>`). Allowed values as
# pod-security-admission's annotation check (seccompProfileBaseline_1_0) has them, a profile name required.
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"
SECCOMP_ANNOTATION_OK = frozenset({"runtime/default", "docker/default"})
SECCOMP_ANNOTATION_LOCALHOST = "localhost/"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HOOKS = ("postStart", "preStop")

Path = tuple[str | int, ...]          # a field's path from the document root: ("spec", "containers", 0, "name")
Finding = tuple[Path, str]            # (path, what is wrong)


@dataclass(frozen=True)
class Pod:
    """One pod template as the checks see it: its spec and metadata, and where they sit in the document."""

    spec: dict[str, Any]
    metadata: dict[str, Any]
    spec_path: Path
    meta_path: Path

    @property
    def security_context(self) -> dict[str, Any]:
        return _m(self.spec.get("securityContext"))

    def security_contexts(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(path, securityContext) of the pod, then of each container ({} where none is set)."""
        yield (*self.spec_path, "securityContext"), self.security_context
        for path, c in self.containers():
            yield (*path, "securityContext"), _sc(c)

    def containers(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(path, container) for initContainers, containers and ephemeralContainers, in that order."""
        for key in CONTAINER_LISTS:
            items = self.spec.get(key)
            for i, c in enumerate(items if isinstance(items, list) else []):
                if isinstance(c, dict):
                    yield (*self.spec_path, key, i), c


@dataclass(frozen=True)
class Control:
    """One row of the page's Baseline or Restricted table: `title` as the page writes it, `id` as
    pod-security-admission names its check, the level, and `overrides`: baseline checks this one subsumes."""

    id: str
    title: str
    level: str
    check: Callable[[Pod], Iterator[Finding]]
    fix: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Violation:
    """One broken control: `field` is the path in the object, e.g. spec.template.spec.containers[0]
    (name=web).securityContext.privileged; `path` the same as keys and indexes."""

    kind: str
    name: str
    namespace: str
    field: str
    control: str
    problem: str
    control_id: str = ""
    level: str = PROFILE
    path: Path = ()

    def line(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return (f"{self.kind} {ns}{self.name}: {self.field} {self.problem} "
                f"(Pod Security {self.level}: {self.control})")


def _m(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    return _m(c.get("securityContext"))


def _unset_or_false(v: Any) -> bool:
    return v is None or v is False


def _among(v: Any, allowed: frozenset[str]) -> bool:
    """v is one of the allowed strings (a list or map where a string belongs is not: no TypeError)."""
    return isinstance(v, str) and v in allowed


# ---------------------------------------------------------------- baseline

def _host_process(pod: Pod) -> Iterator[Finding]:
    for path, sc in pod.security_contexts():
        v = _m(sc.get("windowsOptions")).get("hostProcess")
        if not _unset_or_false(v):
            yield (*path, "windowsOptions", "hostProcess"), f"is {_shown(v)}; must be unset or false"


def _host_namespaces(pod: Pod) -> Iterator[Finding]:
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if not _unset_or_false(pod.spec.get(f)):
            yield (*pod.spec_path, f), f"is {_shown(pod.spec[f])}; must be unset or false"


def _shown(value: Any) -> str:
    """A field's value as the manifest spells it (YAML scalars: true, 0, null; a string bare), not repr()."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


def _privileged(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        v = _sc(c).get("privileged")
        if not _unset_or_false(v):
            yield (*path, "securityContext", "privileged"), f"is {_shown(v)}; must be unset or false"


def _added(c: dict[str, Any]) -> list[Any]:
    add = _m(_sc(c).get("capabilities")).get("add")
    return add if isinstance(add, list) else []


def _capabilities_baseline(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        for k, cap in enumerate(_added(c)):
            if str(cap) not in BASELINE_ADD_CAPABILITIES:
                yield (*path, "securityContext", "capabilities", "add", k), \
                    f"adds {cap}; beyond the default set ({', '.join(sorted(BASELINE_ADD_CAPABILITIES))})"


def _volumes(pod: Pod) -> Iterator[tuple[Path, dict[str, Any]]]:
    items = pod.spec.get("volumes")
    for i, v in enumerate(items if isinstance(items, list) else []):
        if isinstance(v, dict):
            yield (*pod.spec_path, "volumes", i), v


def _host_path_volumes(pod: Pod) -> Iterator[Finding]:
    for path, v in _volumes(pod):
        if v.get("hostPath") is not None:
            yield (*path, "hostPath"), "is set; hostPath volumes are forbidden"


def _host_ports(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        ports = c.get("ports")
        for j, p in enumerate(ports if isinstance(ports, list) else []):
            hp = _m(p).get("hostPort")
            if hp not in (None, 0):
                yield (*path, "ports", j, "hostPort"), f"is {_shown(hp)}; must be unset or 0"


def _host_probes(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        handlers: list[tuple[tuple[str, ...], dict[str, Any]]] = [((p,), _m(c.get(p))) for p in PROBES]
        handlers += [(("lifecycle", h), _m(_m(c.get("lifecycle")).get(h))) for h in LIFECYCLE_HOOKS]
        for where, handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = _m(handler.get(action)).get("host")
                if host not in (None, ""):
                    yield (*path, *where, action, "host"), f"is {_shown(host)}; must be unset or empty"


def _apparmor(pod: Pod) -> Iterator[Finding]:
    for path, sc in pod.security_contexts():
        if sc.get("appArmorProfile") is None:
            continue
        t = _m(sc["appArmorProfile"]).get("type")
        if not _among(t, APPARMOR_TYPES):
            yield (*path, "appArmorProfile", "type"), f"is {_shown(t)}; must be unset, RuntimeDefault or Localhost"
    for key, value in _m(pod.metadata.get("annotations")).items():
        if str(key).startswith(APPARMOR_ANNOTATION) and value not in (None, "", "runtime/default") \
                and not str(value).startswith("localhost/"):
            yield (*pod.meta_path, "annotations", str(key)), \
                f"is {_shown(value)}; must be unset, runtime/default or localhost/*"


def _selinux(pod: Pod) -> Iterator[Finding]:
    for path, sc in pod.security_contexts():
        se = _m(sc.get("seLinuxOptions"))
        if se.get("type") is not None and str(se["type"]) not in SELINUX_TYPES:
            yield (*path, "seLinuxOptions", "type"), f"is {_shown(se['type'])}; allowed: " + \
                ", ".join(sorted(t for t in SELINUX_TYPES if t))
        for f in ("user", "role"):
            if se.get(f) not in (None, ""):
                yield (*path, "seLinuxOptions", f), f"is {_shown(se[f])}; must be unset or empty"


def _proc_mount(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        v = _sc(c).get("procMount")
        if v not in (None, "Default"):
            yield (*path, "securityContext", "procMount"), f"is {_shown(v)}; must be unset or Default"


def _seccomp_of(sc: dict[str, Any]) -> tuple[bool, Any]:
    """(set, type) of a securityContext's seccompProfile."""
    prof = sc.get("seccompProfile")
    return prof is not None, _m(prof).get("type")


def _seccomp_annotation_ok(value: Any) -> bool:
    """A legacy seccomp annotation's value confines: runtime/default, docker/default or localhost/<profile>."""
    return _among(value, SECCOMP_ANNOTATION_OK) or (
        isinstance(value, str) and value.startswith(SECCOMP_ANNOTATION_LOCALHOST)
        and len(value) > len(SECCOMP_ANNOTATION_LOCALHOST))


def _seccomp_annotations(pod: Pod) -> Iterator[Finding]:
    """The legacy seccomp annotations of the pod template: any one present with a value that does not confine
    (unconfined, "", a typo) is a violation, at the annotation, naming whose profile it is. On a cluster up to
    1.26 the kubelet takes a container's profile from its field, else its annotation, else the pod's field,
    else the pod's annotation: `container...kubernetes.io/web: unconfined` unconfines `web` in a pod whose
    spec.securityContext.seccompProfile is RuntimeDefault. Checked whether or not a field shadows it, as
    pod-security-admission's annotation check does (and the API server rejects a pod whose annotation and
    field disagree)."""
    annotations = _m(pod.metadata.get("annotations"))
    for key, value in annotations.items():
        key = str(key)
        if key == SECCOMP_POD_ANNOTATION:
            whose = "the pod's seccomp profile (every container without its own)"
        elif key.startswith(SECCOMP_CONTAINER_ANNOTATION):
            whose = f"container {key[len(SECCOMP_CONTAINER_ANNOTATION):] or '?'}'s seccomp profile"
        else:
            continue
        if not _seccomp_annotation_ok(value):
            yield (*pod.meta_path, "annotations", key), \
                f"is {_shown(value)} ({whose}); must be runtime/default, docker/default or localhost/<profile>"


def _seccomp_baseline(pod: Pod) -> Iterator[Finding]:
    for path, sc in pod.security_contexts():
        is_set, t = _seccomp_of(sc)
        if is_set and not _among(t, SECCOMP_OK):
            yield (*path, "seccompProfile", "type"), f"is {_shown(t)}; must be unset, RuntimeDefault or Localhost"
    yield from _seccomp_annotations(pod)


def _sysctls(pod: Pod) -> Iterator[Finding]:
    items = pod.security_context.get("sysctls")
    for i, s in enumerate(items if isinstance(items, list) else []):
        name = _m(s).get("name", "")
        if not _among(name, SAFE_SYSCTLS):
            yield (*pod.spec_path, "securityContext", "sysctls", i, "name"), f"{_shown(name)} is not in the safe set"


# ---------------------------------------------------------------- restricted

def _volume_types(pod: Pod) -> Iterator[Finding]:
    for path, v in _volumes(pod):
        for source, value in v.items():
            if source != "name" and value is not None and source not in RESTRICTED_VOLUME_TYPES:
                yield (*path, str(source)), f"is a '{source}' volume; allowed: " + \
                    ", ".join(sorted(RESTRICTED_VOLUME_TYPES))


def _privilege_escalation(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        v = _sc(c).get("allowPrivilegeEscalation")
        if v is not False:
            yield (*path, "securityContext", "allowPrivilegeEscalation"), \
                f"is {'unset' if v is None else repr(v)}; must be false"


def _run_as_non_root(pod: Pod) -> Iterator[Finding]:
    pod_value = pod.security_context.get("runAsNonRoot")
    if pod_value not in (None, True):
        yield (*pod.spec_path, "securityContext", "runAsNonRoot"), f"is {_shown(pod_value)}; must be true or unset"
    for path, c in pod.containers():
        v = _sc(c).get("runAsNonRoot")
        if v is True or (v is None and pod_value is True):
            continue
        yield (*path, "securityContext", "runAsNonRoot"), (
            f"is {'unset' if v is None else repr(v)}"
            + (" (nor spec.securityContext.runAsNonRoot: true)" if v is None else "") + "; must be true")


def _run_as_user(pod: Pod) -> Iterator[Finding]:
    for path, sc in pod.security_contexts():
        if sc.get("runAsUser") == 0 and sc["runAsUser"] is not False:
            yield (*path, "runAsUser"), "is 0; must not be root"


def _seccomp_restricted(pod: Pod) -> Iterator[Finding]:
    """The fields as the page's Restricted table has them, then the legacy annotations (see
    _seccomp_annotations). An allowed annotation does not count as a profile set: clusters from 1.27 ignore
    it, so a container with neither its field nor the pod's runs unconfined there; it is blocked, the
    message naming the annotation it relies on."""
    pod_set, pod_type = _seccomp_of(pod.security_context)
    if pod_set and not _among(pod_type, SECCOMP_OK):
        yield (*pod.spec_path, "securityContext", "seccompProfile", "type"), \
            f"is {_shown(pod_type)}; must be RuntimeDefault or Localhost"
    pod_ok = pod_set and _among(pod_type, SECCOMP_OK)
    annotations = _m(pod.metadata.get("annotations"))
    for path, c in pod.containers():
        is_set, t = _seccomp_of(_sc(c))
        if is_set and not _among(t, SECCOMP_OK):
            yield (*path, "securityContext", "seccompProfile", "type"), \
                f"is {_shown(t)}; must be RuntimeDefault or Localhost"
        elif not is_set and not pod_ok:
            legacy = [k for k in (f"{SECCOMP_CONTAINER_ANNOTATION}{c.get('name')}", SECCOMP_POD_ANNOTATION)
                      if k in annotations]
            relies = (f" (the legacy annotation {legacy[0]} is ignored from Kubernetes 1.27)" if legacy else "")
            yield (*path, "securityContext", "seccompProfile", "type"), \
                "is unset (and spec.securityContext.seccompProfile too)" + relies + \
                "; must be RuntimeDefault or Localhost"
    yield from _seccomp_annotations(pod)


def _capabilities_restricted(pod: Pod) -> Iterator[Finding]:
    for path, c in pod.containers():
        caps = _m(_sc(c).get("capabilities"))
        drop = caps.get("drop")
        if "ALL" not in [str(x) for x in (drop if isinstance(drop, list) else [])]:
            yield (*path, "securityContext", "capabilities", "drop"), "does not include ALL; must drop ALL"
        for k, cap in enumerate(_added(c)):
            if str(cap) not in RESTRICTED_ADD_CAPABILITIES:
                yield (*path, "securityContext", "capabilities", "add", k), \
                    f"adds {cap}; only NET_BIND_SERVICE may be added"


CONTROLS: tuple[Control, ...] = (
    Control("windowsHostProcess", "HostProcess", "baseline", _host_process,
            "remove windowsOptions.hostProcess (or set it to false)"),
    Control("hostNamespaces", "Host Namespaces", "baseline", _host_namespaces,
            "remove hostNetwork, hostPID and hostIPC (or set them to false)"),
    Control("privileged", "Privileged Containers", "baseline", _privileged,
            "remove securityContext.privileged (or set it to false)"),
    Control("capabilities_baseline", "Capabilities", "baseline", _capabilities_baseline,
            "add no capability beyond Docker's default set"),
    Control("hostPathVolumes", "HostPath Volumes", "baseline", _host_path_volumes,
            "use an emptyDir, a ConfigMap/Secret or a persistentVolumeClaim instead of hostPath"),
    Control("hostPorts", "Host Ports", "baseline", _host_ports, "remove hostPort; expose the port with a Service"),
    Control("hostProbesAndHostLifecycle", "Host Probes / Lifecycle Hooks", "baseline", _host_probes,
            "remove the host field: probes and hooks target the pod's own IP"),
    Control("appArmorProfile", "AppArmor", "baseline", _apparmor,
            "set securityContext.appArmorProfile.type to RuntimeDefault or Localhost, or leave it unset"),
    Control("seLinuxOptions", "SELinux", "baseline", _selinux,
            "leave seLinuxOptions unset, or set only its type, to container_t (or _init_t, _kvm_t, _engine_t)"),
    Control("procMount", "/proc Mount Type", "baseline", _proc_mount, "remove securityContext.procMount"),
    Control("seccompProfile_baseline", "Seccomp", "baseline", _seccomp_baseline,
            "set seccompProfile.type to RuntimeDefault (or Localhost); a legacy seccomp annotation, if kept, "
            "to runtime/default or localhost/<profile>"),
    Control("sysctls", "Sysctls", "baseline", _sysctls, "set only the safe sysctls in spec.securityContext.sysctls"),
    Control("restrictedVolumes", "Volume Types", "restricted", _volume_types,
            "use configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected or "
            "secret volumes", overrides=("hostPathVolumes",)),
    Control("allowPrivilegeEscalation", "Privilege Escalation", "restricted", _privilege_escalation,
            "set securityContext.allowPrivilegeEscalation: false in every container"),
    Control("runAsNonRoot", "Running as Non-root", "restricted", _run_as_non_root,
            "set spec.securityContext.runAsNonRoot: true (or in every container)"),
    Control("runAsUser", "Running as Non-root user", "restricted", _run_as_user,
            "set runAsUser to a non-zero uid, or leave it unset"),
    Control("seccompProfile_restricted", "Seccomp", "restricted", _seccomp_restricted,
            "set spec.securityContext.seccompProfile.type: RuntimeDefault; a legacy seccomp annotation, if kept, "
            "to runtime/default or localhost/<profile>", overrides=("seccompProfile_baseline",)),
    Control("capabilities_restricted", "Capabilities", "restricted", _capabilities_restricted,
            "set securityContext.capabilities.drop: [ALL]; add back NET_BIND_SERVICE at most",
            overrides=("capabilities_baseline",)),
)
CONTROL_BY_ID = {c.id: c for c in CONTROLS}


def controls(level: str = PROFILE) -> tuple[Control, ...]:
    """The controls a level enforces: baseline's, or restricted's with the baseline ones it subsumes left out.
    Raises ValueError on another level."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}; use baseline or restricted")
    chosen = [c for c in CONTROLS if c.level == "baseline" or level == "restricted"]
    overridden = {o for c in chosen for o in c.overrides}
    return tuple(c for c in chosen if c.id not in overridden)


# ---------------------------------------------------------------- documents

def parse_manifests(text: str) -> list[dict[str, Any]]:
    """The documents of a multi-document YAML stream (empty ones dropped, `kind: List` / `*List` flattened)."""
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict):
            docs += flatten_lists([doc])
    return docs


def flatten_lists(docs: Iterable[Any]) -> list[Any]:
    """Each `kind: List` (or `*List`: PodList, DeploymentList...) replaced by its items, recursively."""
    out: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            out += flatten_lists(doc["items"])
        else:
            out.append(doc)
    return out


def pod_spec_path(doc: dict[str, Any]) -> tuple[str, ...] | None:
    """Where a document keeps its pod spec: the workload kinds' known place, or spec.template.spec for any
    other kind whose template has containers (custom workloads); None for objects without pods."""
    path = POD_SPEC_PATHS.get(str(doc.get("kind", "")))
    if path is not None:
        return path
    template = _m(_m(_m(doc.get("spec")).get("template")).get("spec"))
    return CUSTOM_POD_SPEC_PATH if "containers" in template else None


def _dig(doc: Any, path: Iterable[str | int]) -> Any:
    cur: Any = doc
    for key in path:
        if isinstance(cur, dict):
            cur = cur.get(key)
        elif isinstance(cur, list) and isinstance(key, int) and key < len(cur):
            cur = cur[key]
        else:
            return None
    return cur


def render_path(doc: dict[str, Any], path: Path) -> str:
    """spec.containers[0](name=web).securityContext.privileged; annotation keys in brackets."""
    out = ""
    for n, key in enumerate(path):
        if isinstance(key, int):
            out += f"[{key}]"
            name = _m(_dig(doc, path[: n + 1])).get("name")
            if name is not None and path[n - 1] in (*CONTAINER_LISTS, "volumes"):
                out += f"(name={name})"
        elif n and path[n - 1] == "annotations":
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def check_pod_spec(doc: dict[str, Any], level: str = PROFILE) -> list[Violation]:
    """Every violation of `level` ("baseline" or "restricted") in one document's pod template (an object
    without one passes). Order: the page's control order, then field order."""
    spec_path = pod_spec_path(doc)
    spec = _dig(doc, spec_path) if spec_path else None
    if spec_path is None or not isinstance(spec, dict):
        return []
    meta_path: Path = (*spec_path[:-1], "metadata") if len(spec_path) > 1 else ("metadata",)
    pod = Pod(spec, _m(_dig(doc, meta_path)), spec_path, meta_path)
    meta = _m(doc.get("metadata"))
    kind, name, ns = str(doc.get("kind", "")), str(meta.get("name", "?")), str(meta.get("namespace", "") or "")
    return [Violation(kind, name, ns, render_path(doc, path), control.title, problem, control.id, control.level,
                      path)
            for control in controls(level) for path, problem in control.check(pod)]


def check_restricted(docs: Iterable[dict[str, Any]], level: str = PROFILE) -> list[Violation]:
    """Every violation of the profile in the documents' pod templates (Lists flattened; objects without a pod
    template, such as Services or ConfigMaps, pass). Order: document order, then control order."""
    found: list[Violation] = []
    for doc in flatten_lists(docs):
        if isinstance(doc, dict):
            found += check_pod_spec(doc, level)
    return found


def enforce_restricted(manifests: str | Iterable[dict[str, Any]], *, where: str = "") -> int:
    """Raise PolicyBlocked (exit 3) on the first violation of the restricted profile, naming the object and
    the field (and how many more there are); return the number of pod templates checked when none violates."""
    docs = parse_manifests(manifests) if isinstance(manifests, str) else flatten_lists(manifests)
    violations = check_restricted(docs)
    if violations:
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        at = f" in {where}" if where else ""
        raise PolicyBlocked(f"Pod Security gate{at}: {violations[0].line()}{more}",
                            f"fix the chart or values so every pod meets the restricted profile "
                            f"({POLICY_VERSION}, {SOURCE})")
    return sum(1 for d in docs if isinstance(d, dict) and pod_spec_path(d) is not None)


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
