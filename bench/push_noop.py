"""Benchmark: a no-op push stage (`push_images`) of 4 services (2 tags each) vs a plain `docker push` of the same tags.

Everything is real and local: a docker-registry on 127.0.0.1:5150-5199 (temporary storage), four tiny
FROM-scratch images labelled veza.pipeline.run=<id>, removed at the end. The images are pushed once,
then each variant is timed N times with everything already in the registry:
  - pipeline: the push stage (one inspect per image + HEAD per tag through the registry API, in parallel);
  - baseline: `docker push REPO:TAG` for the 8 tags, one after the other (what a plain script does);
  - baseline-parallel: the same 8 `docker push` commands, 4 at a time.
Usage: .venv/bin/python bench/push_noop.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.local.registry import LocalRegistry
from pipeline.tools import docker as engine
from pipeline.tools.proc import run
from tests.integration.registry_fixtures import (
    SERVICES,
    BuiltImage,
    build_tiny_image,
    make_manifest,
    remove_run_images,
    run_push,
    write_config,
)

TAGS = ["sha-abcdef1", "main"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--port", type=int, default=5150)
    args = ap.parse_args()
    run_id = "bench-push-" + uuid.uuid4().hex[:8]
    client = engine.client()
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(args.port, root=Path(tmp) / "registry") as reg:
        try:
            cfg = write_config(Path(tmp) / "pipeline.toml", registries={"dev": reg.address}, namespace="bench")
            env = cfg.env("dev")
            images = []
            for s in SERVICES:
                repo = env.repository(cfg.service(s))
                iid = build_tiny_image(client, run_id, repo, TAGS, f"{s} {run_id}\n".encode() * 1000)
                images.append(BuiltImage(s, iid, repo, TAGS))
            man = make_manifest(Path(tmp) / "manifest.json", cfg, "dev", images)
            t0 = time.monotonic()
            first = run_push(None, "dev", config=cfg, manifest=man, log=lambda s: None)
            print(f"first push (4 services, 8 tags): {time.monotonic() - t0:.3f}s "
                  f"({sorted({r['status'] for r in first.values()})})")
            refs = [f"{i.repository}:{t}" for i in images for t in TAGS]

            def pipeline_noop() -> None:
                res = run_push(None, "dev", config=cfg, manifest=man, log=lambda s: None)
                assert {r["status"] for r in res.values()} == {"skipped"}, res

            def docker_seq() -> None:
                for ref in refs:
                    run(["docker", "push", ref], timeout=300)

            def docker_par() -> None:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda r: run(["docker", "push", r], timeout=300), refs))

            timings: dict[str, list[float]] = {"pipeline": [], "docker push (sequential)": [],
                                               "docker push (4 parallel)": []}
            for _ in range(args.runs):
                for name, fn in (("pipeline", pipeline_noop), ("docker push (sequential)", docker_seq),
                                 ("docker push (4 parallel)", docker_par)):
                    t = time.monotonic()
                    fn()
                    timings[name].append(time.monotonic() - t)
            base = statistics.median(timings["pipeline"])
            print(f"no-op push of 4 services x 2 tags, {args.runs} runs each (median / min / max):")
            for name, ts in timings.items():
                med = statistics.median(ts)
                print(f"  {name:26s} {med:7.3f}s  {min(ts):7.3f}s  {max(ts):7.3f}s   x{med / base:5.1f} vs pipeline")
        finally:
            remove_run_images(client, run_id)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
