"""What the scan stage scans: the built service images of a Release manifest, and the infra images an
environment runs. Checked before anything is scanned: a bad selection leaves nothing half-done."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.config import Config, Environment
from pipeline.core.errors import UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.release_images import dependency_infra, infra_names
from pipeline.gate.policy import Policy
from pipeline.tools.registry_clients import registry_access, registry_credentials


@dataclass(frozen=True)
class ScanTarget:
    service: str       # the subject: a service name, or "infra/<name>" for an infra image
    ref: str           # repository:tag as tagged locally by the build (or by `invoke bases`)
    image_id: str
    kind: str = "service"   # service | infra
    policy: Policy | None = None   # None: the environment's service policy
    remote: bool = False    # ref is repository@digest in a registry (an image reused from there), not in the engine
    username: str = field(default="", repr=False)   # remote: the registry's credentials (registry_clients.py)
    password: str = field(default="", repr=False)
    ca_file: str = ""       # remote: the CA that verifies the registry's certificate ("": the system store)

    @property
    def name(self) -> str:
        """The manifest key: the service name, or the [infra.NAME] name."""
        return self.service.removeprefix("infra/")



def service_targets(cfg: Config, man: Manifest, services: list[str] | None) -> list[ScanTarget]:
    """The built service images of the manifest (the selection, or all), each checked to be in the engine."""
    from pipeline.tools import docker

    out = []
    for b in man.built_images([s.name for s in cfg.select(services)] if services else []):
        local = docker.image_id(b.local_ref)
        if b.registry_image and local != b.image_id:
            # Reused from the registry and not pulled: Trivy reads it there, by digest, with its credentials.
            address = b.registry_image.split("/", 1)[0]
            creds = registry_credentials(cfg, address)
            ca = registry_access(cfg, address).ca_file
            out.append(ScanTarget(b.service, b.registry_image, str(b.image_id), remote=True,
                                  username=creds.username if creds else "", password=creds.password if creds else "",
                                  ca_file=str(ca) if ca else ""))
            continue
        if local != b.image_id:
            found = f"it is {local}" if local else "it is missing"
            raise UsageError(f"{b.local_ref} is not the image built for {b.service} ({found}, manifest says "
                             f"{b.image_id})", f"rerun `invoke build --service {b.service}`")
        out.append(ScanTarget(b.service, b.local_ref, str(b.image_id)))
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
    # what runs beside the release (the embedded Prometheus too, where it does), else the smoke stack's
    for name in infra_names(cfg, env) if env.local_infra else dependency_infra(cfg):
        ref = cfg.bases[cfg.infra[name].base].local
        image_id = docker.image_id(ref)
        if not image_id:
            raise UsageError(f"the infra image {ref} ([infra.{name}]) is not in the engine",
                             "run `invoke bases` (it pulls or builds the base and infra images)")
        out.append(ScanTarget(f"infra/{name}", ref, image_id, kind="infra", policy=policy))
    return out, ""
