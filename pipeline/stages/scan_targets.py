"""What the scan stage scans: the built service images of a Release manifest, and the infra images an
environment runs. Checked before anything is scanned: a bad selection leaves nothing half-done."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.gate.policy import Policy

BUILT = ("built", "reused")


@dataclass(frozen=True)
class ScanTarget:
    service: str       # the subject: a service name, or "infra/<name>" for an infra image
    ref: str           # repository:tag as tagged locally by the build (or by `invoke bases`)
    image_id: str
    kind: str = "service"   # service | infra
    policy: Policy | None = None   # None: the environment's service policy

    @property
    def name(self) -> str:
        """The manifest key: the service name, or the [infra.NAME] name."""
        return self.service.removeprefix("infra/")



def service_targets(cfg: Config, man: Manifest, services: list[str] | None) -> list[ScanTarget]:
    """What to scan, checked before anything runs: a bad selection leaves nothing half-done."""
    from pipeline.tools import docker

    names = [s.name for s in cfg.select(services)] if services else man.services()
    if not names:
        raise UsageError(f"the Release manifest {man.path} lists no service", "run `invoke build` first")
    out = []
    for name in names:
        entry = man.service(name)
        build = entry.get("build") or {}
        if build.get("status") not in BUILT or not build.get("image_id"):
            raise UsageError(f"{name} has no built image in the Release manifest (build: "
                             f"{build.get('status', 'missing')})", f"run `invoke build --service {name}`")
        tags = list(entry.get("tags") or [])
        if not tags or not entry.get("repository"):
            raise UsageError(f"{name} has no repository/tags in the Release manifest", "rerun `invoke build`")
        ref = f"{entry['repository']}:{tags[0]}"
        local = docker.image_id(ref)
        if local != build["image_id"]:
            found = f"it is {local}" if local else "it is missing"
            raise UsageError(f"{ref} is not the image built for {name} ({found}, manifest says {build['image_id']})",
                             f"rerun `invoke build --service {name}`")
        out.append(ScanTarget(name, ref, str(build["image_id"])))
    return out


def infra_targets(cfg: Config, env: Environment, policy: Policy) -> tuple[list[ScanTarget], str]:
    """The infra images ([infra.*]) this environment runs, each as `infra/<name>`; and why none, if none.

    They run beside the release when env.local_infra is set and in the compose smoke test; an environment
    that uses external PostgreSQL/Redis/NATS (no local_infra, no smoke) ships none of them. An image that
    is not in the engine is a usage error: `invoke bases` provides it.
    """
    from pipeline.tools import docker

    if not cfg.infra:
        return [], "no [infra] in the config"
    if not (env.local_infra or "smoke" in env.stages):
        return [], f"{env.name} runs none (local_infra is false and there is no smoke stage)"
    out = []
    for name, infra in cfg.infra.items():
        ref = cfg.bases[infra.base].local
        image_id = docker.image_id(ref)
        if not image_id:
            raise UsageError(f"the infra image {ref} ([infra.{name}]) is not in the engine",
                             "run `invoke bases` (it pulls or builds the base and infra images)")
        out.append(ScanTarget(f"infra/{name}", ref, image_id, kind="infra", policy=policy))
    return out, ""
