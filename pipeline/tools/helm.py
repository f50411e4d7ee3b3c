"""Helm adapter: Helm 3 and Helm 4, detected from `helm version`.

The binary is .tools/bin/helm (Helm 3.17) unless VEZA_HELM names another (e.g. .tools/bin/helm4).
Helm 4 renamed `--atomic` to `--rollback-on-failure` and made `--wait` a strategy (`--wait=watcher`);
upgrade_flags() is the one place that knows it. Functions are independent: each takes what it needs.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed, ToolMissing
from pipeline.core.paths import ROOT
from pipeline.core.pinned import BOOTSTRAP, LOCK_FILE, PinMismatch, sha256_file
from pipeline.tools.kubectl import KubeTarget
from pipeline.tools.proc import Result, find_tool, pin_matches, run, stream

HELM_ENV = "VEZA_HELM"
HELM_PINS = ("helm", "helm4")   # toolchain.lock.json binaries a VEZA_HELM override may be
PENDING_STATES = ("pending-install", "pending-upgrade", "pending-rollback")


@dataclass(frozen=True)
class HelmBinary:
    path: str
    version: str  # e.g. "v3.17.3"
    major: int


@dataclass(frozen=True)
class Revision:
    revision: int
    status: str
    updated: str
    chart: str
    app_version: str
    description: str


@dataclass(frozen=True)
class ReleaseStatus:
    name: str
    namespace: str
    revision: int
    status: str  # deployed | failed | pending-upgrade | ...
    last_deployed: str
    description: str


def helm_path() -> str:
    override = os.environ.get(HELM_ENV, "").strip()
    if override:
        p = Path(override)
        p = p if p.is_absolute() else ROOT / p
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ToolMissing(f"{HELM_ENV}={override}: no executable there", f"unset {HELM_ENV} or fix the path")
        if not any(pin_matches(name, p) for name in HELM_PINS):   # pinned like the default one
            raise PinMismatch(f"{HELM_ENV}={override}: {p} (sha256 {sha256_file(p.resolve())}) is none of the "
                              f"pinned Helm binaries ({', '.join(HELM_PINS)} in {LOCK_FILE.name})",
                              f"point {HELM_ENV} at .tools/bin/helm or .tools/bin/helm4 ({BOOTSTRAP} installs "
                              "them), or unset it")
        return str(p)
    return find_tool("helm", "run: invoke bootstrap (installs .tools/bin/helm)")


@functools.lru_cache(maxsize=8)
def _probe(path: str) -> HelmBinary:
    res = run([path, "version", "--template", "{{.Version}}"], timeout=20, what="helm version")
    version = res.stdout.strip()
    m = re.match(r"v?(\d+)\.", version)
    if not m:
        raise StageFailed(f"cannot read the Helm version from {path}: {version!r}")
    return HelmBinary(path=path, version=version, major=int(m.group(1)))


def helm() -> HelmBinary:
    """The Helm binary in use and its major version."""
    return _probe(helm_path())


def upgrade_flags(major: int, *, wait: bool, rollback_on_failure: bool) -> list[str]:
    """The wait/rollback flags of `helm upgrade` for a Helm major version."""
    flags: list[str] = []
    if major >= 4:
        if wait or rollback_on_failure:
            flags.append("--wait=watcher")
        if rollback_on_failure:
            flags.append("--rollback-on-failure")
    else:
        if wait or rollback_on_failure:
            flags.append("--wait")
        if rollback_on_failure:
            flags.append("--atomic")
    return flags


def ownership_flags(major: int) -> list[str]:
    """Helm 4 applies server-side: a field changed out of band (`kubectl set image`, `kubectl scale`) belongs to
    another field manager and the upgrade or rollback fails with a conflict. The release is the pipeline's, and
    restoring the recorded state is the point, so Helm 4 takes those fields back (`--force-conflicts`). Helm 3's
    three-way merge restores them without a flag."""
    return ["--force-conflicts"] if major >= 4 else []


def wait_flag(major: int) -> str:
    """The flag that makes rollback/uninstall wait for the resources."""
    return "--wait=watcher" if major >= 4 else "--wait"


def _target_args(target: KubeTarget) -> list[str]:
    out: list[str] = []
    if target.kubeconfig:
        out += ["--kubeconfig", str(target.kubeconfig)]
    if target.context:
        out += ["--kube-context", target.context]
    if target.namespace:
        out += ["--namespace", target.namespace]
    return out


def _values_args(values_files: Sequence[Path]) -> list[str]:
    out: list[str] = []
    for f in values_files:
        out += ["-f", str(f)]
    return out


def lint(chart: Path, values_files: Sequence[Path] = (), *, strict: bool = True, kube_version: str = "",
         timeout: float = 120) -> Result:
    """`helm lint` (check=False: the caller reports the findings in stdout)."""
    argv = [helm().path, "lint", str(chart), *_values_args(values_files)]
    if strict:
        argv.append("--strict")
    if kube_version:
        argv += ["--kube-version", kube_version]
    return run(argv, timeout=timeout, check=False, what="helm lint")


def template(chart: Path, release: str, values_files: Sequence[Path] = (), *, namespace: str = "default",
             kube_version: str = "", api_versions: Sequence[str] = (), timeout: float = 120) -> str:
    """Render the chart offline (`helm template`) and return the manifests; raises StageFailed on errors."""
    argv = [helm().path, "template", release, str(chart), "--namespace", namespace, *_values_args(values_files)]
    if kube_version:
        argv += ["--kube-version", kube_version]
    for api in api_versions:
        argv += ["--api-versions", api]
    return run(argv, timeout=timeout, what="helm template").stdout


def upgrade_install(target: KubeTarget, release: str, chart: Path, values_files: Sequence[Path], *,
                    timeout_s: int, history_max: int = 10, wait: bool = True, rollback_on_failure: bool = True,
                    dry_run: str = "", on_line: Callable[[str], None] | None = None,
                    cancel: threading.Event | None = None) -> Result:
    """`helm upgrade --install` with the version's wait/rollback flags. check=False: returns the result.

    dry_run: "" (real), "server" (validated by the API server, nothing changes) or "client".
    cancel: when set, Helm gets SIGTERM — it cancels the wait and, with atomic/rollback-on-failure, rolls the
    release back itself (its signal handling of `upgrade`); it is killed if it has not ended `timeout_s + 60`
    seconds later. The caller checks the release's status afterwards.
    """
    h = helm()
    argv = [h.path, "upgrade", release, str(chart), "--install", *_target_args(target),
            *_values_args(values_files), "--timeout", f"{timeout_s}s", "--history-max", str(history_max)]
    argv += ownership_flags(h.major)
    if dry_run:
        argv.append(f"--dry-run={dry_run}")
    else:
        argv += upgrade_flags(h.major, wait=wait, rollback_on_failure=rollback_on_failure)
    budget = timeout_s * 2 + 60  # wait, then (on failure) the rollback's own wait
    if on_line is None and cancel is None:
        return run(argv, timeout=budget, check=False, what="helm upgrade")
    lines: list[str] = []

    def collect(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    code = stream(argv, timeout=budget, on_line=collect, stop=cancel, stop_signal=signal.SIGTERM,
                  stop_grace_s=timeout_s + 60)
    text = "\n".join(lines)
    return Result(tuple(argv), code, text, text)


def status(target: KubeTarget, release: str, *, timeout: float = 30) -> ReleaseStatus | None:
    """The release's current status, or None when it does not exist."""
    res = run([helm().path, "status", release, *_target_args(target), "-o", "json"], timeout=timeout,
              check=False, what="helm status")
    if not res.ok:
        if "not found" in (res.stderr + res.stdout).lower():
            return None
        raise StageFailed(f"helm status {release} failed: {res.stderr.strip()[-300:]}")
    data = json.loads(res.stdout)
    info = data.get("info", {})
    return ReleaseStatus(
        name=str(data.get("name", release)), namespace=str(data.get("namespace", target.namespace)),
        revision=int(data.get("version", 0)), status=str(info.get("status", "unknown")),
        last_deployed=str(info.get("last_deployed", "")), description=str(info.get("description", "")),
    )


def history(target: KubeTarget, release: str, *, timeout: float = 30) -> list[Revision]:
    """All stored revisions, oldest first ([] when the release does not exist)."""
    res = run([helm().path, "history", release, *_target_args(target), "-o", "json", "--max", "256"],
              timeout=timeout, check=False, what="helm history")
    if not res.ok:
        if "not found" in (res.stderr + res.stdout).lower():
            return []
        raise StageFailed(f"helm history {release} failed: {res.stderr.strip()[-300:]}")
    out = [Revision(revision=int(r["revision"]), status=str(r.get("status", "")), updated=str(r.get("updated", "")),
                    chart=str(r.get("chart", "")), app_version=str(r.get("app_version", "")),
                    description=str(r.get("description", ""))) for r in json.loads(res.stdout or "[]")]
    return sorted(out, key=lambda r: r.revision)


def get_values(target: KubeTarget, release: str, *, revision: int | None = None, all_values: bool = False,
               timeout: float = 30) -> dict[str, Any]:
    """The user-supplied values of the current (or given) revision."""
    argv = [helm().path, "get", "values", release, *_target_args(target), "-o", "json"]
    if revision:
        argv += ["--revision", str(revision)]
    if all_values:
        argv.append("--all")
    res = run(argv, timeout=timeout, what="helm get values")
    data = json.loads(res.stdout or "{}")
    return data if isinstance(data, dict) else {}


def get_manifest(target: KubeTarget, release: str, *, revision: int, timeout: float = 30) -> str:
    """The rendered manifests (multi-document YAML) Helm stored for `revision` of the release (hooks excluded:
    get_hooks)."""
    argv = [helm().path, "get", "manifest", release, *_target_args(target), "--revision", str(revision)]
    return run(argv, timeout=timeout, what="helm get manifest").stdout


def get_hooks(target: KubeTarget, release: str, *, revision: int, timeout: float = 30) -> str:
    """The hook manifests (multi-document YAML) Helm stored for `revision`: what `helm rollback` to it runs
    besides its manifests (pre-/post-rollback Jobs)."""
    argv = [helm().path, "get", "hooks", release, *_target_args(target), "--revision", str(revision)]
    return run(argv, timeout=timeout, what="helm get hooks").stdout


def rollback(target: KubeTarget, release: str, revision: int, *, timeout_s: int, wait: bool = True,
             history_max: int = 10) -> Result:
    """`helm rollback RELEASE REVISION` (check=False)."""
    h = helm()
    argv = [h.path, "rollback", release, str(revision), *_target_args(target), "--timeout", f"{timeout_s}s",
            "--history-max", str(history_max), *ownership_flags(h.major)]
    if wait:
        argv.append(wait_flag(h.major))
    return run(argv, timeout=timeout_s + 60, check=False, what="helm rollback")


def uninstall(target: KubeTarget, release: str, *, timeout_s: int, wait: bool = True) -> Result:
    """`helm uninstall RELEASE` (check=False)."""
    h = helm()
    argv = [h.path, "uninstall", release, *_target_args(target), "--timeout", f"{timeout_s}s"]
    if wait:
        argv.append(wait_flag(h.major))
    return run(argv, timeout=timeout_s + 60, check=False, what="helm uninstall")
