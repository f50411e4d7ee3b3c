"""The task layer of `invoke deploy`, `invoke rollback` and `invoke status`: load the config and the manifest,
call the stage's functions, print for the terminal."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, Environment, load_config
from pipeline.core.errors import DriftFound, UsageError
from pipeline.core.manifest import Manifest
from pipeline.core.redact import redact
from pipeline.core.reporter import PlainReporter, Reporter
from pipeline.stages.deploy.drift import drift_hint, drift_report
from pipeline.stages.deploy.rollout import DeployResult, deploy_release, rollback_release
from pipeline.stages.deploy.status import observe, summarize
from pipeline.stages.deploy.target import DEFAULT_TIMEOUT_S, ReleaseTarget
from pipeline.tools import kubectl


def _manifest_for(cfg: Config) -> Manifest:
    path = cfg.state_dir / "manifest.json"
    if not path.exists():
        raise UsageError(f"no Release manifest at {path}", "run: invoke build push --env <env>")
    return Manifest.load(path)


def run_deploy(env_name: str, services: Sequence[str], dry_run: bool) -> DeployResult:
    """`invoke deploy`."""
    cfg = load_config()
    env = cfg.env(env_name)
    for s in services:
        cfg.service(s)
    timeout = int(os.environ.get("VEZA_DEPLOY_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    return deploy_release(cfg, env, _manifest_for(cfg), services=services, dry_run=dry_run, timeout_s=timeout,
                          reporter=PlainReporter())


def run_rollback(env_name: str, revision: int | None) -> int:
    """`invoke rollback`."""
    cfg = load_config()
    return rollback_release(cfg, cfg.env(env_name), revision, reporter=PlainReporter())


def run_status(env_name: str, as_json: bool) -> dict[str, Any]:
    """`invoke status`."""
    cfg = load_config()
    env = cfg.env(env_name)
    path = cfg.state_dir / "manifest.json"
    manifest = Manifest.load(path) if path.exists() else None
    return status_report(cfg, env, manifest, PlainReporter(), as_json=as_json)


def status_report(cfg: Config, env: Environment, manifest: Manifest | None, reporter: Reporter, *,
                  as_json: bool = False, kubeconfig: Path | None = None) -> dict[str, Any]:
    """What runs, per service, and every difference from the environment's manifest, one line each
    ("drift: SERVICE: expected sha256:…, running sha256:…"). Returns release_status()'s dict plus
    `differences` (lines). Raises DriftFound (exit 7) when there is any difference."""
    rt = ReleaseTarget.of(env, kubeconfig)
    seen = observe(rt)
    info = summarize(cfg, env, manifest, seen, kubectl.server_version(rt.kube) if seen.cluster else None)
    diffs = drift_report(env, manifest, seen)
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
    if diffs:
        for d in diffs:
            reporter.warn(f"drift: {d.line()}")
        raise DriftFound(f"{env.name}: the cluster differs from the Release manifest in {len(diffs)} place(s)",
                         drift_hint(env, diffs))
    return info
