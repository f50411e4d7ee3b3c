"""The seed guide's pitfalls as named lint rules, pure: text in, findings (rule, file, line, fix) out.

Rules (each an error: severity HIGH, so it blocks at the default threshold whatever Trivy thinks):

  VZ001 runs-as-root          Dockerfile: the final stage has no USER, or USER 0/root
  VZ002 fat-base-image        Dockerfile: a single-stage build on a full distro/toolchain image
  VZ003 plaintext-secret      PASSWORD/SECRET/TOKEN/KEY-like variable with a literal value: Dockerfile
                              ENV/ARG, compose environment, Kubernetes env value / ConfigMap data
  VZ004 missing-resources     Kubernetes container without resources.requests and resources.limits
  VZ005 mutable-image-tag     Kubernetes image with tag `latest` or no tag (and no digest)
  VZ006 missing-probes        Kubernetes long-running container without livenessProbe / readinessProbe
  VZ007 run-as-non-root       pod/container securityContext without runAsNonRoot: true
  VZ008 writable-root-fs      container securityContext without readOnlyRootFilesystem: true
  VZ009 privilege-escalation  container securityContext without allowPrivilegeEscalation: false
  VZ010 capabilities-kept     container securityContext.capabilities.drop without ALL
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from pipeline.core.yamlfile import DatelessLoader

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

SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|CREDENTIALS?"
    r"|(^|[_.-])KEY$|^KEY([_.-]|$)|(^|[_.-])PWD$)", re.IGNORECASE)
# names that hold a reference to a secret, not the secret itself
SECRET_REF_SUFFIX = re.compile(r"(_FILE|_PATH|_REF|_NAME|_ID|_URL|_ENV|_VAR|_LENGTH|_TTL)$", re.IGNORECASE)
# ${VAR}, ${VAR:?error}, $VAR: a reference. ${VAR:-default} with a default is still a literal.
REFERENCE = re.compile(r"\$(\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")
FAT_IMAGES = re.compile(r"^(debian|ubuntu|centos|fedora|rockylinux|almalinux|amazonlinux|oraclelinux|opensuse.*"
                        r"|golang|rust|node|python|openjdk|eclipse-temurin|maven|gradle|ruby|php|perl"
                        r"|buildpack-deps|gcc|mcr\.microsoft\.com/dotnet/sdk)$")
SLIM_TAG = re.compile(r"(slim|alpine|distroless|minimal|micro|busybox)", re.IGNORECASE)
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}


@dataclass(frozen=True)
class LintFinding:
    rule: str          # VZ001 / DL3008 / DS-0002 / HELM / SCHEMA-1.20 ...
    severity: str
    file: str
    line: int
    message: str
    fix: str = ""
    tool: str = "veza"

    @property
    def name(self) -> str:
        return RULES.get(self.rule, ("", ""))[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.name:
            d["name"] = self.name
        return d


def pitfall(rule: str, file: str, line: int, message: str) -> LintFinding:
    return LintFinding(rule, PITFALL_SEVERITY, file, line, message, RULES[rule][1])


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not SECRET_REF_SUFFIX.search(name)


def is_literal(value: Any) -> bool:
    """A value written in the file (not empty, not a ${VAR} reference)."""
    if value is None or isinstance(value, bool):
        return False
    text = str(value).strip()
    return bool(text) and not REFERENCE.search(text)


# ---------------------------------------------------------------- Dockerfile

@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with the line they start on; continuations joined, comments and blank lines dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue   # comment lines inside a continuation are skipped by Docker
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1].rstrip() + " "
            continue
        buf += stripped
        kw, _, args = buf.partition(" ")
        out.append(Instruction(start, kw.upper(), args.strip()))
        buf = ""
    if buf:
        kw, _, args = buf.partition(" ")
        out.append(Instruction(start, kw.upper(), args.strip()))
    return out


def _kv_pairs(args: str) -> list[tuple[str, str]]:
    """ENV/ARG arguments: `K=V K2="V 2"`, legacy `K V`, or a bare `K` (ARG without default)."""
    import shlex

    try:
        parts = shlex.split(args, posix=True)
    except ValueError:
        parts = args.split()
    if not parts:
        return []
    if "=" not in parts[0]:
        return [(parts[0], " ".join(parts[1:]))] if len(parts) > 1 else [(parts[0], "")]
    return [(p.partition("=")[0], p.partition("=")[2]) for p in parts if "=" in p]


def _resolve(ref: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}?",
                  lambda m: args.get(m.group(1), (m.group(2) or ":-")[2:]), ref)


def image_name_tag(ref: str) -> tuple[str, str, bool]:
    """(name without registry/library prefix, tag, has digest)."""
    digest = "@" in ref
    ref = ref.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    name = ref[: len(ref) - len(tag) - 1] if tag else ref
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]    # a registry host
    if parts and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), tag, digest


def is_fat_image(ref: str) -> bool:
    name, tag, _ = image_name_tag(ref)
    base = name.rsplit("/", 1)[-1]
    return bool(FAT_IMAGES.match(base)) and not SLIM_TAG.search(tag) and not SLIM_TAG.search(base)


def dockerfile_rules(text: str, file: str) -> list[LintFinding]:
    found: list[LintFinding] = []
    instrs = parse_dockerfile(text)
    global_args: dict[str, str] = {}
    stages: list[tuple[Instruction, str, str]] = []   # (FROM instruction, resolved image, stage name)
    users: dict[int, Instruction] = {}                 # stage index → its last USER
    for ins in instrs:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = _resolve(words[0], global_args) if words else ""
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append((ins, image, name))
        elif ins.keyword == "ARG" and not stages:
            global_args.update((k, v) for k, v in _kv_pairs(ins.args))
        elif ins.keyword == "USER" and stages:
            users[len(stages) - 1] = ins
        if ins.keyword in ("ENV", "ARG"):
            for k, v in _kv_pairs(ins.args):
                if is_secret_name(k) and is_literal(v):
                    found.append(pitfall("VZ003", file, ins.line,
                                         f"{ins.keyword} {k} holds a literal secret value (baked into the image)"))
    if not stages:
        return found
    last = len(stages) - 1
    user = users.get(last)
    if user is None:
        found.append(pitfall("VZ001", file, stages[last][0].line, "the final stage has no USER: it runs as root"))
    elif user.args.split(":")[0].strip() in ("0", "root"):
        found.append(pitfall("VZ001", file, user.line, f"USER {user.args} runs the container as root"))
    stage_names = {n for _, _, n in stages if n}
    if len(stages) == 1 and stages[0][1].lower() not in stage_names and is_fat_image(stages[0][1]):
        found.append(pitfall("VZ002", file, stages[0][0].line,
                             f"single-stage build on the full image {stages[0][1]}: compilers and the whole "
                             "distro ship to production"))
    return found


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
            if is_secret_name(k) and is_literal(v):
                found.append(pitfall("VZ003", file, ln, f"service {sname}: environment {k} is a literal secret"))
    return found


def is_compose(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("services"), dict) and "apiVersion" not in doc


# ---------------------------------------------------------------- Kubernetes

def is_k8s(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


def pod_spec(doc: dict[str, Any]) -> Any:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return (spec.get("template") or {}).get("spec") if isinstance(spec, dict) else None


def _containers(pod: Any) -> Iterator[tuple[Any, bool]]:
    for key, init in (("initContainers", True), ("containers", False)):
        for c in pod.get(key) or []:
            if isinstance(c, dict):
                yield c, init


def k8s_rules(doc: Any, file: str, line_offset: int = 0) -> list[LintFinding]:
    """Pitfalls of one Kubernetes object; line_offset maps lines of a rendered document to its file."""
    if not is_k8s(doc):
        return []
    found: list[LintFinding] = []
    kind, name = doc["kind"], (doc.get("metadata") or {}).get("name", "?")
    what = f"{kind}/{name}"

    def add(rule: str, obj: Any, key: Any, message: str) -> None:
        found.append(pitfall(rule, file, _line(obj, key) + line_offset if _line(obj, key) else 0, message))

    if kind == "ConfigMap" and isinstance(doc.get("data"), dict):
        for k, v in doc["data"].items():
            if is_secret_name(str(k)) and is_literal(v):
                add("VZ003", doc["data"], k, f"{what}: data.{k} is a secret in a ConfigMap (use a Secret)")
    if kind not in WORKLOADS:
        return found
    pod = pod_spec(doc)
    if not isinstance(pod, dict):
        return found
    pod_sc = pod.get("securityContext") or {}
    for c, init in _containers(pod):
        cname = f"{what} container {c.get('name', '?')}"
        for e in c.get("env") or []:
            if isinstance(e, dict) and is_secret_name(str(e.get("name", ""))) and "valueFrom" not in e \
                    and is_literal(e.get("value")):
                add("VZ003", e, "value", f"{cname}: env {e.get('name')} has a literal value (use secretKeyRef)")
        image = str(c.get("image") or "")
        _, tag, digest = image_name_tag(image)
        if image and not digest and tag in ("", "latest"):
            add("VZ005", c, "image", f"{cname}: image '{image}' is {'latest' if tag else 'untagged'}")
        res = c.get("resources") or {}
        missing = [k for k in ("requests", "limits") if not (isinstance(res, dict) and res.get(k))]
        if missing:
            add("VZ004", c, "resources" if res else "name", f"{cname}: no resources.{' / '.join(missing)}")
        if not init and kind in LONG_RUNNING:
            probes = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
            if probes:
                add("VZ006", c, "name", f"{cname}: no {' / '.join(probes)}")
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") is True or (pod_sc.get("runAsNonRoot") is True
                                                   and sc.get("runAsNonRoot") is not False)):
            add("VZ007", sc or c, "runAsNonRoot" if sc else "name", f"{cname}: runAsNonRoot is not true")
        if sc.get("readOnlyRootFilesystem") is not True:
            add("VZ008", sc or c, "readOnlyRootFilesystem" if sc else "name",
                f"{cname}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            add("VZ009", sc or c, "allowPrivilegeEscalation" if sc else "name",
                f"{cname}: allowPrivilegeEscalation is not false")
        drop = [str(x).upper() for x in ((sc.get("capabilities") or {}).get("drop") or [])]
        if "ALL" not in drop:
            add("VZ010", sc or c, "capabilities" if sc else "name", f"{cname}: capabilities.drop lacks ALL")
    return found
