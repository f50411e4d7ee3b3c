"""Getting a release back to a revision that serves: pending releases of killed runs, rollback after a failure,
and `invoke rollback`."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pipeline.core.config import Config
from pipeline.core.errors import DeployFailed, StageFailed, UsageError
from pipeline.core.reporter import Reporter
from pipeline.stages.deploy import trust_gate
from pipeline.stages.deploy.diagnosis import helm_reason
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import helm, kubectl


def pending_recovery(release: str, namespace: str, status: str, history: Sequence[helm.Revision]) -> tuple[str, int]:
    """The recovery of a release stuck in pending-*: ("rollback", revision) to the last deployed/superseded
    revision before the pending one, or ("uninstall", 0) when none exists (a first install was killed)."""
    pending = max((r.revision for r in history), default=0)
    good = [r.revision for r in history if r.revision < pending and r.status in ("deployed", "superseded")]
    if status in helm.PENDING_STATES and good:
        return "rollback", max(good)
    return "uninstall", 0


def last_good_revision(history: Sequence[helm.Revision], before: int | None = None) -> int:
    """The newest revision that ever served (status deployed or superseded), whatever the status of the latest
    one; only revisions older than `before` when given. 0 = the release never had a successful revision.
    (Helm's own --atomic rollback picks its target the same way: helm/pkg/action/upgrade.go, failRelease.)"""
    good = [r.revision for r in history
            if r.status in ("deployed", "superseded") and (before is None or r.revision < before)]
    return max(good, default=0)


def recovery_command(release: str, namespace: str, action: str, revision: int) -> str:
    """The Helm command a user runs by hand for a recovery decided by pending_recovery()."""
    if action == "rollback":
        return f"helm rollback {release} {revision} --namespace {namespace} --wait"
    return f"helm uninstall {release} --namespace {namespace} --wait"


def age_s(iso: str) -> float | None:
    """Seconds since an RFC 3339 time (None when empty or unreadable)."""
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return time.time() - t.timestamp()


def local_helm_busy(release: str, namespace: str) -> str:
    """The PID of a helm process on this machine working on this release ("" when none), read from /proc."""
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if not words or not Path(words[0]).name.startswith("helm"):
            continue
        if release in words and namespace in words and any(
                w in words for w in ("upgrade", "install", "rollback", "uninstall")):
            return d.name
    return ""


def recover_pending(cfg: Config, rt: ReleaseTarget, current: helm.ReleaseStatus | None, lock: Path,
                    reporter: Reporter) -> helm.ReleaseStatus | None:
    """A release left pending-* by a killed run blocks every helm operation. It is safe to recover when
    no helm operation can still be running: the deploy lock was free (its holder died) and no local helm
    process works on this release, or the pending state is older than the deploy timeout.
    Returns the release's status afterwards (None = removed). Raises StageFailed when it is not safe,
    PolicyBlocked (exit 3) when the revision it would roll back to does not verify (trust_gate)."""
    if current is None or current.status not in helm.PENDING_STATES:
        return current
    hist = helm.history(rt.kube, rt.release)
    action, revision = pending_recovery(rt.release, rt.namespace, current.status, hist)
    command = recovery_command(rt.release, rt.namespace, action, revision)
    previous_holder = (lock.parent / f"{lock.name}.previous").read_text().strip()
    busy = local_helm_busy(rt.release, rt.namespace)
    age = age_s(current.last_deployed)
    ours = bool(previous_holder) and previous_holder.startswith(socket.gethostname() + " ")
    safe = not busy and (ours or (age is not None and age > rt.timeout_s + 60))
    reporter.info(f"  release {rt.release} is stuck in {current.status} at revision {current.revision} "
                  f"(a killed deploy?); recovery: {command}")
    if not safe:
        why = (f"helm process {busy} still works on it" if busy else
               f"it may belong to a deploy still running elsewhere (pending for {age or 0:.0f}s)")
        raise StageFailed(f"release {rt.release} in {rt.namespace} is {current.status}: {why}",
                          f"when no other deploy runs, recover with: {command}")
    reporter.info(f"  recovering automatically (previous deploy on this machine ended: {previous_holder or 'none'})")
    if action == "rollback":
        trust_gate.verify_revision(cfg, rt, revision, reporter,
                                   action=f"the automatic recovery of {rt.release} ({command})")
        res = helm.rollback(rt.kube, rt.release, revision, timeout_s=rt.timeout_s, history_max=rt.history_max)
    else:
        res = helm.uninstall(rt.kube, rt.release, timeout_s=rt.timeout_s)
    if not res.ok:
        raise StageFailed(f"automatic recovery failed ({command}): {res.stderr.strip()[-300:]}",
                          f"run it by hand: {command}")
    after = helm.status(rt.kube, rt.release)
    now = f"{after.status} at revision {after.revision}" if after else "removed"
    reporter.info(f"  recovered: release now {now}")
    return after


def settle_after_cancel(rt: ReleaseTarget, previous: int, reporter: Reporter) -> None:
    """After Helm was cancelled (SIGTERM) on a blocker: Helm normally rolls back itself (atomic /
    rollback-on-failure). When it left the release pending or failed, finish the job: roll back to `previous`,
    or uninstall a first install. Raises DeployFailed when that fails too."""
    after = helm.status(rt.kube, rt.release)
    if after is None and not previous:
        reporter.info("  helm removed the failed first install")
        return
    if after is not None and after.status == "deployed" and previous:
        latest = max(helm.history(rt.kube, rt.release), key=lambda r: r.revision, default=None)
        if after.revision == previous or (latest is not None and latest.description.startswith("Rollback")):
            reporter.info(f"  helm rolled back: revision {after.revision} serves revision {previous}'s release")
            return
    reporter.info(f"  release left {after.status if after else 'missing'} after the cancel: "
                  + (f"rolling back to revision {previous}" if previous else "uninstalling the first install"))
    res = (helm.rollback(rt.kube, rt.release, previous, timeout_s=rt.timeout_s, history_max=rt.history_max)
           if previous else helm.uninstall(rt.kube, rt.release, timeout_s=rt.timeout_s))
    if not res.ok:
        raise DeployFailed(f"the deploy was stopped and the rollback failed: {res.stderr.strip()[-300:]}",
                           f"inspect: helm history {rt.release} -n {rt.namespace}")


def rollback_after_verify(cfg: Config, rt: ReleaseTarget, failed_revision: int, reporter: Reporter) -> int:
    """Undo a revision that Helm deployed but that failed verification. The target comes from the release's
    history as it is now: the newest revision before `failed_revision` that ever served (last_good_revision).
    Only a release that never had one is uninstalled (its claims carry helm.sh/resource-policy: keep).
    Returns the revision rolled back to (0 = uninstalled). Raises DeployFailed when Helm fails to, or when the
    target's images do not verify (trust_gate: the failed revision stays; nothing untrusted is put back)."""
    target = last_good_revision(helm.history(rt.kube, rt.release), before=failed_revision or None)
    problem = trust_gate.revision_problem(cfg, rt, target, reporter)
    if problem:
        raise DeployFailed(f"verification failed and the release was not rolled back ({problem}); revision "
                           f"{failed_revision} stays", f"fix it and deploy again, or sign revision {target}'s "
                           f"images for {rt.env.name} and `invoke rollback --env {rt.env.name} --to {target}`")
    if target:
        reporter.info(f"  rolling back to revision {target}, the last revision that was deployed")
        res = helm.rollback(rt.kube, rt.release, target, timeout_s=rt.timeout_s, history_max=rt.history_max)
    else:
        reporter.info(f"  no revision of {rt.release} ever succeeded: uninstalling the failed first install")
        res = helm.uninstall(rt.kube, rt.release, timeout_s=rt.timeout_s)
    if not res.ok:
        what = f"the rollback to revision {target}" if target else "the uninstall"
        raise DeployFailed(f"verification failed and {what} failed too: {res.stderr.strip()[-300:]}",
                           f"inspect: helm history {rt.release} -n {rt.namespace}")
    return target


def rollback_to(cfg: Config, rt: ReleaseTarget, revision: int | None, reporter: Reporter, *,
                schema_note: bool = True) -> int:
    """`invoke rollback`: roll back to `revision` (default: the newest deployed/superseded one before the current)
    and wait; then, with `schema_note`, say which migrations stay applied (say_schema_crossing). Returns the new
    revision. Raises StageFailed (no cluster), UsageError (no such revision),
    PolicyBlocked (exit 3: an image of that revision does not verify, trust_gate; nothing changed),
    DeployFailed (Helm failed)."""
    env = rt.env
    if not kubectl.server_version(rt.kube):
        raise StageFailed(f"no Kubernetes API answers for environment {env.name}",
                          f"start it: invoke cluster-up --env {env.name}")
    hist = helm.history(rt.kube, rt.release)
    if not hist:
        raise UsageError(f"release {rt.release} does not exist in {rt.namespace}",
                         f"deploy first: invoke deploy --env {env.name}")
    current = hist[-1].revision
    known = {r.revision for r in hist}
    if revision is None:
        revision = last_good_revision(hist, before=current)
        if not revision:
            raise UsageError(f"release {rt.release} has no deployed revision before {current}",
                             "nothing to roll back to")
    if revision not in known:
        raise UsageError(f"revision {revision} of {rt.release} is not in its history "
                         f"({', '.join(str(r) for r in sorted(known))})", "pick one of those (helm keeps the last 10)")
    if revision == current:
        raise UsageError(f"revision {revision} is the current one", "pick an older revision")
    trust_gate.verify_revision(cfg, rt, revision, reporter, action=f"rollback of {env.name} to revision {revision}")
    reporter.info(f"rollback {env.name}: {rt.release} revision {current} → {revision}")
    res = helm.rollback(rt.kube, rt.release, revision, timeout_s=rt.timeout_s)
    if not res.ok:
        raise DeployFailed(f"helm rollback to {revision} failed: {helm_reason(res.stderr + res.stdout)}",
                           f"inspect: helm history {rt.release} -n {rt.namespace}")
    after = helm.status(rt.kube, rt.release)
    new_rev = after.revision if after else 0
    reporter.info(f"rolled back: revision {new_rev} now runs revision {revision}'s images and values")
    if schema_note:
        say_schema_crossing(cfg, rt, revision, reporter)
    return new_rev


def say_schema_crossing(cfg: Config, rt: ReleaseTarget, revision: int, reporter: Reporter) -> None:
    """After a rollback to `revision`: which migrations stay applied and how to undo them (restore.crossing_lines;
    nothing when the database is not above the schema version that revision served with)."""
    from pipeline.stages.restore import say_crossing

    say_crossing(cfg, rt.env, rt.kube, revision, reporter.info)
