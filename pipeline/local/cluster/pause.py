"""The pod sandbox image: kubelet 1.20 wants k8s.gcr.io/pause:3.2, which cannot be pulled here, so it is built
FROM scratch around the static pause binary compiled from the Kubernetes tree's pause.c."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.errors import StageFailed
from pipeline.core.vocab import LABEL_COMPONENT, LABEL_RUN
from pipeline.local.cluster import layout
from pipeline.tools import docker

LABELS = {LABEL_RUN: "cluster", LABEL_COMPONENT: "cluster-pause"}
LABEL_PAUSE_SHA256 = "veza.pipeline.pause-sha256"   # sha256 of the pause binary the image was built around


def sandbox_image() -> dict[str, Any] | None:
    """What the engine holds as the node's sandbox image (layout.PAUSE_IMAGE), for `invoke doctor`: its image ID
    (the sha256 of its config: what the node runs), whether this provisioner built it, the sha256 of the pause
    binary it was built around (images built since that label exists); None when the engine has none."""
    facts = docker.image_facts(layout.PAUSE_IMAGE)
    if facts is None:
        return None
    image_id, labels, _ = facts
    return {"ref": layout.PAUSE_IMAGE, "id": image_id,
            "built_here": labels.get(LABEL_COMPONENT) == LABELS[LABEL_COMPONENT],
            "pause_sha256": labels.get(LABEL_PAUSE_SHA256, "")}


def ensure_pause_image(bindir: Path) -> bool:
    """Build the sandbox image when the engine lacks it; True when built."""
    if docker.image_id(layout.PAUSE_IMAGE):
        return False
    with tempfile.TemporaryDirectory(prefix="veza-pause-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(bindir / "pause", ctx / "pause")
        binary = hashlib.sha256((ctx / "pause").read_bytes()).hexdigest()
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        lines: list[str] = []
        rc = docker.build_image(context=ctx, dockerfile=ctx / "Dockerfile", tags=[layout.PAUSE_IMAGE],
                                build_args={}, labels={**LABELS, LABEL_PAUSE_SHA256: binary}, no_cache=False,
                                on_line=lines.append,
                                timeout=300, iidfile=ctx / "iid")
    if rc != 0:
        raise StageFailed(f"building the pause image failed: {' | '.join(lines[-3:])}",
                          "check that the Docker engine answers (docker info)")
    return True
