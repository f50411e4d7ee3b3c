"""`invoke audit --env ENV`: what the environment runs now, re-scanned against the vulnerability DB the mirror
serves now (a DB imported after the release included), judged by the environment's scan gate.

What runs is observed, not remembered: every container and init container of the pods in the environment's
namespace, by the digest its status reports (`imageID`; the pod spec's `@sha256:` when the runtime has not
reported one yet). The Release manifest is only compared with it, and every disagreement is said: a pod whose
running digest is not its spec's, a workload by tag, a service running another digest than the manifest's, a
service of the manifest that nothing runs, an image that is neither a service nor an infra image.

Each distinct digest is scanned once (Trivy from the registry by digest, `--image-src remote`; an image that only
the node's engine holds, by its image ID from that engine), with the configured scanners, after the DB is
refreshed from [scan].db_repository exactly as the scan stage does (pipeline.stages.scan_db.prepare_db). A report
the scan stage already made for the same image ID, DB version, scanners and Trivy version is reused. Service
images are judged at scan_threshold, infra images at infra_scan_threshold, with ignore_unfixed and the ignore file
(pipeline.gate.policy.evaluate, the scan gate's own code). A finding is "new" when the release's scan of that
image did not report it.

Exit: 0 clean; PolicyBlocked (3) when a running image has a finding at its threshold; StageFailed (1) when an
image could not be scanned; UsageError (2) for a bad environment, a cluster that does not answer or a namespace
that runs nothing. The report is written before any of these: <state>/<env>/reports/audit.json and audit.md.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment, canonical_repository
from pipeline.core.errors import PipelineError, PolicyBlocked, StageFailed, UsageError
from pipeline.core.manifest import Manifest, atomic_write, manifest_path
from pipeline.core.release_images import infra_images
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import now_iso
from pipeline.gate.history import vulnerability_keys
from pipeline.gate.ignorefile import IgnoreFile, load_ignore_file
from pipeline.gate.policy import Policy, Verdict, evaluate, load_report, parse_report
from pipeline.stages.scan import cache_key, print_blocking
from pipeline.stages.scan_db import prepare_db
from pipeline.tools import kubectl, trivy
from pipeline.tools.registry_api import split_repository
from pipeline.tools.registry_clients import RegistryClients

OBSERVE_TIMEOUT_S = 15
OCI_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Running:
    """One container as the cluster reports it: pod/container, the spec's image, the status's imageID."""

    pod: str
    container: str
    spec_image: str
    image_id: str     # the runtime's report: docker-pullable://repo@sha256:…, docker://sha256:… or ""


@dataclass
class Subject:
    """One distinct running image: what to scan (`ref`, from the registry or the engine), who runs it."""

    digest: str                      # the registry manifest digest, or the engine image ID for a local image
    ref: str                         # repo@digest (remote) or the image ID (engine)
    source: str                      # remote | docker
    kind: str = "unknown"            # service | infra | unknown
    name: str = ""                   # the service or infra name
    containers: list[str] = field(default_factory=list)   # pod/container
    verdict: Verdict | None = None
    new: list[str] = field(default_factory=list)           # blocking findings the release's scan did not report
    error: str = ""
    cached: bool = False


def observe_running(kube: kubectl.KubeTarget) -> list[Running]:
    """Every container and init container of the live pods of kube's namespace (`kubectl get pods -o json`).

    Pods that finished (Succeeded, Failed) run nothing and are left out. UsageError when no API server answers.
    """
    data = kubectl.list_json(kube, "pods", timeout=OBSERVE_TIMEOUT_S)
    if data is None:
        raise UsageError(f"no cluster answers for namespace {kube.namespace}",
                         "start it (invoke cluster-up) or check the environment's kubeconfig/kube_context")
    return containers_of(data)


def containers_of(data: dict[str, Any]) -> list[Running]:
    """The containers (init containers first, ephemeral ones last) of a pod list as `kubectl get pods -o json`
    gives it, without the pods that finished (phase Succeeded or Failed)."""
    out: list[Running] = []
    for pod in data.get("items") or []:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        name = str(pod["metadata"]["name"])
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        ids = {str(c.get("name")): str(c.get("imageID") or "")
               for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or []),
                         *(status.get("ephemeralContainerStatuses") or [])]}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or [])]:   # `kubectl debug` images run there too
            out.append(Running(name, str(c["name"]), str(c.get("image") or ""), ids.get(str(c["name"]), "")))
    return out


def running_digest(r: Running) -> tuple[str, str, str]:
    """(digest, ref to scan, source) of one container: the runtime's imageID first, else the spec's pin.

    A registry digest scans as `<spec repository or imageID's repository>@digest` (remote); an engine image ID
    (`docker://sha256:…`: built or loaded on the node, never pulled) as that ID (docker). ("", "", "") when
    neither says a digest (a container by tag the runtime has not started yet).
    """
    spec_repo, _, spec_digest = r.spec_image.partition("@")
    reported = r.image_id.split("://", 1)[-1]
    if "@sha256:" in reported:
        repo, _, digest = reported.partition("@")
        return digest, f"{spec_repo if spec_digest else repo}@{digest}", "remote"
    if reported.startswith("sha256:"):
        return reported, reported, "docker"
    if spec_digest:
        return spec_digest, r.spec_image, "remote"
    return "", "", ""


def _classify(cfg: Config, env: Environment, man: Manifest | None, ref: str) -> tuple[str, str]:
    """(kind, name) of an image reference by its full repository: a service's or an infra image's repository in
    `env` (or a repository the manifest recorded a push to), else ("unknown", ""). Only the whole repository
    counts: `evil.example/x/redis` is not the infra image redis."""
    repo = canonical_repository(ref.split("@", 1)[0])
    if man is not None:
        for name in man.services():
            pushed = man.pushed(name)
            if pushed is not None and canonical_repository(pushed.repository) == repo:
                return "service", name
    for svc in cfg.services:
        if canonical_repository(env.repository(svc)) == repo:
            return "service", svc.name
    for image in infra_images(cfg, env):
        if canonical_repository(image.repository) == repo:
            return "infra", image.name
    return "unknown", ""


def disagreements(cfg: Config, man: Manifest | None, running: list[Running],
                  subjects: dict[str, Subject]) -> list[str]:
    """Where the cluster and the Release manifest (or a pod's own spec) disagree, one line each."""
    out: list[str] = []
    for r in running:
        digest, _, _ = running_digest(r)
        where = f"{r.pod}/{r.container}"
        if "@" not in r.spec_image:
            out.append(f"{where}: its spec names {r.spec_image} by tag, not by digest")
        elif digest and r.spec_image.partition("@")[2] != digest:
            out.append(f"{where}: runs {digest[:19]}…, its spec names {r.spec_image.partition('@')[2][:19]}…")
        if not digest:
            out.append(f"{where}: the runtime reports no image digest yet (not started)")
    if man is None:
        out.append("no Release manifest for this environment: nothing to compare with")
        return out
    by_service: dict[str, set[str]] = {}
    for s in subjects.values():
        if s.kind == "service":
            by_service.setdefault(s.name, set()).add(s.digest)
        elif s.kind == "unknown":
            out.append(f"{s.ref} ({', '.join(s.containers)}): neither a service of the manifest nor an infra image")
    for name in man.services():
        pushed = man.pushed(name)
        if pushed is None or not pushed.digest:
            continue
        seen = by_service.get(name, set())
        if not seen:
            out.append(f"{name}: the manifest records {pushed.digest[:19]}…, nothing runs it")
        for d in sorted(seen - {pushed.digest}):
            out.append(f"{name}: runs {d[:19]}…, the manifest records {pushed.digest[:19]}…")
    return out


def _config_digest(registries: RegistryClients, ref: str) -> str:
    """The image config digest (= the engine's image ID, Trivy's ImageID) of repo@digest; "" for an index or
    when the registry does not answer (the scan then reads it itself)."""
    repository, _, digest = ref.partition("@")
    address, repo = split_repository(repository)
    try:
        got = registries.client(address).get_manifest(repo, digest)
        doc = json.loads(got[1]) if got is not None else {}
    except (PipelineError, ValueError):
        return ""
    if not isinstance(doc, dict) or doc.get("mediaType") in OCI_INDEXES or "manifests" in doc:
        return ""
    return str((doc.get("config") or {}).get("digest") or "")


def _scan(cfg: Config, s: Subject, cache: Path, key_base: str, registries: RegistryClients,
          reports: Path) -> dict[str, Any]:
    """The Trivy report of one subject: the scan stage's cached one for its image ID and DB when there is one,
    else a new scan (kept under <cache>/audit-reports for the next audit)."""
    image_id = s.digest if s.source == "docker" else _config_digest(registries, s.ref)
    keyed = cache_key(image_id or s.digest, key_base)
    for entry in (cache / "reports" / keyed, cache / "audit-reports" / keyed):
        if image_id and (entry / "report.json").is_file():
            s.cached = True
            shutil.copyfile(entry / "report.json", reports / f"{s.digest.replace(':', '-')}.json")
            return json.loads((entry / "report.json").read_text())  # type: ignore[no-any-return]
    address = s.ref.split("/", 1)[0]
    creds = registries.credentials(address) if s.source == "remote" else None
    out = reports / f"{s.digest.replace(':', '-')}.json"
    data = trivy.scan_image(s.ref, out, cache_dir=cache, scanners=cfg.scan.scanners, timeout=cfg.scan.timeout_s,
                            image_src=s.source, username=creds.username if creds else "",
                            password=creds.password if creds else "")
    if image_id:
        target = cache / "audit-reports" / keyed
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target, delete=False, suffix=".tmp") as fh:
            fh.write(out.read_text())
        Path(fh.name).rename(target / "report.json")
    return data


def _release_keys(man: Manifest | None, s: Subject) -> set[str] | None:
    """The vulnerability keys the release's scan reported for this image (None: no such scan to compare with)."""
    if man is None or not s.name:
        return None
    rec = man.scanned(s.name) if s.kind == "service" else man.infra_scanned(s.name) if s.kind == "infra" else None
    path = Path(rec.report) if rec is not None and rec.report else None
    if path is None or not path.is_file():
        return None
    try:
        return set(vulnerability_keys(load_report(path).findings))
    except PipelineError:
        return None


def run_audit(cfg: Config, env: Environment, reporter: Reporter, *, kubeconfig: Path | None = None,
              cache_dir: Path | None = None, today: date | None = None) -> dict[str, Any]:
    """Observe, re-scan and judge what env runs now (module docstring); returns the report written to
    <state>/<env>/reports/audit.json: {env, namespace, at, db: {version, updated_at, mirror}, threshold,
    infra_threshold, images: [{digest, ref, kind, name, containers, status, counts, blocking, new, cached,
    report}], disagreements: [line], status: pass | blocked | error}.
    Raises PolicyBlocked (3), StageFailed (1) or UsageError (2) as the module docstring says."""
    from pipeline.local.cluster import kube_target

    started = time.monotonic()
    log = reporter.info
    man = Manifest.load_or_none(manifest_path(cfg.state_dir, env.name))
    running = observe_running(kube_target(env, kubeconfig))
    if not running:
        raise UsageError(f"nothing runs in namespace {env.namespace} ({env.name})",
                         f"deploy first: invoke release --env {env.name}")
    subjects: dict[str, Subject] = {}
    for r in running:
        digest, ref, source = running_digest(r)
        if not digest:
            continue
        s = subjects.get(digest)
        if s is None:
            kind, name = _classify(cfg, env, man, ref)
            s = subjects[digest] = Subject(digest, ref, source, kind, name)
        s.containers.append(f"{r.pod}/{r.container}")
    differ = disagreements(cfg, man, running, subjects)

    cache = cache_dir or trivy.default_cache_dir(cfg.scan.db_repository)
    scanners = tuple(sorted(cfg.scan.scanners))
    db = prepare_db(cfg, cache, log) if "vuln" in scanners else trivy.DbInfo(False, "no-vuln-scan")
    key_base = f"{db.version}|{','.join(scanners)}|{trivy.version()}"
    ignores = load_ignore_file(cfg.scan.ignore_file) if cfg.scan.ignore_file.is_file() else IgnoreFile("", ())
    state = cfg.state_dir / env.name / "reports"
    reports = state / "audit"
    reports.mkdir(parents=True, exist_ok=True)
    registries = RegistryClients(cfg)
    for s in subjects.values():
        threshold = env.infra_threshold if s.kind == "infra" else env.scan_threshold
        reporter.step("audit", s.name or s.digest[7:19], f"scanning {s.ref}")
        try:
            data = _scan(cfg, s, cache, key_base, registries, reports)
        except PipelineError as exc:
            s.error = exc.one_line()
            continue
        s.verdict = evaluate(parse_report(data, s.ref).findings, Policy(threshold, env.ignore_unfixed, ignores), today)
        before = _release_keys(man, s)
        s.new = [f"{f.id} {f.package}" for f in s.verdict.blocking if f.kind == "vulnerability"
                 and (before is None or f"{f.id} {f.package}" not in before)]

    images = [_image_entry(s, reports) for s in subjects.values()]
    status = "error" if any(s.error for s in subjects.values()) else \
        "blocked" if any(s.verdict is not None and not s.verdict.passed for s in subjects.values()) else "pass"
    result: dict[str, Any] = {
        "env": env.name, "namespace": env.namespace, "at": now_iso(), "status": status,
        "db": {"version": db.version, "updated_at": db.updated_at, "repository": cfg.scan.db_repository},
        "threshold": env.scan_threshold, "infra_threshold": env.infra_threshold,
        "images": images, "disagreements": differ, "duration_s": round(time.monotonic() - started, 2)}
    atomic_write(state / "audit.json", json.dumps(result, indent=2) + "\n")
    atomic_write(state / "audit.md", _markdown(result))
    _print(result, subjects, differ, log)
    blocked = [s for s in subjects.values() if s.verdict is not None and not s.verdict.passed]
    if blocked:
        names = ", ".join(f"{s.name or s.ref} ({len(s.verdict.blocking)})" for s in blocked if s.verdict)
        raise PolicyBlocked(f"audit of {env.name}: running images have findings at the threshold: {names}",
                            f"see {state / 'audit.md'}; release a fixed image, or add a justified, dated entry to "
                            f"{cfg.scan.ignore_file.name}")
    if status == "error":
        errs = "; ".join(f"{s.ref}: {s.error}" for s in subjects.values() if s.error)
        raise StageFailed(f"audit of {env.name}: could not scan {errs}", "see the report; rerun the audit")
    return result


def _image_entry(s: Subject, reports: Path) -> dict[str, Any]:
    v = s.verdict
    return {"digest": s.digest, "ref": s.ref, "source": s.source, "kind": s.kind, "name": s.name,
            "containers": s.containers, "cached": s.cached,
            "status": "error" if s.error else v.status if v is not None else "error", "error": s.error,
            "threshold": v.threshold if v is not None else "", "counts": dict(v.counts) if v is not None else {},
            "blocking": [f"{f.id} {f.package or f.title}" for f in v.blocking] if v is not None else [],
            "new": s.new, "report": str(reports / f"{s.digest.replace(':', '-')}.json")}


def _print(result: dict[str, Any], subjects: dict[str, Subject], differ: list[str], log: Any) -> None:
    from pipeline.core.console import console, table

    t = table(f"audit {result['env']} ({result['namespace']}): {len(subjects)} running image(s), "
              f"Trivy DB {result['db']['updated_at'] or '?'}", "image", "digest", "runs in", "gate", "status",
              "blocking (new)")
    for img in result["images"]:
        t.add_row(f"{img['kind']}/{img['name']}" if img["name"] else img["ref"], img["digest"][:19] + "…",
                  f"{len(img['containers'])} container(s)", img["threshold"], img["status"],
                  f"{len(img['blocking'])} ({len(img['new'])})")
    console.print(t)
    for line in differ:
        log(f"audit: differs: {line}")
    for s in subjects.values():
        if s.verdict is not None and not s.verdict.passed:
            print_blocking(s.name or s.ref, s.verdict)
    log(f"audit {result['env']}: {result['status']} ({result['duration_s']:.1f}s); report "
        f"{Path(result['images'][0]['report']).parent.parent / 'audit.json' if result['images'] else ''}")


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Audit of {result['env']} ({result['namespace']}), {result['at']}", "",
             f"Trivy DB updated {result['db']['updated_at'] or '?'} ({result['db']['version']}); "
             f"gate {result['threshold']} (infra {result['infra_threshold']}); status **{result['status']}**", "",
             "| image | digest | containers | status | blocking | new since the release's scan |",
             "|---|---|---|---|---|---|"]
    for img in result["images"]:
        lines.append(f"| {img['kind']}/{img['name'] or '?'} | `{img['digest']}` | {', '.join(img['containers'])} | "
                     f"{img['status']} | {', '.join(img['blocking']) or '-'} | {', '.join(img['new']) or '-'} |")
    if result["disagreements"]:
        lines += ["", "## Where the cluster and the Release manifest disagree", ""]
        lines += [f"- {d}" for d in result["disagreements"]]
    return "\n".join(lines) + "\n"
