"""The seed guide's pitfalls in compose files and Kubernetes objects, pure: objects in, findings out.

The rules themselves are listed in pipeline/lint/findings.py and explained in docs/lint.md; Dockerfiles
are in pipeline/lint/dockerfile.py. Every workload also gets the Pod Security Standards' controls (rules
PSS-<control>), run by the deploy gate's own code (pipeline/gate/pod_security.py): restricted on a whole
object, baseline (which only forbids values that are set) on a patch.
What is checked depends on what a document is (pipeline/lint/shapes.py): a whole object gets every rule;
a Kustomize patch only the rules about what it sets explicitly; an object whose fields have the wrong type
(a string where a map belongs) is one MALFORMED finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from pipeline.core.yamlfile import DatelessLoader
from pipeline.gate import pod_security
from pipeline.lint.dockerfile import dockerfile_rules, image_name_tag, is_fat_image, parse_dockerfile
from pipeline.lint.findings import PITFALL_SEVERITY, RULES, LintFinding, pitfall
from pipeline.lint.secrets import could_be_secret, is_reference, is_secret_name, judge, judge_text

__all__ = ["RULES", "LintFinding", "compose_rules", "dockerfile_rules", "image_name_tag", "is_fat_image",
           "is_secret_name", "k8s_rules", "load_yaml_docs", "parse_dockerfile", "patch_rules"]

WORKLOADS = set(pod_security.POD_SPEC_PATHS)
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}


# ---------------------------------------------------------------- YAML with line numbers

class YMap(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


class YList(list[Any]):
    line: int = 0
    item_lines: list[int]


def _convert(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        m = YMap()
        m.line, m.key_lines = node.start_mark.line + 1, {}
        merges: list[YMap] = []
        for k, v in node.value:
            if k.tag == "tag:yaml.org,2002:merge":   # `<<: *anchor` or `<<: [*a, *b]`
                sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                merges += [c for c in (_convert(x) for x in sources) if isinstance(c, YMap)]
                continue
            key = _convert(k)
            m[key] = _convert(v)
            m.key_lines[key] = k.start_mark.line + 1
        for merged in merges:   # explicit keys win over merged ones; the first merge source wins over later
            for mk, mv in merged.items():
                if mk not in m:
                    m[mk] = mv
                    m.key_lines[mk] = merged.key_lines.get(mk, merged.line)
        return m
    if isinstance(node, yaml.SequenceNode):
        seq = YList(_convert(v) for v in node.value)
        seq.line, seq.item_lines = node.start_mark.line + 1, [v.start_mark.line + 1 for v in node.value]
        return seq
    return _SCALARS.construct_document(node) if isinstance(node, yaml.ScalarNode) else None


_SCALARS = DatelessLoader("")   # typed scalars (int, bool, null) as yaml.safe_load does; dates stay text


def load_yaml_docs(text: str) -> list[Any]:
    """Every document of a YAML stream, mappings as YMap (with key lines), lists as YList."""
    loader = DatelessLoader(text)   # an impossible date (2026-02-30) is text, not a crash in the loader
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            docs.append(_convert(node) if node is not None else None)
    finally:
        loader.dispose()
    return docs


def _line(obj: Any, key: Any = None, default: int = 0) -> int:
    if isinstance(obj, YMap):
        return obj.key_lines.get(key, obj.line) if key is not None else obj.line
    return int(getattr(obj, "line", default) or default)


# ---------------------------------------------------------------- compose

def compose_rules(doc: Any, file: str) -> list[LintFinding]:
    """VZ003 in a compose file's `services.*.environment` (map or list form, `<<` merges resolved)."""
    found: list[LintFinding] = []
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return found
    for sname, svc in services.items():
        if not isinstance(svc, dict):
            continue
        env = svc.get("environment")
        pairs: list[tuple[str, Any, int]] = []
        if isinstance(env, dict):
            pairs = [(str(k), v, _line(env, k)) for k, v in env.items()]
        elif isinstance(env, list):
            lines = getattr(env, "item_lines", [0] * len(env))
            for item, ln in zip(env, lines, strict=False):
                k, sep, v = str(item).partition("=")
                pairs.append((k, v if sep else None, ln))
        for k, v, ln in pairs:
            reason = judge(k, v)
            if reason:
                found.append(pitfall("VZ003", file, ln, f"service {sname}: environment {reason}"))
    return found


def is_compose(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("services"), dict) and "apiVersion" not in doc


# ---------------------------------------------------------------- Kubernetes

def is_k8s(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


def _m(x: Any) -> dict[Any, Any]:
    return x if isinstance(x, dict) else {}


def is_workload(doc: dict[str, Any]) -> bool:
    """A Kubernetes workload kind, or any other kind with a pod template at spec.template.spec.containers
    (custom workloads such as Argo Rollouts or OpenKruise CloneSets carry the same PodTemplateSpec)."""
    return pod_security.pod_spec_path(doc) is not None


def is_long_running(kind: str) -> bool:
    """Serves for as long as it runs (probes apply): the apps kinds, and custom workloads not named *Job."""
    return kind in LONG_RUNNING or (kind not in WORKLOADS and not kind.endswith("Job"))


def pod_spec(doc: dict[str, Any]) -> Any:
    """The pod spec of a workload object (None when it has none)."""
    path = pod_security.pod_spec_path(doc)
    cur: Any = doc
    for key in path or ():
        cur = cur.get(key) if isinstance(cur, dict) else None
    return cur if path else None


CONTAINER_LISTS = (("initContainers", "init"), ("containers", "main"), ("ephemeralContainers", "ephemeral"))
# where an object may be malformed in a way that the rules below would trip over: path → expected type
MAP_FIELDS = ("securityContext", "resources", "livenessProbe", "readinessProbe")


def _containers(pod: dict[Any, Any]) -> Iterator[tuple[Any, str]]:
    for key, role in CONTAINER_LISTS:
        items = pod.get(key)
        for c in items if isinstance(items, list) else []:
            if isinstance(c, dict):
                yield c, role


def shape_problem(doc: dict[str, Any]) -> tuple[Any, Any, str] | None:
    """The first field of a workload with the wrong type for the rules: (parent, key, description) or None.

    The API server rejects these objects (the schema check says so too); the rules report them once and
    skip the object instead of guessing.
    """
    spec = doc.get("spec")
    if spec is not None and not isinstance(spec, dict):
        return doc, "spec", "spec is not a map"
    pod = pod_spec(doc)
    if pod is None:
        return None
    if not isinstance(pod, dict):
        return doc, "spec", "the pod spec is not a map"
    if pod.get("securityContext") is not None and not isinstance(pod["securityContext"], dict):
        return pod, "securityContext", "the pod's securityContext is not a map"
    for key, _ in CONTAINER_LISTS:
        items = pod.get(key)
        if items is not None and not isinstance(items, list):
            return pod, key, f"{key} is not a list"
        for i, c in enumerate(items or []):
            if not isinstance(c, dict):
                return items, None, f"{key}[{i}] is not a map"
            for f in MAP_FIELDS:
                if c.get(f) is not None and not isinstance(c[f], dict):
                    return c, f, f"{key}[{i}].{f} is not a map ({type(c[f]).__name__} {c[f]!r})"
            for f in ("env", "envFrom", "ports"):
                if c.get(f) is not None and not isinstance(c[f], list):
                    return c, f, f"{key}[{i}].{f} is not a list"
            sc = _m(c.get("securityContext"))
            if sc.get("capabilities") is not None and not isinstance(sc["capabilities"], dict):
                return sc, "capabilities", f"{key}[{i}].securityContext.capabilities is not a map"
            drop = _m(sc.get("capabilities")).get("drop")
            if drop is not None and not isinstance(drop, list):
                return sc["capabilities"], "drop", f"{key}[{i}].securityContext.capabilities.drop is not a list"
    return None


def _secret_rules(doc: dict[str, Any], what: str, add: Any, add_at: Any, committed: bool) -> None:
    """VZ003 in ConfigMaps (by key and value, and line by line in embedded config files) and committed Secrets."""
    kind = doc.get("kind")
    if kind == "ConfigMap":
        data = _m(doc.get("data"))
        for k, v in data.items():
            if isinstance(v, str) and "\n" in v.strip():   # a whole config file: judge each of its lines
                for offset, in_file in judge_text(v):
                    line = _line(data, k)
                    found_at = line + 1 + offset if line else 0
                    add_at("VZ003", found_at, f"{what}: data.{k} line {offset + 1} {in_file} (use a Secret)")
                continue
            reason = judge(str(k), v)
            if reason:
                add("VZ003", data, k, f"{what}: data {reason} (a ConfigMap is not secret: use a Secret)")
    if kind == "Secret" and committed:
        for field in ("stringData", "data"):
            for k, v in _m(doc.get(field)).items():
                if could_be_secret(v):
                    add("VZ003", doc[field], k, f"{what}: {field}.{k} is a secret committed to the repository")
                    break


def _container_rules(c: dict[Any, Any], role: str, cname: str, kind: str, pod_sc: dict[Any, Any],
                     add: Any, patch: bool) -> None:
    for e in c.get("env") or []:
        if isinstance(e, dict) and "valueFrom" not in e:
            reason = judge(str(e.get("name", "")), e.get("value"))
            if reason:
                add("VZ003", e, "value", f"{cname}: env {reason} (use secretKeyRef)")
    for f in ("command", "args"):
        for item in c.get(f) or [] if isinstance(c.get(f), list) else []:
            reason = judge("", item)
            if reason:
                add("VZ003", c, f, f"{cname}: {f} {reason}")
                break
    image = c.get("image")
    if isinstance(image, str) and image and not is_reference(image):   # ${IMAGE}: set by envsubst at deploy
        _, tag, digest = image_name_tag(image)
        if not digest and tag in ("", "latest"):
            add("VZ005", c, "image", f"{cname}: image '{image}' is {'latest' if tag else 'untagged'}")
    sc = _m(c.get("securityContext"))
    if patch:   # a patch sets some fields; judge only what it sets
        if sc.get("runAsNonRoot") is False:
            add("VZ007", sc, "runAsNonRoot", f"{cname}: sets runAsNonRoot: false")
        if sc.get("readOnlyRootFilesystem") is False:
            add("VZ008", sc, "readOnlyRootFilesystem", f"{cname}: sets readOnlyRootFilesystem: false")
        if sc.get("allowPrivilegeEscalation") is True:
            add("VZ009", sc, "allowPrivilegeEscalation", f"{cname}: sets allowPrivilegeEscalation: true")
        return
    if role != "ephemeral":   # ephemeral containers may set neither resources nor probes
        res = _m(c.get("resources"))
        missing = [k for k in ("requests", "limits") if not res.get(k)]
        if missing:
            add("VZ004", c, "resources" if res else "name", f"{cname}: no resources.{' / '.join(missing)}")
    if role == "main" and is_long_running(kind):
        probes = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
        if probes:
            add("VZ006", c, "name", f"{cname}: no {' / '.join(probes)}")
    # a missing field is reported at the container's securityContext key, or its name without one
    at = (c, "securityContext") if sc else (c, "name")
    if not (sc.get("runAsNonRoot") is True or (pod_sc.get("runAsNonRoot") is True
                                               and sc.get("runAsNonRoot") is not False)):
        add("VZ007", *((sc, "runAsNonRoot") if "runAsNonRoot" in sc else at), f"{cname}: runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        add("VZ008", *((sc, "readOnlyRootFilesystem") if "readOnlyRootFilesystem" in sc else at),
            f"{cname}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        add("VZ009", *((sc, "allowPrivilegeEscalation") if "allowPrivilegeEscalation" in sc else at),
            f"{cname}: allowPrivilegeEscalation is not false")
    drop = [str(x).upper() for x in (_m(sc.get("capabilities")).get("drop") or [])]
    if "ALL" not in drop:
        add("VZ010", *((sc, "capabilities") if "capabilities" in sc else at), f"{cname}: capabilities.drop lacks ALL")


# Pod Security violations a VZ rule reports already, with its own message and fix: (control id, last key).
SAID_BY_VZ = {("runAsNonRoot", "runAsNonRoot"): "VZ007", ("allowPrivilegeEscalation", "allowPrivilegeEscalation"):
              "VZ009", ("capabilities_restricted", "drop"): "VZ010"}


def _line_of(doc: Any, path: tuple[Any, ...]) -> int:
    """The line of the deepest key or item of `path` present in a loaded document (0 when none is)."""
    line, cur = 0, doc
    for key in path:
        if isinstance(cur, YMap) and key in cur:
            line, cur = cur.key_lines.get(key, line), cur[key]
        elif isinstance(cur, YList) and isinstance(key, int) and key < len(cur):
            line, cur = cur.item_lines[key], cur[key]
        else:
            break
    return line


def pod_security_rules(doc: dict[str, Any], what: str, add_at: Any, *, patch: bool) -> None:
    """The Pod Security Standards' controls, as the deploy gate runs them: `restricted` on a whole object,
    `baseline` on a patch (its controls only forbid values that are set). Rule PSS-<control id>; a violation
    that VZ007/VZ009/VZ010 reports for a container is left to that rule."""
    for v in pod_security.check_pod_spec(doc, "baseline" if patch else "restricted"):
        in_container = any(k in pod_security.CONTAINER_LISTS for k in v.path)
        if in_container and (v.control_id, v.path[-1]) in SAID_BY_VZ:
            continue
        control = pod_security.CONTROL_BY_ID[v.control_id]
        add_at(f"PSS-{v.control_id}", _line_of(doc, v.path),
               f"{what}: {v.field} {v.problem} (Pod Security {v.level} {pod_security.POLICY_VERSION}: "
               f"{v.control})", control.fix)


def k8s_rules(doc: Any, file: str, line_offset: int = 0, *, patch: bool = False,
              committed: bool = False) -> list[LintFinding]:
    """Pitfalls of one Kubernetes object (or, with patch=True, of a Kustomize strategic-merge patch); a
    `kind: List` (or any `*List`) is its items'.

    line_offset maps lines of a rendered document to its file; committed=True for a manifest in the
    repository (a Secret with literal data is then a finding). A workload with a field of the wrong type
    is one MALFORMED finding and no other.
    """
    if not is_k8s(doc):
        return []
    if str(doc["kind"]).endswith("List") and isinstance(doc.get("items"), list):
        return [f for item in doc["items"]
                for f in k8s_rules(item, file, line_offset, patch=patch, committed=committed)]
    found: list[LintFinding] = []
    kind, name = doc["kind"], _m(doc.get("metadata")).get("name", "?")
    what = f"{kind}/{name}"

    def add_at(rule: str, line: int, message: str, fix: str = "") -> None:
        at = line + line_offset if line else 0
        found.append(LintFinding(rule, PITFALL_SEVERITY, file, at, message, fix) if fix
                     else pitfall(rule, file, at, message))

    def add(rule: str, obj: Any, key: Any, message: str) -> None:
        add_at(rule, _line(obj, key), message)

    workload = is_workload(doc)
    if workload:
        problem = shape_problem(doc)
        if problem:
            parent, key, text = problem
            line = _line(parent, key)
            return [LintFinding("MALFORMED", "HIGH", file, line + line_offset if line else 0,
                                f"{what}: {text}; the API server rejects it and no other rule can judge it",
                                "give the field the type the Kubernetes API reference gives it")]
    _secret_rules(doc, what, add, add_at, committed and not patch)
    if not workload:
        return found
    pod = pod_spec(doc)
    if not isinstance(pod, dict):
        return found
    pod_sc = _m(pod.get("securityContext"))
    for c, role in _containers(pod):
        _container_rules(c, role, f"{what} container {c.get('name', '?')}", kind, pod_sc, add, patch)
    pod_security_rules(doc, what, add_at, patch=patch)
    return found


def patch_rules(doc: Any, file: str) -> list[LintFinding]:
    """A Kustomize strategic-merge patch: secrets, mutable tags and explicitly unsafe settings it sets."""
    return k8s_rules(doc, file, patch=True)
