"""A real Prometheus for tests: Debian's prometheus 2.42 (the veza-local/prometheus base image, built by
ensure_bases if missing) on the host network, bound to 127.0.0.1, with the scrape configuration a test gives it;
the container (labelled with its name) is removed when the block ends."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.vocab import LABEL_RUN
from pipeline.local.bases import ensure_bases
from pipeline.tools import docker as docker_tool
from pipeline.tools import prometheus


@contextmanager
def running_prometheus(scrape_yaml: str, workdir: Path, port: int, *, ready_s: float = 60,
                       sd_dir: Path | None = None) -> Iterator[str]:
    """Prometheus with `scrape_yaml` as its prometheus.yml (written under `workdir`), listening on
    127.0.0.1:`port`; yields its base URL once GET /-/ready answers (AssertionError with its log after `ready_s`).
    `sd_dir`: a directory mounted read-only at /etc/prometheus/sd, for file_sd_configs a test rewrites while
    Prometheus runs (the directory, not a file: an atomic rename in it is seen)."""
    cfg = load_config(check_files=False)
    wanted = {n: b for n, b in cfg.bases.items() if n in ("debian", "prometheus")}
    ensure_bases(config=dataclasses.replace(cfg, bases=wanted), say=lambda _line: None)
    conf = workdir / "prometheus.yml"
    conf.write_text(scrape_yaml)
    conf.chmod(0o644)
    name = f"veza-test-prometheus-{uuid.uuid4().hex[:8]}"
    container = docker_tool.client().containers.run(
        cfg.bases["prometheus"].local, name=name, detach=True, network_mode="host", labels={LABEL_RUN: name},
        command=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 f"--web.listen-address=127.0.0.1:{port}"],
        volumes={str(conf): {"bind": "/etc/prometheus/prometheus.yml", "mode": "ro"},
                 **({str(sd_dir): {"bind": "/etc/prometheus/sd", "mode": "ro"}} if sd_dir is not None else {})},
        tmpfs={"/prometheus": "uid=999"}, read_only=True, cap_drop=["ALL"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while not prometheus.ready(url):
            assert time.monotonic() < deadline, container.logs()[-2000:].decode()
            time.sleep(0.5)
        yield url
    finally:
        container.remove(force=True)
