"""What a lint finding is, the VZ rules' names and fixes, and how findings of several tools merge.

Rules (each an error: severity HIGH, so it blocks at the default threshold whatever Trivy thinks);
docs/lint.md explains each one (what, why, how to fix, source):

  VZ001 runs-as-root          Dockerfile: the final stage runs as root, or sets no USER in this file
  VZ002 fat-base-image        Dockerfile: a single-stage build on a full distro/toolchain image
  VZ003 plaintext-secret      a secret written in a Dockerfile, compose file or committed manifest
  VZ004 missing-resources     Kubernetes container without resources.requests and resources.limits
  VZ005 mutable-image-tag     Kubernetes image with tag `latest` or no tag (and no digest)
  VZ006 missing-probes        Kubernetes long-running container without livenessProbe / readinessProbe
  VZ007 run-as-non-root       pod/container securityContext without runAsNonRoot: true
  VZ008 writable-root-fs      container securityContext without readOnlyRootFilesystem: true
  VZ009 privilege-escalation  container securityContext without allowPrivilegeEscalation: false
  VZ010 capabilities-kept     container securityContext.capabilities.drop without ALL

and PSS-<control id> (HIGH too): a control of the Pod Security Standards, restricted profile (baseline in a
Kustomize patch), checked by the deploy gate's code (pipeline/gate/pod_security.py), e.g. PSS-privileged,
PSS-hostNamespaces, PSS-restrictedVolumes (hostPath and other volume sources), PSS-sysctls,
PSS-capabilities_restricted (added capabilities), PSS-appArmorProfile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.core.vocab import SEVERITY_RANK

PITFALL_SEVERITY = "HIGH"

RULES: dict[str, tuple[str, str]] = {   # id → (name, fix)
    "VZ001": ("runs-as-root", "add `USER <uid>` (non-zero, e.g. USER 10001) to the final stage"),
    "VZ002": ("fat-base-image", "build in a builder stage and copy the result into a slim/distroless/scratch stage"),
    "VZ003": ("plaintext-secret", "pass it at run time: a Kubernetes secretKeyRef, a compose secret or ${VAR} "
                                  "interpolation, a BuildKit secret mount - never a literal"),
    "VZ004": ("missing-resources", "set resources.requests and resources.limits (cpu, memory)"),
    "VZ005": ("mutable-image-tag", "pin the image to a version tag, better a digest (repo@sha256:...)"),
    "VZ006": ("missing-probes", "add livenessProbe and readinessProbe (e.g. httpGet /health and /ready)"),
    "VZ007": ("run-as-non-root", "set securityContext.runAsNonRoot: true (pod or container)"),
    "VZ008": ("writable-root-fs", "set securityContext.readOnlyRootFilesystem: true (mount an emptyDir for /tmp)"),
    "VZ009": ("privilege-escalation", "set securityContext.allowPrivilegeEscalation: false"),
    "VZ010": ("capabilities-kept", "set securityContext.capabilities.drop: [ALL]"),
}

# Checks of other tools that report the same problem as a VZ rule (ids as the tools print them).
SAME_PROBLEM: dict[str, str] = {
    "DS-0002": "VZ001", "DL3002": "VZ001",                                   # root user
    "KSV-0011": "VZ004", "KSV-0015": "VZ004", "KSV-0016": "VZ004", "KSV-0018": "VZ004",   # limits/requests
    "KSV-0013": "VZ005",                                                     # image tag latest
    "KSV-0012": "VZ007", "KSV-0014": "VZ008", "KSV-0001": "VZ009", "KSV-0003": "VZ010", "KSV-0004": "VZ010",
    "DS-0031": "VZ003", "DL3064": "VZ003", "KSV-0109": "VZ003", "KSV-01010": "VZ003",   # secrets by name
    "SCHEMA": "MALFORMED",                                                   # a field of the wrong type
    # trivy's checks of Pod Security controls (ids and messages as trivy 0.76 prints them)
    "KSV-0017": "PSS-privileged", "KSV-0008": "PSS-hostNamespaces", "KSV-0009": "PSS-hostNamespaces",
    "KSV-0010": "PSS-hostNamespaces", "KSV-0023": "PSS-restrictedVolumes", "KSV-0121": "PSS-restrictedVolumes",
    "KSV-0024": "PSS-hostPorts", "KSV-0005": "PSS-capabilities_restricted", "KSV-0022": "PSS-capabilities_restricted",
    "KSV-0025": "PSS-seLinuxOptions", "KSV-0026": "PSS-sysctls", "KSV-0027": "PSS-procMount",
    "KSV-0103": "PSS-windowsHostProcess", "KSV-0104": "PSS-seccompProfile_restricted",
}
# Checks whose verdict the VZ rule replaces when it does not agree: they judge by a variable's name or
# read only the last stage of a Dockerfile, or take an ${IMAGE} placeholder for an untagged image, where
# the VZ rule reads values, references and stage inheritance.
SUPERSEDED = {"DS-0002", "DL3002", "DS-0031", "DL3064", "KSV-0109", "KSV-01010", "KSV-0013"}


@dataclass(frozen=True)
class LintFinding:
    rule: str          # VZ001 / DL3008 / DS-0002 / HELM-LINT / SCHEMA-1.20 ...
    severity: str
    file: str
    line: int
    message: str
    fix: str = ""
    tool: str = "veza"
    seen_by: tuple[str, ...] = ()   # "tool RULE" of every other check that reported the same problem

    @property
    def name(self) -> str:
        return RULES.get(self.rule, ("", ""))[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seen_by"] = list(self.seen_by)
        if self.name:
            d["name"] = self.name
        return d


def pitfall(rule: str, file: str, line: int, message: str) -> LintFinding:
    return LintFinding(rule, PITFALL_SEVERITY, file, line, message, RULES[rule][1])


def merge_same_problem(findings: list[LintFinding], spans: dict[tuple[str, str, int], int]) -> list[LintFinding]:
    """One finding per problem, at the worst severity any tool gave it: another tool's check for the same
    problem as a VZ finding in the same file
    (at its line, or within the line span that tool reported) is folded into the VZ finding's `seen_by`.

    `spans` maps (tool, file, start line) of a finding to its end line when the tool reported a range.
    A check with no VZ counterpart nearby stays a finding of its own, except the SUPERSEDED ones.
    """
    primary = set(SAME_PROBLEM.values())
    vz = [f for f in findings if f.rule in primary]
    extra: dict[int, list[str]] = {}
    worst: dict[int, str] = {}
    out: list[LintFinding] = []
    for f in findings:
        if f.rule in primary:
            continue
        target = SAME_PROBLEM.get(f.rule)
        if target is None:
            out.append(f)
            continue
        end = spans.get((f.tool, f.file, f.line), f.line)
        matches = [i for i, v in enumerate(vz) if v.rule == target and v.file == f.file
                   and (f.line <= v.line <= max(end, f.line) or f.line == 0 or v.line == 0)]
        if not matches:
            if f.rule not in SUPERSEDED:
                out.append(f)
            continue
        best = min(matches, key=lambda i: abs(vz[i].line - f.line))
        extra.setdefault(best, []).append(f"{f.tool} {f.rule}")
        if SEVERITY_RANK.get(f.severity, 0) > SEVERITY_RANK.get(worst.get(best, vz[best].severity), 0):
            worst[best] = f.severity
    for i, v in enumerate(vz):
        seen = tuple(sorted(set(v.seen_by) | set(extra.get(i, []))))
        out.append(replace(v, seen_by=seen, severity=worst.get(i, v.severity)) if i in extra else v)
    return out
