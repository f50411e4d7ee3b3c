"""The `published` stage, closing a release where images are signed (pipeline/core/stage_registry.py): each
published digest re-read from the registry, its signature, provenance, SBOM and VEX checked again
(pipeline/stages/verify_images.py published_attachments), for the report; a problem is a warning.
"""

from __future__ import annotations

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary


class PublishedStage(BaseStage):
    """Re-read what the release published; the report shows it (`published`)."""

    name = "published"
    check_only = True   # reads the registry on every release, changes nothing

    def skip(self, ctx: RunContext) -> str | None:
        from pipeline.stages.sign import verifies

        if not verifies(ctx.env):
            return "nothing to re-read: this environment neither signs nor verifies images"
        return None

    def holds(self, ctx: RunContext) -> str | None:
        return "the published images are re-read on every release"

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.verify_images import published_attachments

        ctx.state.published = published = published_attachments(ctx.cfg, ctx.env, ctx.manifest,
                                                                ctx.selected() if ctx.services else (),
                                                                registries=ctx.registries)
        problems = 0
        for svc, checks in published.items():
            if checks["signature"] != "ok" or checks["provenance"] != "ok" or checks["sbom"] != "present":
                problems += 1
                ctx.reporter.warn(f"published {svc}: signature {checks['signature']}, provenance "
                                  f"{checks['provenance']}, SBOM {checks['sbom']}")
        return StageSummary(f"{len(published)} published image(s) re-read"
                            + (f"; {problems} with a problem" if problems else ": signed, attested, SBOM attached"))
