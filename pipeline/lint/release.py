"""Lint as part of the release: which Kubernetes versions to check, at which threshold, and the stage body.

Kubernetes versions of an environment, first that applies:
1. its cluster's API server version, when the cluster answers (`kubectl version`, 5 s timeout);
2. the environment's `kube_versions` in pipeline.toml;
3. DEFAULT_KUBE_VERSIONS (the local cluster's 1.20 and a current one).
A flag (`invoke lint --kube-version`) overrides all three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.core.config import Config, Environment
from pipeline.core.errors import PipelineError
from pipeline.core.reporter import Reporter
from pipeline.core.vocab import SEVERITY_RANK
from pipeline.lint.run import DEFAULT_KUBE_VERSIONS, LintReport, gate, lint_paths

LINT_DIRS = ("dockerfiles", "compose", "k8s", "helm")
CLUSTER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LintResult:
    """What the lint stage records: status (pass | blocked), counts, the Kubernetes versions checked."""

    status: str
    threshold: str
    blocking: int
    findings: int
    kube_versions: tuple[str, ...]
    report: LintReport


def normal_version(version: str) -> str:
    """"v1.20.2" → "1.20.0", "1.31" → "1.31.0": schemas exist per minor version."""
    major, minor = version.lstrip("v").split(".")[:2]
    return f"{major}.{''.join(ch for ch in minor if ch.isdigit())}.0"


def sorted_versions(versions: Iterable[str]) -> tuple[str, ...]:
    """Distinct "X.Y.Z" versions, oldest first (the last one is the "current" one the rules render with)."""
    return tuple(sorted(set(versions), key=lambda v: tuple(int(x) for x in v.split("."))))


def kube_versions_for(env: Environment, reporter: Reporter | None = None, *,
                      ask_cluster: bool = True) -> tuple[str, ...]:
    """The Kubernetes versions to check an environment's manifests for (see the module docstring)."""
    if ask_cluster:
        try:
            from pipeline.local.cluster import kube_target
            from pipeline.tools import kubectl

            found = kubectl.server_version(kube_target(env), timeout=CLUSTER_TIMEOUT_S)
        except PipelineError:
            found = None
        if found:
            if reporter:
                reporter.detail(f"lint: {env.name}'s cluster runs Kubernetes {found}")
            return (normal_version(found),)
    if env.kube_versions:
        return sorted_versions(normal_version(v) for v in env.kube_versions)
    return DEFAULT_KUBE_VERSIONS


def default_settings(env_name: str, reporter: Reporter | None, *,
                     versions_needed: bool = True) -> tuple[str, tuple[str, ...]]:
    """(threshold, Kubernetes versions) for `invoke lint`: the named environment's, else the strictest
    threshold of all environments (the lowest severity that blocks, so the result holds for each) and the
    versions of every environment ("HIGH" and DEFAULT_KUBE_VERSIONS without a readable pipeline.toml)."""
    from pipeline.core.config import load_config
    from pipeline.core.errors import UsageError

    try:
        cfg = load_config(check_files=False)
    except PipelineError:
        if env_name:
            raise
        return "HIGH", DEFAULT_KUBE_VERSIONS
    if env_name:
        if env_name not in cfg.environments:
            raise UsageError(f"lint: unknown environment '{env_name}'",
                             f"use one of: {', '.join(cfg.environments)}")
        env = cfg.environments[env_name]
        return env.scan_threshold, kube_versions_for(env, reporter) if versions_needed else ()
    threshold = min((e.scan_threshold for e in cfg.environments.values()), key=SEVERITY_RANK.__getitem__)
    versions: set[str] = set()
    for env in cfg.environments.values() if versions_needed else ():
        versions.update(kube_versions_for(env, reporter))
    return threshold, sorted_versions(versions)


def lint_release(cfg: Config, env: Environment, reporter: Reporter) -> LintResult:
    """The lint stage: the project's Dockerfiles, compose files, manifests and chart, checked for the
    environment's Kubernetes versions and gated at its scan_threshold.

    Raises PolicyBlocked (exit 3) when findings reach the threshold; UsageError (exit 2) when the project
    holds nothing to lint.
    """
    targets = [cfg.root / d for d in LINT_DIRS if (cfg.root / d).exists()]
    versions = kube_versions_for(env, reporter)
    report = lint_paths(targets, env.scan_threshold, versions, reporter)
    for f in report.blocking:
        where = f"{f.file}:{f.line}" if f.line else f.file
        reporter.warn(f"lint {f.rule} {f.severity} {where}: {f.message}")
    reporter.info(f"lint: {report.status} at {report.threshold} for Kubernetes {', '.join(versions)} "
                  f"({len(report.findings)} finding(s), {len(report.blocking)} blocking)")
    gate(report)
    return LintResult(report.status, report.threshold, len(report.blocking), len(report.findings), versions, report)
