"""Signing and verifying a multi-platform image against a real registry (distribution 2.8 on 127.0.0.1:196xx):
the OCI index and each child are signed by digest and carry their own SLSA provenance; the gate checks the
index and every child it names."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from pipeline.core.manifest import Manifest
from pipeline.core.platforms import parse_platform
from pipeline.core.reporter import PlainReporter
from pipeline.stages.image_index import OCI_INDEX, OCI_MANIFEST, Child, index_document
from pipeline.stages.sign import sign_images, signatures_hold
from pipeline.stages.verify_images import check_image
from pipeline.tools.registry_api import RegistryClient, split_repository
from pipeline.trust import envkeys
from pipeline.trust.attach import attachment_tag, read_layers
from pipeline.trust.provenance import BuildFacts, attach_provenance, provenance_statement, sign_statement
from pipeline.trust.signing import sign_image
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)
PLATFORMS = ("linux/amd64", "linux/arm64")


def _child(client: RegistryClient, repo: str, platform: str) -> Child:
    """A one-layer OCI image whose config names `platform`, pushed by digest only (no tag)."""
    plat = parse_platform(platform)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"binary for {platform}".encode()
        info = tarfile.TarInfo("app")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": plat.architecture, "os": plat.os, "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}
                        ).encode()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": client.upload_blob(repo, config), "size": len(config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": client.upload_blob(repo, layer), "size": len(layer)}]}).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert client.put_manifest(repo, digest, body, OCI_MANIFEST) == digest
    return Child(plat, digest, OCI_MANIFEST, len(body))


def _multi(w: TrustWorld) -> tuple[str, str, dict[str, str], Manifest]:
    """An index of two children under the release's tag, recorded as the push stage records it."""
    repository = w.repository()
    _, repo = split_repository(repository)
    children = [_child(w.client, repo, p) for p in PLATFORMS]
    index = w.client.put_manifest(repo, "sha-0123456", index_document(children), OCI_INDEX)
    m = w.manifest(index)
    by_platform = {str(c.platform): c.digest for c in children}
    m.record("veza-docs", "push", {"status": "pushed", "digest": index, "repository": repository,
                                   "media_type": OCI_INDEX, "children": by_platform, "tags_pushed": ["sha-0123456"]})
    return repository, index, by_platform, m


def _statement(w: TrustWorld, repo: str, digest: str) -> dict[str, object]:
    (att,) = read_layers(w.client, repo, attachment_tag(digest, "att")) or []
    return dict(json.loads(base64.b64decode(json.loads(att.data)["payload"])))


def test_index_and_each_child_are_signed_and_attested(trust_world: TrustWorld) -> None:
    w = trust_world
    repository, index, children, m = _multi(w)
    _, repo = split_repository(repository)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    summary = sign_images(w.cfg, w.cfg.env("dev"), m, QUIET)
    assert summary.fields["attested"] == 3
    tags = set(w.client.tags(repo))
    for digest in (index, *children.values()):
        assert {attachment_tag(digest, "sig"), attachment_tag(digest, "att")} <= tags
    for plat, child in children.items():
        st = _statement(w, repo, child)
        assert st["subject"] == [{"name": repository, "digest": {"sha256": child.split(":")[1]}}]
        assert st["predicate"]["buildDefinition"]["externalParameters"]["platforms"] == [plat]  # type: ignore[index]
    top = _statement(w, repo, index)
    assert top["predicate"]["buildDefinition"]["externalParameters"]["platforms"] == list(PLATFORMS)  # type: ignore
    rec = Manifest.load(m.path).service("veza-docs")
    assert set(rec["signature"]["children"]) == set(PLATFORMS) == set(rec["provenance"]["children"])
    trusted = envkeys.trusted_keys(w.cfg, w.cfg.env("dev"))
    assert check_image(w.client, repo, index, trusted, commit=COMMIT) == []
    assert signatures_hold(w.cfg, w.cfg.env("dev"), Manifest.load(m.path), ["veza-docs"]) is None
    again = sign_images(w.cfg, w.cfg.env("dev"), Manifest.load(m.path), QUIET)
    assert again.fields["signed"] == 0 and again.fields["attested"] == 0       # a no-op writes nothing


def test_an_unsigned_child_under_a_signed_index_is_blocked(trust_world: TrustWorld) -> None:
    w = trust_world
    repository, index, children, m = _multi(w)
    _, repo = split_repository(repository)
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    key = envkeys.signing_key(w.cfg, w.cfg.env("dev"))
    # Only the index is signed and attested (what a signer that ignores the children would leave).
    sign_image(w.client, repo, index, key)
    facts = BuildFacts(repository=repository, digest=index, commit=COMMIT, dirty=False, source_uri="git+x",
                       dockerfile="d", dockerfile_sha256="", input_digest="")
    attach_provenance(w.client, repo, index, sign_statement(provenance_statement(facts), key))
    trusted = envkeys.trusted_keys(w.cfg, w.cfg.env("dev"))
    problems = check_image(w.client, repo, index, trusted, commit=COMMIT)
    assert problems == [f"{plat} image: {what}" for plat in PLATFORMS
                        for what in ("no signature (nothing under the .sig tag)",
                                     "no provenance (nothing under the .att tag)")]
    why = signatures_hold(w.cfg, w.cfg.env("dev"), m, ["veza-docs"])
    assert why is not None and "linux/amd64 image: no signature" in why


@pytest.mark.parametrize("via", ["registry-api", "skopeo"])
def test_promotion_copies_the_index_with_its_children_and_signs_each(trust_world: TrustWorld, via: str) -> None:
    from pipeline.release.promote import run_promote

    w = trust_world
    _, index, children, m = _multi(w)
    for env in ("dev", "prod"):
        envkeys.keygen(w.cfg, w.cfg.env(env))
    sign_images(w.cfg, w.cfg.env("dev"), m, QUIET)
    run_promote(w.cfg, w.cfg.env("dev"), w.cfg.env("prod"), Manifest.load(m.path), QUIET, via=via)
    _, prepo = split_repository(w.repository("prod"))
    got = w.client.get_manifest(prepo, index)
    assert got is not None and got[0].digest == index                # the same index, children by digest
    prod_keys = envkeys.trusted_keys(w.cfg, w.cfg.env("prod"))
    assert check_image(w.client, prepo, index, prod_keys, commit=COMMIT) == []
    for child in children.values():
        assert {attachment_tag(child, "sig"), attachment_tag(child, "att")} <= set(w.client.tags(prepo))
