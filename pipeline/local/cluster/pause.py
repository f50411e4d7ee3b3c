"""The pod sandbox image: kubelet 1.20 wants k8s.gcr.io/pause:3.2, which cannot be pulled here, so it is built
FROM scratch around the static pause binary compiled from the Kubernetes tree's pause.c."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipeline.core.errors import StageFailed
from pipeline.core.vocab import LABEL_COMPONENT, LABEL_RUN
from pipeline.local.cluster import layout
from pipeline.tools import docker

LABELS = {LABEL_RUN: "cluster", LABEL_COMPONENT: "cluster-pause"}


def ensure_pause_image(bindir: Path) -> bool:
    """Build the sandbox image when the engine lacks it; True when built."""
    if docker.image_id(layout.PAUSE_IMAGE):
        return False
    with tempfile.TemporaryDirectory(prefix="veza-pause-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(bindir / "pause", ctx / "pause")
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        lines: list[str] = []
        rc = docker.build_image(context=ctx, dockerfile=ctx / "Dockerfile", tags=[layout.PAUSE_IMAGE],
                                build_args={}, labels=LABELS, no_cache=False, on_line=lines.append,
                                timeout=300, iidfile=ctx / "iid")
    if rc != 0:
        raise StageFailed(f"building the pause image failed: {' | '.join(lines[-3:])}",
                          "check that the Docker engine answers (docker info)")
    return True
