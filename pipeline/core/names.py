"""Names that pipeline.toml hands to other systems, checked against those systems' own rules at load.

A name that the receiving system refuses must fail when the config is read (ConfigError, exit 2, one line
with a corrected value when one can be derived), never after images were built. Sources of the rules:

- OCI image names and tags: the OCI distribution spec, "Pulling manifests" (`<name>` is
  `[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*`, a tag is
  `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`), and distribution/reference (`regexp.go`: the registry domain is
  host components `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]` joined by '.', or a bracketed IPv6
  address, with an optional `:port`; `reference.go`: a repository name, domain included, is at most 255
  characters). A first component without '.' or ':' that is not `localhost` is not a registry (Docker
  would read it as a namespace on its default registry).
- Kubernetes: namespaces are RFC 1123 labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63); Services
  are RFC 1035 labels (the same, starting with a letter), and the chart names each service's objects
  `<release>-<service>` (or `<service>` when it already starts with the release name): that name must be
  a valid Service name of at most 63 characters, since truncating it would make two services collide.
- Helm release names: helm `pkg/chartutil/validate_name.go` (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?
  (\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`, at most 53 characters).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import TYPE_CHECKING

from pipeline.core.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from pipeline.core.config import Config

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = re.compile(rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
HELM_RELEASE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
NAME_TOTAL_MAX = 255
LABEL_MAX = 63
HELM_RELEASE_MAX = 53
RUN_ID_RE = re.compile(r"[^a-z0-9-]+")


def safe_run_id(raw: str, limit: int = 48) -> str:
    """A run ID usable in compose project names and label values: lowercase, digits, '-'.

    A long one is shortened with a hash of the whole kept at its end: two ids that differ only past
    the limit (e.g. in a random suffix) stay different.
    """
    rid = RUN_ID_RE.sub("-", raw.lower()).strip("-")
    if not rid:
        raise UsageError(f"run id '{raw}' has no usable character", "use letters, digits and '-'")
    if len(rid) > limit:
        rid = rid[: limit - 9].rstrip("-") + "-" + hashlib.sha256(rid.encode()).hexdigest()[:8]
    return rid


def ascii_fold(value: str) -> str:
    """value with accents removed (Unicode NFKD, combining marks dropped): 'Véza' → 'Veza'."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch))


def suggest_path(value: str) -> str:
    """A repository path the grammar accepts, close to value: accents folded, lowercase, other characters
    → '-'."""
    parts = []
    for comp in ascii_fold(value).lower().split("/"):
        comp = re.sub(r"[^a-z0-9._-]+", "-", comp)
        comp = re.sub(r"[._-]*([._-])[._-]*", r"\1", comp).strip("._-")
        if comp:
            parts.append(comp)
    return "/".join(parts)


def suggest_label(value: str, *, letter_first: bool = False) -> str:
    """A DNS label close to value (accents folded, lowercase, other characters → '-'); '' when none."""
    s = re.sub(r"[^a-z0-9-]+", "-", ascii_fold(value).lower())
    s = re.sub(r"-{2,}", "-", s).strip("-")
    if letter_first:
        s = s.lstrip("0123456789-")
    return s[:LABEL_MAX].rstrip("-")


def _fix(suggestion: str, fallback: str) -> str:
    return f"use '{suggestion}'" if suggestion else fallback


def repository_problem(path: str) -> str | None:
    """Why `path` (a namespace or repository, '/' allowed) is not an OCI repository path, or None."""
    if REPOSITORY.fullmatch(path):
        return None
    if path != path.lower() and REPOSITORY.fullmatch(path.lower()):
        return "has uppercase letters (OCI repository names are lowercase)"
    return "is not an OCI repository path (lowercase letters and digits, separated by '.', '_', '__' or '-', " \
           "components joined by '/')"


def registry_problem(address: str) -> str | None:
    """Why `address` cannot be the registry part of an image reference, or None."""
    if not DOMAIN.fullmatch(address):
        return "is not a registry host[:port]"
    if "." not in address and ":" not in address and address != "localhost":
        return ("has no '.' or ':' and is not localhost, so an image reference would read it as a namespace "
                "on Docker's default registry")
    return None


def reference_problem(ref: str) -> str | None:
    """Why `ref` ([registry/]path[:tag][@digest]) is not an image reference, or None."""
    rest = ref
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not DIGEST.fullmatch(digest):
            return f"has an invalid digest '{digest}'"
    head, _, last = rest.rpartition("/")
    name, tag = (f"{head}/" if head else "") + last.partition(":")[0], last.partition(":")[2]
    if ":" in last and not TAG.fullmatch(tag):
        return f"has an invalid tag '{tag}' ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
    first, _, path = name.partition("/")
    if path and ("." in first or ":" in first or first == "localhost"):
        if (why := registry_problem(first)) is not None:
            return f"registry '{first}' {why}"
    else:
        path = name
    if (why := repository_problem(path)) is not None:
        return f"path '{path}' {why}"
    if len(name) > NAME_TOTAL_MAX:
        return f"name is {len(name)} characters (at most {NAME_TOTAL_MAX})"
    return None


def label_problem(name: str, *, rfc1035: bool = False, max_len: int = LABEL_MAX) -> str | None:
    """Why `name` is not an RFC 1123 (or, rfc1035, RFC 1035) DNS label of at most max_len, or None."""
    rx = DNS1035_LABEL if rfc1035 else DNS1123_LABEL
    if len(name) > max_len:
        return f"is {len(name)} characters (at most {max_len})"
    if not rx.fullmatch(name):
        first = "a lowercase letter" if rfc1035 else "a lowercase letter or digit"
        return f"is not a DNS label (lowercase letters, digits and '-', starting with {first}, " \
               "ending with a letter or digit)"
    return None


def helm_release_problem(name: str) -> str | None:
    if len(name) > HELM_RELEASE_MAX:
        return f"is {len(name)} characters (Helm allows at most {HELM_RELEASE_MAX})"
    if not HELM_RELEASE.fullmatch(name):
        return "is not a valid Helm release name (lowercase letters, digits, '-' and '.', " \
               "starting and ending with a letter or digit)"
    return None


_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def git_tag_problem(name: str) -> str | None:
    """Why `name` cannot be a git tag (git-check-ref-format rules for refs/tags/<name>), or None."""
    if not name or _REF_BAD.search(name) or name == "@":
        return "is not a valid git tag name (no spaces, '..', '~^:?*[\\', '@{' or '//')"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")) or name.endswith(("/", ".")):
        return ("is not a valid git tag name (no component may start with '.' or end with '.lock'; "
                "no trailing '/' or '.')")
    return None


def chart_object_name(release: str, service: str) -> str:
    """The name the chart gives a service's Deployment/Service (helm/veza/templates/_helpers.tpl)."""
    return service if service == release or service.startswith(f"{release}-") else f"{release}-{service}"


def fail(file: str, key: str, value: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{file}: {key}: '{value}' {problem}", fix)


def check_config_names(cfg: Config) -> None:
    """Every name pipeline.toml takes, against the rules above; the first problem is a ConfigError (exit 2)."""
    file = cfg.path.name
    prefix = cfg.versioning.tag_prefix
    if (why := git_tag_problem(f"{prefix}1.0.0")) is not None:
        fail(file, "versioning.tag_prefix", prefix, f"makes release tags like '{prefix}1.0.0', which {why}",
             'use e.g. "v" or "release/"')
    reg = cfg.registry
    if (why := registry_problem(reg.address)) is not None:
        fail(file, "registry.address", reg.address, why, "write host:port, e.g. 127.0.0.1:5000 or registry.example.org")
    if reg.namespace and (why := repository_problem(reg.namespace)) is not None:
        fail(file, "registry.namespace", reg.namespace, why, _fix(suggest_path(reg.namespace), "use lowercase"))
    if (why := label_problem(cfg.project_name)) is not None:
        fail(file, "project.name", cfg.project_name, why, _fix(suggest_label(cfg.project_name), "use e.g. veza"))
    if cfg.scan.db_repository and (why := reference_problem(cfg.scan.db_repository)) is not None:
        fail(file, "scan.db_repository", cfg.scan.db_repository, why,
             "write host:port/path, e.g. 127.0.0.1:5000/trivy/db")
    for bname, base in cfg.bases.items():
        for field in ("upstream", "local"):
            ref = getattr(base, field)
            if (why := reference_problem(ref)) is not None:
                fail(file, f"bases.{bname}.{field}", ref, why,
                     "write an image reference, e.g. veza-local/golang:bookworm")
    for iname in cfg.infra:
        if (why := label_problem(iname, rfc1035=True)) is not None:
            fail(file, f"infra.{iname}", iname, f"(a Kubernetes Service name) {why}",
                 _fix(suggest_label(iname, letter_first=True), "rename the table"))
    for i, svc in enumerate(cfg.services):
        if (why := label_problem(svc.name, rfc1035=True)) is not None:
            fail(file, f"services[{i}].name", svc.name, f"(a Kubernetes Service name) {why}",
                 _fix(suggest_label(svc.name, letter_first=True), "use lowercase letters, digits and '-'"))
        if (why := repository_problem(svc.repository)) is not None:
            fail(file, f"services[{i}].repository", svc.repository, why,
                 _fix(suggest_path(svc.repository), "use lowercase letters, digits and '-'"))
    for ename, env in cfg.environments.items():
        key = f"environments.{ename}"
        if (why := registry_problem(env.registry)) is not None:
            fail(file, f"{key}.registry", env.registry, why, "write host:port, e.g. 127.0.0.1:5000")
        if env.registry_namespace and (why := repository_problem(env.registry_namespace)) is not None:
            fail(file, f"{key}.registry_namespace", env.registry_namespace, why,
                 _fix(suggest_path(env.registry_namespace), "use lowercase"))
        if (why := label_problem(env.namespace)) is not None:
            fail(file, f"{key}.namespace", env.namespace, f"(a Kubernetes namespace) {why}",
                 _fix(suggest_label(env.namespace), "use e.g. veza-dev"))
        if (why := helm_release_problem(env.helm_release)) is not None:
            fail(file, f"{key}.helm_release", env.helm_release, why,
                 _fix(suggest_label(env.helm_release)[:HELM_RELEASE_MAX].rstrip("-"), "use e.g. veza"))
        for i, svc in enumerate(cfg.services):
            full = env.repository(svc)
            if len(full) > NAME_TOTAL_MAX:
                fail(file, f"services[{i}].repository", svc.repository,
                     f"makes the image name '{full[:40]}…' {len(full)} characters in {ename} "
                     f"(OCI names are at most {NAME_TOTAL_MAX})", "shorten the repository or the namespace")
            obj = chart_object_name(env.helm_release, svc.name)
            if (why := label_problem(obj, rfc1035=True)) is not None:
                fail(file, f"services[{i}].name", svc.name,
                     f"gives the Kubernetes object name '{obj}' in {ename} (release {env.helm_release}), which {why}",
                     "shorten the service name or the helm_release")
