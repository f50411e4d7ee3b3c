"""Dockerfiles read with BuildKit's own parser, and the seed guide's Dockerfile rules on what they mean.

Parsing is the PyPI package `dockerfile` (a binding of moby/buildkit's `frontend/dockerfile/parser`, the
parser `docker build` itself uses): heredocs (`COPY <<EOF`, `RUN <<EOT`), parser directives (`# escape=`,
`# syntax=`), line continuations and comments inside them are read exactly as BuildKit reads them.

Semantics applied on top (Dockerfile reference, docs.docker.com/reference/dockerfile/):
- a stage starts at FROM; `FROM <earlier stage name>` inherits that stage's filesystem, ENV and USER;
- an ARG before the first FROM is usable in FROM lines only; inside a stage `ARG NAME` (no value)
  brings its global default in; ARG values do not pass to child stages, ENV values do;
- the image runs as the final stage's last USER, else as its base image's default user: root for
  `scratch`, the `nonroot` user for images whose tag says so (distroless `:nonroot`), and otherwise
  something this file cannot know.

Rules: VZ001 (runs as root / no USER in this file), VZ002 (fat single-stage build), VZ003 (literal secret in
ENV/ARG, or a secret by its value anywhere in an instruction or heredoc). The DOCKERFILE rule reports what
BuildKit's parser rejects.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import dockerfile as buildkit

from pipeline.lint.findings import LintFinding, pitfall
from pipeline.lint.secrets import judge, judge_text, secret_in_value

FAT_IMAGES = re.compile(r"^(debian|ubuntu|centos|fedora|rockylinux|almalinux|amazonlinux|oraclelinux|opensuse.*"
                        r"|golang|rust|node|python|openjdk|eclipse-temurin|maven|gradle|ruby|php|perl"
                        r"|buildpack-deps|gcc|mcr\.microsoft\.com/dotnet/sdk)$")
SLIM_TAG = re.compile(r"(slim|alpine|distroless|minimal|micro|busybox)", re.IGNORECASE)
NONROOT_TAG = re.compile(r"nonroot", re.IGNORECASE)
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    line: int                 # first line (1-based)
    end_line: int
    keyword: str              # upper case: FROM, RUN, ...
    args: str                 # the instruction's text after the keyword, continuations joined
    values: tuple[str, ...]   # BuildKit's split of the arguments (flags excluded)
    flags: tuple[str, ...]
    heredocs: tuple[tuple[str, str], ...] = ()   # (name, content)
    original: str = ""


class DockerfileSyntaxError(ValueError):
    """BuildKit's parser rejects the text."""


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions as BuildKit reads them. Raises DockerfileSyntaxError when BuildKit would refuse the file."""
    try:
        commands = buildkit.parse_string(text)
    except buildkit.GoParseError as exc:
        raise DockerfileSyntaxError(str(exc)) from None
    out = []
    for c in commands:
        keyword = c.cmd.upper()
        first = c.original.split("\n", 1)[0]
        args = first.split(None, 1)[1] if len(first.split(None, 1)) > 1 else ""
        out.append(Instruction(c.start_line, c.end_line, keyword, args.strip(), tuple(c.value), tuple(c.flags),
                               tuple((h.name, h.content) for h in c.heredocs), c.original))
    return out


HEREDOC_MARK = re.compile(r"<<-?([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")


def without_heredoc_bodies(text: str) -> str | None:
    """The file with each heredoc replaced by a plain stand-in, every line kept in place (blank lines), for
    checkers whose parser lacks heredocs (hadolint); None when the file has no heredoc or does not parse.

    `COPY <<EOF /x` becomes `COPY heredoc-EOF /x`; a `RUN` with heredocs becomes `RUN true` (its script is
    in the body, which such a checker cannot see either way).
    """
    try:
        instrs = parse_dockerfile(text)
    except DockerfileSyntaxError:
        return None
    lines = text.split("\n")
    changed = False
    for ins in instrs:
        if not ins.heredocs:
            continue
        changed = True
        first = ins.line - 1
        if ins.keyword == "RUN":
            lines[first] = lines[first][: len(lines[first]) - len(lines[first].lstrip())] + "RUN true"
        else:
            lines[first] = HEREDOC_MARK.sub(lambda m: f"heredoc-{m.group(2)}", lines[first])
        for i in range(first + 1, min(ins.end_line, len(lines))):
            lines[i] = ""
    return "\n".join(lines) if changed else None


def substitute(text: str, variables: dict[str, str]) -> str:
    """`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` as BuildKit expands them (unset → empty)."""
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        value = variables.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value
    return VARIABLE.sub(one, text)


def unquote(value: str) -> str:
    try:
        parts = shlex.split(value, posix=True)
    except ValueError:
        return value
    return " ".join(parts) if parts else ""


def _arg_pairs(ins: Instruction) -> list[tuple[str, str | None]]:
    """ENV K=V / ENV K V / ARG K[=V]...: (name, value or None when ARG has no default)."""
    if ins.keyword == "ENV":
        vals = list(ins.values)
        return [(vals[i], unquote(vals[i + 1])) for i in range(0, len(vals) - 1, 2)]
    pairs: list[tuple[str, str | None]] = []
    for v in ins.values:
        k, sep, val = v.partition("=")
        pairs.append((k, unquote(val) if sep else None))
    return pairs


@dataclass
class Stage:
    index: int
    line: int
    base: str                        # the FROM image, variables expanded
    name: str                        # lower-case stage name ("" when unnamed)
    parent: int | None               # index of the stage it is built FROM, if any
    user: tuple[str, int] | None = None    # its last USER: (value with variables expanded, line)
    env: dict[str, str] = field(default_factory=dict)


def stages_of(instrs: list[Instruction]) -> list[Stage]:
    """Build stages with ARG scoping, FROM <stage> inheritance and each stage's last USER."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    scope: dict[str, str] = {}
    for ins in instrs:
        if ins.keyword == "FROM":
            words = list(ins.values)
            image = substitute(words[0], global_args) if words else ""
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else ""
            parent = next((s.index for s in reversed(stages) if s.name and s.name == image.lower()), None)
            env = dict(stages[parent].env) if parent is not None else {}
            stages.append(Stage(len(stages), ins.line, image, name, parent, env=env))
            scope = dict(env)
        elif ins.keyword == "ARG":
            for k, v in _arg_pairs(ins):
                if not stages:
                    global_args[k] = v or ""
                else:
                    scope[k] = substitute(v, scope) if v is not None else global_args.get(k, scope.get(k, ""))
        elif ins.keyword == "ENV" and stages:
            for k, v in _arg_pairs(ins):
                value = substitute(v or "", scope)
                scope[k] = value
                stages[-1].env[k] = value
        elif ins.keyword == "USER" and stages and ins.values:
            stages[-1].user = (substitute(ins.values[0], scope), ins.line)
    return stages


def effective_user(stages: list[Stage], index: int) -> tuple[tuple[str, int] | None, Stage]:
    """The USER a stage runs as (value, line) or None, and the stage whose external base decides otherwise."""
    stage = stages[index]
    seen = set()
    while stage.user is None and stage.parent is not None and stage.index not in seen:
        seen.add(stage.index)
        stage = stages[stage.parent]
    return stage.user, stage


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


def _is_root(user: str) -> bool:
    return user.split(":")[0].strip() in ("0", "root")


def _user_findings(stages: list[Stage], file: str) -> list[LintFinding]:
    final = stages[-1]
    user, decided_by = effective_user(stages, final.index)
    if user is not None:
        value, line = user
        if _is_root(value):
            return [pitfall("VZ001", file, line, f"USER {value} runs the container as root")]
        return []
    base = decided_by.base
    if base.lower() == "scratch":
        return [pitfall("VZ001", file, final.line, "the final stage sets no USER and is built on scratch, "
                                                   "which has no users: it runs as root (UID 0)")]
    _, tag, _ = image_name_tag(base)
    if NONROOT_TAG.search(tag):
        return []
    shown = base or "an image this file cannot resolve"
    return [pitfall("VZ001", file, final.line,
                    f"no USER in this file: the final stage runs as the default user of {shown}, which this "
                    "file cannot know (root, for most official images)")]


def _secret_findings(instrs: list[Instruction], file: str) -> list[LintFinding]:
    found: list[LintFinding] = []
    for ins in instrs:
        if ins.keyword in ("ENV", "ARG"):
            for k, v in _arg_pairs(ins):
                reason = judge(k, v) if v is not None else None
                if reason:
                    found.append(pitfall("VZ003", file, ins.line,
                                         f"{ins.keyword} {reason} (baked into the image and its history)"))
            continue
        if ins.heredocs:   # a file or script written inline: judged line by line, keys and values
            body = ins.original.split("\n")[1:]
            for offset, reason in judge_text("\n".join(body)):
                found.append(pitfall("VZ003", file, ins.line + 1 + offset,
                                     f"{ins.keyword} heredoc: {reason} (baked into the image)"))
            continue
        what = secret_in_value(ins.original)
        if what:
            found.append(pitfall("VZ003", file, ins.line, f"{ins.keyword} holds {what} (baked into the image)"))
    return found


def dockerfile_rules(text: str, file: str) -> list[LintFinding]:
    """VZ001/VZ002/VZ003 findings of one Dockerfile (and DOCKERFILE when BuildKit's parser rejects it)."""
    try:
        instrs = parse_dockerfile(text)
    except DockerfileSyntaxError as exc:
        return [LintFinding("DOCKERFILE", "HIGH", file, 0, f"BuildKit's parser rejects this file: {exc}",
                            "fix the Dockerfile syntax (`docker build` fails on it too)")]
    found = _secret_findings(instrs, file)
    stages = stages_of(instrs)
    if not stages:
        found.append(LintFinding("DOCKERFILE", "HIGH", file, 0, "no FROM instruction: nothing to build",
                                 "start the file with FROM <image>"))
        return found
    found += _user_findings(stages, file)
    if len(stages) == 1 and is_fat_image(stages[0].base):
        found.append(pitfall("VZ002", file, stages[0].line,
                             f"single-stage build on the full image {stages[0].base}: compilers and the whole "
                             "distro ship to production"))
    return found
