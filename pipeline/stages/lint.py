"""The lint stage: `invoke lint` over the project's own files as a release stage, gated by the environment's
threshold (PolicyBlocked, exit 3). An environment runs it when it lists "lint" in `stages`.

The recorded result holds while the linted files, the Kubernetes versions and the threshold are the same:
the fingerprint is a SHA-256 over every file under the lint directories (path and content).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.contract.context import RunContext
from pipeline.contract.stage import BaseStage, StageSummary
from pipeline.lint.release import LINT_DIRS, kube_versions_for, lint_release


def inputs_fingerprint(root: Path, threshold: str, kube_versions: tuple[str, ...]) -> str:
    """sha256 hex of the lint inputs: every file under root/LINT_DIRS (sorted paths and bytes), the
    threshold and the Kubernetes versions."""
    h = hashlib.sha256(f"{threshold}|{','.join(kube_versions)}".encode())
    for d in LINT_DIRS:
        base = root / d
        if not base.exists():
            continue
        for p in sorted(x for x in base.rglob("*") if x.is_file()):
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


class LintStage(BaseStage):
    """Dockerfiles, compose, manifests and the chart, linted for the environment's cluster."""

    name = "lint"

    def holds(self, ctx: RunContext) -> str | None:
        rec = ctx.manifest.stage("lint")
        if rec is None or not rec.ok or rec.fields.get("lint_status") != "pass":
            return "no passing lint recorded"
        versions = kube_versions_for(ctx.env, ctx.reporter)
        if rec.fields.get("fingerprint") != inputs_fingerprint(ctx.cfg.root, ctx.env.scan_threshold, versions):
            return "the linted files, the threshold or the cluster's Kubernetes version changed"
        return None

    def run(self, ctx: RunContext) -> StageSummary:
        result = lint_release(ctx.cfg, ctx.env, ctx.reporter)
        return StageSummary(
            detail=f"{result.findings} finding(s), none at {result.threshold} "
                   f"(Kubernetes {', '.join(result.kube_versions)})",
            fields={"lint_status": result.status, "threshold": result.threshold, "findings": result.findings,
                    "kube_versions": list(result.kube_versions),
                    "fingerprint": inputs_fingerprint(ctx.cfg.root, result.threshold, result.kube_versions)})
