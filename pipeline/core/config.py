"""pipeline.toml → typed, immutable objects.

Every mistake is one line naming the file, the key and the fix (ConfigError, exit 2).
The reader is strict: unknown keys, wrong types, unknown references and missing files are refused.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.core.config_backup import Backup, read_backup
from pipeline.core.config_reader import Table, check_name, items_of, path_in, platforms_in
from pipeline.core.config_reuse import check_reuse_from, read_reuse_from
from pipeline.core.config_rollout import Rollout, read_rollout
from pipeline.core.errors import ConfigError
from pipeline.core.platforms import Platform
from pipeline.core.stage_registry import listable, ordering_problem, unlisted_problem
from pipeline.core.vocab import SEVERITIES

BUMP_PRESETS = ("conventional", "semantic-release", "commitizen")
RELEASES = ("major", "minor", "patch", "none")
TAG_KINDS = ("sha", "branch", "semver", "semver-minor", "semver-major", "latest")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
DEFAULT_KEY_DIR = "~/.config/veza-pipeline/keys"   # [signing] key_dir: outside any work tree
DEFAULT_PULL_SECRET = "registry-secret"   # the pull Secret's name when only its variables are given

T = TypeVar("T")


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    status: int
    body_contains: str = ""


# The functional checks a service may list in pipeline.toml (`checks`), each with its URL path; the code of each
# kind is in pipeline/stages/functional_checks.py, the list a user reads in README.md ("Functional checks"):
#   ready-json     GET path answers JSON {"ready": true} (dependencies really answered)
#   api-roundtrip  PUT JSON {"title"} with a JWT, GET it back; unsigned, wrongly signed, unknown id refused
#   api-plays      POST path (a play, with a JWT) twice, GET counts exactly two; unsigned POST refused
#   nats-publish   POST path: seen on NATS; the service lists it, and a message we publish on NATS ourselves
#   blob-roundtrip PUT path ({id} replaced) then GET returns the same bytes; an unknown id is 404
#   html-index     GET path serves text/html with <html>
CHECK_KINDS = ("ready-json", "api-roundtrip", "api-plays", "nats-publish", "blob-roundtrip", "html-index")
# The kinds that write nothing (an environment with verify_checks = "read-only" runs only these in verify).
READ_ONLY_CHECK_KINDS = ("ready-json", "html-index")
# Where a check runs: the compose smoke test, the deploy's verification and `invoke verify`.
CHECK_PLACES = ("smoke", "verify")
VERIFY_CHECK_MODES = ("all", "read-only", "none")


@dataclass(frozen=True)
class FunctionalCheck:
    """One `checks` entry of a service: its kind, its URL path and where it runs (`in`, CHECK_PLACES)."""

    kind: str
    path: str
    places: tuple[str, ...] = CHECK_PLACES

    @property
    def writes(self) -> bool:
        return self.kind not in READ_ONLY_CHECK_KINDS


@dataclass(frozen=True)
class Service:
    name: str
    context: Path
    dockerfile: Path
    repository: str
    port: int
    health_path: str
    ready_path: str
    depends_on: tuple[str, ...]
    bases: tuple[str, ...]
    probes: tuple[Probe, ...]
    volumes: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    checks: tuple[FunctionalCheck, ...] = ()
    platforms: tuple[Platform, ...] = ()   # its own `platforms`; () = the environment's (core/platforms.py)

    def checks_in(self, place: str, mode: str = "all") -> tuple[FunctionalCheck, ...]:
        """The functional checks that run in `place` (CHECK_PLACES); `mode` (VERIFY_CHECK_MODES, the environment's
        verify_checks): "read-only" keeps only the checks that write nothing, "none" keeps none."""
        return tuple(c for c in self.checks if place in c.places
                     and (mode == "all" or (mode == "read-only" and not c.writes)))


@dataclass(frozen=True)
class Base:
    name: str
    upstream: str
    local: str
    recipe: str
    build_arg: str = ""


@dataclass(frozen=True)
class Infra:
    name: str
    base: str
    port: int


@dataclass(frozen=True)
class Registry:
    address: str
    namespace: str = ""
    username_env: str = ""
    password_env: str = ""
    ca_file: Path | None = None     # the CA that signed the registry's certificate; None: the system store
    retry_attempts: int = 5
    retry_ceiling_s: float = 20.0
    timeout_s: int = 300


@dataclass(frozen=True)
class RegistryAccess:
    """One environment's way into one registry: its address, the CA file that verifies its certificate (None:
    the system store; a loopback registry without one may be plain http, as the embedded one is) and the
    names of the variables that hold the push credentials ("" and "": anonymous, or `docker login`).
    `environment` is "" for the [registry] defaults (tools that serve no environment, e.g. the scan DB)."""

    environment: str
    address: str
    ca_file: Path | None
    username_env: str
    password_env: str

    def where(self) -> str:
        """'environment dev: registry host:port' (or 'registry host:port'): the start of every one-line error."""
        return (f"environment {self.environment}: " if self.environment else "") + f"registry {self.address}"

    def variables(self) -> str:
        """'VEZA_X_USER/VEZA_X_PASSWORD', or '' when none are named."""
        return "/".join(v for v in (self.username_env, self.password_env) if v)


@dataclass(frozen=True)
class Environment:
    name: str
    registry: str
    registry_namespace: str
    kube_context: str
    namespace: str
    helm_release: str
    values_file: Path
    stages: tuple[str, ...]
    tags: tuple[str, ...]
    scan_threshold: str
    ignore_unfixed: bool
    require_clean_tree: bool
    require_release_tag: bool
    confirm: bool
    promote_requires: tuple[str, ...] = ()
    local_infra: bool = False      # run PostgreSQL/Redis/NATS beside the release (the pipeline's own cluster)
    # The name of an environment variable that, when set, holds the path of the kubeconfig of an external
    # cluster (CI: written from the secret store); see pipeline/core/kubeconfig.py.
    kubeconfig_env: str = ""
    generate_secrets: bool = False  # deploy creates the chart's missing Secret keys with random values
    kube_versions: tuple[str, ...] = ()   # Kubernetes versions to lint for when the cluster does not answer
    infra_scan_threshold: str = ""   # the gate of the infra images ([infra.*]); empty: scan_threshold
    trusted_keys: tuple[Path, ...] = ()   # public keys accepted besides the environment's own (verify-images)
    signing_passphrase_env: str = ""      # overrides [signing].passphrase_env for this environment's key
    auto_key: bool = False                # embedded envs: make the key pair on first use (see pipeline.trust.envkeys)
    platforms: tuple[Platform, ...] = ()  # images built for these; () = the machine's platform only
    rollout: Rollout = field(default_factory=Rollout)   # how deploy reaches the new version (config_rollout.py)
    backup: Backup = field(default_factory=Backup)      # the pg_dump before a migration (config_backup.py)
    # "embedded": [infra.prometheus] runs beside the release (needs local_infra; pipeline/local/infra_prometheus.py);
    # "none": no Prometheus of the pipeline's (an external one is rollout.prometheus = URL).
    monitoring: str = "none"
    # Environments allowed to push to this one's registry + namespace although they sign with other keys or
    # write the same tags (refused otherwise at load: check_shared_namespaces).
    shares_registry_namespace_with: tuple[str, ...] = ()
    # Environments whose repositories the plan looks an input digest up in after its own, reusing only images their
    # trusted keys signed and attested (config_reuse.py, stages/registry_reuse.py).
    reuse_from: tuple[str, ...] = ()
    # How the pipeline reaches `registry` (push, sign, verify): defaults are [registry]'s ca_file/username_env/
    # password_env. The variables hold the values; pipeline.toml names them only.
    registry_ca_file: Path | None = None
    registry_username_env: str = ""
    registry_password_env: str = ""
    # How the cluster pulls: a kubernetes.io/dockerconfigjson Secret named pull_secret, made by the deploy from
    # these two variables and referenced as the chart's imagePullSecrets. "" = the cluster pulls anonymously.
    pull_secret: str = ""
    pull_username_env: str = ""
    pull_password_env: str = ""
    # Which functional checks the deploy's verification and `invoke verify` run (VERIFY_CHECK_MODES): all of a
    # service's `checks` with "verify" in their `in`, only those that write nothing, or none.
    verify_checks: str = "all"

    @property
    def registry_access(self) -> RegistryAccess:
        """How this environment's pushes, signatures and checks reach its registry."""
        return RegistryAccess(self.name, self.registry, self.registry_ca_file,
                              self.registry_username_env, self.registry_password_env)

    @property
    def protected(self) -> bool:
        """What it runs is pinned: a release needs a release tag, a confirmation or a clean tree, or images
        arrive by promotion through gates (`promote_requires`). Such an environment never takes `latest`."""
        return self.require_release_tag or self.confirm or self.require_clean_tree or bool(self.promote_requires)

    @property
    def infra_threshold(self) -> str:
        """The severity at which an infra image (PostgreSQL, Redis, NATS) blocks: its own, else scan_threshold."""
        return self.infra_scan_threshold or self.scan_threshold

    def repository(self, service: Service) -> str:
        """Full image repository of a service in this environment's registry."""
        return self.repository_for(service.repository)

    def repository_for(self, path: str) -> str:
        """Full image repository of `path` (a service's `repository`, or `infra/<name>` for an [infra.NAME]
        image: pipeline/core/release_images.py) in this environment's registry and namespace."""
        ns = f"{self.registry_namespace}/" if self.registry_namespace else ""
        return f"{self.registry}/{ns}{path}"


@dataclass(frozen=True)
class BumpRule:
    """One `[[versioning.bump_rules]]` entry: which release a matching commit asks for.

    The shape of semantic-release's `releaseRules` (@semantic-release/commit-analyzer): every criterion
    that is set must hold. `type` and `scope` are globs (fnmatch, case-sensitive); `breaking` and `revert`
    match the commit's flags. `release` is major | minor | patch | none ("none" is semantic-release's
    `release: false`: a matching none rule wins over the other matching rules).
    """

    release: str
    type: str | None = None
    scope: str | None = None
    breaking: bool | None = None
    revert: bool | None = None


@dataclass(frozen=True)
class Versioning:
    first_version: str = "0.1.0"
    tag_prefix: str = "v"
    breaking_below_1: str = "minor"          # minor | major: what a breaking change bumps below 1.0.0
    non_conventional: str = "none"           # none | patch: what a commit outside the convention asks for
    preset: str = "conventional"             # conventional | semantic-release | commitizen
    bump_rules: tuple[BumpRule, ...] = ()    # evaluated before the preset's rules


@dataclass(frozen=True)
class Build:
    workers: int = 0                # 0: each stage picks its own parallelism
    timeout_s: int = 1800
    builder: str = "auto"           # auto | buildx | buildkit | legacy (pipeline/tools/buildkit.py)
    cache_cap_mb: int = 4096        # `invoke prune` trims the engine's build cache to this size


@dataclass(frozen=True)
class Scan:
    db_repository: str
    ignore_file: Path
    scanners: tuple[str, ...] = ("vuln", "secret", "misconfig")
    timeout_s: int = 600
    mirror_seed: Path | None = None   # advisories that seed an empty embedded DB mirror (air-gapped local env)


@dataclass(frozen=True)
class Signing:
    """[signing]: where key pairs live (key_dir/<env>/, outside the repository), the passphrase variable."""

    key_dir: Path
    passphrase_env: str = "VEZA_SIGNING_PASSPHRASE"
    builder_id: str = ""


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    project_name: str
    state_dir: Path
    source_url: str
    versioning: Versioning
    build: Build
    registry: Registry
    scan: Scan
    bases: Mapping[str, Base]
    services: tuple[Service, ...]
    infra: Mapping[str, Infra]
    environments: Mapping[str, Environment] = field(default_factory=dict)
    signing: Signing = field(default_factory=lambda: Signing(Path(os.path.expanduser(DEFAULT_KEY_DIR))))

    def __post_init__(self) -> None:
        # Every Config, not only a loaded one (load_config checks these too, with the file's position), names only
        # environments it has: one made from another by dataclasses.replace (a task narrowing the environments,
        # a test) would otherwise fail deep in a stage — or only on a fresh runner, where the build plan first
        # looks into reuse_from's registries — with "unknown environment".
        for env in self.environments.values():
            for key in ("reuse_from", "shares_registry_namespace_with"):
                unknown = [n for n in getattr(env, key) if n not in self.environments]
                if unknown:
                    raise ConfigError(f"environments.{env.name}.{key} names {', '.join(map(repr, unknown))}, "
                                      f"which this configuration does not define",
                                      f"define it, or drop it from {key} (known: {', '.join(self.environments)})")

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.services)
        raise ConfigError(f"unknown service '{name}'", f"use one of: {known}")

    def select(self, names: list[str] | tuple[str, ...] | None) -> tuple[Service, ...]:
        """The services named (all when none), in config order; an unknown name is a usage error."""
        if not names:
            return self.services
        wanted = [self.service(n).name for n in names]
        return tuple(s for s in self.services if s.name in wanted)

    def env(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(self.environments)
            raise ConfigError(f"unknown environment '{name}'", f"use one of: {known}")
        return self.environments[name]


def load_config(path: Path | None = None, *, check_files: bool = True) -> Config:
    """Read and validate pipeline.toml. check_files=False skips existence checks (for pure planning tests).

    One reader per table below, in the file's order; each refuses unknown keys. ConfigError (exit 2) names the
    file, the dotted key and the fix."""
    from pipeline.core.paths import CONFIG_FILE

    path = (path or CONFIG_FILE).resolve()
    root = path.parent
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        # There is no --config flag: VEZA_CONFIG names the file (pipeline/core/paths.py).
        raise ConfigError(f"{path.name}: not found at {path}",
                          "point VEZA_CONFIG at an existing pipeline.toml, or unset it for the checkout's own") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}", "fix the syntax at that line") from None
    top = Table(path, "", raw)

    project_name, state_dir, source_url = _read_project(top.table("project"), root)
    versioning = _read_versioning(top.table("versioning", required=False))
    build = _read_build(top.table("build", required=False))
    registry = _read_registry(top.table("registry"), root)
    scan = _read_scan(top.table("scan", required=False), root)
    signing = _read_signing(top.table("signing", required=False), root, f"{source_url or project_name}/veza-pipeline")
    bases = _read_bases(top.table("bases", required=False))
    infra = _read_infra(top.table("infra", required=False), bases)

    from pipeline.core.config_services import read_services  # it reads into the types above

    services = read_services(top, root, bases, infra, check_files)
    envs_t = top.table("environments")
    environments = _read_environments(envs_t, root, registry, project_name, infra)
    check_shared_repositories(envs_t, environments, [s.repository for s in services], list(infra))
    check_reuse_from(envs_t, environments)
    top.done()

    config = Config(
        path=path, root=root, project_name=project_name, state_dir=state_dir, source_url=source_url,
        versioning=versioning, build=build, registry=registry, scan=scan, bases=bases,
        services=tuple(services), infra=infra, environments=environments, signing=signing,
    )
    from pipeline.core.names import check_config_names

    check_config_names(config)   # every name against the rules of the system that receives it
    return config


def default_of(cls: type, name: str) -> Any:
    """The default a config dataclass declares for field `name`: the one place each default is written (the
    readers below take it from there). KeyError for a field without a default."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _read_project(t: Table, root: Path) -> tuple[str, Path, str]:
    """[project] → (name, state directory, source URL)."""
    project_name = t.text("name")
    # VEZA_STATE_DIR moves the state (manifests, runs, locks) elsewhere, e.g. a CI job's workspace.
    configured_state = t.text("state_dir", ".pipeline")
    state_dir = root / (os.environ.get("VEZA_STATE_DIR") or configured_state)
    source_url = t.text("source_url", "")
    t.done()
    return project_name, state_dir, source_url


def _read_versioning(v: Table) -> Versioning:
    def d(name: str) -> Any:
        return default_of(Versioning, name)

    versioning = Versioning(
        first_version=v.text("first_version", d("first_version")),
        tag_prefix=v.text("tag_prefix", d("tag_prefix")),
        breaking_below_1=v.text("breaking_below_1", d("breaking_below_1"), choices=("minor", "major")),
        non_conventional=v.text("non_conventional", d("non_conventional"), choices=("none", "patch")),
        preset=v.text("preset", d("preset"), choices=BUMP_PRESETS),
        bump_rules=tuple(items_of(v, "bump_rules", _read_bump_rule, required=False)),
    )
    _check_semver(v, "first_version", versioning.first_version)
    v.done()
    return versioning


def _read_build(b: Table) -> Build:
    def d(name: str) -> Any:
        return default_of(Build, name)

    build = Build(workers=b.integer("workers", d("workers"), hi=64),
                  timeout_s=b.integer("timeout_s", d("timeout_s"), lo=1),
                  builder=b.text("builder", d("builder"), choices=("auto", "buildx", "buildkit", "legacy")),
                  cache_cap_mb=b.integer("cache_cap_mb", d("cache_cap_mb"), lo=0))
    b.done()
    return build


def _read_registry(r: Table, root: Path) -> Registry:
    def d(name: str) -> Any:
        return default_of(Registry, name)

    registry = Registry(
        address=r.text("address"), namespace=r.text("namespace", d("namespace")),
        username_env=r.text("username_env", d("username_env")), password_env=r.text("password_env", d("password_env")),
        retry_attempts=r.integer("retry_attempts", d("retry_attempts"), lo=1, hi=20),
        retry_ceiling_s=r.number("retry_ceiling_s", d("retry_ceiling_s")),
        timeout_s=r.integer("timeout_s", d("timeout_s"), lo=1),
        ca_file=_ca_file(r, root, "ca_file"),
    )
    for key in ("username_env", "password_env"):
        _check_variable_name(r, key, getattr(registry, key))
    for forbidden in ("password", "username", "token"):
        if forbidden in r.data:
            r.fail(r.key(forbidden), "credentials must not be written in pipeline.toml",
                   f"remove it and set {forbidden}_env to the name of an environment variable")
    r.done()
    return registry


def _read_scan(s: Table, root: Path) -> Scan:
    def d(name: str) -> Any:
        return default_of(Scan, name)

    scan = Scan(
        db_repository=s.text("db_repository", ""),
        ignore_file=root / s.text("ignore_file", ".trivyignore.yaml"),   # may be outside: read as is
        scanners=s.texts("scanners", d("scanners"), choices=("vuln", "secret", "misconfig")),
        timeout_s=s.integer("timeout_s", d("timeout_s"), lo=1),
        mirror_seed=(root / seed) if (seed := s.text("mirror_seed", "")) else None,
    )
    s.done()
    return scan


def _read_signing(sg: Table, root: Path, builder_id: str) -> Signing:
    """[signing]; `builder_id` is the default builder id (`<source_url or project name>/veza-pipeline`)."""
    configured_keys = sg.text("key_dir", DEFAULT_KEY_DIR)
    key_dir = Path(os.path.expanduser(os.environ.get("VEZA_KEY_DIR") or configured_keys)).resolve()
    if key_dir == root.resolve() or root.resolve() in key_dir.parents:
        sg.fail(sg.key("key_dir"), f"{key_dir} is inside the repository", "keep signing keys outside the work tree")
    signing = Signing(key_dir=key_dir, passphrase_env=sg.text("passphrase_env", default_of(Signing, "passphrase_env")),
                      builder_id=sg.text("builder_id", builder_id))
    sg.done()
    return signing


def _read_bases(bases_t: Table) -> dict[str, Base]:
    bases: dict[str, Base] = {}
    for bname in list(bases_t.data):
        bt = bases_t.table(bname)
        bases[bname] = Base(name=bname, upstream=bt.text("upstream"), local=bt.text("local"),
                            recipe=bt.text("recipe"), build_arg=bt.text("build_arg", default_of(Base, "build_arg")))
        bt.done()
    bases_t.done()
    return bases


def _read_infra(infra_t: Table, bases: Mapping[str, Base]) -> dict[str, Infra]:
    infra: dict[str, Infra] = {}
    for iname in list(infra_t.data):
        it = infra_t.table(iname)
        base = it.text("base")
        if base not in bases:
            it.fail(it.key("base"), f"unknown base '{base}'", f"use one of the [bases] tables: {', '.join(bases)}")
        infra[iname] = Infra(name=iname, base=base, port=it.integer("port", lo=1, hi=65535))
        it.done()
    infra_t.done()
    return infra


def _read_environments(envs_t: Table, root: Path, registry: Registry, project_name: str,
                       infra: Mapping[str, Infra]) -> dict[str, Environment]:
    environments: dict[str, Environment] = {}
    for ename in list(envs_t.data):
        et = envs_t.table(ename)
        check_name(et, envs_t.key(ename), ename)
        environments[ename] = _read_environment(et, ename, root, registry, project_name, infra)
    if not environments:
        envs_t.fail("environments", "no environment defined", "add at least [environments.local]")
    envs_t.done()
    return environments


MONITORING_CHOICES = ("none", "embedded")
EMBEDDED_PROMETHEUS = "prometheus"   # the [infra.NAME] that monitoring = "embedded" runs (its Service's name)
INFRA_REPOSITORY = "infra/{name}"   # an [infra.NAME] image's repository, under the environment's namespace


def canonical_registry(address: str) -> str:
    """`address` as the host it names, for comparing registries: lowercase (DNS names are case-insensitive),
    `localhost`, `::1` and IPv4 shorthands (`127.1`) as `127.0.0.1`, IPv6 compressed in brackets, the port without
    leading zeros and without :443 (the distribution reference grammar's `domain[:port]`; https's port implied)."""
    import ipaddress
    import socket

    a = address.strip().lower().rstrip("/")
    host, port = a, ""
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif a.count(":") == 1:
        host, port = a.split(":")
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if re.fullmatch(r"[0-9a-fx.]+", host) and not re.fullmatch(r"[a-f.]+", host):
            try:
                ip = ipaddress.ip_address(socket.inet_aton(host))   # 127.1, 0x7f.1: what the resolver accepts
            except OSError:
                ip = None
    if host == "localhost" or (ip is not None and ip.is_loopback and ip.version == 6):
        ip = ipaddress.ip_address("127.0.0.1")
    shown = host if ip is None else (str(ip) if ip.version == 4 else f"[{ip.compressed}]")
    port = str(int(port)) if port.isdigit() else port
    return shown if port in ("", "443") else f"{shown}:{port}"


def canonical_repository(repository: str) -> str:
    """`host[:port]/path` as canonical_registry gives the host and the path lowercased (the distribution reference
    grammar's path components are lowercase), for comparing full repositories; a bare path is only lowercased."""
    host, _, path = repository.partition("/")
    return f"{canonical_registry(host)}/{path.lower()}" if path else repository.lower()


def check_shared_repositories(envs_t: Table, environments: Mapping[str, Environment], services: Sequence[str],
                              infra: Sequence[str]) -> None:
    """Refuse pushes that would land in one repository from two owners (ConfigError, exit 2, one line):
    - within an environment, a service and an infra image (or two of either) with the same repository;
    - across environments, a repository two of them push to — compared as the registry host it names
      (canonical_registry: `localhost:5000` is `127.0.0.1:5000`) and the full path, so a namespace such as
      `veza-dev/infra` cannot reach another environment's infra — when both sign (each signs with its own key,
      key_dir/<env>/) or both write a tag kind (a release of one re-points the other's tags), unless either lists
      the other in `shares_registry_namespace_with`.
    Attestations append per digest and key (pipeline.trust.provenance), so an allowed sharing keeps both
    environments' trust; what it gives up is tags that say which environment pushed them."""
    for env in environments.values():
        for other in env.shares_registry_namespace_with:
            if other not in environments or other == env.name:
                names = ", ".join(n for n in environments if n != env.name) or "none"
                envs_t.fail(f"environments.{env.name}.shares_registry_namespace_with",
                            f"'{other}' is not another environment", f"use one of: {names}")
    repos: dict[str, dict[str, str]] = {}   # env → canonical full repository → what pushes there
    for env in environments.values():
        seen = repos.setdefault(env.name, {})
        for path, what in _all_paths(env, services, infra):
            if path in seen and seen[path] != what:
                envs_t.fail(f"environments.{env.name}", f"{seen[path]} and {what} both push to {path}",
                            "give the service another repository: infra images use <namespace>/infra/<name>")
            seen.setdefault(path, what)
    envs = list(environments.values())
    for i, a in enumerate(envs):
        for b in envs[i + 1:]:
            common = sorted(set(repos[a.name]) & set(repos[b.name]))
            if not common:
                continue
            if a.name in b.shares_registry_namespace_with or b.name in a.shares_registry_namespace_with:
                continue
            both_sign = "sign" in a.stages and "sign" in b.stages
            tags = [t for t in a.tags if t in b.tags]
            if not both_sign and not tags:
                continue
            why = " and ".join(x for x in ("different signing keys" if both_sign else "",
                                           f"the same tags ({', '.join(tags)})" if tags else "") if x)
            harm = ("a release of one re-points the other's tags" if tags else
                    "one repository then holds images and attestations of two trust domains")
            host = canonical_registry(a.registry)
            same_ns = host == canonical_registry(b.registry) and a.registry_namespace == b.registry_namespace
            where = (f"{host}/{a.registry_namespace}" if a.registry_namespace else host) if same_ns else \
                common[0] + (f" (and {len(common) - 1} more)" if len(common) > 1 else "")
            # the fix goes to the one whose namespace is not already named after it
            fix, keep = (a, b) if b.registry_namespace == f"veza-{b.name}" else (b, a)
            envs_t.fail(f"environments.{fix.name}", f"{a.name} and {b.name} both push to {where} with {why}: {harm}",
                        f'give {fix.name} its own registry_namespace (e.g. "veza-{fix.name}"), or allow the '
                        f'sharing with shares_registry_namespace_with = ["{keep.name}"] under '
                        f'[environments.{fix.name}]')


def _all_paths(env: Environment, services: Sequence[str], infra: Sequence[str]) -> list[tuple[str, str]]:
    """Every (canonical full repository, owner) env pushes, duplicates kept (the within-environment check)."""
    base = f"{canonical_registry(env.registry)}/{env.registry_namespace}/" if env.registry_namespace else \
        f"{canonical_registry(env.registry)}/"
    out = [(canonical_repository(f"{base}{r}"), f"service repository {r}") for r in services]
    if env.local_infra:
        out += [(canonical_repository(f"{base}{INFRA_REPOSITORY.format(name=n)}"), f"infra image {n}")
                for n in infra]
    return out


def _read_environment(et: Table, ename: str, root: Path, registry: Registry, project_name: str,
                      infra: Mapping[str, Infra]) -> Environment:
    """[environments.<ename>]: the registry and the Helm release default to [registry]'s and the project's."""
    def d(name: str) -> Any:
        return default_of(Environment, name)

    listed = et.data.get("stages")
    for item in listed if isinstance(listed, list) else ():   # an attached stage is one: say why it is not listed
        if isinstance(item, str) and (attached := unlisted_problem(item)):
            et.fail(et.key("stages"), *attached)
    env = Environment(
        name=ename,
        registry=et.text("registry", registry.address),
        registry_namespace=et.text("registry_namespace", registry.namespace),
        kube_context=et.text("kube_context", ""),
        namespace=et.text("namespace"),
        helm_release=et.text("helm_release", project_name),
        values_file=path_in(et, root, "values_file", must_exist=False, is_dir=False, inside=False),
        stages=et.texts("stages", choices=listable()),
        tags=et.texts("tags", choices=TAG_KINDS),
        scan_threshold=et.text("scan_threshold", "CRITICAL", choices=SEVERITIES),
        ignore_unfixed=et.flag("ignore_unfixed", False),
        require_clean_tree=et.flag("require_clean_tree", False),
        require_release_tag=et.flag("require_release_tag", False),
        confirm=et.flag("confirm", False),
        promote_requires=et.texts("promote_requires", d("promote_requires"), choices=("scan", "smoke")),
        verify_checks=et.text("verify_checks", d("verify_checks"), choices=VERIFY_CHECK_MODES),
        local_infra=et.flag("local_infra", d("local_infra")),
        kubeconfig_env=et.text("kubeconfig_env", d("kubeconfig_env")),
        generate_secrets=et.flag("generate_secrets", d("generate_secrets")),
        infra_scan_threshold=et.text("infra_scan_threshold", d("infra_scan_threshold"), choices=("", *SEVERITIES)),
        kube_versions=et.texts("kube_versions", d("kube_versions")),
        trusted_keys=tuple(Path(os.path.expanduser(k)) if os.path.isabs(os.path.expanduser(k)) else root / k
                           for k in et.texts("trusted_keys", ())),
        signing_passphrase_env=et.text("signing_passphrase_env", d("signing_passphrase_env")),
        auto_key=et.flag("auto_key", d("auto_key")),
        platforms=platforms_in(et),
        rollout=read_rollout(et),
        backup=read_backup(et, root, generate_secrets=et.flag("generate_secrets", d("generate_secrets"))),
        monitoring=et.text("monitoring", d("monitoring"), choices=MONITORING_CHOICES),
        shares_registry_namespace_with=et.texts("shares_registry_namespace_with",
                                                d("shares_registry_namespace_with")),
        reuse_from=read_reuse_from(et),
        registry_ca_file=_ca_file(et, root, "registry_ca_file") if "registry_ca_file" in et.data
        else registry.ca_file if et.text("registry", registry.address) == registry.address else None,
        registry_username_env=et.text("registry_username_env", registry.username_env),
        registry_password_env=et.text("registry_password_env", registry.password_env),
        pull_username_env=et.text("pull_username_env", d("pull_username_env")),
        pull_password_env=et.text("pull_password_env", d("pull_password_env")),
        pull_secret=et.text("pull_secret", d("pull_secret")),
    )
    for key in ("kubeconfig_env", "registry_username_env", "registry_password_env", "pull_username_env",
                "pull_password_env", "signing_passphrase_env"):
        _check_variable_name(et, key, getattr(env, key))
    if bool(env.pull_username_env) != bool(env.pull_password_env):
        et.fail(et.key("pull_username_env" if not env.pull_username_env else "pull_password_env"),
                "the cluster's pull credentials need both a user name and a password variable",
                "set both pull_username_env and pull_password_env, or neither")
    if env.pull_username_env and not env.pull_secret:
        env = dataclasses.replace(env, pull_secret=DEFAULT_PULL_SECRET)
    if env.pull_secret and not env.pull_username_env:
        et.fail(et.key("pull_secret"), "names a pull Secret but no variables that hold its credentials",
                "set pull_username_env and pull_password_env too")
    # A Secret's name is a DNS subdomain (RFC 1123; Kubernetes' object name rules).
    if env.pull_secret and (len(env.pull_secret) > 253 or not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", env.pull_secret)):
        et.fail(et.key("pull_secret"), f"'{env.pull_secret}' is not a Kubernetes Secret name",
                f"use lowercase letters, digits, '-' and '.', e.g. '{DEFAULT_PULL_SECRET}'")
    for kv in env.kube_versions:
        if not re.fullmatch(r"v?1\.\d+(\.\d+)?", kv):
            et.fail(et.key("kube_versions"), f"'{kv}' is not a Kubernetes version", 'write e.g. ["1.31"]')
    if not env.tags:
        et.fail(et.key("tags"), "is empty", 'give at least one tag kind, e.g. ["sha"]')
    if "latest" in env.tags and env.protected:
        et.fail(et.key("tags"), f"'latest' is never used by {ename}", "remove 'latest' from tags")
    if env.auto_key and (env.require_release_tag or env.confirm):
        et.fail(et.key("auto_key"), f"{ename} is a guarded environment", "make its key with `invoke keygen`")
    if env.monitoring == "embedded":
        _check_embedded_monitoring(et, env, infra)
    problem = ordering_problem(env.stages)   # each stage's `requires`/`after`, one loop (stage_registry.py)
    if problem:
        et.fail(et.key("stages"), *problem)
    if "deploy" in env.stages and "sign" not in env.stages and not env.trusted_keys:   # nothing could verify
        et.fail(et.key("stages"), f"{ename} deploys but neither signs its images nor trusts another key",
                'add "sign" before "verify-images", or name the public key(s) it trusts in trusted_keys')
    et.done()
    return env


def _check_embedded_monitoring(et: Table, env: Environment, infra: Mapping[str, Infra]) -> None:
    """`monitoring = "embedded"` runs [infra.prometheus] beside the release (pipeline/local/infra_prometheus.py):
    it needs that table, local_infra (the infra path deploys it) and no external rollout.prometheus URL."""
    key = et.key("monitoring")
    if EMBEDDED_PROMETHEUS not in infra:
        et.fail(key, f"is \"embedded\" but pipeline.toml has no [infra.{EMBEDDED_PROMETHEUS}]",
                f'add [infra.{EMBEDDED_PROMETHEUS}] (base = "prometheus", port = 9090), or set monitoring = "none"')
    if not env.local_infra:
        et.fail(key, "is \"embedded\" but local_infra is false (the embedded Prometheus runs with the local infra)",
                'set local_infra = true, or name the operators\' Prometheus: rollout.prometheus = URL')
    if env.rollout.prometheus:
        et.fail(key, f"is \"embedded\" and rollout.prometheus names {env.rollout.prometheus}: one or the other",
                'remove rollout.prometheus, or set monitoring = "none" to use that Prometheus')


def _check_variable_name(t: Table, key: str, value: str) -> None:
    """`value` (the text of a *_env key) must be an environment variable name, or empty."""
    if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        example = "PROD_KUBECONFIG" if key == "kubeconfig_env" else "PROD_REGISTRY_USER"
        t.fail(t.key(key), f"'{value}' is not an environment variable name", f"use a name like {example}")


def _ca_file(t: Table, root: Path, key: str) -> Path | None:
    """The CA file `key` names (relative to the project root, absolute, or ~; `$VAR`/`${VAR}` expanded, so a CI
    file variable can name it), or None when unset. Its content is checked where it is used
    (tools/registry_api.py): a CI job may write it after the config is read, and an unset variable stays in
    the path the error names."""
    text = t.text(key, "")
    if not text:
        return None
    p = Path(os.path.expanduser(os.path.expandvars(text)))
    return p if p.is_absolute() else root / p


def _read_bump_rule(t: Table) -> BumpRule:
    def opt_flag(name: str) -> bool | None:
        return t.flag(name) if name in t.data else None

    rule = BumpRule(
        release=t.text("release", choices=RELEASES),
        type=t.text("type", "") or None,
        scope=t.text("scope", "") or None,
        breaking=opt_flag("breaking"),
        revert=opt_flag("revert"),
    )
    if rule.type is None and rule.scope is None and rule.breaking is None and rule.revert is None:
        t.fail(t.key("release"), "a rule without any criterion matches every commit",
               "add type, scope, breaking or revert to the rule")
    t.done()
    return rule


def _check_semver(t: Table, key: str, value: str) -> None:
    import re

    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", value):
        t.fail(t.key(key), f"'{value}' is not a semantic version", "write it as MAJOR.MINOR.PATCH, e.g. 0.1.0")
