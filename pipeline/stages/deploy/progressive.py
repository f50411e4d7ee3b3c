"""What the progressive strategies share (canary.py, bluegreen.py): the rollout's state in the cluster, the "old
version untouched" fingerprint, a Helm revision of explicit values, and an analysis with its load.

The state of a release's rollout is one ConfigMap, `<release>-rollout` (label veza.io/rollout-state = its
strategy), holding the JSON of the strategy's state under `state.json`, owned by a Deployment of the version that
served when it started (ownerReference: an uninstall takes it with it). Each strategy reads and writes its own
shape; a state of the other strategy still in progress stops a deploy (foreign_rollout), so a strategy changed in
pipeline.toml never leaves two new versions beside the old one. Phases named in FINISHED are history: the next
rollout of either strategy overwrites them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.core.config_rollout import Rollout, Step, duration_s
from pipeline.core.errors import StageFailed
from pipeline.core.manifest import Manifest, atomic_write
from pipeline.core.vocab import now_iso
from pipeline.stages.deploy import analysis
from pipeline.stages.deploy.load import LoadLoop
from pipeline.stages.deploy.monitoring import prometheus_url
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import helm, kubectl, prometheus

if TYPE_CHECKING:
    from pipeline.stages.deploy.rollout import _Rollout
    from pipeline.stages.deploy.values import ImageChoice

STATE_LABEL = "veza.io/rollout-state"
STATE_KEY = "state.json"
FINISHED = ("promoted", "aborted", "switched-back")   # a rollout in one of these phases is over


class RolloutState(Protocol):
    phase: str
    updated: str

    def as_dict(self) -> dict[str, Any]: ...
    def report(self) -> dict[str, Any]: ...


def state_name(release: str) -> str:
    return f"{release}-rollout"


def read_doc(rt: ReleaseTarget) -> dict[str, Any] | None:
    """The release's rollout state as the JSON its strategy wrote (None: no ConfigMap). StageFailed with the
    command that removes it when the ConfigMap holds no JSON object."""
    doc = kubectl.get_json(rt.kube, "configmap", state_name(rt.release), ignore_not_found=True)
    if not doc:
        return None
    raw = (doc.get("data") or {}).get(STATE_KEY, "")
    try:
        state = json.loads(raw)
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
    except ValueError as exc:
        raise unreadable(rt, f"{type(exc).__name__}: {exc}") from None
    return state


def unreadable(rt: ReleaseTarget, why: str) -> StageFailed:
    return StageFailed(f"configmap/{state_name(rt.release)} in {rt.namespace} holds no readable rollout state: {why}",
                       f"inspect it; remove it with kubectl -n {rt.namespace} delete configmap "
                       f"{state_name(rt.release)} once no rollout runs")


def foreign_rollout(rt: ReleaseTarget, doc: dict[str, Any], strategy: str) -> str | None:
    """None when `doc` is `strategy`'s own state or a finished one of another strategy; else the line that stops a
    deploy by `strategy` (another strategy's rollout is in progress: its new version still runs beside the old)."""
    theirs = str(doc.get("strategy") or "canary")
    if theirs == strategy or str(doc.get("phase")) in FINISHED:
        return None
    return (f"a {theirs} rollout of release {rt.release} in {rt.namespace} is in progress (phase "
            f"{doc.get('phase')}), and this deploy's strategy is {strategy}: finish it with strategy = "
            f'"{theirs}" (a rerun continues it) before changing strategy')


def write_state(rt: ReleaseTarget, strategy: str, state: RolloutState, owner: dict[str, Any] | None) -> None:
    """Apply the ConfigMap holding `state` (owned by `owner`, a Deployment as kubectl gives it, when given)."""
    state.updated = now_iso()
    meta: dict[str, Any] = {"name": state_name(rt.release), "namespace": rt.namespace,
                            "labels": {"app.kubernetes.io/instance": rt.release, STATE_LABEL: strategy}}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
           "data": {STATE_KEY: json.dumps(state.as_dict(), sort_keys=True)}}
    kubectl.apply(rt.kube, json.dumps(doc))


class StateStore:
    """Where a rollout records itself after every change: the ConfigMap and the manifest's `rollout` key (the
    report's source). Thread-safe: the analyses of several services record their intervals in parallel."""

    def __init__(self, rt: ReleaseTarget, strategy: str, manifest: Manifest | None) -> None:
        self.rt, self.strategy, self.manifest = rt, strategy, manifest
        self.owner: dict[str, Any] | None = None
        self.lock = threading.Lock()

    def save(self, state: RolloutState) -> None:
        with self.lock:
            write_state(self.rt, self.strategy, state, self.owner)
            if self.manifest is not None:
                self.manifest.set("rollout", state.report())


def second_version_choices(choices: dict[str, ImageChoice], serving: dict[str, str], merged: dict[str, Any],
                           notes: list[str], instead: str) -> dict[str, ImageChoice]:
    """The services of `choices` whose manifest image differs from the one `serving` (service → image reference)
    runs, and that can run a second version beside it. A service with a persistent volume cannot (its claim is
    ReadWriteOnce: one pod set, values.yaml's `persistence`): it is left out, and `notes` gets, once,
    "<service>: has a persistent volume, <instead>"."""
    out: dict[str, ImageChoice] = {}
    for name, c in choices.items():
        if c.source != "manifest" or serving.get(name) in (None, c.ref):
            continue
        persist = ((merged.get("services") or {}).get(name) or {}).get("persistence") or {}
        if persist.get("enabled"):
            note = f"{name}: has a persistent volume, {instead}"
            if note not in notes:
                notes.append(note)
            continue
        out[name] = c
    return out


def template_fingerprint(deployment: dict[str, Any]) -> dict[str, Any]:
    """{sha256 of the pod template as canonical JSON, generation}: equal before and after means the Deployment
    was never rolled (its pods never restarted by us)."""
    body = json.dumps(deployment["spec"]["template"], sort_keys=True, separators=(",", ":")).encode()
    return {"sha256": hashlib.sha256(body).hexdigest(), "generation": int(deployment["metadata"].get("generation", 0))}


def changed_templates(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """The keys of `before` (fingerprints) whose Deployment in `now` (Deployments) is missing or fingerprints
    differently."""
    return [n for n, fp in before.items() if n not in now or template_fingerprint(now[n]) != fp]


def helm_revision(ro: _Rollout, values: dict[str, Any], what: str, values_path: Path) -> str:
    """`helm upgrade` of the chart with `values` alone (written to `values_path`, 0600), waited for and rolled
    back by Helm on failure; "" or the problem in one line."""
    atomic_write(values_path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    values_path.chmod(0o600)
    rt = ro.rt
    res = helm.upgrade_install(rt.kube, rt.release, ro.chart, [values_path], timeout_s=rt.timeout_s,
                               history_max=rt.history_max, wait=True, rollback_on_failure=True)
    after = helm.status(rt.kube, rt.release)
    if not res.ok:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-2:]
        return f"helm upgrade ({what}) failed: {' | '.join(tail)}"
    ro.reporter.info(f"  helm: revision {after.revision if after else '?'} deployed ({what})")
    return ""


@dataclass(frozen=True)
class Job:
    """One service's analysis in one step: whose tracks (target), which step (its weight and length), its number,
    the recorded result to continue (None: a fresh start) and the words its reasons start with ("" = "step N
    (weight W%)")."""
    target: analysis.Target
    step: Step
    number: int
    resume: analysis.StepResult | None = None
    label: str = ""


def analyse(ro: _Rollout, rollout: Rollout, jobs: dict[str, Job], forwards: list[tuple[str, int]],
            on_interval: Callable[[str, analysis.StepResult], None]) -> tuple[dict[str, analysis.StepResult],
                                                                                 list[dict[str, Any]]]:
    """The load loop on each of `forwards` ((resource, remote port): each through its own port-forward on
    127.0.0.1) while analysis.run_step judges each service of `jobs` in parallel; `on_interval(service, result)`
    after each judged interval. Returns (results by service, the load records: LoadRecord.as_dict() each)."""
    longest = max(j.step.analysis_s for j in jobs.values())
    with prometheus_url(ro.env) as url, ExitStack() as stack:
        lifetime = longest + duration_s(rollout.window) + 600   # the forwards outlive the step
        loops = []
        for resource, port in forwards:
            local = stack.enter_context(kubectl.port_forward(ro.rt.kube, resource, port, lifetime=lifetime))
            loops.append(stack.enter_context(LoadLoop(f"http://127.0.0.1:{local}", rollout.load)))
        prom = prometheus.Client(url)

        def recorder(svc: str) -> Callable[[analysis.StepResult], None]:
            return lambda result: on_interval(svc, result)

        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            futures = {svc: pool.submit(analysis.run_step, rollout, j.target, j.step, j.number, prom,
                                        analysis.SystemClock(), on_interval=recorder(svc), resume=j.resume,
                                        label=j.label)
                       for svc, j in jobs.items()}
            results = {svc: f.result() for svc, f in futures.items()}
        load = [loop.stop().as_dict() for loop in loops]
    return results, load


def load_line(load: list[dict[str, Any]]) -> str:
    """"N request(s) sent through port-forwards on 127.0.0.1 (target {status: count}, …)"."""
    sent = sum(int(x["requests"]) for x in load)
    seen = ", ".join(f"{x['target']} {x['by_status']}" for x in load)
    return f"{sent} request(s) sent through port-forwards on 127.0.0.1 ({seen})"
