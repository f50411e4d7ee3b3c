"""Two environments' keys on one digest in one repository (a real registry, distribution 2.8): each one's signature
and SLSA provenance append beside the other's, and each environment's gate finds its own by its key. Before,
the `.att` tag held one envelope and the last signer replaced it (a local release broke dev's verify-images)."""

from __future__ import annotations

import base64
import json

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.core.manifest import Manifest
from pipeline.core.reporter import PlainReporter
from pipeline.stages.sign import sign_images
from pipeline.stages.verify_images import verify_images
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from pipeline.trust.attach import attachment_tag, read_layers
from pipeline.trust.provenance import check_provenance
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _manifest_in(w: TrustWorld, env: str, repository: str, digest: str, commit: str) -> Manifest:
    """env's Release manifest recording `digest` pushed to `repository` (one both environments push to)."""
    m = w.manifest(digest, env, commit=commit)
    m.set_service("veza-docs", repository=repository, tags=["sha-0123456"], input_digest="sha256:" + "1" * 64)
    m.record("veza-docs", "push", {"status": "pushed", "digest": digest, "repository": repository})
    m.save()
    return m


def _commits(w: TrustWorld, repo: str, digest: str) -> list[str]:
    out = []
    for layer in read_layers(w.client, repo, attachment_tag(digest, "att")) or []:
        st = json.loads(base64.b64decode(json.loads(layer.data)["payload"]))
        out.append(st["predicate"]["buildDefinition"]["externalParameters"]["revision"])
    return out


def test_two_keys_attestations_for_one_digest_both_verify(trust_world: TrustWorld) -> None:
    w = trust_world
    repository = w.repository("dev")
    _, repo = split_repository(repository)
    digest = w.push("dev")
    dev, prod = w.cfg.env("dev"), w.cfg.env("prod")
    for env in (dev, prod):
        envkeys.keygen(w.cfg, env)
    dev_man = _manifest_in(w, "dev", repository, digest, COMMIT)
    sign_images(w.cfg, dev, dev_man, QUIET)
    verify_images(w.cfg, dev, dev_man, QUIET, images=[f"{repository}@{digest}"])

    # the other environment signs and attests the same digest in the same repository, at another commit
    prod_man = _manifest_in(w, "prod", repository, digest, OTHER_COMMIT)
    sign_images(w.cfg, prod, prod_man, QUIET)
    assert sorted(_commits(w, repo, digest)) == sorted([COMMIT, OTHER_COMMIT])    # appended, not replaced
    assert len(read_layers(w.client, repo, attachment_tag(digest, "sig")) or []) == 2
    for env, man in ((dev, dev_man), (prod, prod_man)):   # each gate finds its own by its key
        verify_images(w.cfg, env, man, QUIET, images=[f"{repository}@{digest}"])
    dev_key, prod_key = envkeys.trusted_keys(w.cfg, dev), envkeys.trusted_keys(w.cfg, prod)
    assert check_provenance(w.client, repo, digest, dev_key, commit=COMMIT).ok
    assert check_provenance(w.client, repo, digest, prod_key, commit=OTHER_COMMIT).ok
    # each key's envelope says its own commit: dev's key does not vouch for prod's release, nor the reverse
    wrong = check_provenance(w.client, repo, digest, dev_key, commit=OTHER_COMMIT)
    assert not wrong.ok and "is not the release's commit" in wrong.problem   # the problem of dev's own envelope
    with pytest.raises(PolicyBlocked, match="is not the release's commit"):
        verify_images(w.cfg, dev, prod_man, QUIET, images=[f"{repository}@{digest}"])

    # dev re-releases the digest at a third commit: its own envelope is replaced, prod's stays
    third = "0" * 40
    dev_again = _manifest_in(w, "dev", repository, digest, third)
    signed = sign_images(w.cfg, dev, dev_again, QUIET)
    assert signed.fields["attested"] == 1
    assert sorted(_commits(w, repo, digest)) == sorted([third, OTHER_COMMIT])
    verify_images(w.cfg, dev, dev_again, QUIET, images=[f"{repository}@{digest}"])
    verify_images(w.cfg, prod, prod_man, QUIET, images=[f"{repository}@{digest}"])
