"""`invoke bases`: provide the base and infra images that the Dockerfiles and the compose stack use.

For every [bases.*] entry of pipeline.toml (upstream reference → local name, recipe):
  1. present   — the local image exists and carries the current recipe digest (or is the pulled upstream):
                 nothing is done; a rerun with everything present is one engine call (< 2 s);
  2. pulled    — otherwise, when pulls are allowed, `docker pull upstream` (short timeout) and tag it local;
                 a registry that proves unreachable is not asked again for the other images it serves;
  3. built     — otherwise, build it from Debian packages with its recipe in pipeline/local/recipes/<recipe>/:
                 `debian` is a debootstrap rootfs imported with `docker import` (the tarball is cached under
                 CACHE_DIR), every other recipe is a Dockerfile FROM the local Debian base.

`--force` rebuilds every base, with a fresh debootstrap (current packages, not the cached tarball).

The recipe digest hashes the recipe's files and the digest of the recipe it builds on (a recipe that takes
`ARG DEBIAN_IMAGE` builds on the base whose build_arg is DEBIAN_IMAGE), so a change to the Debian recipe
rebuilds everything above it. It is stored as an image label.

Build facts. Every image built here carries, as labels, what its provenance says (pipeline/stages/
infra_provenance.py reads them from the pushed image's config, not from the working tree): the recipe digest
(LABEL_RECIPE_DIGEST), the builder (LABEL_BUILDER: kind, docker CLI and engine versions, start time), the base
it was built FROM by image ID (LABEL_PARENT), and the Debian packages it holds as dpkg reports them inside the
image (LABEL_PACKAGES `name=version,…` sorted, LABEL_PACKAGES_DIGEST its sha256) and the digest of its layers
(LABEL_LAYERS: the labels of an image are inherited by any image built FROM it, its layers are not): a second,
label-only build step (no layer) adds these, which are known only once the image exists. An infra image
([infra.*]) without them, built before they were recorded, is rebuilt.

Pulls. An upstream image is pulled only when pipeline.toml pins it by digest (`upstream = "name:tag@sha256:…"`):
a mutable tag names whatever the registry serves today, which no provenance can describe. It is pulled by that
digest, and it counts as present only while the engine's image carries that repository digest. An unpinned
upstream is built from its recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Base, Config, load_config
from pipeline.core.errors import ConfigError, StageFailed
from pipeline.core.lock import file_lock
from pipeline.core.parallel import run_parallel
from pipeline.core.paths import CACHE_DIR, ensure_dir
from pipeline.core.progress import Progress
from pipeline.local.recipe_inputs import build_context
from pipeline.tools.docker import LocalImage

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
LABEL_RECIPE_DIGEST = "veza.pipeline.recipe-digest"
LABEL_BASE = "veza.pipeline.base"
LABEL_BUILDER = "veza.pipeline.builder"                # JSON: kind, docker_cli, engine, started (RFC 3339 UTC)
LABEL_PARENT = "veza.pipeline.parent"                  # `<local ref>@<image ID>` of the base it was built FROM
LABEL_PACKAGES = "veza.pipeline.packages"              # `name=version,…` as dpkg lists them in the image, sorted
LABEL_PACKAGES_DIGEST = "veza.pipeline.packages-digest"   # sha256 of LABEL_PACKAGES' value
LABEL_LAYERS = "veza.pipeline.layers-digest"           # layers_digest of the image's layers (its rootfs diff IDs)
BUILD_FACT_LABELS = (LABEL_RECIPE_DIGEST, LABEL_BUILDER, LABEL_PACKAGES, LABEL_PACKAGES_DIGEST, LABEL_LAYERS)
ROOTFS_RECIPE = "debian"
ROOTFS_CONF = "rootfs.conf"
PULL_TIMEOUT_S = 30.0
BUILD_TIMEOUT_S = 1800.0
DEBOOTSTRAP_TIMEOUT_S = 900.0
_ARG_RE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


# ---------------------------------------------------------------- pure: recipes, digests, decisions

@dataclass(frozen=True)
class Recipe:
    base: Base
    directory: Path
    parent: str | None          # name of the base this recipe builds FROM (via its build arg), if any
    digest: str

    @property
    def is_rootfs(self) -> bool:
        return self.base.recipe == ROOTFS_RECIPE


def recipe_files(directory: Path) -> list[Path]:
    """The files of a recipe directory, sorted; editor and cache debris excluded."""
    debris = (".pyc", "~", ".swp")
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(debris))


def files_digest(directory: Path, parent_digest: str | None = None) -> str:
    """sha256 over (path, executable bit, content) of every recipe file, chained to the parent's digest."""
    h = hashlib.sha256(b"veza-recipe-v1\0")
    h.update((parent_digest or "").encode() + b"\0")
    for f in recipe_files(directory):
        h.update(f.relative_to(directory).as_posix().encode() + b"\0")
        h.update(b"x" if f.stat().st_mode & 0o111 else b"-")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return "sha256:" + h.hexdigest()


def dockerfile_args(directory: Path) -> list[str]:
    df = directory / "Dockerfile"
    return _ARG_RE.findall(df.read_text()) if df.is_file() else []


def resolve_recipes(bases: Mapping[str, Base], recipes_dir: Path = RECIPES_DIR) -> dict[str, Recipe]:
    """Recipes for every base, with parents and chained digests, in dependency order (parents first)."""
    by_arg = {b.build_arg: name for name, b in bases.items() if b.build_arg}
    parents: dict[str, str | None] = {}
    for name, b in bases.items():
        d = recipes_dir / b.recipe
        if not d.is_dir():
            known = ", ".join(sorted(p.name for p in recipes_dir.iterdir() if p.is_dir()))
            raise ConfigError(f"pipeline.toml: bases.{name}.recipe: no recipe directory {d}",
                              f"create {d} or use one of: {known}")
        if b.recipe == ROOTFS_RECIPE:
            if not (d / ROOTFS_CONF).is_file():
                raise ConfigError(f"recipe {d}: {ROOTFS_CONF} missing", "restore it from git")
            parents[name] = None
            continue
        if not (d / "Dockerfile").is_file():
            raise ConfigError(f"recipe {d}: Dockerfile missing", "restore it from git")
        found = [by_arg[a] for a in dockerfile_args(d) if a in by_arg and by_arg[a] != name]
        parents[name] = found[0] if found else None
    order = _topological(parents)
    out: dict[str, Recipe] = {}
    for name in order:
        parent = parents[name]
        d = recipes_dir / bases[name].recipe
        out[name] = Recipe(bases[name], d, parent, files_digest(d, out[parent].digest if parent else None))
    return out


def _topological(parents: Mapping[str, str | None]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ConfigError(f"base recipes form a cycle: {' → '.join((*chain, n))}",
                              "make the recipes' FROM build args point one way only")
        state[n] = 1
        p = parents[n]
        if p is not None:
            visit(p, (*chain, n))
        state[n] = 2
        order.append(n)

    for n in parents:
        visit(n, ())
    return order


@dataclass(frozen=True)
class Decision:
    name: str
    action: str          # present | acquire (pull or build) | rebuild
    reason: str


def normalize_ref(ref: str) -> str:
    """The engine's RepoTags spelling: `:latest` added when no tag (a digest ref is kept as is)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ("@" in ref or ":" in last) else f"{ref}:latest"


def upstream_pin(upstream: str) -> str:
    """`repository@sha256:<hex>` when an upstream reference is pinned by digest (`name[:tag]@sha256:…`), spelled
    as the engine's RepoDigests spell it (no tag; Docker Hub's `docker.io/library/` left out), else ""."""
    name, sep, digest = upstream.partition("@")
    if not sep or not digest.startswith("sha256:"):
        return ""
    last = name.rsplit("/", 1)[-1]
    repo = name.rsplit(":", 1)[0] if ":" in last else name
    for hub in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if repo.startswith(hub):   # the engine spells Docker Hub's repositories in their short form
            repo = repo[len(hub):]
            break
    return f"{repo}@{digest}"


def missing_build_facts(labels: Mapping[str, str]) -> list[str]:
    """The build-fact labels (BUILD_FACT_LABELS) an image built by `invoke bases` lacks, or whose package digest
    does not match its package list; [] when all are there."""
    missing = [k for k in BUILD_FACT_LABELS if not labels.get(k)]
    if not missing and packages_digest(labels[LABEL_PACKAGES]) != labels[LABEL_PACKAGES_DIGEST]:
        missing.append(f"{LABEL_PACKAGES_DIGEST} (does not match the package list)")
    return missing


def packages_digest(package_list: str) -> str:
    """sha256 of a LABEL_PACKAGES value, as LABEL_PACKAGES_DIGEST records it."""
    return "sha256:" + hashlib.sha256(package_list.encode()).hexdigest()


def layers_digest(diff_ids: Sequence[str]) -> str:
    """sha256 over an image's layer diff IDs (its config's rootfs.diff_ids, in order), as LABEL_LAYERS records
    them. Labels are inherited by every image built FROM this one; the layers are not: an image derived from a
    base (one more RUN) carries the base's labels but not its layers, and so does not match."""
    return "sha256:" + hashlib.sha256("\n".join(diff_ids).encode()).hexdigest()


def package_label(lines: Sequence[str]) -> str:
    """LABEL_PACKAGES' value from dpkg-query lines `name=version` (blank lines dropped; sorted, deduplicated)."""
    return ",".join(sorted({ln.strip() for ln in lines if ln.strip()}))


def decide(recipes: Mapping[str, Recipe], facts: Mapping[str, LocalImage], *, force: bool,
           need_facts: frozenset[str] = frozenset()) -> list[Decision]:
    """For each base (dependency order): present, acquire or rebuild. A rebuilt parent forces its children.

    need_facts: the bases whose images are signed as infra images ([infra.*]): built without the build-fact
    labels (missing_build_facts), they are rebuilt. A pulled image is present only when its upstream is pinned
    by digest and the engine's image carries that repository digest (upstream_pin)."""
    out: list[Decision] = []
    redo: set[str] = set()
    for name, r in recipes.items():
        f = facts.get(normalize_ref(r.base.local))
        pin = upstream_pin(r.base.upstream)
        if force:
            action, reason = "rebuild", "--force"
        elif f is None:
            action, reason = "acquire", "not present"
        elif f.labels.get(LABEL_RECIPE_DIGEST) == r.digest:
            lacking = missing_build_facts(f.labels) if name in need_facts else []
            action, reason = (("rebuild", f"no build facts ({', '.join(lacking)})") if lacking
                              else ("present", "recipe digest matches"))
        elif pin and pin in f.digests:
            action, reason = "present", f"pulled upstream {pin}"
        elif LABEL_RECIPE_DIGEST not in f.labels and normalize_ref(r.base.upstream) in f.tags:
            action, reason = "rebuild", f"pulled by the mutable tag {r.base.upstream} (not pinned by digest)"
        else:
            action = "rebuild"
            reason = "recipe changed" if LABEL_RECIPE_DIGEST in f.labels else "no recipe label"
        if action == "present" and r.parent in redo:
            action, reason = "rebuild", f"its base '{r.parent}' is rebuilt"
        if action != "present":
            redo.add(name)
        out.append(Decision(name, action, reason))
    return out


def registry_host(ref: str) -> str:
    """The registry an image reference is pulled from (Docker Hub for short names like golang:1.22)."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


_UNREACHABLE = ("no such host", "dial tcp", "timed out", "timeout", "connection refused",
                "network is unreachable", "no route to host", "tls handshake")


def is_unreachable(reason: str) -> bool:
    """True when a failed pull says the registry cannot be reached (not: this one image is unknown)."""
    low = reason.lower()
    return any(marker in low for marker in _UNREACHABLE)


def facts_by_ref(images: Sequence[LocalImage]) -> dict[str, LocalImage]:
    return {t: img for img in images for t in img.tags}


def build_args_for(bases: Mapping[str, Base], names: Sequence[str] | None = None) -> dict[str, str]:
    """Build args pointing a Dockerfile at the local bases, e.g. {"GO_IMAGE": "veza-local/golang:bookworm"}."""
    return {b.build_arg: b.local for n, b in bases.items()
            if b.build_arg and (names is None or n in names)}


def read_rootfs_conf(directory: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for ln in (directory / ROOTFS_CONF).read_text().splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            k, sep, v = ln.partition("=")
            if not sep:
                raise ConfigError(f"{directory / ROOTFS_CONF}: '{ln}' is not key = value", "fix that line")
            out[k.strip()] = v.strip()
    for key in ("suite", "variant"):
        if key not in out:
            raise ConfigError(f"{directory / ROOTFS_CONF}: '{key}' missing", f"add {key} = ...")
    return out


# ---------------------------------------------------------------- engine side

@dataclass
class Outcome:
    name: str
    ref: str
    path: str            # present | pulled | built
    detail: str
    duration_s: float


def _inspect_all() -> dict[str, LocalImage]:
    from pipeline.tools import docker

    return facts_by_ref(docker.local_images())


def _labels(r: Recipe, run_id: str, builder: Mapping[str, str], parent: str = "") -> dict[str, str]:
    from pipeline.core.vocab import LABEL_RUN

    return {LABEL_RECIPE_DIGEST: r.digest, LABEL_BASE: r.base.name, LABEL_RUN: run_id,
            LABEL_BUILDER: json.dumps(dict(builder), sort_keys=True, separators=(",", ":")),
            **({LABEL_PARENT: parent} if parent else {}),
            "org.opencontainers.image.title": r.base.local,
            "org.opencontainers.image.description": f"local equivalent of {r.base.upstream}, "
                                                    f"built from Debian packages by `invoke bases`"}


def _builder_facts(kind: str, cli_version: str) -> dict[str, str]:
    """LABEL_BUILDER's facts known before a build: the builder kind, the docker CLI's and the engine's version,
    the start time."""
    from pipeline.core.vocab import now_iso
    from pipeline.tools import docker

    return {"kind": kind, "docker_cli": cli_version, "engine": docker.engine_version(), "started": now_iso()}


def _add_package_facts(r: Recipe, image: str, run_id: str, log_dir: Path, stop: threading.Event | None) -> str:
    """Label `image` (just built as r.base.local) with the Debian packages dpkg lists inside it: a label-only
    build step FROM it, tagged r.base.local again; returns the labelled image's ID. StageFailed when dpkg cannot
    be asked or the step fails (the image then lacks its build facts, and a rerun rebuilds it)."""
    import tempfile

    from pipeline.tools import docker

    listed = package_label(docker.image_packages(image, run_id=run_id, timeout=120))
    layers = ((docker.inspect(image) or {}).get("RootFS") or {}).get("Layers") or []
    if not listed:
        raise StageFailed(f"base '{r.base.name}' ({r.base.local}): dpkg lists no package in the image",
                          f"check pipeline/local/recipes/{r.base.recipe}/ and rerun invoke bases")
    iid = log_dir / f"{r.base.name}.facts.iid"
    iid.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="veza-facts-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(f"FROM {image}\n")
        rc = docker.build_image(context=Path(tmp), dockerfile=Path(tmp) / "Dockerfile", tags=[r.base.local],
                                build_args={}, labels={LABEL_PACKAGES: listed,
                                                       LABEL_PACKAGES_DIGEST: packages_digest(listed),
                                                       LABEL_LAYERS: layers_digest(layers)},
                                no_cache=False, on_line=lambda _line: None, timeout=300, iidfile=iid, stop=stop)
    if rc != 0 or not iid.is_file():
        raise StageFailed(f"labelling base '{r.base.name}' ({r.base.local}) with its packages failed (exit {rc})",
                          "rerun invoke bases")
    return iid.read_text().strip()


def _piece(say: Callable[[str], None], progress: Progress | None, name: str, text: str,
           state: str = "running") -> None:
    """One base's step: to `progress` (the live view's line for that base) when given, else one said line."""
    if progress:
        progress(name, text, state)
    else:
        say(f"  {name}: {text}")


def _interrupted(exc: BaseException, stop: threading.Event) -> bool:
    """Whether a base's build ended because of Ctrl-C. The terminal's SIGINT reaches the build's tool too, which
    may fail a moment before the main thread sets `stop`: a failure waits up to half a second for that news."""
    return isinstance(exc, KeyboardInterrupt) or stop.wait(0.5)


def _build_rootfs(r: Recipe, run_id: str, say: Callable[[str], None], *, fresh: bool,
                  progress: Progress | None = None) -> str:
    """Import the cached rootfs tarball of this recipe digest, or debootstrap one (always with fresh=True:
    --force means current packages, not the ones cached when the recipe last changed)."""
    from pipeline.tools import debootstrap, docker

    conf = read_rootfs_conf(r.directory)
    cache = ensure_dir(CACHE_DIR / "bases")
    tarball = cache / f"debian-rootfs-{r.digest.split(':')[1][:16]}.tar"
    if tarball.is_file() and not fresh:
        _piece(say, progress, r.base.name, f"rootfs from cache {tarball}")
    else:
        work = cache / f"rootfs-{run_id}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            _piece(say, progress, r.base.name, f"debootstrap --variant={conf['variant']} {conf['suite']} (about 30 s)")
            include = tuple(p.strip() for p in conf.get("include", "").split(",") if p.strip())
            debootstrap.create_rootfs(work, suite=conf["suite"], variant=conf["variant"], include=include,
                                      mirror=conf.get("mirror") or None, timeout=DEBOOTSTRAP_TIMEOUT_S)
            debootstrap.pack_rootfs(work, tarball, timeout=300)
        finally:
            debootstrap.release_mounts(work)
            shutil.rmtree(work, ignore_errors=True)
        for old in cache.glob("debian-rootfs-*.tar"):   # keep only the current recipe's tarball
            if old != tarball:
                old.unlink(missing_ok=True)
    labels = _labels(r, run_id, _builder_facts("debootstrap+docker-import", docker.cli_version()))
    changes = [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
    changes += ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                'CMD ["/bin/bash"]']
    image = docker.import_rootfs(tarball, r.base.local, changes=changes, timeout=300)
    return _add_package_facts(r, image, run_id, ensure_dir(CACHE_DIR / "bases"), None)


def _build_dockerfile(r: Recipe, bases: Mapping[str, Base], run_id: str, log_dir: Path,
                      progress: Progress | None = None, stop: threading.Event | None = None) -> str:
    from pipeline.tools import docker

    log = log_dir / f"{r.base.name}.log"
    iid = log_dir / f"{r.base.name}.iid"
    iid.unlink(missing_ok=True)
    with log.open("w") as fh:
        def write(line: str) -> None:
            fh.write(line + "\n")
            if progress:
                progress(r.base.name, line, "running")

        builder = docker.recipe_builder()
        parent = ""
        if r.parent:
            parent_ref = bases[r.parent].local
            parent = f"{parent_ref}@{docker.image_id(parent_ref) or 'unknown'}"
        with build_context(r.directory) as ctx:   # + wheels/ when the recipe pins wheels (wheels.txt)
            rc = docker.build_image(
                context=ctx, dockerfile=ctx / "Dockerfile", tags=[r.base.local],
                build_args=build_args_for(bases, [r.parent] if r.parent else []),
                labels=_labels(r, run_id, _builder_facts(builder.kind, builder.version), parent), no_cache=False,
                on_line=write, timeout=BUILD_TIMEOUT_S, iidfile=iid, stop=stop)
    if rc != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        raise StageFailed(f"building base '{r.base.name}' ({r.base.local}) failed: {tail}",
                          f"see {log}; fix pipeline/local/recipes/{r.base.recipe}/ and rerun invoke bases")
    return _add_package_facts(r, iid.read_text().strip(), run_id, log_dir, stop)


def ensure_bases(force: bool = False, try_pull: bool = True, *, config: Config | None = None,
                 say: Callable[[str], None] = print, progress: Progress | None = None) -> list[Outcome]:
    """Make every configured base image present locally; print which path each one took.

    progress(base, text, state) follows each base being provided (state running, then done or failed): a
    Reporter's step for the "bases" group (pipeline.core.progress.reporter_progress), so the live view shows
    one updating line per base with its elapsed time and last step. With progress, every per-base line goes
    there and `say` gets only the decision and the totals; without it, `say` gets every line."""
    cfg = config or load_config(check_files=False)   # bases need no service sources
    recipes = resolve_recipes(cfg.bases)
    started = time.monotonic()
    need_facts = frozenset(i.base for i in cfg.infra.values())
    decisions = decide(recipes, _inspect_all(), force=force, need_facts=need_facts)
    todo = [d for d in decisions if d.action != "present"]
    outcomes = [Outcome(d.name, recipes[d.name].base.local, "present", d.reason, 0.0)
                for d in decisions if d.action == "present"]
    if not todo:
        pulled = sum(1 for d in decisions if d.reason.startswith("pulled"))
        say(f"bases: all {len(decisions)} present ({len(decisions) - pulled} built here from their recipes, "
            f"digests match; {pulled} pulled upstream), nothing to do [{time.monotonic() - started:.2f}s]")
        return outcomes

    log_dir = ensure_dir(cfg.state_dir / "bases")
    # Another `invoke bases` (a parallel test session, a second terminal) may be building the same images:
    # wait for it, then look again, so that nothing is built twice.
    with _exclusive(log_dir / ".lock", say):
        decisions = decide(recipes, _inspect_all(), force=False, need_facts=need_facts) if not force else decisions
        todo = [d for d in decisions if d.action != "present"]
        outcomes = [Outcome(d.name, recipes[d.name].base.local, "present", d.reason, 0.0)
                    for d in decisions if d.action == "present"]
        if not todo:
            say("bases: provided meanwhile by another run, nothing to do")
            return outcomes
        return _provide(cfg, recipes, todo, outcomes, try_pull, force, log_dir, started, say, progress)


def _exclusive(path: Path, say: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
    return file_lock(path, on_wait=lambda: say(f"bases: another run holds {path}; waiting for it"))


def _provide(cfg: Config, recipes: Mapping[str, Recipe], todo: list[Decision], outcomes: list[Outcome],
             try_pull: bool, force: bool, log_dir: Path, started: float,
             say: Callable[[str], None], progress: Progress | None = None) -> list[Outcome]:
    from pipeline.tools import docker

    run_id = f"bases-{time.strftime('%Y%m%d%H%M%S')}"
    say(f"bases: {len(todo)} to provide: " + ", ".join(f"{d.name} ({d.reason})" for d in todo))

    # Pull first where allowed (and not forced): a reachable registry is the cheapest path. Once a registry
    # proves unreachable, the other images it serves are not tried (a dropping network would cost a timeout each).
    to_build: list[str] = []
    unreachable: dict[str, str] = {}
    if not try_pull:
        say("  pulls disabled (--no-pull): building from the recipes")
    for d in todo:
        r = recipes[d.name]
        pin = upstream_pin(r.base.upstream)
        if try_pull and d.action == "acquire" and not pin:
            _piece(say, progress, d.name, f"{r.base.upstream} is not pinned by digest in pipeline.toml: not pulled; "
                   "building from Debian packages")
        elif try_pull and d.action == "acquire":
            host = registry_host(r.base.upstream)
            if host in unreachable:
                _piece(say, progress, d.name, f"pull of {r.base.upstream} skipped ({host} unreachable); "
                       "building from Debian packages")
                to_build.append(d.name)
                continue
            t0 = time.monotonic()
            ok, why = docker.pull_image(pin, timeout=PULL_TIMEOUT_S)   # by digest: what the pin names
            if ok:
                docker.tag_image(pin, *normalize_ref(r.base.local).rsplit(":", 1))
                outcomes.append(Outcome(d.name, r.base.local, "pulled", f"from {pin}", time.monotonic() - t0))
                _piece(say, progress, d.name, f"pulled {pin} → tagged {r.base.local}", "done")
                continue
            if is_unreachable(why):
                unreachable[host] = why
            _piece(say, progress, d.name, f"pull of {r.base.upstream} failed (…{why[-70:]}); "
                   "building from Debian packages")
        to_build.append(d.name)

    built: dict[str, float] = {}
    stop = threading.Event()   # set on Ctrl-C: queued bases never start, running builds are stopped

    def build_one(name: str) -> None:
        if stop.is_set():
            return
        r = recipes[name]
        t0 = time.monotonic()
        _piece(say, progress, name, f"building {r.base.local}")
        try:
            if r.is_rootfs:
                image = _build_rootfs(r, run_id, say, fresh=force, progress=progress)
            else:
                image = _build_dockerfile(r, cfg.bases, run_id, log_dir, progress, stop)
        except BaseException as exc:
            if progress:
                if _interrupted(exc, stop):
                    progress(name, "stopped (Ctrl-C)", "interrupted")
                else:
                    progress(name, str(exc)[:200], "failed")
            raise
        built[name] = time.monotonic() - t0
        outcomes.append(Outcome(name, r.base.local, "built", image[:19], built[name]))
        _piece(say, progress, name, f"built {r.base.local} from recipe {r.base.recipe} in {built[name]:.1f}s", "done")

    # Parents first (the rootfs), then the rest in parallel: apt downloads overlap well on 2 cores.
    waves: list[list[str]] = []
    done: set[str] = set(recipes) - set(to_build)
    pending = list(to_build)
    while pending:
        wave = [n for n in pending if recipes[n].parent is None or recipes[n].parent in done]
        if not wave:
            raise StageFailed("base recipes could not be ordered", "check the recipes' build args")
        waves.append(wave)
        done.update(wave)
        pending = [n for n in pending if n not in wave]
    for wave in waves:
        run_parallel(wave, build_one, stop, max_workers=3, name="bases")
    say(f"bases: done in {time.monotonic() - started:.1f}s "
        f"({sum(1 for o in outcomes if o.path == 'pulled')} pulled, {len(built)} built, "
        f"{sum(1 for o in outcomes if o.path == 'present')} already present)")
    return outcomes
