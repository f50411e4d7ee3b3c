"""The migrator as a Kubernetes Job: its document (pure), one run of it (apply, wait, logs, delete) and what
its log says.

The Job runs the release's own image, pinned by digest (the push record, the image verify-images checked),
with the migrator's flag as its argument (`-migrate`; `-schema-version` and `-schema-uses` only read), in the
environment's namespace, with the database settings the chart gives the service (values `infra.postgres`) and
its password from the same Secret key the Deployment reads. It is applied by kubectl, not as a Helm hook: it runs before
Helm touches anything, is never retried blindly (backoffLimit 0) and is deleted once its log is kept, so none
is left behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.stages.deploy.diagnosis import timestamp
from pipeline.stages.deploy.failfast import pull_error, waiting_blocker
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

LABEL = "veza.pipeline/migrate"
MIGRATE_FLAG = "-migrate"
VERSION_FLAG = "-schema-version"
USES_FLAG = "-schema-uses"
_KIND = {MIGRATE_FLAG: "migrate", VERSION_FLAG: "version", USES_FLAG: "uses"}


def job_name(service: str, digest: str, flag: str) -> str:
    """`<service>-<migrate|version|uses>-<12 hex of the digest>`, at most 63 characters."""
    return f"{service[:40]}-{_KIND[flag]}-{digest.removeprefix('sha256:')[:12]}"


def job_document(name: str, service: str, image: str, flag: str, merged: dict[str, Any], *,
                 run_id: str, deadline_s: int) -> dict[str, Any]:
    """The Job that runs `image` (repository@sha256:…) with `flag`, from the chart's merged values: infra.postgres
    (host, port, database, user), secrets (name, the dbPassword key), securityContext, global.imagePullSecrets.
    The pod passes the restricted Pod Security profile like the chart's."""
    pg = merged["infra"]["postgres"]
    sec = merged["securityContext"]
    secret_key = merged["secrets"]["keys"][merged["services"][service]["secretEnv"]["DB_PASSWORD"]]
    labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "veza",
              "app.kubernetes.io/component": "migrator", LABEL: "true", "veza.pipeline/run": run_id}
    env = [{"name": "DB_HOST", "value": str(pg["host"])}, {"name": "DB_PORT", "value": str(pg["port"])},
           {"name": "DB_NAME", "value": str(pg["database"])}, {"name": "DB_USER", "value": str(pg["user"])},
           {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": merged["secrets"]["name"],
                                                                  "key": secret_key}}}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": sec["runAsUser"], "runAsGroup": sec["runAsGroup"],
                            "fsGroup": sec["fsGroup"], "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "migrator", "image": image, "imagePullPolicy": "IfNotPresent", "args": [flag], "env": env,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": sec["runAsUser"], "allowPrivilegeEscalation": False,
                                "privileged": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}],
    }
    if (merged.get("global") or {}).get("imagePullSecrets"):
        pod["imagePullSecrets"] = merged["global"]["imagePullSecrets"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline_s,
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}


@dataclass(frozen=True)
class JobRun:
    """How one migrator Job ended: succeeded, its log (every line), the last record carrying schema_version."""

    succeeded: bool
    log: str
    record: dict[str, Any] = field(default_factory=dict)
    reason: str = ""          # why it failed, from the Job's status when its log says nothing

    @property
    def schema_version(self) -> int | None:
        v = self.record.get("schema_version")
        return int(v) if isinstance(v, int) else None


def last_version_record(log: str) -> dict[str, Any]:
    """The last JSON log line that carries `schema_version` ({} when none does)."""
    out: dict[str, Any] = {}
    for line in log.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "schema_version" in rec:
            out = rec
    return out


def _finished(job: dict[str, Any]) -> tuple[bool, bool, str]:
    """(done, succeeded, reason) of a Job object."""
    status = job.get("status") or {}
    if int(status.get("succeeded") or 0) > 0:
        return True, True, ""
    for c in status.get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return True, False, f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")
    return False, False, ""


def _waiting_problem(target: KubeTarget, name: str) -> str:
    """A reason the Job's pod cannot start (failfast.waiting_blocker: a bad reference at once, a pull still failing
    after the kubelet's retries, a config error that persists), with the kubelet's pull error; "" while it may
    still start."""
    pods = kubectl.get_json(target, "pods", selector=f"job-name={name}").get("items", [])
    for p in pods:
        age = time.time() - timestamp(str((p.get("metadata") or {}).get("creationTimestamp", "")))
        status = p.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            found = waiting_blocker(cs, age_s=age)
            if found is not None:
                category, reason = found
                why = pull_error(kubectl.events(target), str(p["metadata"]["name"])) if category == "image-pull" \
                    else ""
                return f"{reason} — {why}" if why else reason
    return ""


def run_job(target: KubeTarget, doc: dict[str, Any], *, timeout_s: float) -> JobRun:
    """Apply the Job (after deleting a finished one of the same name), wait until it succeeds or fails (polling
    every second, at most `timeout_s`), keep its log, delete it. A pod that cannot start (image pull, a missing
    Secret key) fails it at once. StageFailed only when the cluster refuses the Job itself."""
    name = doc["metadata"]["name"]
    kubectl.delete(target, "job", name, timeout=60)
    kubectl.apply(target, json.dumps(doc))
    deadline = time.monotonic() + timeout_s
    succeeded, reason = False, ""
    try:
        while True:
            job = kubectl.get_json(target, "job", name, ignore_not_found=True)
            if not job:
                raise StageFailed(f"the migrator Job {name} disappeared while it ran",
                                  f"check `kubectl -n {target.namespace} get events`")
            done, succeeded, reason = _finished(job)
            if done:
                break
            reason = _waiting_problem(target, name)
            if reason or time.monotonic() > deadline:
                reason = reason or f"it did not finish within {timeout_s:.0f}s"
                break
            time.sleep(1)
        log = kubectl.logs(target, f"job/{name}", tail=500)
    finally:
        kubectl.delete(target, "job", name, timeout=60, wait=False)
    return JobRun(succeeded, log, last_version_record(log), reason)
