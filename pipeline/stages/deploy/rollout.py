"""The deploy itself: `helm upgrade --install` by digest, wait, verify, roll back on failure (exit 5).

Flow of deploy_release():
  images from the Release manifest (push.digest → repository@digest) → values file with a deploy hash
  → helm lint --strict → cluster answers? → namespace, Secret and local volume preflight (prepare)
  → a pending release from a killed run: recovered when safe, else refused with the exact commands (recovery)
  → no-op when the deployed revision has the same hash and runs the same digests, Ready
  → Pod Security gate: the rendered chart against the restricted profile (exit 3), before anything is applied
  → helm upgrade --dry-run=server → helm upgrade --install --wait + atomic/rollback-on-failure, while a watcher
    stops it within seconds on what cannot recover (failfast: unschedulable, unbound claim, image pull, crash loop)
  → verify: every Deployment rolled out, each service's ready path answers through a port-forward
  → on failure: roll back to the newest revision that ever served (uninstall only when none did),
    report events and the failing pods' logs (diagnosis), exit 5.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import DeployFailed, PolicyBlocked, StageFailed, UsageError
from pipeline.core.manifest import Manifest, atomic_write
from pipeline.core.names import safe_run_id
from pipeline.core.release_images import pinned_infra
from pipeline.core.reporter import PlainReporter, Reporter
from pipeline.core.vocab import DeployStatus, VerifyStatus
from pipeline.gate import pod_security
from pipeline.stages.deploy import bluegreen, canary, diagnosis, failfast, prepare, recovery, trust_gate
from pipeline.stages.deploy.checks import verify_checks
from pipeline.stages.deploy.drift import workload_differences
from pipeline.stages.deploy.status import live_images, release_deployments
from pipeline.stages.deploy.target import DEFAULT_TIMEOUT_S, HISTORY_MAX, ReleaseTarget, deploy_lock
from pipeline.stages.deploy.values import (
    CHART,
    ImageChoice,
    active_colour,
    choose_images,
    colour_deployment,
    deep_merge,
    deploy_hash,
    env_values_files,
    image_values,
    merged_values,
    ready_path,
    recorded_pushes,
    resource_name,
)
from pipeline.stages.functional_checks import Check
from pipeline.tools import helm, kubectl


@dataclass
class DeployResult:
    """What a deploy did. status: deployed | noop | dry-run; images: service → repository@digest."""

    env: str
    release: str
    namespace: str
    status: str
    revision: int
    previous_revision: int
    images: dict[str, str]
    deploy_hash: str
    duration_s: float
    notes: list[str] = field(default_factory=list)


def http_ok(url: str, *, attempts: int) -> str:
    """"" when `url` answers 200 within `attempts` tries (5 s timeout each, 1 s, 2 s… between), else the problem."""
    last = ""
    for i in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return ""
                last = f"{url} answered {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"{url} answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = f"{url}: {exc}"
        time.sleep(1 + i)
    return last


EMBEDDED_VALUES = "values-embedded.yaml"


class _Rollout:
    """The state of one deploy or verify run; each step is a method, the cluster work lives in the sibling
    modules (prepare, recovery, diagnosis, status)."""

    def __init__(self, cfg: Config, rt: ReleaseTarget, manifest: Manifest | None, reporter: Reporter, *,
                 services: Sequence[str] = (), extra_values: Sequence[Path] = (), run_id: str = "") -> None:
        self.cfg, self.rt, self.manifest, self.reporter = cfg, rt, manifest, reporter
        self.run_id = safe_run_id(run_id or f"verify-{secrets.token_hex(4)}")   # in every id a check writes
        self.checks: list[Check] = []   # the functional checks of the last verify()
        self.env = rt.env
        self.selected = list(services)
        self.extra_values = list(extra_values)
        self.chart = cfg.root / CHART
        self.started = time.monotonic()
        self.gen_values = cfg.state_dir / "deploy" / f"{rt.env.name}-values.yaml"
        self.fallback_problem = ""   # why a failure must not roll back (trust_gate.revision_problem), "" = it may

    def run(self, dry_run: bool) -> DeployResult:
        cfg, env, rt, say = self.cfg, self.env, self.rt, self.reporter.info
        if self.manifest is not None and self.manifest.env != env.name:
            raise UsageError(f"the Release manifest is for environment '{self.manifest.env}', not '{env.name}'",
                             f"run `invoke build push --env {env.name}` (or promote) first")
        prepare.pull_credentials(env)   # an unset pull variable is exit 2 before anything else runs
        h = helm.helm()
        say(f"deploy {env.name}: release {rt.release} in namespace {env.namespace} (helm {h.version}, chart {CHART})")

        if not rt.external:
            # One small node shared by every environment here: CPU requests scaled down (the file says why).
            self.extra_values.insert(0, self.chart / EMBEDDED_VALUES)
            say(f"  the pipeline's own cluster: adding {CHART / EMBEDDED_VALUES} (CPU requests scaled down)")
        prepare.pod_security_gate(self.chart, rt, env_values_files(env, self.extra_values), self.reporter, cfg)
        runs_infra = env.local_infra and not rt.external and not dry_run
        # the infra's digests before anything reaches the cluster (a missing one: exit 2, `invoke push`)
        infra_images = pinned_infra(cfg, env, self.manifest) if runs_infra else {}
        if rt.external:
            say(f"  external cluster: context {rt.kube.context or '(current)'} of {rt.kube.kubeconfig}; no local "
                "shortcuts (no local infra, no hostPath volumes, no generated Secret)")
        reachable = kubectl.server_version(rt.kube)
        if reachable:
            say(f"  what the cluster enforces: {pod_security.enforcement_note(reachable)}")
        if reachable and runs_infra:
            trust_gate.verify_infra(cfg, rt, self.manifest, infra_images, self.reporter)   # before kubectl apply
            self.extra_values.append(prepare.ensure_local_infra_values(cfg, rt, self.chart, cfg.state_dir / "deploy",
                                                                       self.reporter, infra_images))
        values_files = env_values_files(env, self.extra_values)
        deployed_values: dict[str, Any] | None = None
        current: helm.ReleaseStatus | None = None
        if reachable:
            current = helm.status(rt.kube, rt.release)
            if current is not None and current.status not in helm.PENDING_STATES:
                deployed_values = helm.get_values(rt.kube, rt.release)
        choices, notes = choose_images(cfg, recorded_pushes(self.manifest), self.selected, deployed_values)
        for n in notes:
            say(f"  note: {n}")
        if not choices:
            raise UsageError(f"nothing to deploy to {env.name}: no service has a pushed digest in the manifest",
                             f"run: invoke build push --env {env.name}")
        dhash = deploy_hash(self.chart, values_files, choices, env.pull_secret)
        # a green colour that serves stays the one that serves (an upgrade rolls it; blue stays at 0)
        generated = deep_merge(image_values(cfg, choices, dhash, env.pull_secret),
                               bluegreen.carried_layout(deployed_values))
        atomic_write(self.gen_values, json.dumps(generated, indent=2, sort_keys=True) + "\n")
        all_values = [*values_files, self.gen_values]
        for c in choices.values():
            kept = " (kept from the deployed revision)" if c.source == "deployed" else ""
            say(f"  {c.service}: {c.ref}{kept}")
        # exactly what Helm is handed, whatever each digest's source (exit 3 before anything reaches the cluster)
        trust_gate.verify_chart(cfg, rt, self.manifest, self.chart, all_values, choices,
                                current.revision if deployed_values is not None and current else 0, self.reporter)

        self.lint(all_values, reachable)
        if not reachable:
            if dry_run:
                helm.template(self.chart, rt.release, all_values, namespace=env.namespace)
                say("dry run: no cluster answers; the chart rendered and linted offline only")
                return self.result("dry-run", 0, 0, choices, dhash, notes)
            raise StageFailed(f"no Kubernetes API answers for environment {env.name} "
                              f"(kubeconfig {rt.kube.kubeconfig or 'default'})",
                              f"start it: invoke cluster-up --env {env.name}")
        say(f"  cluster answers: Kubernetes {reachable}")
        merged = merged_values(self.chart, values_files, generated)

        if dry_run:
            self.validate_server(all_values)
            say("dry run: lint and server-side validation passed; nothing changed")
            return self.result("dry-run", current.revision if current else 0, 0, choices, dhash, notes)

        with deploy_lock(cfg, env) as lock:
            prepare.ensure_namespace(rt, self.reporter)
            prepare.ensure_chart_secret(rt, merged, self.reporter)
            prepare.ensure_pull_secret(rt, self.reporter)
            if not rt.external:
                prepare.ensure_local_volumes(rt, merged, self.reporter)
            current = recovery.recover_pending(cfg, rt, current, lock, self.reporter)
            if current is not None and current.status == "deployed" and self.is_noop(dhash, choices):
                say(f"no-op: revision {current.revision} already runs these digests and values "
                    f"({dhash[:19]}); nothing to do")
                self.record(choices, DeployStatus.NOOP, current.revision)
                return self.result("noop", current.revision, current.revision, choices, dhash, notes)
            self.validate_server(all_values)
            # What a failure returns to: the newest revision that ever served, whatever the latest one's status.
            previous = recovery.last_good_revision(helm.history(rt.kube, rt.release)) if current is not None else 0
            # A failure never rolls back to a revision whose images do not verify (Helm's own rollback included).
            self.fallback_problem = trust_gate.revision_problem(cfg, rt, previous, self.reporter)
            if self.fallback_problem:
                say(f"  a failure will not roll back: {self.fallback_problem}")
            if env.rollout.strategy == "canary":   # steps, analysis, promotion or abort: canary.py
                return canary.deploy(self, all_values, choices, dhash, notes, merged, previous, current)
            if env.rollout.strategy == "blue-green":   # preview, switch, post-promotion, keep: bluegreen.py
                return bluegreen.deploy(self, all_values, choices, dhash, notes, merged, previous, current)
            return self.upgrade(all_values, choices, dhash, notes, merged, previous)

    def result(self, status: str, revision: int, previous: int, choices: dict[str, ImageChoice], dhash: str,
               notes: list[str]) -> DeployResult:
        return DeployResult(env=self.env.name, release=self.rt.release, namespace=self.env.namespace,
                            status=status, revision=revision, previous_revision=previous,
                            images={k: v.ref for k, v in choices.items()}, deploy_hash=dhash,
                            duration_s=round(time.monotonic() - self.started, 1), notes=notes)

    # -- checks before
    def lint(self, values_files: list[Path], kube_version: str | None) -> None:
        kv = (kube_version or "").lstrip("v").split("+")[0].split("-")[0]
        res = helm.lint(self.chart, values_files, strict=True, kube_version=kv)
        if not res.ok:
            lines = [ln for ln in res.stdout.splitlines() if "[ERROR]" in ln or "[WARNING]" in ln or "Error" in ln]
            raise PolicyBlocked(f"helm lint --strict failed for {self.env.name}: " + " | ".join(lines[:5]),
                                f"fix the chart or {self.env.values_file.name}, then rerun")
        self.reporter.info("  helm lint --strict: ok")

    def validate_server(self, values_files: list[Path]) -> None:
        res = helm.upgrade_install(self.rt.kube, self.rt.release, self.chart, values_files,
                                   timeout_s=self.rt.timeout_s, history_max=self.rt.history_max, dry_run="server")
        if not res.ok:
            tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-3:]
            raise StageFailed("the API server rejected the release (helm upgrade --dry-run=server): "
                              + " | ".join(tail), "fix the chart or the values; nothing was changed")
        self.reporter.info("  server-side validation (--dry-run=server): ok")

    def is_noop(self, dhash: str, choices: dict[str, ImageChoice]) -> bool:
        """The deployed revision has this hash and its workloads run these digests, Ready (else: drift, say it)."""
        deployed = helm.get_values(self.rt.kube, self.rt.release)
        if (deployed.get("global") or {}).get("deployHash") != dhash:
            return False
        deployments = release_deployments(self.rt)
        diffs = workload_differences(self.rt.release, {n: c.ref for n, c in choices.items()}, deployments)
        for d in diffs:
            self.reporter.info(f"  drift: {d.line()}; deploying again")
        return not diffs

    # -- the upgrade and what follows
    def upgrade(self, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str, notes: list[str],
                merged: dict[str, Any], previous: int) -> DeployResult:
        rt = self.rt
        h = helm.helm()
        roll_back = not self.fallback_problem
        flags = " ".join(helm.upgrade_flags(h.major, wait=True, rollback_on_failure=roll_back))
        self.reporter.info(f"  helm upgrade --install {flags} --timeout {rt.timeout_s}s --history-max {rt.history_max}")
        since = time.time()
        watcher = diagnosis.FailingPodWatcher(rt.kube, rt.release)
        cancel = threading.Event()

        def helm_line(line: str) -> None:  # Helm's own output: tool noise, redacted by the reporter
            if line.strip():
                self.reporter.detail(f"    helm: {line}")

        def blocked(b: failfast.Blocker) -> None:
            self.reporter.info(f"  fail fast after {time.time() - since:.0f}s: {b.line()}; cancelling Helm "
                               "(it rolls back)")
            watcher.poll()   # the failing pods' logs, before the rollback deletes them (the loop may not have run)
            cancel.set()

        blockers = failfast.BlockerWatcher(rt.kube, rt.selector, since, blocked)
        watcher.start()
        blockers.start()
        try:
            res = helm.upgrade_install(rt.kube, rt.release, self.chart, values_files, timeout_s=rt.timeout_s,
                                       history_max=rt.history_max, wait=True, rollback_on_failure=roll_back,
                                       on_line=helm_line, cancel=cancel)
        finally:
            blockers.stop()
            watcher.stop()
        if blockers.found is not None:
            if roll_back:
                recovery.settle_after_cancel(rt, previous, self.reporter)
            diagnosis.report_failure(self.cfg, rt, since, watcher.captured, self.reporter)
            self.fail(choices, previous, f"stopped after {time.time() - since:.0f}s, {blockers.found.line()}")
        if not res.ok:
            reason = diagnosis.helm_reason(res.stdout + "\n" + res.stderr)
            diagnosis.report_failure(self.cfg, rt, since, watcher.captured, self.reporter)
            # Helm says only that it timed out: the pods' own readiness records name the dependency
            causes = diagnosis.readiness_causes(watcher.captured)
            self.fail(choices, previous, f"helm upgrade failed: {reason}" + "".join(f"; {c}" for c in causes))
        after = helm.status(rt.kube, rt.release)
        revision = after.revision if after else 0
        self.reporter.info(f"  helm: revision {revision} deployed; verifying")
        problems = self.verify(choices, merged)
        if problems:
            captured = diagnosis.capture_logs(rt)
            diagnosis.report_failure(self.cfg, rt, since, captured, self.reporter)
            for p in problems:
                self.reporter.info(f"  verify: {p}")
            if roll_back:
                previous = recovery.rollback_after_verify(self.cfg, rt, revision, self.reporter)
            self.fail(choices, previous, "verification failed: " + "; ".join(
                [*problems, *diagnosis.readiness_causes(captured)]), failed_revision=revision)
        self.record(choices, DeployStatus.DEPLOYED, revision)
        self.reporter.info(f"deployed {self.env.name}: revision {revision}, {len(choices)} service(s) Ready and "
                           f"answering ({time.monotonic() - self.started:.1f}s)")
        return self.result("deployed", revision, previous, choices, dhash, notes)

    def verify(self, choices: dict[str, ImageChoice], merged: dict[str, Any]) -> list[str]:
        """Every Deployment rolled out, each service's ready path answers 200 through a port-forward, then its
        functional checks pass (pipeline.toml `checks` with "verify" in `in`: checks.verify_checks). Returns the
        problems, one line each (a failed check: service, check, what it saw); keeps the checks in self.checks."""
        problems: list[str] = []
        for name in choices:
            full = colour_deployment(self.rt.release, name, active_colour(merged, name))   # blue-green: the serving
            rs = kubectl.rollout_status(self.rt.kube, f"deployment/{full}", timeout_s=min(self.rt.timeout_s, 120))
            if not rs.ok:
                problems.append(f"{full} did not roll out: {(rs.stderr or rs.stdout).strip()[-200:]}")
        if problems:
            return problems
        for name in choices:
            err = self.probe_ready(name, merged)
            if err:
                problems.append(err)
            else:
                self.reporter.info(f"  verify: {name} ready (rolled out; {ready_path(self.cfg, name, merged)} "
                                   "answered 200)")
        if problems:
            return problems
        self.checks = verify_checks(self.cfg, self.rt, list(choices), merged, self.run_id)
        for c in self.checks:
            self.reporter.info(f"  verify:{c.line()[1:]}")
        return [f"{c.service} check {c.name!r} failed: expected {c.expected}, got {c.got}"
                for c in self.checks if not c.ok]

    def probe_ready(self, name: str, merged: dict[str, Any]) -> str:
        """"" when svc/<name> answers 200 on its ready path through a port-forward, else the problem."""
        full = resource_name(self.rt.release, name)
        port = int(merged["services"][name]["service"]["port"])
        path = ready_path(self.cfg, name, merged)
        try:
            with kubectl.port_forward(self.rt.kube, f"svc/{full}", port) as local:
                err = http_ok(f"http://127.0.0.1:{local}{path}", attempts=5)
                return f"{name}: {err}" if err else ""
        except StageFailed as exc:
            return f"{full}: {exc.message}"

    def fail(self, choices: dict[str, ImageChoice], previous: int, reason: str, *, failed_revision: int = 0) -> None:
        """Say what the cluster holds now (observed, not assumed), record it, raise DeployFailed (exit 5).
        `previous`: the revision the failure went back to (0: none ever served)."""
        after = helm.status(self.rt.kube, self.rt.release)
        if self.fallback_problem:
            state = (f"not rolled back ({self.fallback_problem}): release {after.status if after else 'missing'} at "
                     f"revision {after.revision if after else 0}")
        elif after is None:
            state = ("the release was removed: no revision of it ever succeeded, so the failed first install was "
                     "uninstalled (claims marked helm.sh/resource-policy: keep stay)")
        elif previous and after.status == "deployed":
            serving = self.previous_serving()
            recovery.say_schema_crossing(self.cfg, self.rt, previous, self.reporter)
            state = (f"rolled back to revision {previous}: revision {after.revision} serves revision {previous}'s "
                     "images and values" + ("" if serving is None else f", but {serving}"))
        else:
            state = (f"release now {after.status} at revision {after.revision}"
                     + (f"; the last deployed revision is {previous}" if previous else ""))
        rolled_back = previous and after is not None and not self.fallback_problem
        self.record(choices, DeployStatus.ROLLED_BACK if rolled_back else DeployStatus.FAILED,
                    after.revision if after else 0, reason=reason, failed_revision=failed_revision)
        raise DeployFailed(f"deploy to {self.env.name} failed ({reason}); {state}",
                           f"see the events and logs above; `invoke status --env {self.env.name}`")

    def previous_serving(self) -> str | None:
        """None when every Deployment of the restored revision is rolled out and ready; else the problem."""
        for full, (image, ready) in live_images(self.rt).items():
            if not ready:
                rs = kubectl.rollout_status(self.rt.kube, f"deployment/{full}", timeout_s=60)
                if not rs.ok:
                    return f"{full} ({image}) is not ready"
        return None

    def record(self, choices: dict[str, ImageChoice], status: DeployStatus, revision: int, **extra: Any) -> None:
        """Each deployed service's own record (`services.<name>.deploy`); the runner alone writes `stages.deploy`
        from the returned DeployResult."""
        if self.manifest is None:
            return
        for name, c in choices.items():
            if c.source != "manifest":
                continue
            self.manifest.record(name, "deploy", {
                "status": status, "revision": revision, "release": self.rt.release, "namespace": self.env.namespace,
                "image": c.ref, "digest": c.digest, "helm": helm.helm().version,
                "checks": [k.record() for k in self.checks if k.service == name],
                **{k: v for k, v in extra.items() if v}})


# ---------------------------------------------------------------- entry points

def deploy_release(cfg: Config, env: Environment, manifest: Manifest | None, services: Sequence[str] = (), *,
                   dry_run: bool = False, timeout_s: int = DEFAULT_TIMEOUT_S, history_max: int = HISTORY_MAX,
                   kubeconfig: Path | None = None, extra_values: Sequence[Path] = (),
                   reporter: Reporter | None = None, run_id: str = "") -> DeployResult:
    """Deploy the manifest's digests to `env` (the release runner's entry). Raises DeployFailed (exit 5)
    after rolling back, PolicyBlocked when the chart fails lint, UsageError for bad input, StageFailed when
    no cluster answers. `reporter` None: a PlainReporter (until the runner passes ctx.reporter). `run_id`: the
    run's id, in the ids of what the functional checks write ("": a fresh one)."""
    rt = ReleaseTarget.of(env, kubeconfig, timeout_s=timeout_s, history_max=history_max)
    return _Rollout(cfg, rt, manifest, reporter or PlainReporter(), services=services,
                    extra_values=extra_values, run_id=run_id).run(dry_run)


def verify_release(cfg: Config, env: Environment, manifest: Manifest | None, services: Sequence[str] = (), *,
                   timeout_s: int = DEFAULT_TIMEOUT_S, kubeconfig: Path | None = None,
                   reporter: Reporter | None = None, run_id: str = "") -> None:
    """Re-verify what runs: the manifest's digests run, rolled out and Ready, every service answers on its ready
    path through a port-forward, and its functional checks pass (they write test data marked with `run_id`
    unless the environment's verify_checks says read-only). Records each service's `verify` record (its checks).
    On failure, roll back the revision this manifest deployed (when there is one before it) and raise DeployFailed
    (exit 5)."""
    say = (reporter := reporter or PlainReporter()).info
    rt = ReleaseTarget.of(env, kubeconfig, timeout_s=timeout_s)
    d = _Rollout(cfg, rt, manifest, reporter, services=services, run_id=run_id)
    current = helm.status(rt.kube, rt.release)
    if current is None or current.status != "deployed":
        raise DeployFailed(f"verify {env.name}: release {rt.release} is {current.status if current else 'missing'}",
                           f"deploy it: invoke deploy --env {env.name}")
    deployed = helm.get_values(rt.kube, rt.release)
    choices, _ = choose_images(cfg, recorded_pushes(manifest), services, deployed)
    live = live_images(rt)
    serving = {name: colour_deployment(rt.release, name, active_colour(deployed, name)) for name in choices}
    problems = [f"{name} runs {live.get(serving[name], ('nothing', False))[0]}, not {c.ref}"
                for name, c in choices.items() if live.get(serving[name], ("", False))[0] != c.ref]
    if not problems:
        # The values the serving revision runs with (chart defaults and every values file its deploy was given,
        # e.g. the operators' infra hosts), not the environment's files read again.
        problems = d.verify(choices, helm.get_values(rt.kube, rt.release, all_values=True))
    _record_verify(manifest, d, choices, current.revision, problems)
    if not problems:
        say(f"verify {env.name}: revision {current.revision} runs the manifest's digests, Ready and answering; "
            f"{len(d.checks)} functional check(s) passed")
        return
    for p in problems:
        say(f"  verify: {p}")
    hist = helm.history(rt.kube, rt.release)
    recorded = [manifest.deployed(n) if manifest is not None else None for n in choices]
    ours = {int(r.revision or 0) if r is not None else 0 for r in recorded}
    older = recovery.last_good_revision(hist, before=current.revision)
    if current.revision in ours and older:
        diagnosis.report_failure(cfg, rt, time.time() - 600, diagnosis.capture_logs(rt), reporter)
        back = recovery.rollback_after_verify(cfg, rt, current.revision, reporter)
        recovery.say_schema_crossing(cfg, rt, back, reporter)
        raise DeployFailed(f"verify {env.name} failed: {'; '.join(problems)}; rolled back to revision {back}",
                           f"see the events and logs above; `invoke status --env {env.name}`")
    raise DeployFailed(f"verify {env.name} failed: {'; '.join(problems)}",
                       f"inspect: `invoke status --env {env.name}`; undo: `invoke rollback --env {env.name}`")


def _record_verify(manifest: Manifest | None, d: _Rollout, choices: dict[str, ImageChoice], revision: int,
                   problems: list[str]) -> None:
    """Each verified service's `verify` record: pass or fail, the revision, the run and its functional checks."""
    if manifest is None:
        return
    for name, choice in choices.items():
        if choice.source != "manifest":   # a digest kept from the deployed revision: not this manifest's service
            continue
        mine = [c for c in d.checks if c.service == name]
        # a problem line starts with the service or its resource name (verify(), the image check above)
        failed = any(not c.ok for c in mine) or any(
            p.split(" ", 1)[0].rstrip(":") in (name, resource_name(d.rt.release, name)) for p in problems)
        manifest.record(name, "verify", {"status": VerifyStatus.FAIL if failed else VerifyStatus.PASS,
                                         "revision": revision, "run_id": d.run_id,
                                         "checks": [c.record() for c in mine]})


def rollback_release(cfg: Config, env: Environment, revision: int | None, *, timeout_s: int = DEFAULT_TIMEOUT_S,
                     kubeconfig: Path | None = None, reporter: Reporter | None = None,
                     schema_note: bool = True) -> int:
    """`invoke rollback`: roll back to `revision` (default: the one before the current), wait. Returns the new
    revision (see recovery.rollback_to for the errors; `schema_note` False: `invoke restore`, which undoes the
    migrations the note would name)."""
    rt = ReleaseTarget.of(env, kubeconfig, timeout_s=timeout_s)
    return recovery.rollback_to(cfg, rt, revision, reporter or PlainReporter(), schema_note=schema_note)
