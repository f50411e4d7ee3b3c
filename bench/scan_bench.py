"""Scan stage figures: a cold scan of N images vs the rerun on unchanged images (report cache), plus the
scan gate alone on a saved report.

    .venv/bin/python bench/scan_bench.py [--images 4] [--port 5210]

Images: N images FROM the debootstrap base veza-local/debian:bookworm (`invoke bases`), each with one
distinct file (distinct image IDs). The vulnerability DB is a small real one built offline and served by
a local registry on 127.0.0.1:PORT (fetched once before the timings). Baseline measured in the same run:
one bare `trivy image` of one image (what a scan costs without the pipeline).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from pipeline.core.config import load_config
from pipeline.core.errors import PolicyBlocked
from pipeline.core.manifest import Manifest
from pipeline.local import trivydb
from pipeline.local.registry import LocalRegistry
from pipeline.stages.scan import run_scan_gate
from pipeline.tools import trivy
from tests.integration.scan_fixtures import run_scan

BASE = "veza-local/debian:bookworm"
ADVISORIES = [{"id": "CVE-2099-0001", "source": "debian 12", "package": "bash", "fixed": "5.2.15-3",
               "severity": "HIGH"}]


def build_images(client: docker.DockerClient, n: int, run_id: str) -> dict[str, tuple[str, str]]:
    out = {}
    for i in range(n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in (("Dockerfile", f"FROM {BASE}\nCOPY f /f\nUSER 1000\n".encode()),
                               ("f", f"{run_id}-{i}\n".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        image, _ = client.images.build(fileobj=buf, custom_context=True, labels={"veza.pipeline.run": run_id},
                                       rm=True)
        repo = f"veza-scan-bench/svc-{i}"
        image.tag(repo, run_id)
        out[f"svc-{i}"] = (f"{repo}:{run_id}", str(image.id))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--port", type=int, default=5210)
    args = ap.parse_args()
    client = docker.from_env(timeout=300)
    if not client.images.list(name=BASE):
        sys.exit(f"{BASE} is missing: run `invoke bases` first")
    run_id = "scanbench-" + uuid.uuid4().hex[:6]
    print(f"load average: {os.getloadavg()[0]:.1f} (2 cores)")
    with tempfile.TemporaryDirectory() as tmp_s, LocalRegistry(args.port, root=Path(tmp_s) / "reg") as reg:
        tmp = Path(tmp_s)
        images = build_images(client, args.images, run_id)
        try:
            db_dir = trivydb.build_db(trivydb.parse_advisories(ADVISORIES), tmp / "db")
            repo = f"{reg.address}/trivy/db"
            trivydb.push_db(trivydb.package_db(db_dir, tmp / "db.tar.gz"), repo)
            (tmp / "pipeline.toml").write_text("\n".join([
                "[project]", 'name = "bench"', "[registry]", f'address = "{reg.address}"',
                "[scan]", f'db_repository = "{repo}"',
                *[f'[[services]]\nname = "{s}"\ncontext = "c"\ndockerfile = "c/D"\nport = {9000 + i}'
                  for i, s in enumerate(images)],
                "[environments.test]", 'namespace = "t"', 'values_file = "v.yaml"', 'stages = ["build", "scan"]',
                'tags = ["sha"]', 'scan_threshold = "CRITICAL"', ""]))
            cfg = load_config(tmp / "pipeline.toml", check_files=False)
            man = Manifest.new(tmp / ".pipeline" / "manifest.json", env="test", release_id="bench", version={})
            for name, (ref, iid) in images.items():
                r, _, tag = ref.rpartition(":")
                man.set_service(name, repository=r, tags=[tag], input_digest="sha256:0")
                man.record(name, "build", {"status": "built", "image_id": iid})
            cache = tmp / "cache"
            trivy.download_db(repo, cache)
            quiet = lambda _s: None  # noqa: E731

            t0 = time.monotonic()
            trivy.scan_image(images["svc-0"][0], tmp / "baseline.json", cache_dir=cache)
            baseline = time.monotonic() - t0

            t0 = time.monotonic()
            run_scan(None, "test", config=cfg, manifest=man, cache_dir=cache, log=quiet)
            cold = time.monotonic() - t0
            warm_runs = []
            for _ in range(3):
                t0 = time.monotonic()
                res = run_scan(None, "test", config=cfg, manifest=man, cache_dir=cache, log=quiet)
                warm_runs.append(time.monotonic() - t0)
                assert all(r["cached"] for r in res.values())
            warm = statistics.median(warm_runs)

            report = str(man.stage_result("svc-0", "scan")["report"])  # type: ignore[index]
            gate_runs = []
            for _ in range(5):
                t0 = time.monotonic()
                try:
                    run_scan_gate(report, fail_on="HIGH", log=quiet)
                except PolicyBlocked:
                    pass
                gate_runs.append(time.monotonic() - t0)
        finally:
            for ref, _ in images.values():
                client.images.remove(ref, force=True)
    n = args.images
    print(f"baseline: one bare trivy image scan (vuln+secret+misconfig): {baseline:.2f} s")
    print(f"cold scan stage, {n} images in parallel (scan + SBOM + gate): {cold:.2f} s "
          f"({cold / baseline:.2f}x the bare scan of one image)")
    print(f"rerun on unchanged images (report cache, policy re-applied): median {warm:.2f} s of "
          f"{[round(x, 2) for x in warm_runs]} -> {cold / warm:.1f}x faster than cold")
    print(f"scan gate alone on one saved report: median {statistics.median(gate_runs) * 1000:.0f} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.run_facts import with_facts  # date, commit and load at start and end (bench/README.md)

    raise SystemExit(with_facts(main))
