"""Sign, attest and verify by digest against a real registry (distribution 2.8 on 127.0.0.1:196xx).

Each way an image can be untrusted is blocked by the gate with exit 3, naming the image and what is
missing; a pipeline signature verifies with tools that share no code with the pipeline (skopeo + OpenSSL;
Sigstore's own verifier: test_second_verifier.py). Debian's skopeo is built with sigstore disabled, so its
`sigstoreSigned` policy check cannot run here and is not a test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from pipeline.core.errors import PolicyBlocked
from pipeline.core.reporter import PlainReporter
from pipeline.release.promote import run_promote
from pipeline.stages.sign import sign_images
from pipeline.stages.verify_images import verify_images
from pipeline.tools.registry_api import split_repository
from pipeline.trust import envkeys
from pipeline.trust.attach import Layer, attachment_tag, read_layers, write_layers
from pipeline.trust.keys import KeyPaths, decrypt_private_key, generate_key_pair
from pipeline.trust.provenance import BuildFacts, attach_provenance, provenance_statement, sign_statement
from pipeline.trust.signing import sign_image
from tests.integration.trust.trust_fixtures import COMMIT, TrustWorld

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)


def _gate(w: TrustWorld, image: str, env: str = "dev") -> PolicyBlocked | None:
    from pipeline.core.manifest import Manifest

    m = Manifest.load(w.cfg.state_dir / env / "manifest.json")
    try:
        verify_images(w.cfg, w.cfg.env(env), m, QUIET, images=[image])
    except PolicyBlocked as exc:
        return exc
    return None


def _signed(w: TrustWorld, env: str = "dev", vex: Path | None = None) -> tuple[str, str]:
    digest = w.push(env)
    envkeys.keygen(w.cfg, w.cfg.env(env))
    sign_images(w.cfg, w.cfg.env(env), w.manifest(digest, env), QUIET, vex=vex)
    return w.repository(env), digest


def test_signed_and_attested_image_passes_and_attachments_use_the_tag_schema(trust_world: TrustWorld,
                                                                            tmp_path: Path) -> None:
    vex = tmp_path / "openvex.json"
    vex.write_text('{"@context": "https://openvex.dev/ns/v0.2.0", "statements": []}')
    repository, digest = _signed(trust_world, vex=vex)
    assert _gate(trust_world, f"{repository}@{digest}") is None
    _, repo = split_repository(repository)
    hexd = digest.split(":")[1]
    assert {f"sha256-{hexd}.sig", f"sha256-{hexd}.att", f"sha256-{hexd}.vex"} <= set(trust_world.client.tags(repo))
    (att,) = read_layers(trust_world.client, repo, f"sha256-{hexd}.att") or []
    statement = json.loads(base64.b64decode(json.loads(att.data)["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": hexd}
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps[0]["digest"] == {"gitCommit": COMMIT}
    assert {"uri": "docker-image://veza-local/golang:bookworm", "name": "base-image",
            "digest": {"sha256": "3" * 64}} in deps
    # a second sign of the same digest writes nothing (the no-op release)
    before = trust_world.client.head_manifest(repo, f"sha256-{hexd}.sig")
    from pipeline.core.manifest import Manifest

    again = sign_images(trust_world.cfg, trust_world.cfg.env("dev"),
                        Manifest.load(trust_world.cfg.state_dir / "dev" / "manifest.json"), QUIET)
    assert again.fields["signed"] == 0 and again.fields["already"] == 1 and again.fields["attested"] == 0
    assert trust_world.client.head_manifest(repo, f"sha256-{hexd}.sig") == before


def test_unsigned_image_is_blocked(trust_world: TrustWorld) -> None:
    digest = trust_world.push()
    trust_world.manifest(digest)
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    image = f"{trust_world.repository()}@{digest}"
    exc = _gate(trust_world, image)
    assert exc is not None and exc.exit_code == 3
    assert image in exc.message and "no signature" in exc.message and "no provenance" in exc.message


def test_image_signed_by_another_key_is_blocked(trust_world: TrustWorld, tmp_path: Path) -> None:
    digest = trust_world.push()
    trust_world.manifest(digest)
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    other = generate_key_pair(KeyPaths(tmp_path / "other"), "x")
    okey = decrypt_private_key(other.private.read_bytes(), b"x")
    _, repo = split_repository(trust_world.repository())
    sign_image(trust_world.client, repo, digest, okey)
    facts = BuildFacts(repository=trust_world.repository(), digest=digest, commit=COMMIT, dirty=False,
                       source_uri="git+x", dockerfile="d", dockerfile_sha256="", input_digest="")
    attach_provenance(trust_world.client, repo, digest, sign_statement(provenance_statement(facts), okey))
    exc = _gate(trust_world, f"{trust_world.repository()}@{digest}")
    assert exc is not None and exc.exit_code == 3
    assert "signature by an untrusted key" in exc.message and "another key" in exc.message


def test_moved_tag_is_blocked(trust_world: TrustWorld) -> None:
    repository, digest = _signed(trust_world)
    moved = trust_world.push(tag="sha-0123456")          # the same tag now serves another (unsigned) image
    assert moved != digest
    exc = _gate(trust_world, f"{repository}:sha-0123456")
    assert exc is not None and exc.exit_code == 3
    assert f"{repository}:sha-0123456" in exc.message and "tag :sha-0123456 moved" in exc.message
    # a signature copied onto the new digest does not make it trusted either
    _, repo = split_repository(repository)
    layers = read_layers(trust_world.client, repo, attachment_tag(digest, "sig")) or []
    write_layers(trust_world.client, repo, attachment_tag(moved, "sig"), layers)
    exc = _gate(trust_world, f"{repository}@{moved}")
    assert exc is not None and "not the digest the release recorded" in exc.message
    assert "signature of another digest" in exc.message


def test_tampered_provenance_is_blocked(trust_world: TrustWorld) -> None:
    repository, digest = _signed(trust_world)
    _, repo = split_repository(repository)
    (att,) = read_layers(trust_world.client, repo, attachment_tag(digest, "att")) or []
    envelope = json.loads(att.data)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["EVIL"] = "1"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    write_layers(trust_world.client, repo, attachment_tag(digest, "att"),
                 [Layer(att.media_type, json.dumps(envelope).encode(), att.annotations)])
    exc = _gate(trust_world, f"{repository}@{digest}")
    assert exc is not None and exc.exit_code == 3
    assert "provenance signature does not verify" in exc.message and "tampered" in exc.message
    assert "no signature" not in exc.message and "untrusted key" not in exc.message   # the image signature holds


def test_missing_provenance_is_blocked(trust_world: TrustWorld) -> None:
    digest = trust_world.push()
    trust_world.manifest(digest)
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    _, repo = split_repository(trust_world.repository())
    sign_image(trust_world.client, repo, digest, envkeys.signing_key(trust_world.cfg, trust_world.cfg.env("dev")))
    exc = _gate(trust_world, f"{trust_world.repository()}@{digest}")
    assert exc is not None and exc.exit_code == 3
    assert "no provenance" in exc.message and "signature" not in exc.message


def test_provenance_of_another_commit_is_blocked(trust_world: TrustWorld) -> None:
    repository, digest = _signed(trust_world)
    trust_world.manifest(digest, commit="f" * 40)      # the release now says another commit
    exc = _gate(trust_world, f"{repository}@{digest}")
    assert exc is not None and "not the release's commit" in exc.message


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)


def test_signature_verifies_without_the_pipeline_code(trust_world: TrustWorld, tmp_path: Path) -> None:
    """skopeo fetches (no pipeline code), sha256sum-equivalent and OpenSSL check: payload names the
    registry's digest, and the ECDSA signature verifies with the env's public key, not with another."""
    repository, digest = _signed(trust_world)
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{repository}@{digest}")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == digest
    out = tmp_path / "sig"
    sig_ref = f"docker://{repository}:{attachment_tag(digest, 'sig')}"
    got = _skopeo("copy", "--src-tls-verify=false", sig_ref, f"dir:{out}")
    assert got.returncode == 0, got.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = out / layer["digest"].split(":")[1]
    assert json.loads(payload.read_text())["critical"]["image"]["docker-manifest-digest"] == digest
    (tmp_path / "sig.der").write_bytes(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    pub = envkeys.key_paths(trust_world.cfg, trust_world.cfg.env("dev")).public
    ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig.der"),
                         str(payload)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    other = generate_key_pair(KeyPaths(tmp_path / "other"), "x")
    bad = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(other.public), "-signature",
                          str(tmp_path / "sig.der"), str(payload)], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_promotion_verifies_the_source_and_signs_with_the_target_key(trust_world: TrustWorld) -> None:
    from pipeline.core.manifest import Manifest

    repository, digest = _signed(trust_world, "dev")
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("prod"))
    man = Manifest.load(trust_world.cfg.state_dir / "dev" / "manifest.json")
    res = run_promote(trust_world.cfg, trust_world.cfg.env("dev"), trust_world.cfg.env("prod"), man, QUIET,
                      via="registry-api")
    prod_repo = trust_world.repository("prod")
    assert res["veza-docs"]["signature"] == f"{prod_repo}:{attachment_tag(digest, 'sig')}"
    from pipeline.stages.verify_images import check_image

    _, prepo = split_repository(prod_repo)
    prod_keys = envkeys.trusted_keys(trust_world.cfg, trust_world.cfg.env("prod"))
    assert check_image(trust_world.client, prepo, digest, prod_keys, commit=COMMIT) == []
    dev_keys = envkeys.trusted_keys(trust_world.cfg, trust_world.cfg.env("dev"))
    assert check_image(trust_world.client, prepo, digest, dev_keys, commit=COMMIT)   # prod's key, not dev's


def test_promotion_of_an_unsigned_image_is_refused_before_any_copy(trust_world: TrustWorld) -> None:
    digest = trust_world.push("dev")
    man = trust_world.manifest(digest, "dev")
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("prod"))
    with pytest.raises(PolicyBlocked, match="promotion refused: .*no signature") as info:
        run_promote(trust_world.cfg, trust_world.cfg.env("dev"), trust_world.cfg.env("prod"), man, QUIET,
                    via="registry-api")
    assert info.value.exit_code == 3
    _, prepo = split_repository(trust_world.repository("prod"))
    assert trust_world.client.head_manifest(prepo, digest) is None


def test_post_release_verification_rereads_each_published_digest(trust_world: TrustWorld, tmp_path: Path) -> None:
    from pipeline.core.manifest import Manifest
    from pipeline.stages.sbom import attach_sbom
    from pipeline.stages.verify_images import published_attachments

    repository, digest = _signed(trust_world)
    man = Manifest.load(trust_world.cfg.state_dir / "dev" / "manifest.json")
    got = published_attachments(trust_world.cfg, trust_world.cfg.env("dev"), man)
    assert got == {"veza-docs": {"image": f"{repository}@{digest}", "signature": "ok", "provenance": "ok",
                                 "sbom": "missing", "vex": "none (nothing justified)"}}
    sbom = tmp_path / "sbom.json"
    sbom.write_text('{"bomFormat": "CycloneDX"}')
    _, repo = split_repository(repository)
    attach_sbom(trust_world.client, repo, digest, sbom)
    assert published_attachments(trust_world.cfg, trust_world.cfg.env("dev"), man)["veza-docs"]["sbom"] == "present"


def test_release_vex_comes_from_the_justified_ignore_entries_and_is_attached(trust_world: TrustWorld,
                                                                            tmp_path: Path) -> None:
    from pipeline.trust.vex import vex_for_release

    (trust_world.root / ".trivyignore.yaml").write_text(
        "ignores:\n"
        "  - {id: CVE-2099-1, reason: never reached, expires: 2099-01-01}\n"
        "  - {id: CVE-2099-2, expires: 2099-01-01}\n"                      # no reason: not justified
        "  - {id: CVE-2099-3, reason: old, expires: 2000-01-01}\n")        # expired: not justified
    digest = trust_world.push()
    man = trust_world.manifest(digest)
    vex = vex_for_release(trust_world.cfg, man, tmp_path)
    assert vex is not None
    doc = json.loads(vex.read_text())
    assert [s["vulnerability"]["name"] for s in doc["statements"]] == ["CVE-2099-1"]
    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    sign_images(trust_world.cfg, trust_world.cfg.env("dev"), man, QUIET, vex=vex)
    _, repo = split_repository(trust_world.repository())
    (layer,) = read_layers(trust_world.client, repo, attachment_tag(digest, "vex")) or []
    assert layer.media_type == "application/openvex+json" and json.loads(layer.data) == doc
    assert man.stage_result("veza-docs", "signature")["vex"].endswith(attachment_tag(digest, "vex"))  # type: ignore[index]


def test_signature_copied_to_another_repository_is_not_trusted_there(trust_world: TrustWorld) -> None:
    from pipeline.trust.signing import check_signature
    from tests.integration.trust.trust_fixtures import push_tiny_image

    envkeys.keygen(trust_world.cfg, trust_world.cfg.env("dev"))
    key = envkeys.signing_key(trust_world.cfg, trust_world.cfg.env("dev"))
    a = push_tiny_image(trust_world.client, "trust/app-a", "v1", b"same bytes")
    b = push_tiny_image(trust_world.client, "trust/app-b", "v1", b"same bytes")
    assert a == b
    sign_image(trust_world.client, "trust/app-a", a, key)
    layers = read_layers(trust_world.client, "trust/app-a", attachment_tag(a, "sig")) or []
    write_layers(trust_world.client, "trust/app-b", attachment_tag(b, "sig"), layers)
    assert check_signature(trust_world.client, "trust/app-a", a, [key.public_key()]).ok
    got = check_signature(trust_world.client, "trust/app-b", b, [key.public_key()])
    assert not got.ok and "for another repository" in got.problem
