"""`invoke doctor`: one line per required component, with version, origin, and the fix when missing (exit 6).

Each tool says what it was checked against: a tool pinned by hash (toolchain.lock.json) names the file, the
sha256 it matched and where the pinned file comes from, whether it is `.tools/bin/<tool>` or the PATH binary
used when that is missing (pipeline/tools/proc.py find_tool refuses a PATH binary that does not match); a tool
from a Debian package names the package, its version and whether the file still has dpkg's recorded md5sum
(pipeline/tools/dpkg.py); a file of no package says so."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import pinned
from pipeline.core.errors import ToolMissing
from pipeline.core.paths import ROOT, TOOLS_BIN, TOOLS_DIR, VENV_DIR
from pipeline.tools import proc

BOOTSTRAP = "python3 -m pipeline.machine.bootstrap"


@dataclass(frozen=True)
class Check:
    component: str
    ok: bool
    version: str
    origin: str
    fix: str = ""
    required: bool = True


def _first_line(argv: list[str]) -> str:
    try:
        res = proc.run(argv, timeout=20, check=False)
    except ToolMissing:
        return ""
    out = (res.stdout + res.stderr).strip()
    return out.splitlines()[0] if res.ok and out else ""


def _tool(name: str, args: list[str], fix: str, *, required: bool = True, label: str = "") -> Check:
    local = TOOLS_BIN / name
    path = str(local) if local.exists() else shutil.which(name)
    if not path:
        return Check(label or name, False, "", "not found", fix, required)
    version = _first_line([path, *args]).replace(path, "").strip()
    origin = "project tools dir" if path.startswith(str(TOOLS_BIN)) else path
    if Path(path).is_symlink():
        origin = f"{origin} -> {Path(path).resolve()}"
    if name in pinned.binary_names():
        return _pinned(name, Path(path), label or name, version, required)
    from pipeline.tools import dpkg

    owned = dpkg.check_file(Path(path))
    changed = bool(owned.package and owned.recorded and not owned.ok)
    ok = bool(version) and not changed
    why = f"apt-get install --reinstall {owned.package}" if changed else fix
    said = owned.describe() if origin in (path, owned.path) else f"{origin} · {owned.describe()}"
    return Check(label or name, ok, version or "does not run", said,
                 "" if ok else why, required)


def _pinned(name: str, path: Path, label: str, version: str, required: bool, where: str = "") -> Check:
    """A pinned tool: which hash it matched (toolchain.lock.json), its version and where it comes from."""
    pin = pinned.binary_pin(name)
    try:
        digest = pinned.check(path, pin, memo=pinned.HashMemo(TOOLS_DIR / "verified.json"))
    except pinned.PinMismatch as exc:
        return Check(label, False, version or "does not run", exc.message, exc.hint or BOOTSTRAP, required)
    except OSError as exc:
        return Check(label, False, "", f"{path}: {exc.strerror}", BOOTSTRAP, required)
    ok = bool(version) and pin.version in version
    fix = "" if ok else f"{path} reports '{version}', pinned {pin.version}: rm {path} and run {BOOTSTRAP}"
    where = where or ("project tools dir" if path.is_relative_to(TOOLS_BIN) else "PATH (.tools/bin has none)")
    return Check(label, ok, version or "does not run",
                 f"{path} ({where}): sha256:{digest[:12]} matches the pin · {pin.source}", fix, required)


def _compose_plugin() -> Check:
    """The `docker compose` plugin: used only when it is the pinned docker-compose (pipeline/tools/compose.py)."""
    from pipeline.tools.compose import compose_plugin

    plugin = compose_plugin()
    version = _first_line(["docker", "compose", "version"]) if plugin else ""
    if plugin is None or not version:
        return Check("compose plugin", False, "missing", "docker CLI plugin", BOOTSTRAP, required=False)
    check = _pinned("docker-compose", plugin, "compose plugin", version, required=False, where="docker CLI plugin")
    if not check.ok:   # not run: the pinned standalone docker-compose is used instead
        return Check("compose plugin", False, version, f"{check.origin}; not used (the pinned docker-compose is)",
                     f"{BOOTSTRAP} (it replaces the plugin with the pinned file)", required=False)
    return check


def _python_lock() -> Check:
    """The venv holds requirements.lock (the bootstrap's stamp covers the lock, its build input and pyproject)."""
    from pipeline.machine.bootstrap import lock_names, venv_stamp

    stamp = VENV_DIR / ".veza-stamp"
    lock = ROOT / "requirements.lock"
    current = stamp.is_file() and stamp.read_text() == venv_stamp()
    return Check("python dependencies", current, f"{len(lock_names(lock))} locked, with hashes",
                 f"{lock.name} (pip --require-hashes)" if current else "the venv predates the current lock",
                 "" if current else BOOTSTRAP)


def _engine() -> list[Check]:
    fix = "apt-get install -y docker.io && dockerd & (or: python3 -m pipeline.machine.bootstrap)"
    raw = _first_line(["docker", "version", "--format", "{{json .Server}}"])
    if not raw:
        return [Check("docker engine", False, "", "no daemon answers", fix)]
    server = json.loads(raw)
    ctx = _first_line(["docker", "context", "show"]) or "default"
    checks = [Check("docker engine", True, f"{server.get('Version')} (API {server.get('ApiVersion')})",
                    f"context {ctx}")]
    checks.append(_builder())
    return checks


def _builder() -> Check:
    """Which builder `invoke build` uses and why (buildx, a BuildKit-capable CLI, or the legacy builder)."""
    from pipeline.tools import buildkit

    try:
        b = buildkit.detect("auto")
    except ToolMissing as exc:
        return Check("builder", False, "", exc.message, exc.hint or "apt-get install -y docker.io")
    fix = "" if b.kind != "legacy" else "apt-get install -y docker.io (its 20.10 CLI drives BuildKit) or docker-buildx"
    from pipeline.tools import dpkg

    cli = dpkg.check_file(Path(b.cli))   # the CLI that builds: a Debian package's file, checked like the others
    if cli.package and cli.recorded and not cli.ok:
        return Check("builder", False, f"{b.label} {b.version}".strip(), f"{b.why} · {cli.describe()}",
                     f"apt-get install --reinstall {cli.package}")
    return Check("builder", True, f"{b.label} {b.version}".strip(), f"{b.why} · {cli.describe()}", fix)


def _cluster() -> Check:
    try:
        from pipeline.local.cluster import cluster_state
    except ImportError:
        return Check("local cluster", False, "", "provisioner not installed", "invoke cluster-up", required=False)
    state = cluster_state()
    running = bool(state.get("running"))
    return Check("local cluster", running, str(state.get("version", "")) if running else "not running",
                 str(state.get("kubeconfig", "")), "" if running else str(state.get("start", "invoke cluster-up")),
                 required=False)


def _sandbox_image() -> Check:
    """The local cluster's pod sandbox image (the pause image every pod's sandbox runs): its image ID and origin.
    It is built here from the Kubernetes tree's pause.c and is not signed; the node names it by tag
    (docs/cluster.md says why)."""
    try:
        from pipeline.local.cluster.pause import sandbox_image
    except ImportError:
        return Check("sandbox image", False, "", "provisioner not installed", "invoke cluster-up", required=False)
    try:
        found = sandbox_image()
    except ToolMissing as exc:
        return Check("sandbox image", False, "", exc.message, exc.hint or "", required=False)
    if found is None:
        return Check("sandbox image", False, "not built", "k8s.gcr.io/pause:3.2", "invoke cluster-up", required=False)
    origin = "built here from pause.c" if found["built_here"] else "NOT built by this provisioner"
    if found["pause_sha256"]:
        origin += f" (pause binary sha256:{found['pause_sha256'][:12]})"
    return Check("sandbox image", bool(found["built_here"]), f"{found['ref']} {found['id']}",
                 f"{origin}; unsigned, named by tag", "" if found["built_here"] else
                 f"docker rmi {found['ref']} and invoke cluster-up (it builds it)", required=False)


def collect() -> list[Check]:
    checks: list[Check] = [_python_lock()]
    checks += _engine()
    checks.append(_tool("docker", ["--version"], "apt-get install -y docker.io", label="docker client"))
    checks.append(_tool("docker-compose", ["version"], BOOTSTRAP, label="compose"))
    checks.append(_compose_plugin())
    checks.append(_tool("docker-registry", ["--version"], "apt-get install -y docker-registry"))
    checks.append(_tool("skopeo", ["--version"], "apt-get install -y skopeo"))
    checks.append(_tool("trivy", ["--version"], BOOTSTRAP))
    checks.append(_tool("hadolint", ["--version"], BOOTSTRAP))
    checks.append(_tool("helm", ["version", "--short"], BOOTSTRAP))
    checks.append(_tool("helm4", ["version", "--short"], BOOTSTRAP, required=False))
    checks.append(_tool("kubectl", ["version", "--client"], BOOTSTRAP))
    checks.append(_tool("git", ["--version"], "apt-get install -y git"))
    checks.append(_tool("debootstrap", ["--version"], "apt-get install -y debootstrap"))
    checks.append(_tool("socat", ["-V"], "apt-get install -y socat", required=False))
    checks.append(_cluster())
    checks.append(_sandbox_image())
    return checks


def run_doctor(fix: bool = False) -> list[Check]:
    from rich.console import Console
    from rich.table import Table

    if fix:
        from pipeline.machine.bootstrap import bootstrap

        bootstrap(quiet=True)
    checks = collect()
    table = Table(title="veza-pipeline doctor", show_lines=False)
    for col in ("", "component", "version", "from", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]optional[/]")
        table.add_row(mark, c.component, c.version, c.origin, c.fix)
    Console(width=160).print(table)
    missing = [c for c in checks if c.required and not c.ok]
    if missing:
        names = ", ".join(c.component for c in missing)
        raise ToolMissing(f"missing required component(s): {names}", missing[0].fix)
    return checks
