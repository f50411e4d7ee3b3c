"""The deploy and verify stages: `helm upgrade --install` by digest, then an independent re-verification.

The work is in pipeline.stages.deploy; these objects give it the stage shape (skip/preflight/holds/run).
"""

from __future__ import annotations

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.errors import UsageError


def _cluster_reachable(ctx: RunContext) -> None:
    """Pre-flight of deploy and verify: an external cluster's kubeconfig readable and defining its context
    (UsageError, exit 2, one line); nothing is started here."""
    from pipeline.local.cluster import cluster_access

    cluster_access(ctx.env)


def _cluster_up(ctx: RunContext) -> None:
    """The env's cluster, up (the provisioning of deploy and verify, overlapping the stages before them; checked
    once per run): results as lines, the long work (a cold build, the start) as the live view's "cluster"
    lines."""
    from pipeline.core.progress import reporter_progress
    from pipeline.local.cluster import cluster_up

    if ctx.state.cluster_checked:
        return
    cluster_up(ctx.env, say=ctx.reporter.info, progress=reporter_progress(ctx.reporter, "cluster"))
    ctx.state.cluster_checked = True


class DeployStage(BaseStage):
    """`helm upgrade --install` of the manifest's digests; waits, verifies, rolls back on failure (exit 5)."""

    name = "deploy"

    def preflight(self, ctx: RunContext) -> None:
        from pipeline.stages.deploy.monitoring import source
        from pipeline.stages.deploy.prepare import pull_credentials

        rollout = ctx.env.rollout   # read and checked at load (config_rollout.py)
        if rollout.progressive and source(ctx.env) == "none":
            raise UsageError(f"environments.{ctx.env.name}.rollout.strategy = '{rollout.strategy}' has no "
                             "Prometheus to judge the new version with",
                             f"set [environments.{ctx.env.name}.rollout] prometheus = URL")
        pull_credentials(ctx.env)   # an unset pull variable: exit 2 before anything is built
        _cluster_reachable(ctx)

    def provision(self, ctx: RunContext) -> None:
        _cluster_up(ctx)

    def holds(self, ctx: RunContext) -> str | None:
        from pipeline.stages.deploy import deploy_holds

        reason = deploy_holds(ctx.cfg, ctx.env, ctx.manifest, ctx.reporter)
        return f"{reason}; deploying again" if reason else None

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.deploy import DEFAULT_TIMEOUT_S, deploy_release

        res = deploy_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services, dry_run=ctx.options.dry_run,
                             timeout_s=ctx.options.deploy_timeout_s or DEFAULT_TIMEOUT_S, reporter=ctx.reporter,
                             run_id=ctx.run_id)
        return StageSummary(f"{res.status}, revision {res.revision}",
                            {"revision": res.revision, "previous_revision": res.previous_revision,
                             "result": res.status, "deploy_hash": res.deploy_hash})


class VerifyStage(BaseStage):
    """Re-verify what runs: the manifest's digests, rolled out, Ready and answering (exit 5, rolled back)."""

    name = "verify"
    check_only = True   # re-verified on every run, changes nothing (pipeline/contract/stage.py)

    def preflight(self, ctx: RunContext) -> None:
        from pipeline.stages.deploy.prepare import pull_credentials

        pull_credentials(ctx.env)   # an unset pull variable: exit 2 before anything is built
        _cluster_reachable(ctx)

    def provision(self, ctx: RunContext) -> None:
        _cluster_up(ctx)

    def holds(self, ctx: RunContext) -> str | None:
        return "verification is never taken from the record"

    def run(self, ctx: RunContext) -> StageSummary:
        from pipeline.stages.deploy import verify_release

        verify_release(ctx.cfg, ctx.env, ctx.manifest, ctx.services, reporter=ctx.reporter, run_id=ctx.run_id)
        return StageSummary("the manifest's digests run, Ready, answering and passing their functional checks")
