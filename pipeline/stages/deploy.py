"""Deploy stage: `helm upgrade --install` by digest, wait, verify, roll back on failure (exit 5).

Flow of deploy_release():
  images from the Release manifest (push.digest → repository@digest) → values file with a deploy hash
  → helm lint --strict → cluster answers? → namespace, Secret and local volume preflight
  → a pending release from a killed run: recovered when safe, else refused with the exact commands
  → no-op when the deployed revision has the same hash and runs the same digests, Ready
  → helm upgrade --dry-run=server → helm upgrade --install --wait + atomic/rollback-on-failure
  → verify: every Deployment rolled out, each service's ready path answers through a port-forward
  → on failure: roll back to the previous revision, report events and the failing pods' logs, exit 5.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import DeployFailed, PolicyBlocked, StageFailed, UsageError
from pipeline.core.manifest import Manifest, atomic_write, manifest_path
from pipeline.core.paths import CACHE_DIR
from pipeline.core.vocab import now_iso
from pipeline.core.yamlfile import load_text
from pipeline.local.infra import ensure_local_infra
from pipeline.tools import helm, kubectl
from pipeline.tools.kubectl import KubeTarget

CHART = Path("helm/veza")
DEFAULT_TIMEOUT_S = 300
HISTORY_MAX = 10
LOCAL_STORAGE_CLASS = "veza-local-hostpath"
PSS_LABELS = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/audit": "restricted"}
NOISE_EVENTS = ("MissingClusterDNS",)
Out = Callable[[str], None]


# ---------------------------------------------------------------- pure parts (unit-tested)

@dataclass(frozen=True)
class ImageChoice:
    service: str
    repository: str
    digest: str
    source: str  # "manifest" | "deployed"

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


def resource_name(release: str, service: str) -> str:
    """The chart's veza.fullname: the service name when it starts with the release name, else release-service."""
    name = service if service == release or service.startswith(f"{release}-") else f"{release}-{service}"
    return name[:63].rstrip("-")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing for maps: `over` wins, nested maps merge."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def choose_images(cfg: Config, manifest_services: dict[str, Any], selected: Sequence[str],
                  deployed_values: dict[str, Any] | None) -> tuple[dict[str, ImageChoice], list[str]]:
    """Which image each service gets: the manifest's pushed digest for the services to deploy; the deployed
    one for the others. Returns (choices, notes). A service explicitly selected without a digest is an error."""
    choices: dict[str, ImageChoice] = {}
    notes: list[str] = []
    deployed_svcs = (deployed_values or {}).get("services", {}) or {}
    for svc in cfg.services:
        entry = manifest_services.get(svc.name) or {}
        push = entry.get("push") or {}
        digest = str(push.get("digest", ""))
        repo = str(entry.get("repository", ""))
        wanted = not selected or svc.name in selected
        if wanted and digest.startswith("sha256:") and repo and push.get("status") in ("pushed", "skipped"):
            choices[svc.name] = ImageChoice(svc.name, repo, digest, "manifest")
            continue
        if wanted and selected:
            raise UsageError(f"service '{svc.name}' has no pushed digest in the Release manifest",
                             f"run: invoke build push --service {svc.name} --env <env>")
        old = (deployed_svcs.get(svc.name) or {}).get("image") or {}
        if old.get("digest") and old.get("repository") and (deployed_svcs.get(svc.name) or {}).get("enabled", True):
            choices[svc.name] = ImageChoice(svc.name, str(old["repository"]), str(old["digest"]), "deployed")
            if wanted:
                notes.append(f"{svc.name}: no pushed digest in the manifest; keeping the deployed {old['digest'][:19]}")
        elif wanted:
            notes.append(f"{svc.name}: not built/pushed and not deployed yet: left out of this release")
    return choices, notes


def image_values(cfg: Config, choices: dict[str, ImageChoice], deploy_hash: str) -> dict[str, Any]:
    """The generated values file: one image per service (by digest), the others disabled, and the hash."""
    services: dict[str, Any] = {}
    for svc in cfg.services:
        c = choices.get(svc.name)
        if c is None:
            services[svc.name] = {"enabled": False}
        else:
            services[svc.name] = {"enabled": True,
                                  "image": {"repository": c.repository, "digest": c.digest, "tag": ""}}
    return {"global": {"deployHash": deploy_hash}, "services": services}


def deploy_hash(chart_dir: Path, values_files: Sequence[Path], choices: dict[str, ImageChoice]) -> str:
    """A hash of everything that defines the release: chart files, environment values, chosen images."""
    h = hashlib.sha256()
    for p in sorted(chart_dir.rglob("*")):
        if p.is_file() and "ci" not in p.relative_to(chart_dir).parts:
            h.update(str(p.relative_to(chart_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    for f in values_files:
        h.update(b"values\0" + f.read_bytes() + b"\0")
    h.update(json.dumps({k: v.ref for k, v in sorted(choices.items())}, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def pending_recovery(release: str, namespace: str, status: str, history: Sequence[helm.Revision]) -> tuple[str, int]:
    """The recovery of a release stuck in pending-*: ("rollback", revision) to the last deployed/superseded
    revision before the pending one, or ("uninstall", 0) when none exists (a first install was killed)."""
    pending = max((r.revision for r in history), default=0)
    good = [r.revision for r in history if r.revision < pending and r.status in ("deployed", "superseded")]
    if status in helm.PENDING_STATES and good:
        return "rollback", max(good)
    return "uninstall", 0


def recovery_command(release: str, namespace: str, action: str, revision: int) -> str:
    if action == "rollback":
        return f"helm rollback {release} {revision} --namespace {namespace} --wait"
    return f"helm uninstall {release} --namespace {namespace} --wait"


# ---------------------------------------------------------------- results

@dataclass
class DeployResult:
    env: str
    release: str
    namespace: str
    status: str  # deployed | noop | dry-run
    revision: int
    previous_revision: int
    images: dict[str, str]
    deploy_hash: str
    duration_s: float
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- cluster access

def kubeconfig_path(env: Environment) -> Path | None:
    """The kubeconfig of an environment: pipeline.local.cluster decides (the local cluster's own file for an empty
    kube_context); KUBECONFIG otherwise."""
    import importlib

    cluster = importlib.import_module("pipeline.local.cluster")
    kubeconfig_for = getattr(cluster, "kubeconfig_for", None)  # written concurrently (issue 10)
    if kubeconfig_for is not None:
        found = kubeconfig_for(env.kube_context)
        if found:
            return Path(found)
    env_kc = os.environ.get("KUBECONFIG", "")
    return Path(env_kc) if env_kc else None


def kube_target(env: Environment, kubeconfig: Path | None = None) -> KubeTarget:
    return KubeTarget(kubeconfig=kubeconfig if kubeconfig is not None else kubeconfig_path(env),
                      context=env.kube_context, namespace=env.namespace)


@contextmanager
def deploy_lock(cfg: Config, env: Environment) -> Iterator[Path]:
    """One deploy per environment on this machine. The kernel frees the lock when the holder dies, so a
    lock file naming a dead process proves its pending release is abandoned."""
    path = cfg.state_dir / "locks" / f"deploy-{env.name}-{env.namespace}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip()
            raise UsageError(f"another deploy to {env.name} runs on this machine ({holder})",
                             "wait for it to finish") from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid={os.getpid()} since={now_iso()}\n".encode(), 0)
        (path.parent / f"{path.name}.previous").write_text(previous + "\n")
        yield path
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the deploy

class _Deployer:
    def __init__(self, cfg: Config, env: Environment, manifest: Manifest | None, *, services: Sequence[str],
                 dry_run: bool, timeout_s: int, history_max: int, kubeconfig: Path | None,
                 extra_values: Sequence[Path], out: Out) -> None:
        self.cfg, self.env, self.manifest = cfg, env, manifest
        self.selected = list(services)
        self.dry_run, self.timeout_s, self.history_max = dry_run, timeout_s, history_max
        self.extra_values = list(extra_values)
        self.out = out
        self.chart = cfg.root / CHART
        self.target = kube_target(env, kubeconfig)
        self.release = env.helm_release
        self.started = time.monotonic()
        self.gen_values = cfg.state_dir / "deploy" / f"{env.name}-values.yaml"

    # -- values
    def env_values_files(self) -> list[Path]:
        if not self.env.values_file.is_file():
            raise UsageError(f"values file {self.env.values_file} of environment {self.env.name} does not exist",
                             f"create it or fix values_file under [environments.{self.env.name}]")
        return [self.env.values_file, *self.extra_values]

    def merged_values(self, generated: dict[str, Any]) -> dict[str, Any]:
        # dates stay text (as Helm reads them); a bad one is no traceback
        merged: dict[str, Any] = load_text((self.chart / "values.yaml").read_text(), "values.yaml") or {}
        for f in self.env_values_files():
            merged = deep_merge(merged, load_text(f.read_text(), str(f)) or {})
        return deep_merge(merged, generated)

    # -- main
    def run(self) -> DeployResult:
        cfg, env = self.cfg, self.env
        manifest_services = self.manifest.data["services"] if self.manifest else {}
        if self.manifest is not None and self.manifest.env != env.name:
            raise UsageError(f"the Release manifest is for environment '{self.manifest.env}', not '{env.name}'",
                             f"run `invoke build push --env {env.name}` (or promote) first")
        h = helm.helm()
        self.out(f"deploy {env.name}: release {self.release} in namespace {env.namespace} "
                 f"(helm {h.version}, chart {CHART})")

        reachable = kubectl.server_version(self.target)
        if reachable and env.local_infra and not self.dry_run:
            # The pipeline's own cluster has no infra: run it beside the release, hosts by ClusterIP.
            self.ensure_namespace()
            secret = (load_text((self.chart / "values.yaml").read_text(), "values.yaml") or {})["secrets"]["name"]
            self.extra_values.append(ensure_local_infra(cfg, self.target, secret, cfg.state_dir / "deploy",
                                                        say=self.out))
        values_files = self.env_values_files()
        deployed_values: dict[str, Any] | None = None
        current: helm.ReleaseStatus | None = None
        if reachable:
            current = helm.status(self.target, self.release)
            if current is not None and current.status not in helm.PENDING_STATES:
                deployed_values = helm.get_values(self.target, self.release)
        choices, notes = choose_images(cfg, manifest_services, self.selected, deployed_values)
        for n in notes:
            self.out(f"  note: {n}")
        if not choices:
            raise UsageError(f"nothing to deploy to {env.name}: no service has a pushed digest in the manifest",
                             f"run: invoke build push --env {env.name}")
        dhash = deploy_hash(self.chart, values_files, choices)
        generated = image_values(cfg, choices, dhash)
        atomic_write(self.gen_values, json.dumps(generated, indent=2, sort_keys=True) + "\n")
        all_values = [*values_files, self.gen_values]
        for c in choices.values():
            kept = " (kept from the deployed revision)" if c.source == "deployed" else ""
            self.out(f"  {c.service}: {c.ref}{kept}")

        self.lint(all_values, reachable)
        if not reachable:
            if self.dry_run:
                helm.template(self.chart, self.release, all_values, namespace=env.namespace)
                self.out("dry run: no cluster answers; the chart rendered and linted offline only")
                return self.result("dry-run", 0, 0, choices, dhash, notes)
            raise StageFailed(f"no Kubernetes API answers for environment {env.name} "
                              f"(kubeconfig {self.target.kubeconfig or 'default'})",
                              f"start it: invoke cluster-up --env {env.name}")
        self.out(f"  cluster answers: Kubernetes {reachable}")
        merged = self.merged_values(generated)

        if self.dry_run:
            self.validate_server(all_values)
            self.out("dry run: lint and server-side validation passed; nothing changed")
            return self.result("dry-run", current.revision if current else 0, 0, choices, dhash, notes)

        with deploy_lock(cfg, env) as lock:
            self.ensure_namespace()
            self.ensure_secret(merged)
            self.ensure_local_volumes(merged)
            current = self.recover_pending(current, lock)
            if current is not None and current.status == "deployed" and self.is_noop(dhash, choices, merged):
                self.out(f"no-op: revision {current.revision} already runs these digests and values "
                         f"({dhash[:19]}); nothing to do")
                self.record(choices, "noop", current.revision)
                return self.result("noop", current.revision, current.revision, choices, dhash, notes)
            self.validate_server(all_values)
            previous = current.revision if current is not None and current.status == "deployed" else 0
            return self.upgrade(all_values, choices, dhash, notes, merged, previous)

    def result(self, status: str, revision: int, previous: int, choices: dict[str, ImageChoice], dhash: str,
               notes: list[str]) -> DeployResult:
        return DeployResult(env=self.env.name, release=self.release, namespace=self.env.namespace, status=status,
                            revision=revision, previous_revision=previous,
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
        self.out("  helm lint --strict: ok")

    def validate_server(self, values_files: list[Path]) -> None:
        res = helm.upgrade_install(self.target, self.release, self.chart, values_files,
                                   timeout_s=self.timeout_s, history_max=self.history_max, dry_run="server")
        if not res.ok:
            tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-3:]
            raise StageFailed("the API server rejected the release (helm upgrade --dry-run=server): "
                              + " | ".join(tail), "fix the chart or the values; nothing was changed")
        self.out("  server-side validation (--dry-run=server): ok")

    def ensure_namespace(self) -> None:
        ns = kubectl.get_json(self.target, "namespace", self.env.namespace, namespaced=False, ignore_not_found=True)
        if ns:
            return
        doc = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": self.env.namespace, "labels": {"app.kubernetes.io/part-of": "veza", **PSS_LABELS}}}
        kubectl.apply(self.target, json.dumps(doc))
        self.out(f"  created namespace {self.env.namespace} (Pod Security: restricted)")

    def ensure_secret(self, merged: dict[str, Any]) -> None:
        """The chart only references the Secret. The local environment gets one with random values; any
        other environment must have it already (its values are nobody's business here)."""
        name = merged["secrets"]["name"]
        keys = sorted({merged["secrets"]["keys"][k] for s in merged["services"].values()
                       if s.get("enabled") for k in (s.get("secretEnv") or {}).values()})
        found = kubectl.get_json(self.target, "secret", name, ignore_not_found=True)
        have = set((found.get("data") or {}).keys()) if found else set()
        missing = [k for k in keys if k not in have]
        if not missing:
            return
        if self.env.name == "local" or self.env.namespace.startswith("veza-test-"):
            data = {k: secrets.token_urlsafe(24) for k in missing}
            doc = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "veza"}},
                   "stringData": data}
            if found and found.get("data"):
                doc["data"] = found["data"]
            kubectl.apply(self.target, json.dumps(doc))
            self.out(f"  created Secret {name} with random {', '.join(missing)} (local environment)")
            return
        literal = " ".join(f"--from-literal={k}=..." for k in missing)
        raise UsageError(f"Secret {name} in namespace {self.env.namespace} lacks {', '.join(missing)}",
                         f"create it: kubectl -n {self.env.namespace} create secret generic {name} {literal}")

    def ensure_local_volumes(self, merged: dict[str, Any]) -> None:
        """The local cluster has no volume provisioner: a hostPath PersistentVolume per claim of the local
        storage class, pre-bound to that claim (claimRef), owned by UID 1001."""
        for name, svc in merged["services"].items():
            p = svc.get("persistence") or {}
            if not (svc.get("enabled") and p.get("enabled") and p.get("storageClassName") == LOCAL_STORAGE_CLASS):
                continue
            claim = p.get("existingClaim") or resource_name(self.release, name)
            pv_name = f"veza-{self.env.namespace}-{claim}"[:63].rstrip("-")
            if kubectl.get_json(self.target, "pv", pv_name, namespaced=False, ignore_not_found=True):
                continue
            host_dir = CACHE_DIR / "volumes" / self.env.namespace / claim
            host_dir.mkdir(parents=True, exist_ok=True)
            uid = int(merged["securityContext"]["runAsUser"])
            os.chown(host_dir, uid, int(merged["securityContext"]["fsGroup"]))
            doc = {"apiVersion": "v1", "kind": "PersistentVolume",
                   "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "veza",
                                                            "veza.io/namespace": self.env.namespace}},
                   "spec": {"capacity": {"storage": p.get("size", "1Gi")},
                            "accessModes": p.get("accessModes", ["ReadWriteOnce"]),
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": LOCAL_STORAGE_CLASS,
                            "claimRef": {"namespace": self.env.namespace, "name": claim},
                            "hostPath": {"path": str(host_dir), "type": "Directory"}}}
            cluster_scope = KubeTarget(self.target.kubeconfig, self.target.context, "")
            kubectl.apply(cluster_scope, json.dumps(doc))
            self.out(f"  created PersistentVolume {pv_name} (hostPath {host_dir}) for claim {claim}")

    def recover_pending(self, current: helm.ReleaseStatus | None, lock: Path) -> helm.ReleaseStatus | None:
        """A release left pending-* by a killed run blocks every helm operation. It is safe to recover when
        no helm operation can still be running: the deploy lock was free (its holder died) and no local helm
        process works on this release, or the pending state is older than the deploy timeout."""
        if current is None or current.status not in helm.PENDING_STATES:
            return current
        hist = helm.history(self.target, self.release)
        action, revision = pending_recovery(self.release, self.env.namespace, current.status, hist)
        command = recovery_command(self.release, self.env.namespace, action, revision)
        previous_holder = (lock.parent / f"{lock.name}.previous").read_text().strip()
        busy = _local_helm_busy(self.release, self.env.namespace)
        age = _age_s(current.last_deployed)
        ours = bool(previous_holder) and previous_holder.startswith(socket.gethostname() + " ")
        safe = not busy and (ours or (age is not None and age > self.timeout_s + 60))
        self.out(f"  release {self.release} is stuck in {current.status} at revision {current.revision} "
                 f"(a killed deploy?); recovery: {command}")
        if not safe:
            why = (f"helm process {busy} still works on it" if busy else
                   f"it may belong to a deploy still running elsewhere (pending for {age or 0:.0f}s)")
            raise StageFailed(f"release {self.release} in {self.env.namespace} is {current.status}: {why}",
                              f"when no other deploy runs, recover with: {command}")
        self.out(f"  recovering automatically (previous deploy on this machine ended: {previous_holder or 'none'})")
        if action == "rollback":
            res = helm.rollback(self.target, self.release, revision, timeout_s=self.timeout_s,
                                history_max=self.history_max)
        else:
            res = helm.uninstall(self.target, self.release, timeout_s=self.timeout_s)
        if not res.ok:
            raise StageFailed(f"automatic recovery failed ({command}): {res.stderr.strip()[-300:]}",
                              f"run it by hand: {command}")
        after = helm.status(self.target, self.release)
        now = f"{after.status} at revision {after.revision}" if after else "removed"
        self.out(f"  recovered: release now {now}")
        return after

    def is_noop(self, dhash: str, choices: dict[str, ImageChoice], merged: dict[str, Any]) -> bool:
        deployed = helm.get_values(self.target, self.release)
        if (deployed.get("global") or {}).get("deployHash") != dhash:
            return False
        live = self.live_images()
        for name, c in choices.items():
            full = resource_name(self.release, name)
            if live.get(full, (None, False)) != (c.ref, True):
                self.out(f"  {full} does not run {c.ref} Ready (drift): deploying again")
                return False
        return True

    def live_images(self) -> dict[str, tuple[str, bool]]:
        """Deployment → (first container's image, all replicas updated and ready)."""
        data = kubectl.get_json(self.target, "deployments", selector=f"app.kubernetes.io/instance={self.release}")
        out: dict[str, tuple[str, bool]] = {}
        for d in data.get("items", []):
            spec, st = d["spec"], d.get("status", {})
            want = int(spec.get("replicas", 1))
            ready = (int(st.get("updatedReplicas", 0)) == want and int(st.get("readyReplicas", 0)) == want
                     and int(st.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0)))
            out[d["metadata"]["name"]] = (spec["template"]["spec"]["containers"][0]["image"], ready)
        return out

    # -- the upgrade and what follows
    def upgrade(self, values_files: list[Path], choices: dict[str, ImageChoice], dhash: str, notes: list[str],
                merged: dict[str, Any], previous: int) -> DeployResult:
        h = helm.helm()
        flags = " ".join(helm.upgrade_flags(h.major, wait=True, rollback_on_failure=True))
        self.out(f"  helm upgrade --install {flags} --timeout {self.timeout_s}s --history-max {self.history_max}")
        since = time.time()
        watcher = _FailingPodWatcher(self.target, self.release)
        watcher.start()
        try:
            res = helm.upgrade_install(self.target, self.release, self.chart, values_files, timeout_s=self.timeout_s,
                                       history_max=self.history_max, wait=True, rollback_on_failure=True,
                                       on_line=lambda ln: self.out(f"    helm: {ln}") if ln.strip() else None)
        finally:
            watcher.stop()
        if not res.ok:
            reason = _helm_reason(res.stdout + "\n" + res.stderr)
            self.report_failure(since, watcher.captured)
            self.fail(choices, previous, f"helm upgrade failed: {reason}", rolled_back_by_helm=True)
        after = helm.status(self.target, self.release)
        revision = after.revision if after else 0
        self.out(f"  helm: revision {revision} deployed; verifying")
        problems = self.verify(choices, merged)
        if problems:
            captured = self.capture_logs(choices)
            self.report_failure(since, captured)
            for p in problems:
                self.out(f"  verify: {p}")
            self.rollback_after_verify(previous)
            self.fail(choices, previous, "verification failed: " + "; ".join(problems), rolled_back_by_helm=False,
                      failed_revision=revision)
        self.record(choices, "deployed", revision)
        self.out(f"deployed {self.env.name}: revision {revision}, {len(choices)} service(s) Ready and answering "
                 f"({time.monotonic() - self.started:.1f}s)")
        return self.result("deployed", revision, previous, choices, dhash, notes)

    def verify(self, choices: dict[str, ImageChoice], merged: dict[str, Any]) -> list[str]:
        """Every Deployment rolled out, then each service's ready path answers 200 through a port-forward."""
        problems: list[str] = []
        for name in choices:
            full = resource_name(self.release, name)
            rs = kubectl.rollout_status(self.target, f"deployment/{full}", timeout_s=min(self.timeout_s, 120))
            if not rs.ok:
                problems.append(f"{full} did not roll out: {(rs.stderr or rs.stdout).strip()[-200:]}")
        if problems:
            return problems
        for name in choices:
            err = self.probe_ready(name, merged)
            if err:
                problems.append(err)
            else:
                self.out(f"  verify: {name} ready (rolled out; {self._ready_path(name, merged)} answered 200)")
        return problems

    def _ready_path(self, name: str, merged: dict[str, Any]) -> str:
        try:
            return str(self.cfg.service(name).ready_path)
        except UsageError:
            return str(merged["services"][name]["probes"]["readinessPath"])

    def probe_ready(self, name: str, merged: dict[str, Any]) -> str:
        """"" when svc/<name> answers 200 on its ready path through a port-forward, else the problem."""
        full = resource_name(self.release, name)
        port = int(merged["services"][name]["service"]["port"])
        path = self._ready_path(name, merged)
        try:
            with kubectl.port_forward(self.target, f"svc/{full}", port) as local:
                return _http_ok(f"http://127.0.0.1:{local}{path}", attempts=5)
        except StageFailed as exc:
            return f"{full}: {exc.message}"

    def capture_logs(self, choices: dict[str, ImageChoice]) -> dict[str, str]:
        out: dict[str, str] = {}
        data = kubectl.get_json(self.target, "pods", selector=f"app.kubernetes.io/instance={self.release}")
        for pod in data.get("items", []):
            if _pod_ready(pod):
                continue
            name = pod["metadata"]["name"]
            out[name] = kubectl.logs(self.target, name, tail=30) or _waiting_reason(pod)
        return out

    def report_failure(self, since: float, logs: dict[str, str]) -> None:
        # Warnings about the release's own objects; MissingClusterDNS (a cluster without a DNS add-on) is noise.
        prefixes = tuple(resource_name(self.release, s.name) for s in self.cfg.services)
        evs = [e for e in kubectl.events(self.target) if e.type == "Warning" and _ts(e.last_seen) >= since - 5
               and e.name.startswith(prefixes) and e.reason not in NOISE_EVENTS]
        self.out("  events (warnings since the deploy started):")
        for e in evs[-15:]:
            self.out(f"    {e.line()}")
        if not evs:
            self.out("    (none)")
        for pod, text in logs.items():
            self.out(f"  logs of failing pod {pod}:")
            for line in (text.strip().splitlines() or ["(no output)"])[-20:]:
                self.out(f"    {line}")

    def rollback_after_verify(self, previous: int) -> None:
        if previous:
            self.out(f"  rolling back to revision {previous}")
            res = helm.rollback(self.target, self.release, previous, timeout_s=self.timeout_s,
                                history_max=self.history_max)
        else:
            self.out("  first install failed verification: uninstalling it")
            res = helm.uninstall(self.target, self.release, timeout_s=self.timeout_s)
        if not res.ok:
            raise DeployFailed(f"verification failed and the rollback failed too: {res.stderr.strip()[-300:]}",
                               f"inspect: helm history {self.release} -n {self.env.namespace}")

    def fail(self, choices: dict[str, ImageChoice], previous: int, reason: str, *, rolled_back_by_helm: bool,
             failed_revision: int = 0) -> None:
        after = helm.status(self.target, self.release)
        if previous and after is not None and after.status == "deployed":
            serving = self.previous_serving()
            state = f"rolled back: revision {after.revision} (= revision {previous}) serving" + (
                "" if serving is None else f", but {serving}")
        elif not previous:
            state = "nothing ran before; the failed first install was removed"
        else:
            state = f"release now {after.status if after else 'missing'}"
        self.record(choices, "rolled_back" if previous else "failed", after.revision if after else 0,
                    reason=reason, failed_revision=failed_revision)
        raise DeployFailed(f"deploy to {self.env.name} failed ({reason}); {state}",
                           f"see the events and logs above; `invoke status --env {self.env.name}`")

    def previous_serving(self) -> str | None:
        """None when every Deployment of the restored revision is rolled out and ready; else the problem."""
        for full, (image, ready) in self.live_images().items():
            if not ready:
                rs = kubectl.rollout_status(self.target, f"deployment/{full}", timeout_s=60)
                if not rs.ok:
                    return f"{full} ({image}) is not ready"
        return None

    def record(self, choices: dict[str, ImageChoice], status: str, revision: int, **extra: Any) -> None:
        if self.manifest is None:
            return
        for name, c in choices.items():
            if c.source != "manifest":
                continue
            self.manifest.record(name, "deploy", {
                "status": status, "revision": revision, "release": self.release, "namespace": self.env.namespace,
                "image": c.ref, "helm": helm.helm().version, **{k: v for k, v in extra.items() if v}})
        self.manifest.record_stage("deploy", {"status": "ok" if status in ("deployed", "noop") else "failed",
                                              "result": status, "revision": revision,
                                              "duration_s": round(time.monotonic() - self.started, 1)})


class _FailingPodWatcher:
    """While helm waits, keep the last log lines of the release's pods that are not Ready: with
    --atomic/--rollback-on-failure Helm deletes them on rollback, and their logs with them."""

    def __init__(self, target: KubeTarget, release: str, period_s: float = 5.0) -> None:
        self.target, self.release, self.period_s = target, release, period_s
        self.captured: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                data = kubectl.get_json(self.target, "pods", selector=f"app.kubernetes.io/instance={self.release}",
                                        timeout=15)
                for pod in data.get("items", []):
                    if _pod_ready(pod) or pod["metadata"].get("deletionTimestamp"):
                        continue
                    name = pod["metadata"]["name"]
                    text = kubectl.logs(self.target, name, tail=30, timeout=10)
                    self.captured[name] = text or _waiting_reason(pod)
            except Exception:
                continue


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _waiting_reason(pod: dict[str, Any]) -> str:
    for cs in pod.get("status", {}).get("containerStatuses", []) or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"(no log: container waiting: {waiting.get('reason', '')} {waiting.get('message', '')})".strip()
    return "(no log output)"


def _http_ok(url: str, *, attempts: int) -> str:
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


def _helm_reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("Error") or "FAILED" in ln or "failed" in ln]
    return (errs or lines or ["no output"])[-1][:400]


def _ts(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _age_s(iso: str) -> float | None:
    if not iso:
        return None
    from datetime import datetime

    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return time.time() - t.timestamp()


def _local_helm_busy(release: str, namespace: str) -> str:
    """The PID of a helm process on this machine working on this release ("" when none)."""
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


# ---------------------------------------------------------------- entry points

def deploy_release(cfg: Config, env: Environment, manifest: Manifest | None, services: Sequence[str] = (), *,
                   dry_run: bool = False, timeout_s: int = DEFAULT_TIMEOUT_S, history_max: int = HISTORY_MAX,
                   kubeconfig: Path | None = None, extra_values: Sequence[Path] = (),
                   out: Out = print) -> DeployResult:
    """Deploy the manifest's digests to `env` (the release orchestrator's entry). Raises DeployFailed (exit 5)
    after rolling back, PolicyBlocked when the chart fails lint, UsageError for bad input."""
    return _Deployer(cfg, env, manifest, services=services, dry_run=dry_run, timeout_s=timeout_s,
                     history_max=history_max, kubeconfig=kubeconfig, extra_values=extra_values, out=out).run()


def verify_release(cfg: Config, env: Environment, manifest: Manifest | None, services: Sequence[str] = (), *,
                   timeout_s: int = DEFAULT_TIMEOUT_S, kubeconfig: Path | None = None, out: Out = print) -> None:
    """Re-verify what runs (read-only unless it fails): the manifest's digests run, rolled out and Ready, and
    every service answers on its ready path through a port-forward. On failure, roll back the revision this
    manifest deployed (when there is one before it) and raise DeployFailed (exit 5)."""
    d = _Deployer(cfg, env, manifest, services=services, dry_run=False, timeout_s=timeout_s,
                  history_max=HISTORY_MAX, kubeconfig=kubeconfig, extra_values=(), out=out)
    current = helm.status(d.target, d.release)
    if current is None or current.status != "deployed":
        raise DeployFailed(f"verify {env.name}: release {d.release} is {current.status if current else 'missing'}",
                           f"deploy it: invoke deploy --env {env.name}")
    deployed = helm.get_values(d.target, d.release)
    msvcs = manifest.data["services"] if manifest is not None else {}
    choices, _ = choose_images(cfg, msvcs, services, deployed)
    live = d.live_images()
    problems = [f"{name} runs {live.get(resource_name(d.release, name), ('nothing', False))[0]}, not {c.ref}"
                for name, c in choices.items() if live.get(resource_name(d.release, name), ("", False))[0] != c.ref]
    if not problems:
        problems = d.verify(choices, d.merged_values(image_values(cfg, choices, "")))
    if not problems:
        out(f"verify {env.name}: revision {current.revision} runs the manifest's digests, Ready and answering")
        return
    for p in problems:
        out(f"  verify: {p}")
    hist = helm.history(d.target, d.release)
    ours = {int((msvcs.get(n) or {}).get("deploy", {}).get("revision", 0)) for n in choices}
    older = [r.revision for r in hist if r.revision < current.revision and r.status == "superseded"]
    if current.revision in ours and older:
        d.report_failure(time.time() - 600, d.capture_logs(choices))
        d.rollback_after_verify(max(older))
        raise DeployFailed(f"verify {env.name} failed: {'; '.join(problems)}; rolled back to revision {max(older)}",
                           f"see the events and logs above; `invoke status --env {env.name}`")
    raise DeployFailed(f"verify {env.name} failed: {'; '.join(problems)}",
                       f"inspect: `invoke status --env {env.name}`; undo: `invoke rollback --env {env.name}`")


def rollback_release(cfg: Config, env: Environment, revision: int | None, *, timeout_s: int = DEFAULT_TIMEOUT_S,
                     kubeconfig: Path | None = None, out: Out = print) -> int:
    """Roll back to `revision` (default: the one before the current), wait, verify. Returns the new revision."""
    target = kube_target(env, kubeconfig)
    if not kubectl.server_version(target):
        raise StageFailed(f"no Kubernetes API answers for environment {env.name}",
                          f"start it: invoke cluster-up --env {env.name}")
    hist = helm.history(target, env.helm_release)
    if not hist:
        raise UsageError(f"release {env.helm_release} does not exist in {env.namespace}",
                         f"deploy first: invoke deploy --env {env.name}")
    current = hist[-1].revision
    known = {r.revision for r in hist}
    if revision is None:
        older = [r.revision for r in hist if r.revision < current and r.status in ("superseded", "deployed")]
        if not older:
            raise UsageError(f"release {env.helm_release} has no revision before {current}", "nothing to roll back to")
        revision = max(older)
    if revision not in known:
        raise UsageError(f"revision {revision} of {env.helm_release} is not in its history "
                         f"({', '.join(str(r) for r in sorted(known))})", "pick one of those (helm keeps the last 10)")
    if revision == current:
        raise UsageError(f"revision {revision} is the current one", "pick an older revision")
    out(f"rollback {env.name}: {env.helm_release} revision {current} → {revision}")
    res = helm.rollback(target, env.helm_release, revision, timeout_s=timeout_s)
    if not res.ok:
        raise DeployFailed(f"helm rollback to {revision} failed: {_helm_reason(res.stderr + res.stdout)}",
                           f"inspect: helm history {env.helm_release} -n {env.namespace}")
    after = helm.status(target, env.helm_release)
    new_rev = after.revision if after else 0
    out(f"rolled back: revision {new_rev} now runs revision {revision}'s images and values")
    return new_rev


def release_status(cfg: Config, env: Environment, manifest: Manifest | None, *,
                   kubeconfig: Path | None = None) -> dict[str, Any]:
    """Revision, digests running, readiness per service, and whether they match the Release manifest."""
    target = kube_target(env, kubeconfig)
    out: dict[str, Any] = {"env": env.name, "release": env.helm_release, "namespace": env.namespace,
                           "cluster": None, "revision": None, "status": None, "services": {}}
    version = kubectl.server_version(target)
    out["cluster"] = version
    if not version:
        return out
    st = helm.status(target, env.helm_release)
    if st is None:
        out["status"] = "not-installed"
        return out
    out.update(revision=st.revision, status=st.status, last_deployed=st.last_deployed)
    data = kubectl.get_json(target, "deployments", selector=f"app.kubernetes.io/instance={env.helm_release}")
    deployments = {d["metadata"]["name"]: d for d in data.get("items", [])}
    msvcs = manifest.data["services"] if manifest is not None and manifest.env == env.name else {}
    for svc in cfg.services:
        full = resource_name(env.helm_release, svc.name)
        d = deployments.get(full)
        entry: dict[str, Any] = {"deployed": d is not None}
        if d is not None:
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            st_ = d.get("status", {})
            entry.update(image=image, digest=image.split("@", 1)[1] if "@" in image else None,
                         replicas=int(d["spec"].get("replicas", 1)), ready=int(st_.get("readyReplicas", 0)))
        m = msvcs.get(svc.name) or {}
        mdigest = (m.get("push") or {}).get("digest")
        entry["manifest_digest"] = mdigest
        entry["matches_manifest"] = bool(d is not None and mdigest and entry.get("digest") == mdigest)
        out["services"][svc.name] = entry
    return out


def run_status(cfg: Config, env: Environment, as_json: bool) -> dict[str, Any]:
    """`invoke status`."""
    manifest = Manifest.load_or_none(manifest_path(cfg.state_dir, env.name))
    info = release_status(cfg, env, manifest)
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return info
    if not info["cluster"]:
        print(f"{env.name}: no Kubernetes API answers (start it: invoke cluster-up --env {env.name})")
        return info
    print(f"{env.name}: release {info['release']} in {info['namespace']} (Kubernetes {info['cluster']}): "
          f"{info['status']}" + (f", revision {info['revision']}" if info["revision"] else ""))
    for name, e in info["services"].items():
        if not e["deployed"]:
            print(f"  {name:<20} not deployed")
            continue
        match = "matches the manifest" if e["matches_manifest"] else (
            "differs from the manifest" if e["manifest_digest"] else "not in the manifest")
        print(f"  {name:<20} {e['ready']}/{e['replicas']} ready  {e['digest'] or e['image']}  ({match})")
    return info
