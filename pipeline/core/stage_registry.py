"""The one list of stages: name → where its class lives and how it orders against the others.

Everything that knows the stage names reads them here: the config (which names an environment may list, and
the ordering rules, one loop over `requires`/`after`), the runner (which class to import), the manifest
(which stages may write per-service records) and the tasks (what runs with a stage run alone).

The ordering is declared on the registry line, not on the class, on purpose: loading the config must stay
cheap and `core/` must not import `stages/` (a stage module pulls in its tools and libraries); the class is
imported only when the stage runs (`invoke build` never imports the signing or scan modules).

Adding a stage: one module with a `BaseStage` subclass (pipeline/contract/stage.py) and one line below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# `attached_to` value of a stage that closes a release (after every listed stage; `invoke release` only).
RELEASE_END = "release"


@dataclass(frozen=True)
class StageEntry:
    """One registry line.

    target:      "module:Class", imported when the stage runs.
    requires:    stages that must be listed, earlier (config error otherwise); `why` says why, in the error (one
                 text, or one per required stage).
    after:       stages that must come earlier when both are listed.
    gated_by:    stages that run first even when this one runs alone (its task), when the environment lists them.
    attached_to: not listed by environments: runs right after this stage wherever it runs, or at the end of a
                 release (RELEASE_END); its skip() says when it does not apply.
    from_sources: it reads the working tree (build contexts, Dockerfiles) and starts the release read from git
                 (a new Release manifest for a new commit); the other stages work from the recorded manifest.
    """

    target: str
    requires: tuple[str, ...] = ()
    why: str | Mapping[str, str] = ""
    after: tuple[str, ...] = ()
    gated_by: tuple[str, ...] = ()
    attached_to: str = ""
    from_sources: bool = False


_B = ("build",)   # build, when an environment lists it, comes first

# The order here is the order of the documentation and the `unknown stage` hint; environments order their own.
STAGE_REGISTRY: dict[str, StageEntry] = {
    "build": StageEntry("pipeline.stages.build:BuildStage", from_sources=True),
    "lint": StageEntry("pipeline.stages.lint:LintStage", after=_B),
    "scan": StageEntry("pipeline.stages.scan:ScanStage", after=_B),
    "smoke": StageEntry("pipeline.stages.smoke:SmokeStage", after=_B),
    "push": StageEntry("pipeline.stages.push:PushStage", after=(*_B, "smoke")),
    "sbom": StageEntry("pipeline.stages.attach_sbom:SbomStage", requires=("push",), attached_to="push"),
    "sign": StageEntry("pipeline.stages.sign:SignStage", requires=("push",),
                       why="images are signed by registry digest", after=_B),
    "verify-images": StageEntry("pipeline.stages.verify_images:VerifyImagesStage", after=(*_B, "sign")),
    # after verify-images: the migrator is the release's backend image, its digest checked before it runs
    "migrate": StageEntry("pipeline.stages.migrate:MigrateStage", requires=("push", "verify-images"),
                          why={"push": "the migrator runs the pushed image by digest",
                               "verify-images": "the migrator runs in the cluster: no image reaches a cluster "
                                                "unless it is signed by a trusted key for its digest"},
                          after=(*_B, "verify-images"), gated_by=("verify-images",)),
    # No image reaches a cluster unless signed by a trusted key for its digest: the gate is listed wherever
    # deploy is (and the deploy checks what it applies itself: pipeline/stages/deploy/trust_gate.py).
    "deploy": StageEntry("pipeline.stages.rollout:DeployStage", requires=("push", "verify-images"),
                         why={"push": "deploys are by registry digest",
                              "verify-images": "no image reaches a cluster unless it is signed by a trusted key "
                                               "for its digest"},
                         after=(*_B, "verify-images", "migrate"),
                         gated_by=("verify-images", "migrate")),
    "verify": StageEntry("pipeline.stages.rollout:VerifyStage", after=_B),
    "published": StageEntry("pipeline.stages.published:PublishedStage", attached_to=RELEASE_END),
}


def from_sources(names: Sequence[str]) -> bool:
    """Does a command of these stages read the working tree and start the release from git (`from_sources`)?"""
    return any(STAGE_REGISTRY[n].from_sources for n in names if n in STAGE_REGISTRY)


def listable() -> tuple[str, ...]:
    """The names an environment's `stages` may list (the attached stages run on their own), registry order."""
    return tuple(n for n, e in STAGE_REGISTRY.items() if not e.attached_to)


def unlisted_problem(name: str) -> tuple[str, str] | None:
    """Why an environment may not list `name` although it is a stage (an attached one), as (what, how to fix);
    None for a listable name or one the registry does not know (the config's choices name those)."""
    entry = STAGE_REGISTRY.get(name)
    if entry is None or not entry.attached_to:
        return None
    when = "at the end of every release" if entry.attached_to == RELEASE_END else \
        f"right after {entry.attached_to}, wherever {entry.attached_to} runs"
    return f"'{name}' is not listed: it runs on its own {when}", f"remove '{name}' from stages"


def ordering_problem(stages: tuple[str, ...]) -> tuple[str, str] | None:
    """The first ordering rule an environment's `stages` breaks, as (what, how to fix), else None.

    One loop over each listed stage's registry line: `requires` (listed and earlier), then `after`."""
    at = {s: i for i, s in enumerate(stages)}
    for name in stages:
        entry = STAGE_REGISTRY[name]
        for req in entry.requires:
            if req not in at:
                why = entry.why if isinstance(entry.why, str) else entry.why.get(req, "")
                return (f"{name} needs {req}" + (f" ({why})" if why else ""),
                        f'add "{req}" before "{name}"')
        for earlier in (*entry.requires, *entry.after):
            if earlier in at and at[earlier] > at[name]:
                return f"{name} runs before {earlier}", f'put "{earlier}" before "{name}"'
    return None


def with_attached(names: tuple[str, ...] | list[str], *, release: bool) -> list[str]:
    """These stages, each followed by the stages attached to it, then (release=True) those closing a release.

    A task runs `with_attached(with_gates(...))`; `invoke release` runs `with_attached(env.stages, release=True)`."""
    out: list[str] = []
    for name in names:
        out.append(name)
        out.extend(n for n, e in STAGE_REGISTRY.items() if e.attached_to == name and n not in names)
    if release:
        out.extend(n for n, e in STAGE_REGISTRY.items() if e.attached_to == RELEASE_END and n not in out)
    return out


def with_gates(names: list[str], env_stages: tuple[str, ...]) -> list[str]:
    """A task's stages with their `gated_by` stages first, those the environment lists (`invoke deploy` runs
    verify-images first where the environment lists it)."""
    out: list[str] = []
    for name in names:
        out.extend(g for g in STAGE_REGISTRY[name].gated_by if g in env_stages and g not in out and g not in names)
        out.append(name)
    return out
