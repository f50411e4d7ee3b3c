"""Ctrl-C during an engine push: the upload ends at once and the registry never gets the tag (real engine, real
registry on 127.0.0.1:5700-5799, a 96 MiB image of random bytes so that the push lasts seconds)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import Interrupted
from pipeline.local.registry import LocalRegistry
from pipeline.tools.docker_push import push_tag
from pipeline.tools.registry_api import RegistryClient
from tests.integration.registry_fixtures import build_tiny_image, remove_run_images
from tests.ports import PortPool

pytestmark = [pytest.mark.engine, pytest.mark.slow]
free_port = PortPool(range(5700, 5800)).take
PAYLOAD = 96 * 2**20


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(free_port(), root=tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def big_image(docker_client: Any, run_id: str, own_registry: LocalRegistry) -> Iterator[str]:
    repo = f"{own_registry.address}/t1tty/big"
    build_tiny_image(docker_client, run_id, repo, ["1", "2"], os.urandom(PAYLOAD))
    yield repo
    remove_run_images(docker_client, run_id)


def test_a_full_push_of_the_probe_image_takes_seconds(big_image: str) -> None:
    """The yardstick of the next test: without a stop, the same push runs to its digest and takes > 1.5 s."""
    t0 = time.monotonic()
    pushed = push_tag(big_image, "2", None)
    assert pushed.digest.startswith("sha256:")
    assert time.monotonic() - t0 > 1.5


def test_ctrl_c_ends_an_engine_push_within_a_moment_and_the_tag_never_lands(big_image: str) -> None:
    stop = threading.Event()
    progress: list[str] = []

    def on_progress(text: str) -> None:   # the first upload progress: the user presses Ctrl-C
        progress.append(text)
        stop.set()

    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        push_tag(big_image, "1", None, on_progress, stop=stop)
    assert progress and time.monotonic() - t0 < 1.5
    address, repo = big_image.split("/", 1)
    time.sleep(10)  # twice the full push (5 s measured): had the engine gone on uploading, the tag would be there
    assert RegistryClient(address).head_manifest(repo, "1") is None
