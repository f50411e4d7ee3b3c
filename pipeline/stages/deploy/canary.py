"""The canary strategy of the deploy stage (`[environments.<env>.rollout] strategy = "canary"`): the new version
runs beside the stable one under the same Service (the chart's `services.<name>.canary`), step by step, each
step judged on traffic against Prometheus (analysis.run_step), then promoted or aborted.

Flow of CanaryRollout.run(), once the deploy's checks before the upgrade have passed (rollout.py):
  the rollout state from the cluster (a ConfigMap, below) → a canary of another version in progress: aborted first
  → per step: one Helm revision whose values are the stable revision's own plus `canary: {enabled, replicas,
    image}` at the step's weight, achieved as a replica ratio and reported as achieved → the load loop on each
    track's pods through port-forwards on 127.0.0.1 → run_step per canary service (a resumed step continues from
    its recorded intervals) → abort at the first aborted step
  → promotion: the deploy's ordinary upgrade (the new version as stable, no canary), waited for and verified
  → abort: one Helm revision with the stable revision's values alone (canary disabled); the stable Deployment's
    pod template is checked byte-identical (same sha256, same generation) through every revision; exit 5.

Where the state lives: a ConfigMap `<release>-rollout` (label veza.io/rollout-state; progressive.py, shared with
blue-green), owned by the first canary service's stable Deployment (ownerReference: an uninstall takes it with it),
and the manifest's `rollout` key.
Not annotations on the stable Deployment: that object is Helm's (a three-way merge or a server-side apply of the
next revision decides about its metadata), the state is rewritten every interval, and its interval records
outgrow what annotations are meant for; the ConfigMap keeps our progress apart from Helm's record.

The first install (no stable revision) and a deploy that changes no canary-able digest go all at once: there is
no stable version to compare with. A service with a persistent volume cannot run a canary (the chart refuses:
ReadWriteOnce); its new digest is applied at promotion, said so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pipeline.core.config_rollout import Rollout
from pipeline.core.errors import DeployFailed, StageFailed, UsageError
from pipeline.core.vocab import DeployStatus, now_iso
from pipeline.stages.deploy import analysis, progressive
from pipeline.stages.deploy.monitoring import source
from pipeline.stages.deploy.progressive import STATE_KEY as STATE_KEY
from pipeline.stages.deploy.progressive import STATE_LABEL as STATE_LABEL
from pipeline.stages.deploy.progressive import state_name as state_name
from pipeline.stages.deploy.progressive import template_fingerprint as template_fingerprint
from pipeline.stages.deploy.status import release_deployments
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import ImageChoice, resource_name
from pipeline.tools import helm

if TYPE_CHECKING:
    from pipeline.stages.deploy.rollout import DeployResult, _Rollout

STRATEGY = "canary"
# phases of a canary's state; IN_PROGRESS are the ones a rerun must continue or finish
STEP, ABORTING, PROMOTING, PROMOTED, ABORTED = "step", "aborting", "promoting", "promoted", "aborted"
IN_PROGRESS = (STEP, ABORTING, PROMOTING)


def canary_replicas(weight: int, stable: int, limit: int) -> int:
    """The canary's replica count beside `stable` replicas (kept as they are) whose share c / (stable + c) is
    closest to `weight` per cent, at least 1 (the fewer replicas on a tie), at most `limit` (the rollout's
    max_canary_replicas: the share grows with c, so the bound is the closest count it allows). ValueError for a
    weight outside 1..99, stable < 1 or limit < 1 (config_rollout checks weights and the bound at load)."""
    if not 1 <= weight <= 99 or stable < 1 or limit < 1:
        raise ValueError(f"weight {weight}% beside {stable} stable replica(s), at most {limit}")
    # c/(s+c) = w  ⇔  c = s·w/(1−w): the best integer is the floor or the ceiling of that
    exact = stable * weight / (100 - weight)
    candidates = {max(1, int(exact)), max(1, int(exact) + 1)}
    return min(limit, min(sorted(candidates), key=lambda c: abs(c / (stable + c) - weight / 100)))


def achieved_line(weight: int, canary: int, stable: int, limit: int) -> str:
    """"asked 25%, achieved 1/4 = 25%": the weight as the replica ratio gives it (no router); ", bounded by
    max_canary_replicas = N" when `canary` is the bound `limit` and the bound kept it below the weight."""
    total = canary + stable
    line = f"asked {weight}%, achieved {canary}/{total} = {100 * canary / total:.4g}%"
    if canary == limit and canary_replicas(weight, stable, limit + 1) > limit:
        line += f", bounded by max_canary_replicas = {limit}"
    return line


@dataclass
class CanaryState:
    """The rollout's progress, as stored in the cluster and the manifest (as_dict / from_dict).

    canary / stable: service → repository@digest of the new and the stable version; stable_revision: the Helm
    revision the canary started from; templates: service → sha256 of the stable Deployment's pod template and
    its generation when the canary started (the "stable untouched" check); phase: STEP | ABORTING | PROMOTING |
    PROMOTED | ABORTED; step: the 1-based step in progress (or last run); steps: per step {step, weight,
    replicas: {service: [canary, stable]}, achieved, results: {service: StepResult.as_dict()}, load: [...]}."""

    canary: dict[str, str]
    stable: dict[str, str]
    stable_revision: int
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = STEP
    step: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""
    reason: str = ""
    started: str = field(default_factory=now_iso)
    updated: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": "canary", "canary": self.canary, "stable": self.stable,
                "stable_revision": self.stable_revision, "templates": self.templates, "phase": self.phase,
                "step": self.step, "steps": self.steps, "decision": self.decision, "reason": self.reason,
                "started": self.started, "updated": self.updated}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CanaryState:
        """The state as_dict() wrote. ValueError for a document of another shape (each step's results are read
        by analysis.StepResult.from_dict)."""
        try:
            state = cls(canary={str(k): str(v) for k, v in doc["canary"].items()},
                        stable={str(k): str(v) for k, v in doc["stable"].items()},
                        stable_revision=int(doc["stable_revision"]), templates=dict(doc.get("templates") or {}),
                        phase=str(doc["phase"]), step=int(doc["step"]), steps=list(doc["steps"]),
                        decision=str(doc.get("decision") or ""), reason=str(doc.get("reason") or ""),
                        started=str(doc.get("started") or ""), updated=str(doc.get("updated") or ""))
            for st in state.steps:
                for res in (st.get("results") or {}).values():
                    analysis.StepResult.from_dict(res)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a canary rollout state ({type(exc).__name__}: {exc})") from None
        if state.phase not in (STEP, ABORTING, PROMOTING, PROMOTED, ABORTED):
            raise ValueError(f"unknown canary phase {state.phase!r}")
        return state

    def results(self, step: int) -> dict[str, analysis.StepResult]:
        """The recorded analysis of `step` per service ({} when it has none yet)."""
        for st in self.steps:
            if st["step"] == step:
                return {svc: analysis.StepResult.from_dict(r) for svc, r in (st.get("results") or {}).items()}
        return {}

    def step_record(self, step: int) -> dict[str, Any]:
        for st in self.steps:
            if st["step"] == step:
                return st
        rec: dict[str, Any] = {"step": step, "results": {}}
        self.steps.append(rec)
        return rec

    def report(self) -> dict[str, Any]:
        """The report's `rollout` (html_report.rollout_section): {strategy, phase, decision, reason, steps: one
        StepResult.as_dict() per step and service, with its service, achieved weight and load}."""
        steps = [{**res, "service": svc, "achieved": st.get("achieved", {}).get(svc, ""), "load": st.get("load", [])}
                 for st in self.steps for svc, res in (st.get("results") or {}).items()]
        return {"strategy": "canary", "phase": self.phase, "decision": self.decision, "reason": self.reason,
                "canary": self.canary, "steps": steps}

    def status_line(self) -> str:
        """`invoke status`'s line for it: phase, step, weight achieved, intervals judged."""
        if self.phase in (PROMOTED, ABORTED):
            return f"canary: {self.phase} ({self.reason})" if self.reason else f"canary: {self.phase}"
        st = next((s for s in self.steps if s["step"] == self.step), {})
        judged = sum(len(r.get("intervals") or []) for r in (st.get("results") or {}).values())
        achieved = "; ".join(f"{svc} {line}" for svc, line in (st.get("achieved") or {}).items()) or "not applied yet"
        doing = {STEP: "analysing", ABORTING: "aborting", PROMOTING: "promoting"}[self.phase]
        return (f"canary in progress: {doing} at step {self.step} ({achieved}); {judged} interval(s) judged "
                f"so far; new version {', '.join(sorted(self.canary))}")


def read_state(rt: ReleaseTarget) -> CanaryState | None:
    """The release's canary state from its ConfigMap (None when there is none, or when it holds a finished
    rollout of another strategy). StageFailed for a ConfigMap that holds no readable canary state (with the
    command that removes it) and for another strategy's rollout in progress (progressive.foreign_rollout)."""
    doc = progressive.read_doc(rt)
    if doc is None:
        return None
    if str(doc.get("strategy") or STRATEGY) != STRATEGY:
        foreign = progressive.foreign_rollout(rt, doc, STRATEGY)
        if foreign:
            raise StageFailed(foreign, "rerun the deploy with the strategy it names; `invoke status` shows it")
        return None
    try:
        return CanaryState.from_dict(doc)
    except ValueError as exc:
        raise progressive.unreadable(rt, str(exc)) from None


def stable_values(deployed: dict[str, Any]) -> dict[str, Any]:
    """A revision's user-supplied values with every service's `canary` removed: the stable version alone (and its
    `blueGreen` layout, whose blue colour, the Deployment the canary runs beside, serves: deploy() refuses a green
    one), so the one Service selects the stable and the canary pods."""
    out: dict[str, Any] = json.loads(json.dumps(deployed))
    for svc in (out.get("services") or {}).values():
        if isinstance(svc, dict):
            svc.pop("canary", None)
            svc.pop("blueGreen", None)
    return out


def step_values(base: dict[str, Any], canaries: dict[str, tuple[ImageChoice, int]]) -> dict[str, Any]:
    """`base` (stable_values) with `canary: {enabled, replicas, image}` for each service of `canaries`
    (service → (new image, replicas))."""
    out: dict[str, Any] = json.loads(json.dumps(base))
    services = out.setdefault("services", {})
    for name, (choice, replicas) in canaries.items():
        services.setdefault(name, {})["canary"] = {
            "enabled": True, "replicas": replicas,
            "image": {"repository": choice.repository, "digest": choice.digest, "tag": ""}}
    return out


class CanaryRollout:
    """One canary deploy: built by rollout._Rollout.run() once its checks passed, inside the deploy lock."""

    def __init__(self, ro: _Rollout, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str,
                 notes: list[str], merged: dict[str, Any], previous: int, current: helm.ReleaseStatus) -> None:
        self.ro, self.rt, self.cfg, self.say = ro, ro.rt, ro.cfg, ro.reporter.info
        self.rollout: Rollout = ro.env.rollout
        self.values_files, self.choices, self.dhash, self.notes = values_files, choices, dhash, notes
        self.merged, self.previous, self.current = merged, previous, current
        self.values_path = ro.cfg.state_dir / "deploy" / f"{ro.env.name}-canary-values.json"
        self.store = progressive.StateStore(ro.rt, STRATEGY, ro.manifest)

    # -- the whole rollout
    def run(self) -> DeployResult:
        state = read_state(self.rt)
        deployed = helm.get_values(self.rt.kube, self.rt.release)
        if state is not None and state.phase in IN_PROGRESS:
            wanted = {n: c.ref for n, c in self.canary_choices(state.stable).items()}
            self.store.owner = self.stable_deployments(state).get(sorted(state.canary)[0])
            if state.phase == ABORTING and state.canary == wanted:
                self.say(f"  canary: the abort of this version was interrupted ({state.reason}): finishing it")
                self.abort(state, state.reason)   # exit 5: the decision stands
            if state.canary != wanted:
                self.say(f"  canary: a canary of {', '.join(sorted(state.canary.values()))} is in progress, not of "
                         "this release's version: aborting it first (never two canaries)")
                self.clear(state, state.reason if state.phase == ABORTING else
                           "superseded by a deploy of another version")
                state = None
                deployed = helm.get_values(self.rt.kube, self.rt.release)
            else:
                self.say(f"  canary: resuming the canary in progress from the cluster's state "
                         f"(configmap/{state_name(self.rt.release)}): {state.status_line()}")
        if state is not None and state.phase not in IN_PROGRESS:
            self.say(f"  canary: the last canary {state.phase} ({state.reason}); starting this release's canary")
        if state is None or state.phase not in IN_PROGRESS:
            stable = {n: f"{(s.get('image') or {}).get('repository')}@{(s.get('image') or {}).get('digest')}"
                      for n, s in (deployed.get("services") or {}).items()
                      if isinstance(s, dict) and (s.get("image") or {}).get("digest")}
            canaries = self.canary_choices(stable)
            if not canaries:
                self.say("  canary: no service gets a new digest that can run as a canary; deploying all at once")
                return self.ro.upgrade(self.values_files, self.choices, self.dhash, self.notes, self.merged,
                                       self.previous)
            state = CanaryState(canary={n: c.ref for n, c in canaries.items()}, stable=stable,
                                stable_revision=self.current.revision)
            deps = self.stable_deployments(state)
            state.templates = {n: template_fingerprint(d) for n, d in deps.items()}
        self.store.owner = self.stable_deployments(state).get(sorted(state.canary)[0])
        if state.phase == PROMOTING:
            return self.promote(state)
        base = stable_values(helm.get_values(self.rt.kube, self.rt.release, revision=state.stable_revision))
        for number in range(max(state.step, 1), len(self.rollout.steps) + 1):
            reason = self.run_step(state, number, base)
            if reason:
                self.abort(state, reason)
        return self.promote(state)

    def canary_choices(self, stable: dict[str, str]) -> dict[str, ImageChoice]:
        """The services whose new image differs from the stable one and that can run a canary (no persistence)."""
        return progressive.second_version_choices(self.choices, stable, self.merged, self.notes,
                                                  "no canary beside it; its new digest is applied at promotion")

    def stable_deployments(self, state: CanaryState) -> dict[str, dict[str, Any]]:
        by_name = release_deployments(self.rt)
        return {n: by_name[resource_name(self.rt.release, n)] for n in state.canary
                if resource_name(self.rt.release, n) in by_name}

    def save(self, state: CanaryState) -> None:
        self.store.save(state)

    # -- one step
    def run_step(self, state: CanaryState, number: int, base: dict[str, Any]) -> str:
        """Apply step `number` and judge it; "" when it promotes, else the abort's reason."""
        step = self.rollout.steps[number - 1]
        resumed = state.results(number) if state.step == number else {}
        state.step, state.phase = number, STEP
        rec = state.step_record(number)
        rec["weight"] = step.weight
        canaries: dict[str, tuple[ImageChoice, int]] = {}
        for name, ref in state.canary.items():
            stable_n = int(((self.merged.get("services") or {}).get(name) or {}).get("replicas", 1) or 1)
            stable_n = int(((base.get("services") or {}).get(name) or {}).get("replicas", stable_n) or stable_n)
            n = canary_replicas(step.weight, stable_n, self.rollout.max_canary_replicas)
            repo, _, digest = ref.partition("@")
            canaries[name] = (ImageChoice(name, repo, digest, "manifest"), n)
            rec.setdefault("replicas", {})[name] = [n, stable_n]
            rec.setdefault("achieved", {})[name] = achieved_line(step.weight, n, stable_n,
                                                                    self.rollout.max_canary_replicas)
        self.save(state)   # before the revision: a kill during Helm's wait resumes this step
        for name in canaries:
            self.say(f"  canary step {number}/{len(self.rollout.steps)}: {name}: {rec['achieved'][name]} "
                     f"(replica ratio, no router)")
        problem = self.helm_revision(step_values(base, canaries), f"canary step {number}")
        if problem:
            return f"step {number} (weight {step.weight}%): {problem}"
        problem = self.stable_untouched(state)
        if problem:
            return f"step {number}: {problem}"
        results = self.analyse(state, number, canaries, resumed)
        aborted = [r for r in results.values() if r.decision == analysis.ABORT]
        for svc, r in results.items():
            self.say(f"  canary step {number}: {svc}: {r.decision}: {r.reason}")
        return "; ".join(f"{svc}: {r.reason}" for svc, r in results.items() if r in aborted)

    def analyse(self, state: CanaryState, number: int, canaries: dict[str, tuple[ImageChoice, int]],
                resumed: dict[str, analysis.StepResult]) -> dict[str, analysis.StepResult]:
        """Load on each track of each canary service through port-forwards, and run_step for each service in
        parallel (progressive.analyse); every interval is saved (state + manifest) as it is judged."""
        step = self.rollout.steps[number - 1]
        rec = state.step_record(number)

        def on_interval(svc: str, result: analysis.StepResult) -> None:
            with self.store.lock:
                rec["results"][svc] = result.as_dict()
            self.save(state)

        jobs = {svc: progressive.Job(analysis.Target(svc, self.rt.namespace, self.rt.release), step, number,
                                     resumed.get(svc)) for svc in canaries}
        results, rec["load"] = progressive.analyse(self.ro, self.rollout, jobs, self.forwards(canaries), on_interval)
        for svc, result in results.items():
            rec["results"][svc] = result.as_dict()
        self.say(f"  canary step {number}: load: {progressive.load_line(rec['load'])}")
        self.save(state)
        return results

    def forwards(self, canaries: dict[str, tuple[ImageChoice, int]]) -> list[tuple[str, int]]:
        """Each track of each canary service, by its Deployment and the container's port (a forward to a
        Deployment reaches one of its pods)."""
        out: list[tuple[str, int]] = []
        for name in canaries:
            full = resource_name(self.rt.release, name)
            port = int(self.merged["services"][name]["port"])
            out += [(f"deployment/{full}", port), (f"deployment/{full}-canary", port)]
        return out

    # -- Helm revisions
    def helm_revision(self, values: dict[str, Any], what: str) -> str:
        """`helm upgrade` with `values` alone (waited for, rolled back by Helm on failure); "" or the problem."""
        return progressive.helm_revision(self.ro, values, what, self.values_path)

    def stable_untouched(self, state: CanaryState) -> str:
        """"" when each stable Deployment's pod template and generation are as when the canary started."""
        now = {n: template_fingerprint(d) for n, d in self.stable_deployments(state).items()}
        changed = [n for n, fp in state.templates.items() if now.get(n) != fp]
        return (f"the stable Deployment of {', '.join(changed)} changed under the canary (pod template or "
                "generation): the chart or its values changed with this release") if changed else ""

    def clear(self, state: CanaryState, reason: str) -> str:
        """The canary removed by one Helm revision of the stable revision's values; the state and the manifest
        record the decision. Returns what became of the stable version, in words; DeployFailed when the
        revision failed (the state stays `aborting`: a rerun finishes it)."""
        state.phase, state.decision, state.reason = ABORTING, analysis.ABORT, reason
        self.save(state)
        base = stable_values(helm.get_values(self.rt.kube, self.rt.release, revision=state.stable_revision))
        problem = self.helm_revision(base, "canary abort: the stable version alone")
        untouched = self.stable_untouched(state)
        if problem:
            raise DeployFailed(f"canary abort of {self.ro.env.name} failed: {problem}",
                               f"rerun the deploy (it finishes the abort); `invoke status --env {self.ro.env.name}`")
        state.phase = ABORTED
        self.save(state)
        kept = ("the stable version untouched (its pod template and generation unchanged throughout)" if not untouched
                else f"but {untouched}")
        self.say(f"  canary aborted: {reason}; canary at 0, {kept}")
        return kept

    def abort(self, state: CanaryState, reason: str) -> NoReturn:
        """clear(), each service's deploy recorded as rolled back, then DeployFailed (exit 5) with the reason."""
        kept = self.clear(state, reason)
        after = helm.status(self.rt.kube, self.rt.release)
        self.ro.record(self.choices, DeployStatus.ROLLED_BACK, after.revision if after else 0,
                       reason=f"canary aborted: {reason}")
        raise DeployFailed(f"canary of {self.ro.env.name} aborted: {reason}; revision {state.stable_revision}'s "
                           f"version serves, {kept}",
                           f"see the analysis in the report; `invoke status --env {self.ro.env.name}`")

    def promote(self, state: CanaryState) -> DeployResult:
        """The new version as stable, canary disabled: the deploy's own upgrade (wait, verify, record)."""
        state.phase = PROMOTING
        self.save(state)
        self.say(f"  canary: every step passed; promoting {', '.join(sorted(state.canary))} as stable")
        try:
            result = self.ro.upgrade(self.values_files, self.choices, self.dhash, self.notes, self.merged,
                                     self.previous)
        except DeployFailed as exc:   # Helm went back to the last step's revision: the canary must not stay
            self.abort(state, f"the promotion failed: {exc.message}")
            raise
        state.phase, state.decision = PROMOTED, "promote"
        state.reason = f"{len(self.rollout.steps)} step(s) passed; promoted at revision {result.revision}"
        self.save(state)
        return result


def deploy(ro: _Rollout, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str, notes: list[str],
           merged: dict[str, Any], previous: int, current: helm.ReleaseStatus | None) -> DeployResult:
    """The canary strategy's entry from rollout._Rollout.run() (inside the deploy lock, checks passed): a canary
    beside the deployed revision, or all at once when there is none (first install). UsageError (exit 2) when
    the environment has no Prometheus to judge with or names a router; DeployFailed (exit 5) on an abort."""
    env = ro.env
    if source(env) == "none":
        raise UsageError(f"environment {env.name} runs a canary but has no Prometheus to judge it with",
                         f"set [environments.{env.name}.rollout] prometheus = URL")
    if env.rollout.router != "none":
        raise UsageError(f"environments.{env.name}.rollout.router = '{env.rollout.router}': this version weighs a "
                         "canary by its replica ratio only (no router in front)", 'set router = "none"')
    if current is None or current.status != "deployed":
        ro.reporter.info("  canary: no deployed revision to run beside (first install): deploying all at once")
        return ro.upgrade(values_files, choices, dhash, notes, merged, previous)
    green = sorted(n for n, s in (helm.get_values(ro.rt.kube, ro.rt.release).get("services") or {}).items()
                   if isinstance(s, dict) and (s.get("blueGreen") or {}).get("enabled")
                   and (s.get("blueGreen") or {}).get("active") == "green")
    if green:
        raise UsageError(f"environment {env.name}: {', '.join(green)} serve(s) from the green colour of a blue-green "
                         "deploy; a canary runs beside the service's own Deployment (blue), which does not serve",
                         'deploy once with strategy = "blue-green" (it switches to blue) before a canary')
    return CanaryRollout(ro, values_files, choices, dhash, notes, merged, previous, current).run()
