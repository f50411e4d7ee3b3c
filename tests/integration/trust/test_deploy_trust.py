"""The check in front of every apply (pipeline/stages/deploy/trust_gate.py → verify_images.verify_applied),
against the real registry: an image of this release must be signed and attested for the release's commit; an image
of an earlier release (kept by a `--service` deploy, a rollback's target) must be signed for its exact digest and
repository and attested with that digest as subject, any commit; anything else is refused with one line, exit 3."""

from __future__ import annotations

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.core.reporter import PlainReporter
from pipeline.stages.sign import sign_images
from pipeline.stages.verify_images import verify_applied
from pipeline.trust import envkeys
from tests.integration.trust.trust_fixtures import TrustWorld

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)


def _refusal(w: TrustWorld, images: dict[str, str], env: str = "dev") -> PolicyBlocked | None:
    from pipeline.core.manifest import Manifest

    man = Manifest.load(w.cfg.state_dir / env / "manifest.json")
    try:
        verify_applied(w.cfg, w.cfg.env(env), man, images, QUIET, action=f"deploy to {env}", hint="sign it")
    except PolicyBlocked as exc:
        return exc
    return None


def test_a_kept_digest_of_an_earlier_release_must_be_signed_for_its_digest(trust_world: TrustWorld) -> None:
    w = trust_world
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    old = w.push("dev", "sha-old")
    sign_images(w.cfg, w.cfg.env("dev"), w.manifest(old, commit="e" * 40), QUIET)   # an earlier release
    unsigned = w.push("dev", "sha-unsigned")                                         # pushed, never signed
    new = w.push("dev")
    sign_images(w.cfg, w.cfg.env("dev"), w.manifest(new), QUIET)                     # this release
    repo = w.repository("dev")
    # the earlier release's digest verifies as kept (its provenance names another commit: accepted for a kept one)
    assert _refusal(w, {f"{repo}@{new}": "veza-docs, Release manifest", f"{repo}@{old}": "x, kept from revision 3"}) \
        is None
    exc = _refusal(w, {f"{repo}@{new}": "veza-docs, Release manifest",
                       f"{repo}@{unsigned}": "veza-api, kept from revision 3"})
    assert exc is not None and exc.exit_code == 3 and "\n" not in exc.one_line()
    assert exc.one_line() == (f"deploy to dev refused: untrusted image {repo}@{unsigned} (veza-api, kept from "
                              "revision 3): no signature (nothing under the .sig tag); no provenance (nothing under "
                              "the .att tag) (fix: sign it)")


def test_signed_by_another_environment_or_not_pinned_is_refused(trust_world: TrustWorld) -> None:
    w = trust_world
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    envkeys.keygen(w.cfg, w.cfg.env("prod"))
    digest = w.push("dev")
    sign_images(w.cfg, w.cfg.env("dev"), w.manifest(digest), QUIET)
    w.manifest(w.push("prod"), "prod")
    repo = w.repository("dev")
    exc = _refusal(w, {f"{repo}@{digest}": "revision 2"}, env="prod")   # prod trusts its own key only
    assert exc is not None and "signed by another key" in exc.message, exc.message
    exc = _refusal(w, {f"{repo}:sha-0123456": "rendered chart"})
    assert exc is not None and exc.message.startswith(f"deploy to dev refused: untrusted image {repo}:sha-0123456 "
                                                      "(rendered chart): not pinned by digest"), exc.message
    # the same digest under another repository: the signature names the repository it was signed in
    other = repo.replace("t-dev/", "t-dev/moved-")
    exc = _refusal(w, {f"{other}@{digest}": "revision 2"})
    assert exc is not None and "the registry does not serve" in exc.message, exc.message
