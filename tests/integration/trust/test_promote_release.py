"""Promotion carries the whole release image list (core/release_images.py): the services and the infra images the
target runs, each copied by digest, signed and attested with the target's key, and recorded in the target's Release
manifest, so the target's trust gate (`invoke verify-images --env <target>`) verifies the infra too. Against the
real registry (trust_fixtures: 127.0.0.1:19600-19699); tiny images pushed through the registry API."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.core.config import Base, Infra
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.release.promote import run_promote
from pipeline.stages.sign import sign_images
from pipeline.stages.verify_images import check_image, infra_refs, verify_images
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld, push_tiny_image

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)


def test_promotion_carries_the_infra_images_and_the_target_verifies_them(trust_world: TrustWorld) -> None:
    w = trust_world
    dev = dataclasses.replace(w.cfg.env("dev"), local_infra=True)
    prod = dataclasses.replace(w.cfg.env("prod"), local_infra=True, promote_requires=())
    cfg = dataclasses.replace(w.cfg, bases={"tiny": Base("tiny", "tiny:1", "veza-test-infra/tiny:1", "tiny")},
                              infra={"tiny": Infra("tiny", "tiny", 5432)},
                              environments={**w.cfg.environments, "dev": dev, "prod": prod})
    envkeys.keygen(cfg, dev)
    envkeys.keygen(cfg, prod)
    docs = w.push("dev")
    man = w.manifest(docs)
    dev_infra = dev.repository_for("infra/tiny")
    infra = push_tiny_image(w.client, split_repository(dev_infra)[1], "1-0123456789ab", b"tiny infra")
    man.record("infra/tiny", "push", {"status": "pushed", "digest": infra, "repository": dev_infra,
                                      "tags_pushed": ["1-0123456789ab"], "image_id": "sha256:" + "4" * 64,
                                      "source": {}})
    sign_images(cfg, dev, man, QUIET)   # veza-docs and infra/tiny, with dev's key

    res = run_promote(cfg, dev, prod, man, QUIET, via="registry-api")
    assert set(res) == {"veza-docs", "infra/tiny"}
    target = Manifest.load(cfg.state_dir / "prod" / "manifest.json")
    assert target.env == "prod" and target.commit == COMMIT
    pushed = target.pushed("infra/tiny")
    prod_infra = prod.repository_for("infra/tiny")
    assert pushed is not None and (pushed.repository, pushed.digest) == (prod_infra, infra)
    assert pushed.tags == ("1-0123456789ab",)   # its content tag, not prod's moving tags
    assert w.client.head_manifest(split_repository(prod_infra)[1], "1-0123456789ab") is not None

    # prod's trust gate, on prod's manifest: the service and the infra documents' images verify with prod's key
    refs = [f"{w.repository('prod')}@{docs}", *infra_refs(cfg, prod, target)]
    assert f"{prod_infra}@{infra}" in refs
    summary = verify_images(cfg, prod, target, QUIET, images=refs)
    assert summary.fields["images"] == 2
    # signed there by prod's key (the identity names prod's repository): dev's key alone does not verify it
    dev_keys = [envkeys.signing_key(cfg, dev).public_key()]
    assert check_image(w.client, split_repository(prod_infra)[1], infra, dev_keys, commit=COMMIT)
