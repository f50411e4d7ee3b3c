"""An infra image ([infra.NAME]) goes the services' way, against the real engine and a real registry: the push
stage sends it from the engine to `<registry>/<namespace>/infra/<name>` by a content tag and records its digest,
the sign stage signs and attests it with the environment's key, the trust gate accepts it only then, and the
resume checks look at the world (the registry, the engine's image), not at the record.

A tiny image imported into the engine stands in for PostgreSQL (the same code path; a 600 MB push would only
make the test slow). Registry on 127.0.0.1:19600-19699 (trust_fixtures); the image is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.core.config import Base, Config, Infra
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.core.vocab import LABEL_RUN
from pipeline.stages.push import push_images, registry_serves
from pipeline.stages.sign import sign_images, signatures_hold
from pipeline.stages.verify_images import infra_refs, verify_refs
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld

pytestmark = [pytest.mark.engine, pytest.mark.registry]
QUIET = PlainReporter(sink=lambda _line: None)


def _tiny_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def infra_world(trust_world: TrustWorld, docker_client: Any) -> Iterator[tuple[TrustWorld, Config, str]]:
    """(world, config with [infra.tiny] run by dev, the local reference of its image)."""
    run = "t" + uuid.uuid4().hex[:10]
    ref = f"veza-test-infra/{run}:1"

    def make(content: bytes) -> None:
        docker_client.api.import_image_from_data(_tiny_tar(content), repository=ref.split(":")[0], tag="1",
                                                 changes=[f"LABEL {LABEL_RUN}={run}"])

    make(b"tiny infra " + run.encode())
    w = trust_world
    dev = dataclasses.replace(w.cfg.env("dev"), local_infra=True)
    cfg = dataclasses.replace(w.cfg, bases={"tiny": Base("tiny", "tiny:1", ref, "tiny")},
                              infra={"tiny": Infra("tiny", "tiny", 5432)}, environments={**w.cfg.environments,
                                                                                          "dev": dev})
    try:
        yield w, cfg, ref
    finally:
        for image in docker_client.images.list(filters={"label": f"{LABEL_RUN}={run}"}):
            docker_client.images.remove(image.id, force=True)


def _manifest(w: TrustWorld, docker_client: Any, run: str) -> Manifest:
    """dev's Release manifest with veza-docs built: a tiny image imported into the engine under its tag."""
    repository = w.repository("dev")
    docker_client.api.import_image_from_data(_tiny_tar(b"docs " + run.encode()), repository=repository,
                                             tag="sha-0123456", changes=[f"LABEL {LABEL_RUN}={run}"])
    m = Manifest.new(w.cfg.state_dir / "dev" / "manifest.json", env="dev", release_id=f"dev-{COMMIT[:7]}",
                     version={"sha": COMMIT, "short_sha": COMMIT[:7], "branch": "main", "dirty": False})
    m.set_service("veza-docs", repository=repository, tags=["sha-0123456"], input_digest="sha256:" + "1" * 64)
    m.record("veza-docs", "build", {"status": "built",
                                    "image_id": docker_client.images.get(f"{repository}:sha-0123456").id})
    return m


def test_an_infra_image_is_pushed_signed_and_verified_like_a_service_image(
        infra_world: tuple[TrustWorld, Config, str], docker_client: Any) -> None:
    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)

    pushed = man.pushed("infra/tiny")
    assert pushed is not None and pushed.ok, man.infra_result("tiny", "push")
    assert pushed.repository == f"{w.registry.address}/t-dev/infra/tiny"
    image_id = docker_client.images.get(ref).id
    assert pushed.image_id == image_id and pushed.tags == (f"1-{image_id[7:19]}",)
    assert pushed.source["ref"] == ref
    served = w.client.head_manifest(split_repository(pushed.repository)[1], pushed.tags[0])
    assert served is not None and served.digest == pushed.digest
    subjects = ["veza-docs", "infra/tiny"]
    assert registry_serves(cfg, man, subjects, env=env) is None

    # pinned by digest in the documents the deploy applies, and untrusted until signed
    (infra_ref,) = infra_refs(cfg, env, man)
    assert infra_ref == pushed.ref
    envkeys.keygen(cfg, env)
    (before,) = verify_refs(cfg, env, man, [infra_ref], QUIET)
    assert before.service == "infra/tiny" and any("no signature" in p for p in before.problems), before
    assert signatures_hold(cfg, env, man, ["veza-docs"], infra=True) is not None

    sign_images(cfg, env, man, QUIET, run_id="infra-trust")
    signed = man.signed("infra/tiny")
    assert signed is not None and signed.subject == pushed.digest
    (after,) = verify_refs(cfg, env, man, [infra_ref], QUIET)
    assert after.problems == (), after
    assert signatures_hold(cfg, env, man, ["veza-docs"], infra=True) is None

    # a second push is a no-op by digest; a release that signs again writes nothing new
    push_images(cfg, env, man, QUIET)
    again = man.pushed("infra/tiny")
    assert again is not None and again.digest == pushed.digest and str(again.status) == "skipped"


def test_a_rebuilt_infra_image_no_longer_holds_the_recorded_push(infra_world: tuple[TrustWorld, Config, str],
                                                                  docker_client: Any) -> None:
    w, cfg, ref = infra_world
    env = cfg.env("dev")
    man = _manifest(w, docker_client, ref.split("/")[1].split(":")[0])
    push_images(cfg, env, man, QUIET)
    assert registry_serves(cfg, man, ["infra/tiny"], env=env) is None
    docker_client.api.import_image_from_data(_tiny_tar(b"rebuilt by invoke bases --force"),
                                             repository=ref.split(":")[0], tag="1",
                                             changes=[f"LABEL {LABEL_RUN}={ref.split('/')[1].split(':')[0]}"])
    why = registry_serves(cfg, man, ["infra/tiny"], env=env)
    assert why is not None and why.startswith("infra/tiny: the engine's image is"), why
