"""No-op release benchmark: `invoke release --env local` when nothing changed since the last successful one.

    .venv/bin/python bench/release_noop.py

On a temporary clone: one full release (warm-up, not timed as the figure), then
  a) the same commit again: every stage resumes from the manifest;
  b) a new commit that touches no image input (a README line): a new release whose build reuses every image,
     whose scan reuses the cached verdicts, whose push finds every digest in the registry and whose deploy
     finds the same digests and values (a Helm no-op).
Target: under 10 s each. Baseline in the same run: the warm-up (full) release.
Needs the local registry and cluster (it starts them when absent, like the main job).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def invoke(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEZA_CONFIG": str(clone / "pipeline.toml"), "CI": "true"}
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "-r", str(ROOT), *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=3600, check=False)


def release(clone: Path) -> float:
    t0 = time.monotonic()
    cp = invoke(clone, "release", "--env", "local", "--yes")
    took = time.monotonic() - t0
    if cp.returncode != 0:
        sys.exit(f"bench: release failed (exit {cp.returncode}):\n{cp.stdout[-3000:]}\n{cp.stderr[-2000:]}")
    return took


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="veza-bench-release-") as tmp:
        clone = Path(tmp) / "veza"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        for k, v in (("user.email", "bench@example.invalid"), ("user.name", "bench")):
            subprocess.run(["git", "-C", str(clone), "config", k, v], check=True)
        sys.path.insert(0, str(ROOT))
        from pipeline.core.config import load_config
        from pipeline.local.cluster import cluster_state
        from pipeline.local.embedded_registry import default_registry

        registry_was_up = default_registry(load_config()).answers()
        cluster_was_up = bool(cluster_state().get("running"))
        try:
            full = release(clone)
            same = release(clone)
            with (clone / "README.md").open("a") as fh:
                fh.write("\n<!-- bench: a change that is no image input -->\n")
            subprocess.run(["git", "-C", str(clone), "commit", "-qam", "docs: bench"], check=True)
            unrelated = release(clone)
        finally:
            # Stop what the bench started, before its clone (the registry's storage) is deleted.
            if not registry_was_up:
                invoke(clone, "registry-down")
            if not cluster_was_up:
                invoke(clone, "cluster-down")
    print(f"\nrelease no-op benchmark — {platform.node()}: {os.cpu_count()} cores, {platform.platform()}\n")
    print("| case | time | baseline (first, full release) | ratio |\n|---|---|---|---|")
    print(f"| same commit again (resume) | {same:.2f} s | {full:.1f} s | {same / full:.3f}× (target < 10 s) |")
    print(f"| new commit, no image input changed | {unrelated:.2f} s | {full:.1f} s | "
          f"{unrelated / full:.3f}× (target < 10 s) |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
