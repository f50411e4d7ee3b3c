"""The `sbom` stage, attached to push (pipeline/core/stage_registry.py): each pushed image's CycloneDX SBOM
(services and the infra images the environment runs) from the scan stage, attached to it in the registry
(the work: pipeline/stages/sbom.py attach_sboms).

An SBOM beside the image is a plus: when attaching fails the stage warns and records it as not attached (the
release goes on), and a resumed release attaches it again.
"""

from __future__ import annotations

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.errors import PipelineError


class SbomStage(BaseStage):
    """Attach the scan stage's SBOMs to the pushed images, where the environment scans."""

    name = "sbom"

    def skip(self, ctx: RunContext) -> str | None:
        if "scan" not in ctx.env.stages:
            return "no SBOM to attach: scan is not among this environment's stages"
        return None

    def holds(self, ctx: RunContext) -> str | None:
        """Each selected service's (and, without a selection, each infra image's) SBOM record is for its pushed
        digest, and the registry still serves the attachment the record names (`ref`: repository:tag)."""
        from pipeline.core.release_images import recorded_subjects
        from pipeline.tools.registry_api import split_repository

        for name in recorded_subjects(ctx.cfg, None if ctx.services else ctx.env, ctx.manifest, ctx.selected()):
            pushed, rec = ctx.manifest.pushed(name), ctx.manifest.sbom(name)
            if pushed is None or not pushed.ok or rec is None or rec.subject != pushed.digest or not rec.ref:
                return f"{name} has no SBOM attached to its pushed image; attaching"
            repository, _, tag = rec.ref.rpartition(":")
            address, path = split_repository(repository)
            try:
                if ctx.registries.client(address).head_manifest(path, tag) is None:
                    return f"registry no longer has the SBOM {rec.ref}; attaching again"
            except PipelineError as exc:
                return f"registry {address} cannot be asked ({exc.message})"
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.sbom import attach_sboms

        try:
            refs = attach_sboms(ctx.cfg, ctx.manifest, ctx.reporter, ctx.services or None,
                               registries=ctx.registries, infra_of=None if ctx.services else ctx.env)
        except PipelineError as exc:
            ctx.reporter.warn(f"SBOMs not attached: {exc.one_line()}")
            return StageSummary(f"not attached: {exc.one_line()}", {"attached": 0})
        return StageSummary(f"{len(refs)} SBOM(s) attached", {"attached": len(refs)})
