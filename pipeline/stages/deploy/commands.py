"""The task layer of `invoke status`: the environment's manifest, one observation of the cluster, the comparison;
what runs for the terminal (or JSON), then one line per difference and exit 7 when there is any."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment
from pipeline.core.errors import DriftFound
from pipeline.core.manifest import Manifest, manifest_path
from pipeline.core.redact import redact
from pipeline.core.reporter import Reporter
from pipeline.stages.deploy.drift import Difference, drift_hint, drift_report
from pipeline.stages.deploy.monitoring import observe_monitoring
from pipeline.stages.deploy.status import observe, rollout_status, summarize
from pipeline.stages.deploy.target import ReleaseTarget
from pipeline.tools import kubectl


def run_status(cfg: Config, env: Environment, *, as_json: bool, reporter: Reporter) -> dict[str, Any]:
    """`invoke status` on the environment's own manifest (see status_report)."""
    manifest = Manifest.load_or_none(manifest_path(cfg.state_dir, env.name))
    return status_report(cfg, env, manifest, reporter, as_json=as_json)


def status_report(cfg: Config, env: Environment, manifest: Manifest | None, reporter: Reporter, *,
                  as_json: bool = False, kubeconfig: Path | None = None) -> dict[str, Any]:
    """What runs, per service, and every difference from the environment's manifest, one line each
    ("drift: SERVICE: expected sha256:…, running sha256:…"), and whether the environment's Prometheus is up
    (monitoring.py; one that exists and is down is a difference too). Returns release_status()'s dict plus
    `differences` (lines) and `monitoring` (Monitoring.as_dict()). Raises DriftFound (exit 7) when there is
    any difference."""
    rt = ReleaseTarget.of(env, kubeconfig)
    seen = observe(rt)
    info = summarize(cfg, env, manifest, seen, kubectl.server_version(rt.kube) if seen.cluster else None)
    diffs = drift_report(env, manifest, seen)
    mon = observe_monitoring(env, services=[n for n, e in info["services"].items() if e["deployed"]],
                             kubeconfig=kubeconfig,
                             external_cluster=rt.external) if seen.cluster or env.rollout.prometheus else None
    if mon is not None and mon.source != "none" and not mon.up:
        diffs.append(Difference("monitoring", f"the {mon.source} Prometheus ready ({mon.where})", mon.problem))
    info["monitoring"] = mon.as_dict() if mon is not None else None
    # a canary's or a blue-green's progress or outcome, one line (None: not installed, or none ever ran)
    info.update(rollout_status(rt) if seen.cluster and seen.release is not None else {"canary": None,
                                                                                    "blue_green": None})
    info["differences"] = [d.line() for d in diffs]
    say = reporter.info
    if as_json:
        print(redact(json.dumps(info, indent=2, sort_keys=True)))  # machine-readable: never wrapped
    elif not info["cluster"]:
        say(f"{env.name}: no Kubernetes API answers (start it: invoke cluster-up --env {env.name})")
    else:
        say(f"{env.name}: release {info['release']} in {info['namespace']} (Kubernetes {info['cluster']}): "
            f"{info['status']}" + (f", revision {info['revision']}" if info["revision"] else ""))
        for name, e in info["services"].items():
            if not e["deployed"]:
                say(f"  {name:<20} not deployed")
                continue
            match = "matches the manifest" if e["matches_manifest"] else (
                "differs from the manifest" if e["manifest_digest"] else "not in the manifest")
            say(f"  {name:<20} {e['ready']}/{e['replicas']} ready  {e['digest'] or e['image']}  ({match})")
        if mon is not None:
            say(f"  {mon.line()}")
        for rollout in ("canary", "blue_green"):
            if info.get(rollout):
                say(f"  {info[rollout]}")
    if diffs:
        for d in diffs if not as_json else []:  # the JSON carries them: stdout stays one JSON document
            reporter.warn(f"drift: {d.line()}")
        raise DriftFound(f"{env.name}: the cluster differs from the Release manifest in {len(diffs)} place(s)",
                         drift_hint(env, diffs))
    return info
