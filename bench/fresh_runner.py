"""A docs-only commit on a fresh runner (issue 26, item 4): `invoke build push` on an "empty engine", with the
registry's images reused by input digest, against the same command when the registry has nothing to reuse.

    .venv/bin/python bench/fresh_runner.py [--runs 3] [--no-cold] [--port 19251]

Everything runs in a temporary clone of this repository's HEAD (bytecode compiled once), against a registry the
bench starts on 127.0.0.1:19251 (docker-registry, storage in the temporary directory), never the shared one.
Set-up (untimed): one line appended to each service's main source and committed, so that every input digest,
and so every image and tag the bench makes, is the bench's own; then `invoke build push` of that commit.

Each sample of each side: one line appended to services/docs/site/index.html and committed (each side its own
commit: a commit changes the REVISION build arg, which every compile step is stamped with, so the first build at
a commit reruns those steps and a second build at the same commit would find them in BuildKit's cache), then the
side's command on a "fresh runner": the images the bench built removed from the engine (by ID, every tag on
them; no other image is touched) and the state directory (manifest, input cache) deleted. Sides interleave.

  reuse      `invoke build push`: the plan finds the three unchanged images in the registry by their input tag;
             only veza-docs is built and pushed; the others get the commit's tags by manifest PUT
  no reuse   `invoke build push` with the environment's namespace changed to a new, empty one per sample: the
             registry has nothing for it, all four are built and pushed (the engine's BuildKit cache is warm:
             the bench cannot empty it without touching other trees' cache; a real fresh runner's is empty, so
             this side is a lower bound of what a fresh runner pays without reuse)
  from local (reuse_from) `invoke build push --env staging` on a fresh runner, staging's namespace a new, empty one per
             sample and its `reuse_from = ["local"]`: local first builds, pushes and signs the sample's commit
             (untimed: the branch pipeline), then staging finds all four in local's repository, checks local's
             signature and provenance, and the push copies them by digest (blob mounts: one registry); nothing built
  cold       (once, unless --no-cold) the no-reuse side with `--no-cache`: BuildKit reruns every step (the
             cache mounts, e.g. Go's build cache, stay warm)

The base images (`invoke bases`) are in the engine for every side: providing them is not measured here.
Prints medians with min–max, the ratio, and the run's facts (date, commit, machine, load at start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
INVOKE = ROOT / ".venv/bin/invoke"
PORT = 19251

from bench.run_facts import with_facts  # noqa: E402
from pipeline.local.registry import LocalRegistry  # noqa: E402

OWN_INPUTS = {"services/backend-api/main.go": "//", "services/stream-server/main.go": "//",
              "services/docs/main.go": "//", "services/chat-server/src/main.rs": "//"}
DOCS_CHANGE = "services/docs/site/index.html"


class StepFailed(Exception):
    """A measured command failed; the message holds the command and its output's tail."""


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    cp = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if cp.returncode != 0:
        raise StepFailed(f"{' '.join(argv)} exited {cp.returncode}:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    return cp.stdout


class Bench:
    def __init__(self, tmp: Path, run_id: str, registry: str) -> None:
        self.tmp, self.run_id, self.registry = tmp, run_id, registry
        self.clone = tmp / "clone"
        self.made: set[str] = set()   # image IDs the bench built
        run(["git", "clone", "-q", str(ROOT), str(self.clone)], tmp)
        for k, v in (("user.email", "bench@example.invalid"), ("user.name", "bench")):
            run(["git", "-C", str(self.clone), "config", k, v], self.clone)
        self.base_toml = (self.clone / "pipeline.toml").read_text()
        (self.clone / "pipeline.toml").write_text(self.with_namespace(f"bench-{run_id}"))
        run(["git", "-C", str(self.clone), "commit", "-qam", "bench: own registry and namespace"], self.clone)
        with (self.clone / ".git" / "info" / "exclude").open("a") as fh:
            fh.write("bench-*.toml\n")
        self.config = self.clone / "pipeline.toml"
        self.env = "local"
        self.key_dir = tmp / "keys"   # local's auto key (and so the key staging trusts) is the bench's own
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.clone / "pipeline"),
                        str(self.clone / "tasks.py")], check=True, timeout=300)

    def with_namespace(self, namespace: str) -> str:
        """pipeline.toml with the local environment pushing to this bench's registry under `namespace`."""
        return self._section(self.base_toml, "local", "dev", namespace)

    def _section(self, text: str, env: str, next_env: str, namespace: str) -> str:
        """`text` with [environments.<env>] (up to [environments.<next_env>]) on this bench's registry, `namespace`."""
        import re

        start, end = text.index(f"[environments.{env}]"), text.index(f"[environments.{next_env}]")
        section = text[start:end].replace('registry = "127.0.0.1:5000"', f'registry = "{self.registry}"', 1)
        section, n = re.subn(r'(?m)^registry_namespace = "[^"]*"', f'registry_namespace = "{namespace}"', section,
                             count=1)
        if n != 1:
            raise StepFailed(f"[environments.{env}] of pipeline.toml has no registry_namespace line")
        return text[:start] + section + text[end:]

    def with_staging(self, namespace: str) -> str:
        """The bench's config with staging pushing to this bench's registry under `namespace`, reusing from local."""
        text = self._section(self.with_namespace(f"bench-{self.run_id}"), "staging", "prod", namespace)
        return text.replace('reuse_from = ["dev"]', 'reuse_from = ["local"]', 1)   # staging's (prod's lists two)

    def use_staging(self, namespace: str) -> None:
        """Run the next commands as staging (an ignored config file beside pipeline.toml, as use_namespace)."""
        self.env = "staging"
        self.config = self.clone / f"bench-staging-{namespace}.toml"
        self.config.write_text(self.with_staging(namespace))

    def use_namespace(self, namespace: str | None) -> None:
        """Run the next commands with the committed config (None) or with a copy of it that pushes under
        `namespace`: an ignored file beside pipeline.toml (VEZA_CONFIG), so the tree stays clean and the
        project root the same (no config file is an input of any image)."""
        self.env = "local"
        if namespace is None:
            self.config = self.clone / "pipeline.toml"
            return
        self.config = self.clone / f"bench-{namespace}.toml"
        self.config.write_text(self.with_namespace(namespace))

    def append(self, rel: str, line: str) -> None:
        with (self.clone / rel).open("a") as fh:
            fh.write(line + "\n")

    def commit(self, message: str) -> None:
        run(["git", "-C", str(self.clone), "commit", "-qam", message], self.clone)

    def invoke(self, *args: str) -> float:
        env = {**os.environ, "VEZA_CONFIG": str(self.config), "CI": "true", "VEZA_KEY_DIR": str(self.key_dir)}
        t0 = time.monotonic()
        run([str(INVOKE), "-r", str(self.clone), *args], self.clone, env)
        took = time.monotonic() - t0
        self.made |= set(self.built().values())
        return took

    def manifest(self) -> dict[str, Any]:
        path = self.clone / ".pipeline" / self.env / "manifest.json"
        return dict(json.loads(path.read_text())["services"]) if path.exists() else {}

    def built(self) -> dict[str, str]:
        """service → image ID of the images this run built (not those it reused)."""
        return {n: str(s["build"]["image_id"]) for n, s in self.manifest().items()
                if (s.get("build") or {}).get("status") == "built"}

    def outcome(self) -> str:
        """'built: veza-docs; reused: …' from the manifest of the last run."""
        status: dict[str, list[str]] = {}
        for n, s in sorted(self.manifest().items()):
            status.setdefault(str((s.get("build") or {}).get("status")), []).append(n)
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(status.items()))

    def fresh(self) -> None:
        """An empty engine for this bench (its own images only, by ID) and no state directory."""
        for image_id in sorted(self.made):
            subprocess.run(["docker", "rmi", "--force", image_id], capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.clone / ".pipeline", ignore_errors=True)


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"


def main() -> int | str | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="samples per side (default 3)")
    ap.add_argument("--no-cold", action="store_true", help="skip the one --no-cache sample")
    ap.add_argument("--port", type=int, default=PORT, help=f"the bench registry's port on 127.0.0.1 (default {PORT})")
    args = ap.parse_args()
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="fresh-runner-") as tmp_s:
        tmp = Path(tmp_s)
        with LocalRegistry(args.port, root=tmp / "registry") as reg:
            b = Bench(tmp, run_id, reg.address)
            try:
                return measure(b, args.runs, cold=not args.no_cold)
            finally:
                b.fresh()


def measure(b: Bench, runs: int, *, cold: bool) -> None:
    for rel, comment in OWN_INPUTS.items():
        b.append(rel, f"{comment} fresh-runner bench {b.run_id}")
    b.commit("bench: inputs of this run alone")
    setup = b.invoke("build", "push")
    print(f"set-up: build push of all four at the bench's own commit: {setup:.1f} s ({b.outcome()})", flush=True)
    samples: dict[str, list[float]] = {"reuse": [], "no reuse": [], "from local": []}
    outcomes: dict[str, str] = {}
    sides = ("reuse", "no reuse", "from local")
    for i in range(runs):
        for side in sides[i % 3:] + sides[:i % 3]:   # interleaved
            # Each side gets its own docs-only commit: a new commit changes the REVISION build arg, so the first
            # build at a commit reruns each compile step (stamped with it) and a second one would hit the layers.
            b.append(DOCS_CHANGE, f"<!-- fresh-runner bench {b.run_id} sample {i} {side} -->")
            b.commit(f"docs: bench sample {i} ({side})")
            b.fresh()
            if side == "from local":   # the branch pipeline of this commit (untimed), then a fresh runner for staging
                b.use_namespace(None)
                b.invoke("build", "push", "sign")
                b.fresh()
                b.use_staging(f"bench-{b.run_id}-staging{i}")
                took = b.invoke("build", "--env", "staging", "push", "--env", "staging")
                samples[side].append(took)
                outcomes[side] = b.outcome()
                print(f"sample {i + 1} {side}: {took:.2f} s ({outcomes[side]})", flush=True)
                continue
            b.use_namespace(None if side == "reuse" else f"bench-{b.run_id}-empty{i}")
            took = b.invoke("build", "push")
            samples[side].append(took)
            outcomes[side] = b.outcome()
            print(f"sample {i + 1} {side}: {took:.2f} s ({outcomes[side]})", flush=True)
    cold_s = None
    if cold:
        b.append(DOCS_CHANGE, f"<!-- fresh-runner bench {b.run_id} cold -->")
        b.commit("docs: bench cold sample")
        b.fresh()
        b.use_namespace(f"bench-{b.run_id}-cold")
        cold_s = b.invoke("build", "--no-cache", "push")
        print(f"cold (--no-cache, empty namespace): {cold_s:.2f} s ({b.outcome()})", flush=True)
    b.use_namespace(None)
    reuse, plain = statistics.median(samples["reuse"]), statistics.median(samples["no reuse"])
    print("\n| side | `invoke build push`, median (min–max) | what the build did |\n|---|---|---|")
    print(f"| reuse from the registry | {spread(samples['reuse'])} | {outcomes['reuse']} |")
    print(f"| no reuse (warm BuildKit cache) | {spread(samples['no reuse'])} | {outcomes['no reuse']} |")
    print(f"| staging reuses local's signed images (`reuse_from`) | {spread(samples['from local'])} | "
          f"{outcomes['from local']} |")
    if cold_s is not None:
        print(f"| no reuse, `--no-cache` (1 sample) | {cold_s:.2f} s | all four built |")
    print(f"\nreuse ÷ no reuse: {reuse / plain:.2f}× (medians of {runs})"
          + (f"; reuse ÷ cold: {reuse / cold_s:.2f}×" if cold_s else ""))


if __name__ == "__main__":
    raise SystemExit(with_facts(main))
