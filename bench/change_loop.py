"""The change loop side by side (issue 28): ours against the seed guide's loop and a careful engineer's script.

    .venv/bin/python bench/change_loop.py [--runs 3] [--cases go,rust,noop]

Every side builds the same four Dockerfiles, with the same cache mounts, on the same builder (the engine's
BuildKit: Debian's docker CLI /usr/bin/docker with DOCKER_BUILDKIT=1, the one the pipeline picks here; see
TOOLCHAIN.md "two docker CLIs"), and pushes to the same registry, the embedded one on 127.0.0.1:5000 that the
push pre-flight starts, each side under its own repository names:

  ours, one process   `invoke build push` (the local environment; its namespace set to bench-<run>)
  ours, two processes `invoke build`, then `invoke push`
  seed loop           for each service in turn: `docker build`, then `docker push`   (seed-<run>/<service>)
  careful script      the four `docker build`s at once; when all are done, the four `docker push`es at once
                      (script-<run>/<service>)

The baselines pass the base-image build args only (not VERSION/REVISION/CREATED, which change with every commit
and would make BuildKit re-run every service's compile step): that is the fastest a script gets, at the cost of
images that do not say their version. The pipeline pushes two tags per service (sha and branch, as the local
environment says); the baselines one.

Everything runs in a temporary clone of this repository's HEAD, with the pipeline's bytecode compiled once (as
an installed package has it). Cases:
  go     before each side's sample, one line is appended to services/backend-api/main.go and committed;
  rust   the same with services/chat-server/src/main.rs;
  noop   nothing changes: every side has built and pushed this commit once, then each side runs again.
Before a change case's samples, one untimed change is built and pushed (the cache mounts are shared by every
tree on the machine, so the first build after other trees' builds compiles more than a one-line change).
Each case takes --runs samples per side; the sides are interleaved (round n starts with side n mod 4) so the
machine's drift hits all of them. The bench prints medians with min–max, the ratios of the medians, the
issue's targets next to them (met / not met: a missed target does not fail the bench) and the run's facts
(date, commit, load at start and end). Exit 1 only when a side's command fails twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
INVOKE = ROOT / ".venv/bin/invoke"
DOCKER = "/usr/bin/docker"          # Debian's 20.10 CLI: drives the engine's BuildKit without buildx
REGISTRY = "127.0.0.1:5000"

from bench.run_facts import RunFacts, loadavg  # noqa: E402
from pipeline.core.config import Config, Service, load_config  # noqa: E402
from pipeline.stages.plan import base_build_args  # noqa: E402

CASES = {   # key: (label, file changed before each sample or None)
    "go": ("one changed Go service (veza-backend-api)", "services/backend-api/main.go"),
    "rust": ("one changed Rust service (veza-chat-server)", "services/chat-server/src/main.rs"),
    "noop": ("nothing changed", None),
}
SIDES = ("ours, one process", "ours, two processes", "seed loop", "careful script")
# issue 28's targets: (side, ratio to the careful script at most), per case
TARGETS = {"go": (("ours, one process", 0.7), ("ours, two processes", 0.8)),
           "rust": (("ours, one process", 0.7), ("ours, two processes", 0.8)),
           "noop": (("ours, one process", 0.5), ("ours, two processes", 0.5))}


class StepFailed(Exception):
    """A measured command failed; the message holds the command and its output's tail."""


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    cp = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if cp.returncode != 0:
        raise StepFailed(f"{' '.join(argv)} exited {cp.returncode}:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")


def timed(fn: Callable[[], None]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


class Bench:
    """One temporary clone, the commands of the four sides, and the bench's images and repositories."""

    def __init__(self, clone: Path, run_id: str) -> None:
        self.clone, self.run_id = clone, run_id
        self.cfg: Config = load_config(clone / "pipeline.toml")
        self.env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true"}
        self.docker_env = {**os.environ, "DOCKER_BUILDKIT": "1"}

    # ours
    def invoke(self, *args: str) -> None:
        run([str(INVOKE), "-r", str(self.clone), *args], self.clone, self.env)

    def ours_one(self) -> None:
        self.invoke("build", "push")

    def ours_two(self) -> None:
        self.invoke("build")
        self.invoke("push")

    # baselines
    def ref(self, side: str, svc: Service) -> str:
        return f"{REGISTRY}/{side}-{self.run_id}/{svc.name}:latest"

    def build_argv(self, side: str, svc: Service) -> list[str]:
        argv = [DOCKER, "build", "-q", "-f", str(svc.dockerfile),
                "-t", self.ref(side, svc), "--label", f"veza.bench.run={self.run_id}"]
        for k, v in sorted(base_build_args(self.cfg, svc, {b: True for b in svc.bases}).items()):
            argv += ["--build-arg", f"{k}={v}"]
        return [*argv, str(svc.context)]

    def push_argv(self, side: str, svc: Service) -> list[str]:
        return [DOCKER, "push", "-q", self.ref(side, svc)]

    def seed_loop(self) -> None:
        for svc in self.cfg.services:
            run(self.build_argv("seed", svc), self.clone, self.docker_env)
            run(self.push_argv("seed", svc), self.clone, self.docker_env)

    def careful_script(self) -> None:
        with ThreadPoolExecutor(len(self.cfg.services)) as pool:   # like `cmd & … wait` in a shell script
            for _ in pool.map(lambda s: run(self.build_argv("script", s), self.clone, self.docker_env),
                              self.cfg.services):
                pass
            for _ in pool.map(lambda s: run(self.push_argv("script", s), self.clone, self.docker_env),
                              self.cfg.services):
                pass

    def side(self, name: str) -> Callable[[], None]:
        return {"ours, one process": self.ours_one, "ours, two processes": self.ours_two,
                "seed loop": self.seed_loop, "careful script": self.careful_script}[name]

    def change(self, rel: str, note: str) -> None:
        with (self.clone / rel).open("a") as fh:
            fh.write(f"// bench {note} {time.time_ns()}\n")
        run(["git", "-C", str(self.clone), "commit", "-qam", f"bench: {note}"], self.clone)

    def sample(self, name: str, rel: str | None, note: str) -> float:
        """One sample of one side: a fresh change (unless nothing-changed), then the side's wall time. The
        engine is shared: a failed side is said and measured once more after another change."""
        if rel:
            self.change(rel, note)
        try:
            return timed(self.side(name))
        except StepFailed as exc:
            print(f"  {note}: failed, measured again ({str(exc).splitlines()[0]})", flush=True)
        if rel:
            self.change(rel, f"{note} (again)")
        return timed(self.side(name))

    def cleanup(self, before: set[str]) -> None:
        """Remove the bench's tags from the engine (images it created: all their tags) and its manifests
        from the registry. Images that existed before the bench keep every tag they had."""
        mine = (f"{REGISTRY}/bench-{self.run_id}/", f"{REGISTRY}/seed-{self.run_id}/",
                f"{REGISTRY}/script-{self.run_id}/")
        out = subprocess.run([DOCKER, "images", "--digests", "--no-trunc", "--format",
                              "{{.ID}} {{.Repository}} {{.Tag}} {{.Digest}}"],
                             capture_output=True, text=True, timeout=60, check=False).stdout.split("\n")
        tags: dict[str, list[str]] = {}
        for line in filter(None, out):
            iid, repo, tag, digest = line.split(" ")
            tags.setdefault(iid, []).append(f"{repo}:{tag}" if tag != "<none>" else f"{repo}@{digest}")
        drop: list[str] = []
        for iid, refs in tags.items():
            if not any(r.startswith(mine) for r in refs):
                continue
            # tags and, for images a later build's tag moved away from, repo@digest references
            drop += [r for r in refs if r.startswith(mine) or (iid not in before and "<none>" not in r)]
        for i in range(0, len(drop), 50):
            subprocess.run([DOCKER, "rmi", *drop[i:i + 50]], capture_output=True, timeout=120, check=False)
        for side in ("bench", "seed", "script"):
            for svc in self.cfg.services:
                delete_repository(f"{side}-{self.run_id}/{svc.repository}")


def delete_repository(repo: str) -> None:
    """Delete every manifest of `repo` (the registry has delete enabled; blobs stay for its garbage collector)."""
    accept = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=10) as r:
            tags = json.load(r).get("tags") or []
    except urllib.error.URLError:
        return
    digests = set()
    for tag in tags:
        req = urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=10) as r:
            digests.add(r.headers["Docker-Content-Digest"])
    for d in digests:
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{d}",
                                                          method="DELETE"), timeout=10).close()
        except urllib.error.HTTPError:
            pass


def make_clone(tmp: Path, run_id: str) -> Path:
    """A clone of this repository's HEAD under `tmp` whose local environment pushes to bench-<run_id>/…, with
    the pipeline's bytecode compiled once (as an installed package has it; these sessions set
    PYTHONDONTWRITEBYTECODE=1, so a tree run here never writes its own)."""
    clone = tmp / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], Path(tmp))
    for k, v in (("user.email", "bench@example.invalid"), ("user.name", "bench")):
        run(["git", "-C", str(clone), "config", k, v], clone)
    toml = clone / "pipeline.toml"
    text = toml.read_text()
    local = text.index("[environments.local]")
    toml.write_text(text[:local] + text[local:].replace('registry_namespace = "veza-local"',
                                                        f'registry_namespace = "bench-{run_id}"', 1))
    run(["git", "-C", str(clone), "commit", "-qam", "bench: own namespace"], clone)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(clone / "pipeline"), str(clone / "tasks.py")],
                   check=True, timeout=300)
    return clone


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"


def report(case: str, samples: dict[str, list[float]], loads: tuple[str, str]) -> list[str]:
    """Markdown lines for one case: each side's median (min–max) and its ratio to the careful script."""
    label = CASES[case][0]
    script = statistics.median(samples["careful script"])
    seed = statistics.median(samples["seed loop"])
    targets = dict(TARGETS[case])
    lines = [f"**{label}**, build + push of all four, {len(samples['careful script'])} samples per side "
             f"(load {loads[0]} → {loads[1]}):", "",
             "| side | median (min–max) | ÷ careful script | ÷ seed loop | target (÷ script) |",
             "|---|---|---|---|---|"]
    for name in SIDES:
        med = statistics.median(samples[name])
        if name in targets:
            t = targets[name]
            verdict = f"≤ {t}×: {'met' if med / script <= t else 'not met'}"
        else:
            verdict = "–"
        lines.append(f"| {name} | {spread(samples[name])} | {med / script:.2f}× | {med / seed:.2f}× | {verdict} |")
    rounds = " / ".join(f"{o / s:.2f}" for o, s in zip(samples["ours, one process"], samples["careful script"],
                                                          strict=True))
    lines += ["", f"per-round ratio, ours in one process ÷ careful script: {rounds}", ""]
    return lines


def parse_args(doc: str, default_cases: str, runs_help: str) -> tuple[int, list[str]]:
    """(--runs, --cases) of a change-loop bench; a bad value or a missing Debian docker CLI ends it with one
    line (argparse: exit 2; the CLI: exit 6, the bootstrap installs it)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help=f"{runs_help} (default 3)")
    ap.add_argument("--cases", default=default_cases, help=f"comma-separated subset of {','.join(CASES)}")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if unknown := [c for c in cases if c not in CASES]:
        ap.error(f"unknown case {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.runs < 1:
        ap.error("--runs takes a whole number from 1")
    if not os.access(DOCKER, os.X_OK):
        print(f"{ap.prog}: {DOCKER} (Debian's docker CLI) is missing; run the bootstrap first", file=sys.stderr)
        raise SystemExit(6)
    return args.runs, cases


def engine_images() -> set[str]:
    """The IDs of every image in the engine now (cleanup keeps the tags of these)."""
    return set(subprocess.run([DOCKER, "images", "-q", "--no-trunc"], capture_output=True, text=True,
                              timeout=60, check=True).stdout.split())


def start_run() -> tuple[RunFacts, str, set[str]]:
    """The run's facts (header printed), its id (names its repositories) and the engine's images before it."""
    facts = RunFacts.start()
    run_id = uuid.uuid4().hex[:8]
    print(facts.header() + f"; run {run_id}", flush=True)
    return facts, run_id, engine_images()


def main() -> int:
    runs, cases = parse_args(__doc__ or "", "go,rust,noop", "samples per side and case")
    facts, run_id, before = start_run()
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="veza-change-loop-") as tmp:
        clone = make_clone(Path(tmp), run_id)
        bench = Bench(clone, run_id)
        try:
            print(f"warming every side (load {loadavg()})", flush=True)
            for name in SIDES:
                bench.side(name)()
            for case in cases:
                rel = CASES[case][1]
                if rel is None:      # every side has built and pushed this commit once before its samples
                    for name in SIDES:
                        bench.side(name)()
                else:   # the cache mounts are shared with every tree on the machine: the first build after
                    # other trees' builds compiles more than one line's worth (13-19 s seen); not a sample
                    bench.change(rel, f"{case} warm-up")
                    bench.ours_one()
                samples: dict[str, list[float]] = {name: [] for name in SIDES}
                l0 = loadavg()
                for n in range(runs):
                    order = SIDES[n % len(SIDES):] + SIDES[:n % len(SIDES)]
                    for name in order:
                        samples[name].append(bench.sample(name, rel, f"{case} {name} {n}"))
                    print(f"  {case} round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in samples.items())
                          + f" (load {loadavg()})", flush=True)
                out += report(case, samples, (l0, loadavg()))
        except StepFailed as exc:
            print(f"change_loop: a side failed twice: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.cleanup(before)
    print("\n# change loop, side by side\n")
    print("\n".join(out))
    print(facts.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())
