"""Build the local cluster's binaries from Debian's `kubernetes` source package, once, cached by key.

The recipe (verified by hand on this machine kind, see TOOLCHAIN.md "Local Kubernetes"):
- the source comes from Debian's `kubernetes` source package (deb-src through a private apt config);
- the vendored reflect2 1.0.1 crashes with Go >= 1.18: Debian's golang-github-modern-go-reflect2-dev replaces it;
- the kubelet gets a small patch (kubelet-min-oom.patch): this VM cannot lower oom_score_adj;
- GOPATH mode (module mode fails), CGO off, Debian's golang-go; pkg/generated/openapi is generated first.
Binaries land in CACHE_DIR/k8s/<version>-<recipe digest>/bin/, outside the work tree, so fresh clones reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core import pinned
from pipeline.core.errors import StageFailed
from pipeline.core.lock import file_lock
from pipeline.core.progress import Progress
from pipeline.local.cluster import layout
from pipeline.tools import apt, srcbuild

APT_PACKAGES = ("golang-go", "gcc", "libc6-dev", "patch", "dpkg-dev", "tar")
REFLECT2_PACKAGE = "golang-github-modern-go-reflect2-dev"
SOURCE_PACKAGE = "kubernetes"
# The recipe was verified with bookworm's source package (1.20.5+really1.20.2); newer releases dropped it.
SOURCE_SUITE = "bookworm"
# Bump when the recipe changes in a way the binaries depend on (it is part of the cache key).
RECIPE_REVISION = "1"
BINARIES = (*layout.COMPONENTS, "pause")

# Seconds seen on 2 cores (Debian 12) for each step, shown as the expected duration until this machine
# has measured its own (stored in BUILD_ROOT/timings.json after each build).
DEFAULT_EXPECTED = {"tools": 5, "download": 40, "prepare": 20, "openapi": 90, "compile": 420, "pause": 3}
STEP_TITLES = {"tools": "build tools (apt, only what is missing)",
               "download": "fetch Debian's kubernetes source package",
               "prepare": "unpack, swap reflect2, apply the kubelet patch",
               "openapi": "generate the OpenAPI definitions (openapi-gen)",
               "compile": "compile apiserver, controller-manager, scheduler, kubelet, kube-proxy",
               "pause": "compile the pause binary (pause.c, static)"}


def build_key() -> str:
    """<version>-<digest of everything the binaries depend on besides the upstream source>."""
    h = hashlib.sha256()
    for part in (layout.K8S_VERSION, RECIPE_REVISION, REFLECT2_PACKAGE, _ldflags()):
        h.update(part.encode() + b"\0")
    h.update(layout.OOM_PATCH.read_bytes())
    return f"{layout.K8S_VERSION}-{h.hexdigest()[:12]}"


def _ldflags() -> str:
    v = "k8s.io/kubernetes/vendor/k8s.io"
    major, minor, _ = layout.K8S_VERSION.split(".")
    flags = ["-s", "-w"]
    for pkg in ("component-base/version", "client-go/pkg/version"):
        flags += [f"-X {v}/{pkg}.gitVersion=v{layout.K8S_VERSION}", f"-X {v}/{pkg}.gitMajor={major}",
                  f"-X {v}/{pkg}.gitMinor={minor}", f"-X {v}/{pkg}.gitTreeState=clean"]
    return " ".join(flags)


def cached_binaries() -> Path | None:
    """The bin directory of a complete build for the current key, or None."""
    bindir = layout.binaries_dir(build_key())
    if (bindir.parent / "build.json").is_file() and all((bindir / b).is_file() for b in BINARIES):
        return bindir
    return None


BUILD_PIECE = "kubernetes build"   # the build's line in the live view (group "cluster")


class ClusterBuildProgress:
    """One line per step with its expected duration, and a heartbeat every `tick_s` (20 s) while a step runs (a big
    Go package can compile for minutes without output).

    With `progress` (pipeline.core.progress), every line updates the one piece BUILD_PIECE (the live view's line;
    without a terminal, at most one line a minute) and the end is its done/failed state; else each line goes to
    `say` prefixed "cluster build: "."""

    def __init__(self, expected: dict[str, float], say: Callable[[str], None] | None = None,
                 progress: Progress | None = None, *, tick_s: float = 20.0) -> None:
        self.expected = expected
        self._say = say or _print
        self._progress = progress
        self.tick_s = tick_s
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.step_start = self.t0
        self.steps = list(STEP_TITLES)
        self.title = ""
        self.detail = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def total_expected(self) -> float:
        return sum(self.expected.get(s, DEFAULT_EXPECTED[s]) for s in self.steps)

    def start(self, step: str) -> None:
        n = self.steps.index(step) + 1
        exp = self.expected.get(step, DEFAULT_EXPECTED[step])
        self.step_start = time.monotonic()
        self.detail = ""
        if self._progress:   # a live line is short: "[5/6] compile 3m10s of ~7m00s expected: 812 packages compiled"
            self.title = f"[{n}/{len(self.steps)}] {step}"
            self.say(f"{self.title}: {STEP_TITLES[step]} (expected ~{_fmt(exp)})")
        else:
            self.title = f"[{n}/{len(self.steps)}] {STEP_TITLES[step]}"
            self.say(f"{self.title} (expected ~{_fmt(exp)})")
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, args=(exp,), daemon=True)
        self._ticker.start()

    def _tick(self, expected: float) -> None:
        while not self._stop.wait(self.tick_s):
            self.say(self.heartbeat(expected))

    def heartbeat(self, expected: float) -> str:
        """The running step's state: what it did last, how long so far against the expectation, the total."""
        now = time.monotonic()
        took = now - self.step_start
        eta = f"~{_fmt(expected - took)} left" if took < expected else "taking longer than expected"
        detail = f"{self.detail}, " if self.detail else ""
        if self._progress:   # a live line is narrow: time first; it shows the whole build's elapsed time itself
            late = " of" if took < expected else ", longer than the"
            return f"{self.title} {_fmt(took)}{late} ~{_fmt(expected)} expected{': ' + self.detail if detail else ''}"
        return f"      … {detail}{_fmt(took)} so far ({eta}), {_fmt(now - self.t0)} in total"

    def beat(self, detail: str) -> None:
        self.detail = detail

    def close(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join()

    def done(self, step: str, note: str = "") -> None:
        self.close()
        took = time.monotonic() - self.step_start
        self.timings[step] = round(took, 1)
        head = f"{self.title}: " if self._progress else "      "
        self.say(f"{head}done in {_fmt(took)}{' (' + note + ')' if note else ''}")

    def say(self, line: str) -> None:
        if self._progress:
            self._progress(BUILD_PIECE, line, "running")
        else:
            self._say(f"cluster build: {line}")

    def finished(self, line: str, state: str = "done") -> None:
        """The build's result (state done) or its error (state failed): the piece's end, or a said line."""
        if self._progress:
            self._progress(BUILD_PIECE, line, state)
        else:
            self._say(f"cluster build: {line}")


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@contextmanager
def _build_lock() -> Iterator[None]:
    layout.BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with file_lock(layout.BUILD_ROOT / ".build.lock"):
        yield


def _expected() -> dict[str, float]:
    try:
        data = json.loads((layout.BUILD_ROOT / "timings.json").read_text())
        return {k: float(v) for k, v in data.items() if k in DEFAULT_EXPECTED}
    except (OSError, ValueError):
        return {}


def ensure_binaries(say: Callable[[str], None] | None = None, progress: Progress | None = None) -> Path:
    """The directory holding every cluster binary, building them first when the cache has none for this key.

    say: where the build's progress lines go (a step line, then a heartbeat every 20 s); default stdout.
    progress: instead of say, one piece of long work ("kubernetes build") updated by every step and heartbeat,
    ending done (the binaries' directory) or failed (the error); a cache hit reports nothing."""
    found = cached_binaries()
    if found:
        return found
    with _build_lock():
        found = cached_binaries()  # another process may have built them while we waited
        if found:
            return found
        return _build(say, progress)


def _build(say: Callable[[str], None] | None = None, progress: Progress | None = None) -> Path:
    prog = ClusterBuildProgress(_expected(), say, progress)
    try:
        return _build_steps(prog)
    except KeyboardInterrupt:
        prog.close()
        prog.finished("stopped (Ctrl-C)", "interrupted")   # not a failure, and str(KeyboardInterrupt()) is ""
        raise
    except BaseException as exc:
        prog.close()
        prog.finished(f"failed: {exc}"[:300], "failed")
        raise
    finally:
        prog.close()


def _build_steps(prog: ClusterBuildProgress) -> Path:
    key = build_key()
    prog.say(f"building Kubernetes {layout.K8S_VERSION} (key {key}) into {layout.binaries_dir(key)}; "
             f"expected ~{_fmt(prog.total_expected())} from cold (once per machine; cached afterwards)")
    log_path = layout.BUILD_ROOT / "build.log"
    with open(log_path, "a") as log:
        log.write(f"\n==== build {key} {time.ctime()}\n")

        prog.start("tools")
        installed = apt.ensure_installed(APT_PACKAGES)
        prog.done("tools", f"installed {' '.join(installed)}" if installed else "all present")

        prog.start("download")
        orig, r2deb = _download()
        prog.done("download", f"{orig.name}, {r2deb.name}")

        prog.start("prepare")
        fresh = _prepare_tree(orig, r2deb, key)
        prog.done("prepare", "unpacked and patched" if fresh else "tree already prepared")

        env = srcbuild.go_env(layout.GOPATH, layout.GOCACHE)
        prog.start("openapi")
        _generate_openapi(env, prog)
        prog.done("openapi")

        prog.start("compile")
        staging = layout.BUILD_ROOT / key / "bin.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        count = 0

        def on_line(line: str) -> None:
            nonlocal count
            log.write(line + "\n")
            count += 1
            prog.beat(f"{count} packages compiled")

        rc = srcbuild.go_build([f"k8s.io/kubernetes/cmd/{c}" for c in layout.COMPONENTS], out=Path(f"{staging}/"),
                               ldflags=_ldflags(), env=env, cwd=layout.SOURCE_TREE, timeout=5400, on_line=on_line)
        if rc != 0:
            raise StageFailed(f"compiling Kubernetes failed (exit {rc})", f"see the build log: {log_path}")
        prog.done("compile", f"{count} packages compiled")

        prog.start("pause")
        srcbuild.gcc_static(layout.SOURCE_TREE / "build/pause/linux/pause.c", staging / "pause",
                            defines={"VERSION": f"v{layout.K8S_VERSION}-veza"})
        prog.done("pause")

    bindir = layout.binaries_dir(key)
    shutil.rmtree(bindir, ignore_errors=True)
    staging.rename(bindir)
    total = round(time.monotonic() - prog.t0, 1)
    info = {"key": key, "version": layout.K8S_VERSION, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "go": srcbuild.go_version(), "timings_s": prog.timings, "total_s": total}
    (bindir.parent / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    merged = {**_expected(), **{k: v for k, v in prog.timings.items() if v > 1}}
    (layout.BUILD_ROOT / "timings.json").write_text(json.dumps(merged, indent=2) + "\n")
    prog.finished(f"built in {_fmt(total)}: {bindir}")
    return bindir


def _download() -> tuple[Path, Path]:
    d = layout.DOWNLOADS
    d.mkdir(parents=True, exist_ok=True)
    orig = _newest(d.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    r2deb = _newest(d.glob(f"{REFLECT2_PACKAGE}_*.deb"))
    if not (orig and r2deb):
        papt = apt.PrivateApt(layout.APT_DIR, source_suite=SOURCE_SUITE)
        papt.configure()
        papt.update()
        if not orig:
            papt.download_source(SOURCE_PACKAGE, d)
            orig = _newest(d.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
        if not r2deb:
            papt.download_binary(REFLECT2_PACKAGE, d)
            r2deb = _newest(d.glob(f"{REFLECT2_PACKAGE}_*.deb"))
    if not orig or not r2deb:
        raise StageFailed(f"apt did not deliver the {SOURCE_PACKAGE} source or {REFLECT2_PACKAGE} into {d}",
                          "check that the machine's apt sources carry Debian main for this release")
    # apt checked them against the signed archive when it fetched them; the pins check the cache at each use
    # (a new Debian revision of either file needs its sha256 in toolchain.lock.json).
    for f in (orig, r2deb):
        pinned.check_cached(f, rerun="invoke cluster-up")
    return orig, r2deb


def _newest(paths: Iterator[Path]) -> Path | None:
    found = sorted(paths, key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _prepare_tree(orig: Path, r2deb: Path, key: str) -> bool:
    """Unpack the source under GOPATH, swap reflect2, apply the kubelet patch. False when already done for key."""
    stamp = layout.SOURCE_TREE / ".veza-prepared"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return False
    scratch = layout.BUILD_ROOT / "unpack"
    shutil.rmtree(scratch, ignore_errors=True)
    srcbuild.untar(orig, scratch)
    top = scratch / f"kubernetes-{layout.K8S_VERSION}"
    if not top.is_dir():
        found = ", ".join(p.name for p in scratch.iterdir())
        raise StageFailed(f"{orig.name} holds {found}, not kubernetes-{layout.K8S_VERSION}",
                          "this release's kubernetes source package differs; set K8S_VERSION in "
                          "pipeline/local/cluster/layout.py to the version it carries")
    apt.extract_deb(r2deb, scratch / "reflect2")
    r2src = next((scratch / "reflect2").rglob("github.com/modern-go/reflect2"))
    vendored = top / "vendor/github.com/modern-go/reflect2"
    shutil.rmtree(vendored)
    vendored.mkdir()
    for f in r2src.iterdir():
        if f.suffix in (".go", ".s") and not f.name.endswith("_test.go"):
            shutil.copy2(f, vendored / f.name)
    srcbuild.apply_patch(layout.OOM_PATCH, top)
    shutil.rmtree(layout.SOURCE_TREE, ignore_errors=True)
    layout.SOURCE_TREE.parent.mkdir(parents=True, exist_ok=True)
    top.rename(layout.SOURCE_TREE)
    shutil.rmtree(scratch, ignore_errors=True)
    stamp.write_text(key + "\n")
    return True


_OPENAPI_MARK = re.compile(rb"^// *\+k8s:openapi-gen=", re.MULTILINE)


def _openapi_inputs(tree: Path) -> list[str]:
    """Import paths of every package that asks for OpenAPI definitions (the hack/ scripts' selection)."""
    skip = ("vendor/k8s.io/code-generator/", "vendor/k8s.io/sample-apiserver/")
    dirs: set[str] = set()
    for top in ("pkg", "cmd", "plugin", "vendor"):
        for root, _dirs, files in os.walk(tree / top, followlinks=True):
            rel = os.path.relpath(root, tree)
            if any((rel + "/").startswith(s) for s in skip):
                continue
            for name in files:
                if name.endswith(".go") and not name.endswith("_test.go"):
                    if _OPENAPI_MARK.search((Path(root) / name).read_bytes()):
                        dirs.add(rel)
                        break
    return sorted(f"k8s.io/kubernetes/{d}" for d in dirs)


def _generate_openapi(env: dict[str, str], prog: ClusterBuildProgress) -> None:
    tree = layout.SOURCE_TREE
    out = tree / "pkg/generated/openapi/zz_generated.openapi.go"
    if out.is_file() and out.stat().st_size > 1_000_000:
        return
    tool = layout.BUILD_ROOT / "tools" / "openapi-gen"
    rc = srcbuild.go_build(["k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen"], out=tool, ldflags="",
                           env=env, cwd=tree, timeout=1800, on_line=lambda ln: prog.beat("building openapi-gen"))
    if rc != 0:
        raise StageFailed(f"building openapi-gen failed (exit {rc})", f"see the build log under {layout.BUILD_ROOT}")
    inputs = _openapi_inputs(tree)
    srcbuild.run_binary([tool, "-i", ",".join(inputs), "-p", "k8s.io/kubernetes/pkg/generated/openapi",
                         "-O", "zz_generated.openapi", "-h", "vendor/k8s.io/code-generator/hack/boilerplate.go.txt",
                         "-r", str(layout.BUILD_ROOT / "openapi-violations.report")],
                        env=env, cwd=tree, timeout=1800, what="openapi-gen")
    if not out.is_file():
        raise StageFailed("openapi-gen produced no pkg/generated/openapi/zz_generated.openapi.go",
                          "see the build log under " + str(layout.BUILD_ROOT))


def main() -> int:
    print(ensure_binaries())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
