"""What a release is, computed once per run: version facts, the tags of the environment, build metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.core.config import Config, Environment

if TYPE_CHECKING:
    from pipeline.core.manifest import Manifest


@dataclass(frozen=True)
class ReleaseInfo:
    version: dict[str, Any]        # Version.to_dict(): the stable facts of `invoke version --json`
    tags: tuple[str, ...]
    revision: str
    version_label: str
    created: str                   # HEAD's commit time: the same commit gives the same build args (cache hits)
    release_key: str               # short sha + dirty suffix: the same commit and tree give the same key
    source: Any = field(default=None, compare=False, repr=False)  # the pipeline.versioning.version.Version itself

    def release_id(self, env_name: str) -> str:
        return f"{env_name}-{self.release_key}"

    def build_args(self, cfg: Config) -> dict[str, str]:
        """Build metadata for /version and the OCI labels (not part of the input digest)."""
        return {"VERSION": self.version_label, "REVISION": self.revision, "CREATED": self.created,
                "SOURCE": cfg.source_url}


def recorded_release_info(manifest: Manifest) -> ReleaseInfo:
    """The release a manifest records (its version facts and id), without reading git: for stages that
    work from the manifest alone (push, scan, smoke, deploy…), which may run where no clone is."""
    facts = manifest.version_facts()
    key = manifest.release_id.removeprefix(f"{manifest.env}-")
    return ReleaseInfo(version=facts, tags=(), revision=manifest.commit,
                       version_label=str(facts.get("version") or facts.get("short_sha") or key),
                       created=manifest.created, release_key=key)


def release_info(cfg: Config, env: Environment) -> ReleaseInfo:
    import os

    from pipeline.versioning.guards import require_readable_history
    from pipeline.versioning.tagging import tags_for
    from pipeline.versioning.version import read_version

    v = read_version(cfg.root, cfg.versioning, branch_override=os.environ.get("VEZA_BRANCH"))
    require_readable_history(v, env)  # a staging/prod build from a shallow clone refuses with the fix
    facts = v.to_dict()
    key = v.short_sha + (f"-dirty-{v.dirty_hash}" if v.dirty else "")
    return ReleaseInfo(version=facts, tags=tuple(tags_for(env, v)), revision=v.sha,
                       version_label=str(facts.get("version") or v.short_sha), created=v.head_time,
                       release_key=key, source=v)
