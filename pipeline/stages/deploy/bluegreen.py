"""The blue-green strategy of the deploy stage (`[environments.<env>.rollout] strategy = "blue-green"`): the new
version comes up as the colour that does not serve, is judged on its preview Service, takes over by a switch of the
main Service's selector, is judged again while it serves, and is switched back when that fails.

The colours are the chart's (services.<name>.blueGreen, helm/veza/templates/deployment.yaml): blue is the
service's own Deployment `<name>` (its pods keep track "stable"), green is `<name>-green` (track "green"); the main
Service selects the active colour's track, `<name>-preview` the other one's. Every step is one Helm revision of the
values of the revision that served when the rollout started plus the colours' layout, so Helm's history is the
record of what served:

  preview      the new colour at the old one's replica count beside it; the main Service keeps its pods (its
               selector names the active track); wait Ready → the load loop through port-forwards on 127.0.0.1 to
               `<name>-preview` (the new version) and `<name>` (the old one, the baseline) while
               analysis.run_step judges the new track for preview_analysis_s
  switch       the main Service selects the new colour; the old one keeps running, untouched
  post         the same analysis for post_promotion_analysis_s, the new version serving (`<name>`), the old one
               reached through `<name>-preview`
  keep         the old colour stays up keep_old_s seconds, ready to be switched back to
  retire       the deploy's ordinary upgrade (this release's values, waited for and verified) with the old colour
               at 0 replicas
A failed preview (abort) or post-promotion analysis (switch back) is one revision: the old colour active, the new
one at 0; the old colour's pod template and generation are checked unchanged through every revision; exit 5 with
the decision's reason.

The state is progressive.py's ConfigMap `<release>-rollout` and the manifest's `rollout` key, written before each
revision and after each judged interval. A rerun after `kill -9` continues from its phase: an analysis from its
recorded intervals, a keep from its recorded start, an interrupted abort or switch back is finished; a rollout of
another version in progress is first undone (before its post-promotion analysis passed) or retired (after), so
there is never more than one preview. The first install, and a deploy that changes no digest that can run as a
colour, go all at once. A service with a persistent volume cannot run two colours (ReadWriteOnce): its new digest
is applied by the last revision, said so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pipeline.core.config_rollout import Rollout, Step
from pipeline.core.errors import DeployFailed, StageFailed, UsageError
from pipeline.core.manifest import atomic_write
from pipeline.core.vocab import DeployStatus, now_iso
from pipeline.stages.deploy import analysis, progressive
from pipeline.stages.deploy.monitoring import source
from pipeline.stages.deploy.status import release_deployments
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import (
    ImageChoice,
    active_colour,
    colour_deployment,
    deep_merge,
    resource_name,
)
from pipeline.tools import helm

if TYPE_CHECKING:
    from pipeline.stages.deploy.rollout import DeployResult, _Rollout

STRATEGY = "blue-green"
TRACK = {"blue": "stable", "green": "green"}   # the pods' veza.io/track per colour (the chart's)
# phases: in progress, then finished (progressive.FINISHED)
PREVIEW, ABORTING, SWITCHING, POST, SWITCHING_BACK, KEEPING, RETIRING = (
    "preview", "aborting", "switching", "post-promotion", "switching-back", "keeping", "retiring")
PROMOTED, ABORTED, SWITCHED_BACK = "promoted", "aborted", "switched-back"
IN_PROGRESS = (PREVIEW, ABORTING, SWITCHING, POST, SWITCHING_BACK, KEEPING, RETIRING)
PHASES = (*IN_PROGRESS, PROMOTED, ABORTED, SWITCHED_BACK)
# the two analyses, as steps of analysis.run_step
PREVIEW_STEP, POST_STEP = 1, 2
_DOING = {PREVIEW: "analysing the preview", ABORTING: "aborting the preview", SWITCHING: "switching",
          POST: "post-promotion analysis", SWITCHING_BACK: "switching back", KEEPING: "keeping the old colour",
          RETIRING: "scaling the old colour to 0"}


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def ref_image(ref: str) -> dict[str, str]:
    """repository@digest → the chart's image values."""
    repo, _, digest = ref.partition("@")
    return {"repository": repo, "digest": digest, "tag": ""}


@dataclass
class BlueGreenState:
    """The rollout's progress, as stored in the cluster and the manifest (as_dict / from_dict).

    new / old: service → repository@digest of the new version and of the one serving when it started; colours:
    service → the new version's colour (the old one runs the other); replicas: service → the replica count of
    each colour; stable_revision: the Helm revision it started from; templates: service → the old colour
    Deployment's template_fingerprint then; phase: one of PHASES; analyses: per analysis {step (PREVIEW_STEP |
    POST_STEP), title, results: {service: StepResult.as_dict()}, load: [LoadRecord.as_dict()]}; kept_since: unix
    time the post-promotion analysis passed (the keep_old_s delay runs from it; 0: not yet)."""

    new: dict[str, str]
    old: dict[str, str]
    colours: dict[str, str]
    replicas: dict[str, int]
    stable_revision: int
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = PREVIEW
    analyses: list[dict[str, Any]] = field(default_factory=list)
    kept_since: float = 0.0
    decision: str = ""
    reason: str = ""
    started: str = field(default_factory=now_iso)
    updated: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": STRATEGY, "new": self.new, "old": self.old, "colours": self.colours,
                "replicas": self.replicas, "stable_revision": self.stable_revision, "templates": self.templates,
                "phase": self.phase, "analyses": self.analyses, "kept_since": self.kept_since,
                "decision": self.decision, "reason": self.reason, "started": self.started, "updated": self.updated}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BlueGreenState:
        """The state as_dict() wrote. ValueError for a document of another shape (each analysis's results are read
        by analysis.StepResult.from_dict)."""
        try:
            if doc.get("strategy") != STRATEGY:
                raise ValueError(f"strategy {doc.get('strategy')!r}")
            state = cls(new={str(k): str(v) for k, v in doc["new"].items()},
                        old={str(k): str(v) for k, v in doc["old"].items()},
                        colours={str(k): str(v) for k, v in doc["colours"].items()},
                        replicas={str(k): int(v) for k, v in doc["replicas"].items()},
                        stable_revision=int(doc["stable_revision"]), templates=dict(doc.get("templates") or {}),
                        phase=str(doc["phase"]), analyses=list(doc["analyses"]),
                        kept_since=float(doc.get("kept_since") or 0), decision=str(doc.get("decision") or ""),
                        reason=str(doc.get("reason") or ""), started=str(doc.get("started") or ""),
                        updated=str(doc.get("updated") or ""))
            for rec in state.analyses:
                for res in (rec.get("results") or {}).values():
                    analysis.StepResult.from_dict(res)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a blue-green rollout state ({type(exc).__name__}: {exc})") from None
        if state.phase not in PHASES:
            raise ValueError(f"unknown blue-green phase {state.phase!r}")
        if set(state.colours.values()) - {"blue", "green"} or set(state.colours) != set(state.new):
            raise ValueError(f"blue-green colours {state.colours} do not name blue or green for each new service")
        return state

    def record(self, step: int) -> dict[str, Any]:
        """The record of analysis `step` (PREVIEW_STEP | POST_STEP), created empty when it has none."""
        for found in self.analyses:
            if found["step"] == step:
                return found
        rec: dict[str, Any] = {"step": step, "title": "", "results": {}}
        self.analyses.append(rec)
        return rec

    def results(self, step: int) -> dict[str, analysis.StepResult]:
        """The recorded analysis `step` per service ({} when it has none yet)."""
        for rec in self.analyses:
            if rec["step"] == step:
                return {svc: analysis.StepResult.from_dict(r) for svc, r in (rec.get("results") or {}).items()}
        return {}

    def colour_line(self) -> str:
        """"veza-docs: blue serves, green previews" (the phase decides which one serves)."""
        serving_new = self.phase in (POST, KEEPING, RETIRING, PROMOTED)
        parts = []
        for svc, new in sorted(self.colours.items()):
            old = other(new)
            if serving_new:
                parts.append(f"{svc}: {new} serves the new version, {old} "
                             + ("at 0" if self.phase == PROMOTED else "kept"))
            elif self.phase in (ABORTED, SWITCHED_BACK):
                parts.append(f"{svc}: {old} serves, {new} at 0")
            else:
                parts.append(f"{svc}: {old} serves, {new} previews the new version")
        return "; ".join(parts)

    def report(self) -> dict[str, Any]:
        """The report's `rollout` (html_report.rollout_section): {strategy, phase, decision, reason, colours,
        steps: one StepResult.as_dict() per analysis and service, with its service, title and load}."""
        steps = [{**res, "service": svc, "title": rec.get("title", ""), "load": rec.get("load", [])}
                 for rec in self.analyses for svc, res in (rec.get("results") or {}).items()]
        return {"strategy": STRATEGY, "phase": self.phase, "decision": self.decision, "reason": self.reason,
                "new": self.new, "colours": self.colours, "active": self.active(), "steps": steps}

    def active(self) -> dict[str, str]:
        """service → the colour the main Service selects in this phase (the switch revision moves it; a rerun
        of an interrupted switch or switch back applies it again)."""
        serving_new = self.phase in (POST, KEEPING, RETIRING, PROMOTED)
        return {svc: new if serving_new else other(new) for svc, new in self.colours.items()}

    def status_line(self) -> str:
        """`invoke status`'s line: phase, which colour serves and which previews, intervals judged."""
        if self.phase not in IN_PROGRESS:
            line = f"blue-green: {self.phase} ({self.colour_line()})"
            return f"{line}: {self.reason}" if self.reason else line
        judged = sum(len(r.get("intervals") or []) for rec in self.analyses
                     for r in (rec.get("results") or {}).values())
        versions = ", ".join(f"{s} {r.partition('@')[2][:19]}" for s, r in sorted(self.new.items()))
        return (f"blue-green in progress: {_DOING[self.phase]} ({self.colour_line()}); {judged} interval(s) judged "
                f"so far; new version {versions}")


def resume_plan(state: BlueGreenState | None, wanted: dict[str, str]) -> str:
    """What a deploy of `wanted` (service → repository@digest of the new version) does with the recorded `state`:
    "fresh" (none, or a finished one: start this release's rollout), "continue" (this version's rollout in
    progress), "undo" (another version's, before its post-promotion analysis passed: the old colour active again,
    the new one at 0) or "retire" (another version's that passed: its old colour to 0, then this one's)."""
    if state is None or state.phase not in IN_PROGRESS:
        return "fresh"
    if state.new == wanted:
        return "continue"
    return "retire" if state.phase in (KEEPING, RETIRING) else "undo"


def keep_remaining(state: BlueGreenState, keep_old_s: int, now: float) -> float:
    """Seconds the old colour must still be kept (0 when the delay has run out, or none was started)."""
    if not state.kept_since:
        return float(keep_old_s)
    return max(0.0, state.kept_since + keep_old_s - now)


def base_values(deployed: dict[str, Any]) -> dict[str, Any]:
    """A revision's user-supplied values with every service's `canary` removed (a blue-green runs no canary)."""
    out: dict[str, Any] = json.loads(json.dumps(deployed))
    for svc in (out.get("services") or {}).values():
        if isinstance(svc, dict):
            svc.pop("canary", None)
    return out


def layout_values(base: dict[str, Any], state: BlueGreenState, phase: str) -> dict[str, Any]:
    """`base` with each of the rollout's services laid out for `phase`:
    PREVIEW: the old colour active (the old image), the new one standby with the new image at full replicas;
    SWITCHING: the new colour active (the new image), the old one standby at full replicas (its pods unchanged);
    ABORTING / SWITCHING_BACK: the old colour active, the new one standby at 0 replicas;
    RETIRING: the new colour active, the old one standby at 0. ValueError for another phase."""
    out: dict[str, Any] = json.loads(json.dumps(base))
    services = out.setdefault("services", {})
    for name, colour in state.colours.items():
        new, old, n = state.new[name], state.old[name], state.replicas[name]
        if phase == PREVIEW:
            active, image, standby, replicas = other(colour), old, new, n
        elif phase == SWITCHING:
            active, image, standby, replicas = colour, new, old, n
        elif phase in (ABORTING, SWITCHING_BACK):
            active, image, standby, replicas = other(colour), old, new, 0
        elif phase == RETIRING:
            active, image, standby, replicas = colour, new, old, 0
        else:
            raise ValueError(f"no layout for phase {phase!r}")
        svc = services.setdefault(name, {})
        svc["image"] = ref_image(image)
        svc["blueGreen"] = {"enabled": True, "active": active,
                            "standby": {"image": ref_image(standby), "replicas": replicas}}
    return out


def carried_layout(deployed: dict[str, Any] | None) -> dict[str, Any]:
    """For a deploy of any strategy: the layout of each service whose green colour serves in the `deployed`
    values, kept (green active, blue at 0), so an ordinary upgrade rolls the serving colour rather than bringing
    blue back from 0 while green goes away. {} when no green serves (the chart's plain rendering)."""
    services: dict[str, Any] = {}
    for name, svc in ((deployed or {}).get("services") or {}).items():
        if isinstance(svc, dict) and active_colour(deployed or {}, name) == "green":
            standby = dict((svc.get("blueGreen") or {}).get("standby") or {})
            services[name] = {"blueGreen": {"enabled": True, "active": "green",
                                            "standby": {**standby, "replicas": 0}}}
    return {"services": services} if services else {}


def read_state(rt: ReleaseTarget) -> BlueGreenState | None:
    """The release's blue-green state from its ConfigMap (None when there is none, or a finished rollout of
    another strategy). StageFailed for one that cannot be read and for another strategy's rollout in progress."""
    doc = progressive.read_doc(rt)
    if doc is None:
        return None
    if doc.get("strategy") != STRATEGY:
        foreign = progressive.foreign_rollout(rt, doc, STRATEGY)
        if foreign:
            raise StageFailed(foreign, "rerun the deploy with the strategy it names; `invoke status` shows it")
        return None
    try:
        return BlueGreenState.from_dict(doc)
    except ValueError as exc:
        raise progressive.unreadable(rt, str(exc)) from None


class BlueGreenRollout:
    """One blue-green deploy: built by deploy() once the deploy's checks passed, inside the deploy lock."""

    def __init__(self, ro: _Rollout, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str,
                 notes: list[str], merged: dict[str, Any], previous: int, current: helm.ReleaseStatus) -> None:
        self.ro, self.rt, self.say = ro, ro.rt, ro.reporter.info
        self.rollout: Rollout = ro.env.rollout
        self.values_files, self.choices, self.dhash, self.notes = values_files, choices, dhash, notes
        self.merged, self.previous, self.current = merged, previous, current
        deploy_dir = ro.cfg.state_dir / "deploy"
        self.values_path = deploy_dir / f"{ro.env.name}-bluegreen-values.json"
        self.layout_path = deploy_dir / f"{ro.env.name}-bluegreen-layout.json"
        self.store = progressive.StateStore(ro.rt, STRATEGY, ro.manifest)

    # -- the whole rollout
    def run(self) -> DeployResult:
        state = read_state(self.rt)
        wanted = {n: c.ref for n, c in self.candidates(state.old).items()} if state is not None else {}
        plan = resume_plan(state, wanted)
        if state is not None and plan != "fresh":
            self.store.owner = self.old_deployments(state).get(sorted(state.new)[0])
        if state is not None and plan == "continue":
            self.say(f"  blue-green: resuming the rollout in progress from the cluster's state "
                     f"(configmap/{progressive.state_name(self.rt.release)}): {state.status_line()}")
            return self.advance(state)
        if state is not None and plan in ("undo", "retire"):
            self.say(f"  blue-green: a rollout of {', '.join(sorted(state.new.values()))} is in progress "
                     f"({state.phase}), not of this release's version: "
                     + ("undoing it first (never two previews)" if plan == "undo" else
                        "its post-promotion analysis passed: retiring its old colour first"))
            if plan == "undo":   # the same layout either way; the phase says whether it had been switched
                self.undo(state, state.reason if state.phase in (ABORTING, SWITCHING_BACK) else
                          "superseded by a deploy of another version",
                          phase=SWITCHING_BACK if state.phase in (SWITCHING, POST, SWITCHING_BACK) else ABORTING)
            else:
                self.retire_early(state)
        elif state is not None:
            self.say(f"  blue-green: the last rollout {state.phase} ({state.reason}); starting this release's")
        deployed = helm.get_values(self.rt.kube, self.rt.release)
        old = {n: f"{(s.get('image') or {}).get('repository')}@{(s.get('image') or {}).get('digest')}"
               for n, s in (deployed.get("services") or {}).items()
               if isinstance(s, dict) and (s.get("image") or {}).get("digest")}
        new = self.candidates(old)
        if not new:
            self.say("  blue-green: no service gets a new digest that can run as a colour; deploying all at once")
            return self.ro.upgrade(self.values_files, self.choices, self.dhash, self.notes, self.merged, self.previous)
        current = helm.status(self.rt.kube, self.rt.release)
        base = base_values(deployed)
        state = BlueGreenState(
            new={n: c.ref for n, c in new.items()}, old={n: old[n] for n in new},
            colours={n: other(active_colour(deployed, n)) for n in new},
            replicas={n: self.replicas(base, n) for n in new},
            stable_revision=current.revision if current is not None else self.current.revision)
        deps = self.old_deployments(state)
        missing = sorted(set(new) - set(deps))
        if missing:
            raise StageFailed(f"blue-green of {self.ro.env.name}: the serving Deployment of {', '.join(missing)} "
                              "does not exist", f"`invoke status --env {self.ro.env.name}`; deploy all at once first")
        state.templates = {n: progressive.template_fingerprint(d) for n, d in deps.items()}
        self.store.owner = deps.get(sorted(state.new)[0])
        return self.advance(state)

    def advance(self, state: BlueGreenState) -> DeployResult:
        """From the state's phase to the end: each phase's work, recorded before the next one starts."""
        if state.phase == ABORTING:
            self.abort(state, state.reason)
        if state.phase == SWITCHING_BACK:
            self.switch_back(state, state.reason)
        if state.phase == PREVIEW:
            reason = self.preview(state)
            if reason:
                self.abort(state, reason)
            state.phase = SWITCHING
        if state.phase == SWITCHING:
            reason = self.switch(state)
            if reason:
                self.switch_back(state, reason)
        if state.phase == POST:
            reason = self.post_promotion(state)
            if reason:
                self.switch_back(state, reason)
            state.phase, state.kept_since = KEEPING, time.time()
            self.save(state)
        if state.phase == KEEPING:
            self.keep(state)
        return self.retire(state)

    def candidates(self, old: dict[str, str]) -> dict[str, ImageChoice]:
        """The services whose new image differs from the serving one and that can run two colours."""
        return progressive.second_version_choices(self.choices, old, self.merged, self.notes,
                                                  "no second colour beside it; its new digest is applied by the last "
                                                  "revision")

    def replicas(self, base: dict[str, Any], name: str) -> int:
        merged = int(((self.merged.get("services") or {}).get(name) or {}).get("replicas", 1) or 1)
        return int(((base.get("services") or {}).get(name) or {}).get("replicas", merged) or merged)

    def deployments(self) -> dict[str, dict[str, Any]]:
        return release_deployments(self.rt)

    def old_deployments(self, state: BlueGreenState) -> dict[str, dict[str, Any]]:
        """service → the Deployment of the colour that served when the rollout started."""
        by_name = self.deployments()
        names = {n: colour_deployment(self.rt.release, n, other(c)) for n, c in state.colours.items()}
        return {n: by_name[full] for n, full in names.items() if full in by_name}

    def save(self, state: BlueGreenState) -> None:
        self.store.save(state)

    def base(self, state: BlueGreenState) -> dict[str, Any]:
        return base_values(helm.get_values(self.rt.kube, self.rt.release, revision=state.stable_revision))

    def old_untouched(self, state: BlueGreenState) -> str:
        """"" when each old colour's pod template and generation are as when the rollout started."""
        changed = progressive.changed_templates(state.templates, self.old_deployments(state))
        return (f"the serving Deployment of {', '.join(changed)} changed under the rollout (pod template or "
                "generation): the chart or its values changed with this release") if changed else ""

    def revision(self, state: BlueGreenState, phase: str, what: str) -> str:
        """One Helm revision of the starting revision's values laid out for `phase`; "" or the problem."""
        return progressive.helm_revision(self.ro, layout_values(self.base(state), state, phase), what,
                                         self.values_path)

    # -- the phases
    def preview(self, state: BlueGreenState) -> str:
        """The new colour up beside the old one, then judged on its preview Service; "" when it passed, else why."""
        self.save(state)   # before the revision: a kill during Helm's wait resumes the preview
        for name, colour in state.colours.items():
            self.say(f"  blue-green preview: {name}: {state.new[name]} as {colour} "
                     f"({colour_deployment(self.rt.release, name, colour)}, {state.replicas[name]} replica(s)) beside "
                     f"{other(colour)}, which keeps serving; svc/{resource_name(self.rt.release, name)}-preview "
                     f"selects {colour}")
        problem = self.revision(state, PREVIEW, "blue-green preview") or self.old_untouched(state)
        if problem:
            return f"preview: {problem}"
        return self.analyse(state, PREVIEW_STEP)

    def switch(self, state: BlueGreenState) -> str:
        """The main Service onto the new colour (one revision); "" or the problem."""
        state.phase = SWITCHING
        self.save(state)
        problem = self.revision(state, SWITCHING, "blue-green switch") or self.old_untouched(state)
        if problem:
            return f"switch: {problem}"
        state.phase = POST
        self.save(state)
        for name, colour in state.colours.items():
            self.say(f"  blue-green switch: svc/{resource_name(self.rt.release, name)} selects {colour} "
                     f"(the new version); {other(colour)} kept, untouched")
        return ""

    def post_promotion(self, state: BlueGreenState) -> str:
        return self.analyse(state, POST_STEP)

    def analyse(self, state: BlueGreenState, step_number: int) -> str:
        """The preview or post-promotion analysis of every service at once, continued from its recorded intervals;
        "" when every service passed, else the reasons of those that did not."""
        preview = step_number == PREVIEW_STEP
        seconds = self.rollout.preview_analysis_s if preview else self.rollout.post_promotion_analysis_s
        step = Step(weight=0 if preview else 100, analysis_s=seconds)
        label = "preview analysis" if preview else "post-promotion analysis"
        rec = state.record(step_number)
        resumed = state.results(step_number)
        jobs: dict[str, progressive.Job] = {}
        forwards: list[tuple[str, int]] = []
        for name, colour in state.colours.items():
            rec["title"] = (f"Preview analysis ({colour} on its preview Service, {seconds}s)" if preview else
                            f"Post-promotion analysis ({colour} serving, {seconds}s)")
            target = analysis.Target(name, self.rt.namespace, self.rt.release, canary_track=TRACK[colour],
                                     baseline_track=TRACK[other(colour)])
            jobs[name] = progressive.Job(target, step, step_number, resumed.get(name), label)
            full = resource_name(self.rt.release, name)
            port = int(self.merged["services"][name]["service"]["port"])
            # the new version and the old one (the baseline), each through its own Service
            forwards += [(f"svc/{full}-preview", port), (f"svc/{full}", port)]
        self.save(state)

        def on_interval(svc: str, result: analysis.StepResult) -> None:
            with self.store.lock:
                rec["results"][svc] = result.as_dict()
            self.save(state)

        results, rec["load"] = progressive.analyse(self.ro, self.rollout, jobs, forwards, on_interval)
        for svc, result in results.items():
            rec["results"][svc] = result.as_dict()
            self.say(f"  blue-green {label}: {svc}: {result.decision}: {result.reason}")
        self.say(f"  blue-green {label}: load: {progressive.load_line(rec['load'])}")
        self.save(state)
        return "; ".join(f"{svc}: {r.reason}" for svc, r in results.items() if r.decision == analysis.ABORT)

    def keep(self, state: BlueGreenState) -> None:
        """Wait until keep_old_s has run since the post-promotion analysis passed (a rerun waits what is left)."""
        left = keep_remaining(state, self.rollout.keep_old_s, time.time())
        olds = ", ".join(f"{n} {other(c)}" for n, c in sorted(state.colours.items()))
        self.say(f"  blue-green: post-promotion analysis passed; keeping the old colour ({olds}) {left:.0f}s more "
                 f"(keep_old_s = {self.rollout.keep_old_s}), ready to switch back")
        time.sleep(left)
        state.phase = RETIRING
        self.save(state)

    def retire(self, state: BlueGreenState) -> DeployResult:
        """The deploy's ordinary upgrade (this release's values, waited for and verified, recorded) with the new
        colour active and the old one at 0."""
        state.phase = RETIRING
        self.save(state)
        layout = layout_values({}, state, RETIRING)
        for svc in layout["services"].values():
            svc.pop("image")   # the release's own values name it (the generated values)
        atomic_write(self.layout_path, json.dumps(layout, indent=2, sort_keys=True) + "\n")
        before = helm.status(self.rt.kube, self.rt.release)
        try:
            result = self.ro.upgrade([*self.values_files, self.layout_path], self.choices, self.dhash, self.notes,
                                     deep_merge(self.merged, layout), before.revision if before else self.previous)
        except DeployFailed as exc:   # Helm went back to the switched revision: the new version still serves
            raise DeployFailed(f"blue-green of {self.ro.env.name}: scaling the old colour to 0 failed: {exc.message}",
                               "rerun the deploy (it finishes from the state in the cluster); "
                               f"`invoke status --env {self.ro.env.name}`") from None
        state.phase, state.decision = PROMOTED, "promote"
        state.reason = (f"preview and post-promotion analyses passed; {state.colour_line()} at revision "
                        f"{result.revision}")
        self.save(state)
        return result

    # -- going back
    def undo(self, state: BlueGreenState, reason: str, *, phase: str = ABORTING) -> str:
        """One revision with the old colour active and the new one at 0 (ABORTING: a preview that failed or was
        superseded; SWITCHING_BACK: after the switch); the state records the decision. Returns what became of
        the old colour, in words; DeployFailed when the revision failed (a rerun finishes it)."""
        state.phase, state.decision, state.reason = phase, "abort" if phase == ABORTING else "switch-back", reason
        self.save(state)
        what = "blue-green abort" if phase == ABORTING else "blue-green switch back"
        problem = self.revision(state, phase, f"{what}: the old colour active, the new one at 0")
        untouched = self.old_untouched(state)
        if problem:
            raise DeployFailed(f"{what} of {self.ro.env.name} failed: {problem}",
                               f"rerun the deploy (it finishes it); `invoke status --env {self.ro.env.name}`")
        state.phase = ABORTED if phase == ABORTING else SWITCHED_BACK
        self.save(state)
        kept = ("the old colour untouched (its pod template and generation unchanged throughout)" if not untouched
                else f"but {untouched}")
        self.say(f"  {what}: {reason}; {state.colour_line()}, {kept}")
        return kept

    def abort(self, state: BlueGreenState, reason: str) -> NoReturn:
        kept = self.undo(state, reason, phase=ABORTING)
        self.fail(state, f"blue-green of {self.ro.env.name} aborted before the switch: {reason}; the old version "
                         f"served throughout, {kept}")

    def switch_back(self, state: BlueGreenState, reason: str) -> NoReturn:
        kept = self.undo(state, reason, phase=SWITCHING_BACK)
        self.fail(state, f"blue-green of {self.ro.env.name} switched back: {reason}; the old version serves again, "
                         f"{kept}")

    def fail(self, state: BlueGreenState, message: str) -> NoReturn:
        after = helm.status(self.rt.kube, self.rt.release)
        self.ro.record(self.choices, DeployStatus.ROLLED_BACK, after.revision if after else 0,
                       reason=f"blue-green {state.phase}: {state.reason}")
        raise DeployFailed(message, f"see the analysis in the report; `invoke status --env {self.ro.env.name}`")

    def retire_early(self, state: BlueGreenState) -> None:
        """Another version's rollout whose post-promotion analysis passed: its old colour to 0 now (one revision
        of the current values), recorded as promoted."""
        state.phase = RETIRING
        self.save(state)
        current = base_values(helm.get_values(self.rt.kube, self.rt.release))
        for name in state.colours:
            bg = ((current.get("services") or {}).get(name) or {}).get("blueGreen") or {}
            if bg.get("standby"):
                bg["standby"]["replicas"] = 0
        problem = progressive.helm_revision(self.ro, current, "blue-green: the superseded rollout's old colour to 0",
                                            self.values_path)
        if problem:
            raise DeployFailed(f"blue-green of {self.ro.env.name}: {problem}",
                               f"rerun the deploy; `invoke status --env {self.ro.env.name}`")
        state.phase, state.decision = PROMOTED, "promote"
        state.reason = "post-promotion analysis passed; old colour retired early by the next deploy"
        self.save(state)


def deploy(ro: _Rollout, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str, notes: list[str],
           merged: dict[str, Any], previous: int, current: helm.ReleaseStatus | None) -> DeployResult:
    """The blue-green strategy's entry from rollout._Rollout.run() (inside the deploy lock, checks passed): the new
    colour beside the serving one, or all at once when nothing serves yet (first install). UsageError (exit 2)
    when the environment has no Prometheus to judge with; DeployFailed (exit 5) on an abort or a switch back."""
    env = ro.env
    if source(env) == "none":
        raise UsageError(f"environment {env.name} runs blue-green but has no Prometheus to judge it with",
                         f"set [environments.{env.name}.rollout] prometheus = URL")
    if current is None or current.status != "deployed":
        ro.reporter.info("  blue-green: no deployed revision to run beside (first install): deploying all at once")
        return ro.upgrade(values_files, choices, dhash, notes, merged, previous)
    return BlueGreenRollout(ro, values_files, choices, dhash, notes, merged, previous, current).run()
