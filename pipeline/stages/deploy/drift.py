"""Does the cluster run what was recorded? Observed, not remembered (DESIGN.md: "trust the world, not the journal").

Two questions, one comparison:
  deploy_holds()   the runner's resume check: the Helm release is at the recorded revision, status deployed, and
                   its workloads run exactly the recorded digests, Ready. None = holds, else a one-line reason.
  drift_report()   `invoke status`: the workloads run exactly the environment's manifest digests (what was
                   pushed), every one Ready. A list of differences, one line each.
The comparisons are pure and unit-tested; status.observe() makes the two cluster calls in parallel so that a
no-op release stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import Reporter
from pipeline.stages.deploy.status import Observation, deployment_ready, observe
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import serving_deployment
from pipeline.tools import helm


@dataclass(frozen=True)
class Difference:
    """One way the cluster differs from the record: `subject` (a service, or "release NAME"/"cluster"),
    what was expected and what was observed, each in words ("sha256:…", "deployed at revision 4")."""

    subject: str
    expected: str
    observed: str

    def line(self) -> str:
        return f"{self.subject}: expected {self.expected}, {self.observed}"


def _short(ref: str, other: str) -> str:
    """The digest alone when both references name the same repository, else the whole reference."""
    repo, _, digest = ref.partition("@")
    return digest if digest and other.partition("@")[0] == repo else ref


def workload_differences(release: str, expected: Mapping[str, str],
                         deployments: Mapping[str, dict[str, Any]]) -> list[Difference]:
    """Each service of `expected` (service → repository@digest) must have its Deployment (the chart's name for
    it; blue-green's active colour: values.serving_deployment), running exactly that reference in every container
    of its pod template, scaled above 0, rolled out and Ready. Returns one Difference per service that is not, in
    `expected`'s order."""
    out: list[Difference] = []
    for service, ref in expected.items():
        name = serving_deployment(release, service, deployments)
        d = deployments.get(name)
        if d is None:
            out.append(Difference(service, ref.partition("@")[2] or ref, f"Deployment {name} does not exist"))
            continue
        images = [str(c.get("image", "")) for c in d["spec"]["template"]["spec"].get("containers", [])]
        wrong = [i for i in images if i != ref]
        if wrong:
            out.append(Difference(service, _short(ref, wrong[0]), f"running {_short(wrong[0], ref)}"))
            continue
        want = int(d["spec"].get("replicas", 1))
        st = d.get("status", {})
        if want == 0:
            out.append(Difference(service, f"{_short(ref, ref)} Ready", "scaled to 0 replicas"))
        elif not deployment_ready(d):
            out.append(Difference(service, f"{_short(ref, ref)} Ready",
                                  f"running it with {int(st.get('readyReplicas', 0))}/{want} replicas Ready"
                                  f" ({int(st.get('updatedReplicas', 0))} updated)"))
    return out


def release_difference(release: str, status: helm.ReleaseStatus | None, revision: int | None) -> Difference | None:
    """The Helm release must exist with status deployed (and be at `revision` when one is given)."""
    want = "deployed" + (f" at revision {revision}" if revision else "")
    if status is None:
        return Difference(f"release {release}", want, "not installed")
    if status.status != "deployed" or (revision and status.revision != revision):
        return Difference(f"release {release}", want, f"{status.status} at revision {status.revision}")
    return None


# ---------------------------------------------------------------- what was recorded (swappable accessors)

def pushed_images(manifest: Manifest) -> dict[str, str]:
    """service → repository@digest the manifest says was pushed (what `invoke status` expects to run)."""
    return {name: pushed.ref for name, pushed in manifest.pushed_images().items()}


def recorded_deploy(manifest: Manifest) -> tuple[int, dict[str, str]]:
    """(Helm revision, service → repository@digest) the manifest records as deployed (status deployed or noop);
    (0, {}) when nothing is. The revision is the newest one recorded (a later `--service` deploy moves it on;
    the services it kept run what they ran)."""
    revision, images = 0, {}
    for name in manifest.services():
        deployed = manifest.deployed(name)
        if deployed is not None and deployed.serving and deployed.image:
            images[name] = deployed.image
            revision = max(revision, int(deployed.revision or 0))
    return revision, images


# ---------------------------------------------------------------- the two questions

def deploy_holds(cfg: Config, env: Environment, manifest: Manifest, reporter: Reporter, *,
                 rt: ReleaseTarget | None = None) -> str | None:
    """Does the recorded deploy still hold in the cluster? None = yes; else one line saying why not, e.g.
    "cluster not running" or "veza-docs runs sha256:… instead of sha256:…". Read-only; two cluster calls made in
    parallel (about 0.3 s on the local cluster), and beside them the infra Deployments' check (infra_holds). The
    other differences go to reporter.detail."""
    rt = rt or ReleaseTarget.of(env)
    revision, images = recorded_deploy(manifest)
    if not images:
        return f"no deploy to {env.name} is recorded"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infra-holds") as pool:
        infra = pool.submit(infra_holds, cfg, env, manifest, rt)   # its cluster call beside observe()'s
        why = _release_holds(rt, env, revision, images, reporter)
        return why or infra.result()


def _release_holds(rt: ReleaseTarget, env: Environment, revision: int, images: Mapping[str, str],
                   reporter: Reporter) -> str | None:
    try:
        seen = observe(rt)
    except PipelineError as exc:
        return f"cannot observe release {rt.release} in {env.namespace}: {exc.one_line()}"
    if not seen.cluster:
        return f"cluster not running (no Kubernetes API answers for {env.name})"
    rel = release_difference(rt.release, seen.release, revision)
    if rel is not None:
        return f"release {rt.release} in {env.namespace} is {rel.observed}, not {rel.expected}"
    diffs = workload_differences(rt.release, images, seen.deployments)
    for d in diffs[1:]:
        reporter.detail(f"  {d.line()}")
    if not diffs:
        return None
    first = diffs[0]
    more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
    if first.observed.startswith("running "):
        return f"{first.subject} runs {first.observed.removeprefix('running ')} instead of {first.expected}{more}"
    return f"{first.subject}: {first.observed} (expected {first.expected}){more}"


def infra_holds(cfg: Config, env: Environment, manifest: Manifest, rt: ReleaseTarget) -> str | None:
    """The infra Deployments beside the release (local_infra, the pipeline's own cluster) run the manifest's
    infra digests, Ready: None, else the first difference (one cluster call)."""
    if not env.local_infra or rt.external:
        return None
    from pipeline.core.release_images import pinned_infra
    from pipeline.local.infra import infra_differences, infra_documents, template_annotations

    try:
        pinned = pinned_infra(cfg, env, manifest)
        # the embedded Prometheus's configuration hash: a changed k8s/prometheus-config.yaml is deployed again
        wanted = template_annotations(infra_documents(cfg, "verify", pinned, namespace=rt.namespace))
        diffs = infra_differences(rt.kube, pinned, wanted)
    except PipelineError as exc:
        return exc.message
    return diffs[0] if diffs else None


def drift_report(env: Environment, manifest: Manifest | None, seen: Observation) -> list[Difference]:
    """`invoke status`, pure: every difference between an observation of the cluster and the environment's
    manifest (its pushed digests: each must run, Ready; the release must be deployed). [] = the cluster runs
    exactly that. Services the manifest has no pushed digest for are not judged."""
    diffs: list[Difference] = []
    if manifest is None or manifest.env != env.name:
        diffs.append(Difference(env.name, "a Release manifest for this environment",
                                "none found" if manifest is None else f"the manifest is for '{manifest.env}'"))
    if not seen.cluster:
        diffs.append(Difference("cluster", "a Kubernetes API that answers", "not running"))
    if diffs or manifest is None:
        return diffs
    rel = release_difference(env.helm_release, seen.release, None)
    if rel is not None:
        diffs.append(rel)
    expected = pushed_images(manifest)
    if not expected:
        diffs.append(Difference(env.name, "pushed digests in the manifest", "none recorded"))
    return diffs + workload_differences(env.helm_release, expected, seen.deployments)


def drift_hint(env: Environment, diffs: list[Difference]) -> str:
    """The command that repairs these differences."""
    subjects = {d.subject for d in diffs}
    if env.name in subjects:
        return f"run: invoke build push --env {env.name}, then invoke deploy --env {env.name}"
    if "cluster" in subjects:
        return f"start it: invoke cluster-up --env {env.name}, then invoke deploy --env {env.name}"
    return f"`invoke deploy --env {env.name}` (or the next release) restores the recorded state"
