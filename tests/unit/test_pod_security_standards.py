"""The Pod Security gate against the Pod Security Standards page, control by control (a table built from it).

Source: https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy v1.34), its Baseline and
Restricted tables: for every control, every "Restricted Fields" entry in every place it can appear (the pod
spec, containers, initContainers, ephemeralContainers, the pod's annotations), a minimal violation that must
be blocked, and each "Allowed Values" entry, which must pass. The base pod meets the restricted profile, so
a case changes one field and nothing else.

Beyond the page's fields, as the gate's docstring says: the legacy AppArmor and seccomp annotations, which
Kubernetes up to 1.26 (the embedded 1.20) honours; seccomp's allowed values are pod-security-admission's
(seccompProfileBaseline_1_0). A case may put the pod in a List or a CronJob's template (`wrap`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.gate.pod_security import check_restricted

UNSET = object()   # the field removed: "Undefined/nil" in the page's Allowed Values
Place = tuple[str | int, ...]

POD: Place = ("spec",)
CONTAINERS: tuple[Place, ...] = (("spec", "initContainers", 0), ("spec", "containers", 0),
                                 ("spec", "ephemeralContainers", 0))
INIT_AND_MAIN = CONTAINERS[:2]        # probes, lifecycle hooks: the page lists these two lists
NAMES = {"initContainers": "init", "containers": "web", "ephemeralContainers": "debug"}


def base_pod() -> dict[str, Any]:
    def c(name: str) -> dict[str, Any]:
        return {"name": name, "image": "r.example/x@sha256:" + "a" * 64,
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "veza-dev", "annotations": {}},
            "spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                     "initContainers": [c("init")], "containers": [c("web")], "ephemeralContainers": [c("debug")],
                     "volumes": [{"name": "tmp", "emptyDir": {}}]}}


def rendered(path: Place) -> str:
    """The field as the gate names it: spec.containers[0](name=web).securityContext.privileged."""
    out = ""
    for n, key in enumerate(path):
        if isinstance(key, int):
            out += f"[{key}]"
            if path[n - 1] in NAMES:
                out += f"(name={NAMES[str(path[n - 1])]})"
            elif path[n - 1] == "volumes":
                out += "(name=v)"
        elif n and path[n - 1] == "annotations":
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def put(doc: dict[str, Any], path: Place, value: Any) -> None:
    cur: Any = doc
    for key, after in zip(path[:-1], path[1:], strict=True):
        if isinstance(key, int):
            while len(cur) <= key:
                cur.append({})
            cur = cur[key]
        else:
            cur = cur.setdefault(key, [] if isinstance(after, int) else {})
    if value is UNSET:
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = value


@dataclass(frozen=True)
class Case:
    control: str                  # the page's title
    level: str                    # the table it is in
    changes: tuple[tuple[Place, Any], ...]
    blocked_at: Place | None      # the field reported, or None: allowed
    wrap: str = ""                # "": the Pod itself; "List": the Pod in a List; "CronJob": as a CronJob's template

    @property
    def id(self) -> str:
        what = ",".join(f"{rendered(p)}={'unset' if v is UNSET else v!r}" for p, v in self.changes)
        within = f"in {self.wrap}:" if self.wrap else ""
        return f"{self.level}:{self.control}:{'blocked' if self.blocked_at else 'allowed'}:{within}{what}"[:180]


CASES: list[Case] = []


def field(control: str, level: str, places: tuple[Place, ...], rel: Place, bad: list[Any], allowed: list[Any],
          also: tuple[tuple[Place, Any], ...] = ()) -> None:
    """One Restricted Fields entry: at each place, each bad value blocked (at that field), each allowed
    value passes. `also`: other changes every case needs (relative to the place)."""
    for place in places:
        extra = tuple(((*place, *p), v) for p, v in also)
        for v in bad:
            CASES.append(Case(control, level, ((*extra, ((*place, *rel), v))), (*place, *rel)))
        for v in allowed:
            CASES.append(Case(control, level, ((*extra, ((*place, *rel), v))), None))


SC = ("securityContext",)
B, R = "baseline", "restricted"
# --- Baseline
field("HostProcess", B, (POD, *CONTAINERS), (*SC, "windowsOptions", "hostProcess"), [True], [UNSET, False])
for f in ("hostNetwork", "hostPID", "hostIPC"):
    field("Host Namespaces", B, (POD,), (f,), [True], [UNSET, False])
field("Privileged Containers", B, CONTAINERS, (*SC, "privileged"), [True], [UNSET, False])
field("Capabilities", B, CONTAINERS, (*SC, "capabilities", "add"), [["SYS_ADMIN"], ["NET_RAW"], ["CHOWN", "BPF"]],
      [UNSET, *[[c] for c in ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")]])
field("HostPath Volumes", B, (("spec", "volumes", 0),), ("hostPath",), [{"path": "/etc"}], [UNSET],
      also=((("name",), "v"),))
field("Host Ports", B, CONTAINERS, ("ports", 0, "hostPort"), [8080], [UNSET, 0],
      also=((("ports", 0, "containerPort"), 8080),))
for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
    for action in ("httpGet", "tcpSocket"):
        field("Host Probes / Lifecycle Hooks", B, INIT_AND_MAIN, (probe, action, "host"), ["10.0.0.1", "localhost"],
              [UNSET, ""], also=(((probe, action, "port"), 8080),))
for hook in ("postStart", "preStop"):
    for action in ("httpGet", "tcpSocket"):
        field("Host Probes / Lifecycle Hooks", B, INIT_AND_MAIN, ("lifecycle", hook, action, "host"), ["10.0.0.1"],
              [UNSET, ""], also=((("lifecycle", hook, action, "port"), 8080),))
field("AppArmor", B, (POD, *CONTAINERS), (*SC, "appArmorProfile", "type"), ["Unconfined"],
      ["RuntimeDefault", "Localhost"])
field("AppArmor", B, (("metadata",),), ("annotations", "container.apparmor.security.beta.kubernetes.io/web"),
      ["unconfined"], [UNSET, "runtime/default", "localhost/veza-profile"])
field("SELinux", B, (POD, *CONTAINERS), (*SC, "seLinuxOptions", "type"), ["spc_t", "unconfined_t"],
      [UNSET, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"])
for f in ("user", "role"):
    field("SELinux", B, (POD, *CONTAINERS), (*SC, "seLinuxOptions", f), ["system_u" if f == "user" else "system_r"],
          [UNSET, ""])
field("/proc Mount Type", B, CONTAINERS, (*SC, "procMount"), ["Unmasked"], [UNSET, "Default"])
field("Seccomp", B, (POD, *CONTAINERS), (*SC, "seccompProfile", "type"), ["Unconfined"],
      ["RuntimeDefault", "Localhost"])
SECCOMP_ANNOTATIONS = ("seccomp.security.alpha.kubernetes.io/pod",
                       *(f"container.seccomp.security.alpha.kubernetes.io/{n}" for n in NAMES.values()))
SECCOMP_ANNOTATION_BAD = ["unconfined", "", "localhost/", "runtime/defualt"]
SECCOMP_ANNOTATION_ALLOWED = [UNSET, "runtime/default", "docker/default", "localhost/veza-profile"]
for level in (B, R):   # the legacy annotations (Kubernetes <= 1.26): the pod's field RuntimeDefault does not shadow
    for key in SECCOMP_ANNOTATIONS:
        field("Seccomp", level, (("metadata",),), ("annotations", key), SECCOMP_ANNOTATION_BAD,
              SECCOMP_ANNOTATION_ALLOWED)
    for wrap in ("List", "CronJob"):
        for key in SECCOMP_ANNOTATIONS[:2]:
            at = ("metadata", "annotations", key)
            CASES.append(Case("Seccomp", level, ((at, "unconfined"),), at, wrap))
            CASES.append(Case("Seccomp", level, ((at, "runtime/default"),), None, wrap))
field("Sysctls", B, (POD,), (*SC, "sysctls", 0, "name"), ["kernel.msgmax", "net.ipv4.ip_forward", "vm.swappiness"],
      ["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
       "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
       "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
       "net.ipv4.tcp_keepalive_probes",
       "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"])   # these two: pod-security-admission's v1.32 additions
# --- Restricted
VOLUME = ("spec", "volumes", 0)
for source in ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd",
               "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte",
               "azureDisk", "portworxVolume", "photonPersistentDisk", "scaleIO", "storageos"):
    field("Volume Types", R, (VOLUME,), (source,), [{"x": "y"}], [], also=((("name",), "v"), (("emptyDir",), UNSET)))
for source in ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
               "secret", "image"):   # image: allowed by pod-security-admission (policy/check_restrictedVolumes.go)
    field("Volume Types", R, (VOLUME,), (source,), [], [{}], also=((("name",), "v"), (("emptyDir",), UNSET)))
field("Privilege Escalation", R, CONTAINERS, (*SC, "allowPrivilegeEscalation"), [True, UNSET], [False])
field("Running as Non-root", R, (POD,), (*SC, "runAsNonRoot"), [False], [True])
field("Running as Non-root", R, CONTAINERS, (*SC, "runAsNonRoot"), [False], [True, UNSET])
for c in CONTAINERS:   # a container without runAsNonRoot, in a pod without it either
    CASES.append(Case("Running as Non-root", R, (((*POD, *SC, "runAsNonRoot"), UNSET),
                                                  ((*c, *SC, "runAsNonRoot"), UNSET)), (*c, *SC, "runAsNonRoot")))
    CASES.append(Case("Running as Non-root", R, (((*POD, *SC, "runAsNonRoot"), UNSET),
                                                  *(((*x, *SC, "runAsNonRoot"), True) for x in CONTAINERS)), None))
field("Running as Non-root user", R, (POD, *CONTAINERS), (*SC, "runAsUser"), [0], [UNSET, 1000, 65534])
field("Seccomp", R, (POD, *CONTAINERS), (*SC, "seccompProfile", "type"), ["Unconfined"],
      ["RuntimeDefault", "Localhost"])
for c in CONTAINERS:   # the absence of a profile is prohibited: unset on the pod and on one container
    CASES.append(Case("Seccomp", R, (((*POD, *SC, "seccompProfile"), UNSET),), (*c, *SC, "seccompProfile", "type")))
CASES.append(Case("Seccomp", R, (((*POD, *SC, "seccompProfile"), UNSET),
                                 *(((*x, *SC, "seccompProfile"), {"type": "RuntimeDefault"}) for x in CONTAINERS)),
                  None))
for c in CONTAINERS:   # an allowed legacy annotation does not stand in for the field (ignored from 1.27)
    name = NAMES[str(c[1])]
    for key in ("seccomp.security.alpha.kubernetes.io/pod", f"container.seccomp.security.alpha.kubernetes.io/{name}"):
        CASES.append(Case("Seccomp", R, (((*POD, *SC, "seccompProfile"), UNSET), (("metadata", "annotations", key),
                                          "runtime/default")), (*c, *SC, "seccompProfile", "type")))
field("Capabilities", R, CONTAINERS, (*SC, "capabilities", "drop"), [UNSET, [], ["NET_RAW"]],
      [["ALL"], ["ALL", "NET_RAW"]])
field("Capabilities", R, CONTAINERS, (*SC, "capabilities", "add"), [["CHOWN"], ["SYS_ADMIN"]],
      [UNSET, ["NET_BIND_SERVICE"]])


CRONJOB_TEMPLATE: Place = ("spec", "jobTemplate", "spec", "template")


def _apply(case: Case) -> dict[str, Any]:
    doc = copy.deepcopy(base_pod())
    for path, value in case.changes:
        put(doc, path, value)
    if case.wrap == "List":
        return {"apiVersion": "v1", "kind": "List", "items": [doc]}
    if case.wrap == "CronJob":
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "p", "namespace": "veza-dev"},
                "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
                    "metadata": doc["metadata"], "spec": {**doc["spec"], "restartPolicy": "Never"}}}}}}
    return doc


def test_the_base_pod_meets_both_profiles() -> None:
    assert check_restricted([base_pod()]) == []
    assert check_restricted([base_pod()], level="baseline") == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_standard(case: Case) -> None:
    doc = _apply(case)
    at_level = [(v.field, v.control) for v in check_restricted([doc], level=case.level)]
    gate = [v.field for v in check_restricted([doc])]        # the deploy gate: restricted
    if case.blocked_at is None:
        assert at_level == []
        if case.level == R:
            assert gate == []
        return
    want = rendered(((*CRONJOB_TEMPLATE,) if case.wrap == "CronJob" else ()) + case.blocked_at)
    # a list's item may be named: capabilities.add[1]
    assert any((f == want or f.startswith(want + "[")) and c == case.control for f, c in at_level), at_level
    assert any(f == want or f.startswith(want + "[") for f in gate), gate
