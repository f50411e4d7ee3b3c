"""The deploy and verify stages: `helm upgrade --install` by digest, then an independent re-verification.

The work is in pipeline.stages.deploy; these objects give it the stage shape (skip/preflight/holds/run).
"""

from __future__ import annotations

import os

from pipeline.release.stage import RunContext, StageSummary


def _cluster_up(ctx: RunContext) -> None:
    from pipeline.local.cluster import cluster_up

    cluster_up(ctx.env.kube_context, say=ctx.reporter.info)


def deployed_differences(ctx: RunContext) -> list[str]:
    """What the cluster runs that differs from the manifest, one line per difference ([] = it matches).

    Checks the Helm release status and, per selected service, the running digest against the pushed
    digest and the ready replica count.
    """
    from pipeline.core.manifest import Manifest
    from pipeline.stages.deploy import release_status

    st = release_status(ctx.cfg, ctx.env, ctx.manifest if isinstance(ctx.manifest, Manifest) else None)
    if not st.get("cluster"):
        return [f"no Kubernetes API answers for {ctx.env.name}"]
    if st.get("status") != "deployed":
        return [f"Helm release {ctx.env.helm_release} in {ctx.env.namespace} is {st.get('status') or 'missing'}"]
    out = []
    for name in ctx.selected():
        pushed = ctx.manifest.pushed(name)
        e = st["services"].get(name) or {}
        want = pushed.digest if pushed else None
        if not e.get("deployed"):
            out.append(f"{name}: no Deployment runs it (expected {want})")
        elif e.get("digest") != want:
            out.append(f"{name}: runs {e.get('digest') or e.get('image')}, expected {want}")
        elif e.get("ready", 0) < max(1, e.get("replicas", 1)):
            out.append(f"{name}: {e.get('ready', 0)}/{e.get('replicas', 0)} replicas ready")
    return out


class DeployStage:
    """`helm upgrade --install` of the manifest's digests; waits, verifies, rolls back on failure (exit 5)."""

    name = "deploy"

    def skip(self, ctx: RunContext) -> str | None:
        return None

    def preflight(self, ctx: RunContext) -> None:
        _cluster_up(ctx)

    def holds(self, ctx: RunContext) -> str | None:
        diffs = deployed_differences(ctx)
        return f"{diffs[0]}{f' (+{len(diffs) - 1} more)' if len(diffs) > 1 else ''}; deploying again" if diffs \
            else None

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.deploy import DEFAULT_TIMEOUT_S, deploy_release

        timeout = int(os.environ.get("VEZA_DEPLOY_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        res = deploy_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services, dry_run=bool(ctx.options.get("dry_run")),
                             timeout_s=timeout, out=ctx.reporter.info)
        return StageSummary(f"{res.status}, revision {res.revision}",
                            {"revision": res.revision, "previous_revision": res.previous_revision,
                             "result": res.status, "deploy_hash": res.deploy_hash})


class VerifyStage:
    """Re-verify what runs: the manifest's digests, rolled out, Ready and answering (exit 5, rolled back)."""

    name = "verify"

    def skip(self, ctx: RunContext) -> str | None:
        return None

    def preflight(self, ctx: RunContext) -> None:
        _cluster_up(ctx)

    def holds(self, ctx: RunContext) -> str | None:
        return "verification is never taken from the record"

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.deploy import verify_release

        verify_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services, out=ctx.reporter.info)
        return StageSummary("the manifest's digests run, Ready and answering")
