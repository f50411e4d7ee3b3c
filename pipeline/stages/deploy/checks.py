"""The functional checks after a deploy and in `invoke verify`: each service's `checks` with "verify" in their `in`
(pipeline/stages/functional_checks.py), run through a port-forward to its Service, the tokens signed with the
JWT_SECRET the chart hands the pods (the chart's Secret `secrets.name`, key `secrets.keys.jwtSecret`, read from the
cluster and registered for redaction), NATS reached through a port-forward to its Service in the namespace (the one
whose name or ClusterIP is `infra.nats.host`), else at that host directly."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError, StageFailed
from pipeline.core.redact import register_secret
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.stages.deploy.values import resource_name
from pipeline.stages.functional_checks import NEEDS_JWT, Check, CheckTarget, service_checks
from pipeline.tools import kubectl
from pipeline.tools.kubectl import KubeTarget

WINDOW_S = 10.0   # each check is retried this long (a Service's endpoints may lag a rollout by a few seconds)


def chart_secret(rt: ReleaseTarget, merged: dict[str, Any], key_name: str) -> tuple[str, str]:
    """(value, "") of the chart Secret's key `secrets.keys.<key_name>` (what the pods get), or ("", the problem)."""
    secret = str((merged.get("secrets") or {}).get("name") or "")
    key = str(((merged.get("secrets") or {}).get("keys") or {}).get(key_name) or "")
    if not secret or not key:
        return "", f"the chart names no Secret key for secrets.keys.{key_name}"
    try:
        found = kubectl.get_json(rt.kube, "secret", secret, ignore_not_found=True)
    except PipelineError as exc:
        return "", f"cannot read Secret {secret}: {exc.message}"
    raw = ((found or {}).get("data") or {}).get(key)
    if not raw:
        return "", f"Secret {secret} in {rt.env.namespace} has no key {key}"
    try:
        value = base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", f"Secret {secret} key {key} is not base64 text"
    register_secret(value)
    return value, ""


def service_of_host(host: str, namespace: str) -> tuple[str, str]:
    """(namespace, name) a Service's DNS name points at, by Kubernetes' DNS schema
    (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/): `name`, `name.ns`, `name.ns.svc`
    and `name.ns.svc.<cluster domain>`; any other host (an IP, an outside name) is looked up in `namespace` as is."""
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) >= 3 and parts[2] == "svc"):
        return parts[1], parts[0]
    return namespace, host


def _nats_service(rt: ReleaseTarget, host: str) -> tuple[KubeTarget, str]:
    """The Service whose DNS name or ClusterIP is `host` ((target of its namespace, name); name '' when none is):
    the operators' NATS may live in another namespace (nats.veza-data.svc.cluster.local)."""
    namespace, name = service_of_host(host, rt.kube.namespace)
    target = dataclasses.replace(rt.kube, namespace=namespace)
    try:
        items = kubectl.get_json(target, "services").get("items", [])
    except PipelineError:
        return target, ""
    for s in items:
        if name in (s.get("metadata", {}).get("name"), (s.get("spec") or {}).get("clusterIP")):
            return target, str(s["metadata"]["name"])
    return target, ""


@contextmanager
def _nats(rt: ReleaseTarget, merged: dict[str, Any]) -> Iterator[tuple[tuple[str, int] | None, str]]:
    nats = (merged.get("infra") or {}).get("nats") or {}
    host, port = str(nats.get("host") or ""), int(nats.get("port") or 4222)
    target, name = _nats_service(rt, host) if host else (rt.kube, "")
    if not name:
        yield ((host, port) if host else None), (f"NATS at {host}:{port} did not answer" if host else
                                                 "the chart names no NATS host (infra.nats.host)")
        return
    try:
        with kubectl.port_forward(target, f"svc/{name}", port) as local:
            yield ("127.0.0.1", local), ""
    except StageFailed as exc:
        yield None, f"no port-forward to svc/{name}:{port}: {exc.message}"


def verify_checks(cfg: Config, rt: ReleaseTarget, names: Sequence[str], merged: dict[str, Any],
                  run_id: str) -> list[Check]:
    """The functional checks of `names` that run in verify (pipeline.toml `checks`, filtered by the environment's
    verify_checks), each against svc/<release-name> through a port-forward; one failed Check per service whose
    Service cannot be forwarded. `merged`: the release's values (ports, the Secret, the NATS host)."""
    planned = [(cfg.service(n), cfg.service(n).checks_in("verify", rt.env.verify_checks))
               for n in names if any(s.name == n for s in cfg.services)]
    planned = [(svc, kinds) for svc, kinds in planned if kinds]
    if not planned:
        return []
    variables: dict[str, str] = {}
    jwt_problem = ""
    if any(c.kind in NEEDS_JWT for _, kinds in planned for c in kinds):
        value, jwt_problem = chart_secret(rt, merged, "jwtSecret")
        if value:
            variables["JWT_SECRET"] = value
    out: list[Check] = []
    with ExitStack() as stack:
        nats, nats_problem = (stack.enter_context(_nats(rt, merged))
                              if any(c.kind == "nats-publish" for _, kinds in planned for c in kinds) else (None, ""))
        target = CheckTarget(run_id, WINDOW_S, variables, nats, nats_problem)
        for svc, kinds in planned:
            full = resource_name(rt.release, svc.name)
            port = int(merged["services"][svc.name]["service"]["port"])
            try:
                with kubectl.port_forward(rt.kube, f"svc/{full}", port) as local:
                    got = service_checks(svc, f"http://127.0.0.1:{local}", kinds, target)
            except StageFailed as exc:
                got = [Check(svc.name, c.kind, False, "a port-forward to the service", exc.message, 0.0)
                       for c in kinds]
            if jwt_problem:   # say why, rather than the generic "no JWT_SECRET"
                for c in got:
                    if not c.ok and c.got.startswith("no JWT_SECRET"):
                        c.got = jwt_problem
            out += got
    return out
