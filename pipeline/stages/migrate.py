"""The migrate stage: between push (and verify-images) and deploy, the new image's migrator upgrades the schema.

A service has migrations when its build context holds `migrations/NNNN_what.sql` (backend-api: embedded in
its binary, applied by `veza-backend-api -migrate`, each file in its own transaction under an advisory lock:
services/backend-api/store.go). For each such service:

  pre-flight   the expand/contract rules on the files (pipeline/stages/migrate_rules.py): exit 2, one line
  run          the namespace, the Secret and (local_infra) PostgreSQL as the deploy prepares them; the contract
               steps against what the running version declares it uses (its own image's embedded
               schema-uses.txt, asked with `-schema-uses` in a Job); then the migrator Job
               (pipeline/stages/migrate_job.py) on the release's digest; the schema version it reports goes
               to `services.<name>.migrate` and the report
  backup       before the migrator, where the environment backs up ([environments.<env>.backup], default on
               except where generate_secrets = true) and the database has migrations pending: a pg_dump
               (pipeline/stages/backup.py) recorded as `services.<name>.migrate.backup`; a failed one stops the
               stage before anything changed; none when nothing is pending (said so)
  failure      StageFailed (exit 1) before any pod changes: the failing migration rolled back, the database
               at the last good version (read back from the migrator's own last log line), its log kept in
               the run's logs/migrate/<service>.log and its tail in the record and the error
  holds()      the version the database holds now (a read-only `-schema-version` Job), not the journal's
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.core.config import Service
from pipeline.core.errors import StageFailed, UsageError
from pipeline.core.manifest import atomic_write
from pipeline.core.vocab import MigrateStatus
from pipeline.stages import migrate_rules as rules

JOB_TIMEOUT_S = 300
USES_DEADLINE_S = 60     # `-schema-uses` prints a file: an image without the flag would serve instead, until this
LOG_TAIL = 20


def migrating(ctx: RunContext) -> list[Service]:
    """The selected services whose build context holds migrations (`migrations/*.sql`)."""
    return [s for s in ctx.cfg.select(ctx.services)
            if rules.read_migrations(s.context / rules.MIGRATIONS_DIR, ctx.cfg.root)]


class _World:
    """The environment's cluster as the migrator needs it, prepared once per run like the deploy prepares it."""

    def __init__(self, ctx: RunContext) -> None:
        from pipeline.core.release_images import pinned_infra
        from pipeline.stages.deploy import prepare
        from pipeline.stages.deploy.rollout import EMBEDDED_VALUES
        from pipeline.stages.deploy.target import ReleaseTarget
        from pipeline.stages.deploy.values import (
            CHART,
            choose_images,
            env_values_files,
            image_values,
            merged_values,
        )

        self.ctx = ctx
        env = ctx.env
        self.rt = rt = ReleaseTarget.of(env)
        chart = ctx.cfg.root / CHART
        extra: list[Path] = [] if rt.external else [chart / EMBEDDED_VALUES]
        choices, _ = choose_images(ctx.cfg, ctx.manifest.pushed_images(), ctx.services, None)
        generated = image_values(ctx.cfg, choices, "", env.pull_secret)
        prepare.ensure_namespace(rt, ctx.reporter)
        if env.local_infra and not rt.external:
            from pipeline.stages.deploy import trust_gate

            infra = pinned_infra(ctx.cfg, env, ctx.manifest)
            trust_gate.verify_infra(ctx.cfg, rt, ctx.manifest, infra, ctx.reporter)   # before their kubectl apply
            extra.append(prepare.ensure_local_infra_values(ctx.cfg, rt, chart, ctx.cfg.state_dir / "deploy",
                                                           ctx.reporter, infra))
        self.merged = merged_values(chart, env_values_files(env, extra), generated)
        prepare.ensure_chart_secret(rt, self.merged, ctx.reporter)
        prepare.ensure_pull_secret(rt, ctx.reporter)

    def run(self, svc: Service, flag: str) -> Any:
        """One migrator Job of `svc`'s pushed digest with `flag` (migrate_job.JobRun)."""
        pushed = self.ctx.manifest.pushed(svc.name)
        if pushed is None or not pushed.digest:
            raise UsageError(f"{svc.name} has no pushed digest in the Release manifest: nothing to migrate with",
                             f"run: invoke build push --env {self.ctx.env.name}")
        return self.job(svc, pushed.ref, flag, deadline_s=JOB_TIMEOUT_S)

    def job(self, svc: Service, image: str, flag: str, *, deadline_s: int) -> Any:
        """One Job of `image` (repository@sha256:…) with `flag`, its image verified (signed by a trusted key for
        that digest, with provenance: the release's commit for the release's digest, any for the running
        version's) and its pod checked against the restricted profile first (migrate_job.JobRun).
        PolicyBlocked (exit 3) when the image does not verify: no Job is created."""
        from pipeline.gate import pod_security
        from pipeline.stages import migrate_job
        from pipeline.stages.verify_images import verify_applied

        pushed = self.ctx.manifest.pushed(svc.name)
        ours = pushed is not None and pushed.ref == image
        env = self.ctx.env.name
        verify_applied(self.ctx.cfg, self.ctx.env, self.ctx.manifest,
                       {image: f"the {svc.name} {flag} Job" + ("" if ours else " (the running version's image)")},
                       self.ctx.reporter, action=f"the {svc.name} {flag} Job in {env}",
                       hint=f"sign the release's images for {env}: `invoke sign --env {env}`",
                       earlier=() if ours else (image,))

        doc = migrate_job.job_document(migrate_job.job_name(svc.name, image.partition("@")[2] or image, flag),
                                       svc.name, image, flag, self.merged, run_id=self.ctx.run_id,
                                       deadline_s=deadline_s)
        pod_security.enforce_restricted([doc], where=f"the {svc.name} migrator Job")
        return migrate_job.run_job(self.rt.kube, doc, timeout_s=deadline_s + 30)

    def running_uses(self, svc: Service) -> tuple[set[str] | None, str]:
        """What the version running now declares it uses, asked of its own image: the service's Deployment's
        image runs `-schema-uses` (its embedded schema-uses.txt) as a Job. Returns (entries, where they were
        read); (None, why) when no version of `svc` runs. UsageError when it runs but does not answer (an image
        older than the declaration)."""
        from pipeline.stages import migrate_job
        from pipeline.stages.deploy.values import colour_deployment, serving_deployment
        from pipeline.tools import kubectl

        green = colour_deployment(self.rt.release, svc.name, "green")   # blue-green: the colour that serves
        found = kubectl.get_json(self.rt.kube, "deployment", green, ignore_not_found=True)
        full = serving_deployment(self.rt.release, svc.name, {green: found} if found else {})
        dep = found if full == green else kubectl.get_json(self.rt.kube, "deployment", full, ignore_not_found=True)
        containers = ((((dep or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
        if not containers:
            return None, f"no {full} runs in {self.rt.namespace}"
        image = str(containers[0].get("image") or "")
        got = self.job(svc, image, migrate_job.USES_FLAG, deadline_s=USES_DEADLINE_S)
        if not got.succeeded:
            raise UsageError(f"the running {full} ({image}) did not say what it uses ({migrate_job.USES_FLAG}: "
                             f"{got.reason or 'it failed'})",
                             "a contract step needs the running version's declaration: deploy a version that has "
                             f"{rules.USES_FILE} first")
        where = f"{rules.USES_FILE} of the running {image}"
        return rules.parse_uses(got.log, where), where


def _log_path(ctx: RunContext, svc: Service) -> Path:
    return ctx.run_dir / "logs" / "migrate" / f"{svc.name}.log"


class MigrateStage(BaseStage):
    """The schema migrations of the release's images, as Jobs, before the deploy changes any pod."""

    name = "migrate"

    def skip(self, ctx: RunContext) -> str | None:
        if ctx.options.dry_run:
            return "dry run: no migration runs"
        if not migrating(ctx):
            return "no selected service has migrations"
        return None

    def preflight(self, ctx: RunContext) -> None:
        from pipeline.stages.rollout import _cluster_reachable

        for svc in migrating(ctx):
            rules.check_static(rules.read_migrations(svc.context / rules.MIGRATIONS_DIR, ctx.cfg.root))
        _cluster_reachable(ctx)

    def provision(self, ctx: RunContext) -> None:
        from pipeline.stages.rollout import _cluster_up

        _cluster_up(ctx)

    def holds(self, ctx: RunContext) -> str | None:
        world = None
        for svc in migrating(ctx):
            rec = ctx.manifest.migrated(svc.name)
            pushed = ctx.manifest.pushed(svc.name)
            if rec is None or rec.status is MigrateStatus.FAILED or pushed is None or rec.digest != pushed.digest:
                return f"{svc.name}: no successful migration recorded for the pushed digest"
            world = world or _World(ctx)
            got = world.run(svc, "-schema-version")
            if not got.succeeded or got.schema_version is None:
                return f"{svc.name}: the database's schema version could not be read ({got.reason or 'see log'})"
            if got.schema_version != rec.schema_version:
                return (f"{svc.name}: the database is at schema version {got.schema_version}, the release recorded "
                        f"{rec.schema_version}")
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        world = _World(ctx)
        versions: dict[str, int] = {}
        for svc in migrating(ctx):
            migrations = rules.read_migrations(svc.context / rules.MIGRATIONS_DIR, ctx.cfg.root)
            marked = rules.check_static(migrations)
            if marked:
                uses, where = world.running_uses(svc)
                rules.check_running(marked, uses, where)
            backup = self.backup(ctx, world, svc, [m.version for m in migrations])
            versions[svc.name] = self.migrate(ctx, world, svc, migrations[-1].version, backup)
        line = ", ".join(f"{n} schema version {v}" for n, v in versions.items())
        return StageSummary(line, {"schema_versions": versions})

    def backup(self, ctx: RunContext, world: _World, svc: Service, versions: list[int]) -> dict[str, Any] | None:
        """The pg_dump before `svc`'s migrations, when the environment backs up and any of `versions` (the
        image's files) is not applied yet; its record (backup.take_backup), else None (the reason said).
        StageFailed when the backup fails: the migrator does not run."""
        from pipeline.core.config_backup import backup_dir
        from pipeline.stages import backup
        from pipeline.tools import helm

        if not ctx.env.backup.enabled:
            ctx.reporter.step(self.name, svc.name, f"no backup: [environments.{ctx.env.name}.backup] is off "
                                                   "(generate_secrets environments default to off)", "done")
            return None
        pg = world.merged["infra"]["postgres"]
        db = backup.Database(world.rt.kube, str(pg.get("database") or "veza"), str(pg.get("user") or "veza"))
        applied = backup.applied_migrations(db)
        pending = sorted(set(versions) - {v for v, _ in applied})
        held = max((v for v, _ in applied), default=0)
        if not pending:
            ctx.reporter.step(self.name, svc.name, f"no backup needed: no migration pending (the database is at "
                                                   f"schema version {held})", "done")
            return None
        status = helm.status(world.rt.kube, world.rt.release)
        revision = status.revision if status is not None and status.status == "deployed" else None
        directory = backup_dir(ctx.cfg.state_dir, ctx.env.name, ctx.env.backup)
        ctx.reporter.step(self.name, svc.name, f"backup before migrations {', '.join(map(str, pending))}: "
                                               f"pg_dump of {db.name} into {directory}")
        rec = backup.take_backup(db, directory, service=svc.name, env=ctx.env.name, revision=revision,
                                 schema_version=held)
        ctx.reporter.step(self.name, svc.name, f"backup {rec['file']} ({rec['size']} bytes, {rec['sha256'][:19]}…, "
                                               f"schema version {held}, revision {revision or 'none'} serving)",
                          "done")
        pruned = backup.prune(directory, svc.name, ctx.env.backup.keep, taken=str(rec["file"]))
        if pruned:
            ctx.reporter.step(self.name, svc.name, f"pruned {len(pruned)} backup(s) older than the newest "
                                                   f"{ctx.env.backup.keep} ([environments.{ctx.env.name}.backup] "
                                                   f"keep): {', '.join(Path(p).name for p in pruned)}", "done")
        return rec

    def migrate(self, ctx: RunContext, world: _World, svc: Service, latest: int,
                backup: dict[str, Any] | None = None) -> int:
        pushed = ctx.manifest.pushed(svc.name)
        if pushed is None or not pushed.digest:
            raise UsageError(f"{svc.name} has no pushed digest in the Release manifest: nothing to migrate with",
                             f"run: invoke build push --env {ctx.env.name}")
        ctx.reporter.step(self.name, svc.name, f"migrator Job on {pushed.ref[:80]}")
        got = world.run(svc, "-migrate")
        log_path = _log_path(ctx, svc)
        atomic_write(log_path, got.log)
        tail = got.log.strip().splitlines()[-LOG_TAIL:]
        version = got.schema_version
        rec: dict[str, Any] = {"image": pushed.ref, "digest": pushed.digest, "schema_version": version,
                               "latest": latest, "applied": list(got.record.get("applied") or []),
                               "log": str(log_path), **({"backup": backup} if backup else {})}
        if not got.succeeded:
            error = str(got.record.get("error") or got.reason or "the migrator failed")
            ctx.manifest.record(svc.name, self.name, {**rec, "status": MigrateStatus.FAILED, "error": error,
                                                      "log_tail": tail})
            for line in tail:
                ctx.reporter.info(f"  migrator: {line}")
            at = f"the database stays at schema version {version}" if version is not None else \
                "the database's version is unknown (the migrator did not say)"
            ctx.reporter.step(self.name, svc.name, error, "failed")
            raise StageFailed(f"{svc.name} migration failed: {error}; {at}; nothing was deployed "
                              f"(migrator log: {log_path})",
                              "fix the migration (a new file: an applied one is never run again), then release again")
        status = MigrateStatus.MIGRATED if rec["applied"] else MigrateStatus.CURRENT
        ctx.manifest.record(svc.name, self.name, {**rec, "status": status})
        ahead = f" (ahead of this build's {latest})" if version is not None and version > latest else ""
        applied = ", ".join(str(v) for v in rec["applied"]) or "none"
        ctx.reporter.step(self.name, svc.name, f"schema version {version}{ahead}; applied: {applied}", "done")
        if version is None:
            raise StageFailed(f"{svc.name}: the migrator succeeded but reported no schema version "
                              f"(log: {log_path})", "check the migrator's log lines")
        return int(version)
