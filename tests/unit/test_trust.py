"""Pure logic of signing, provenance, VEX and the gate's parsing: no engine, no registry."""

from __future__ import annotations

import base64
import json
import stat
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.errors import UsageError
from pipeline.gate.policy import IgnoreEntry
from pipeline.stages.verify_images import images_in_manifests, split_image
from pipeline.trust.attach import attachment_tag
from pipeline.trust.keys import KeyPaths, decrypt_private_key, generate_key_pair, load_public_key
from pipeline.trust.provenance import BuildFacts, check_envelope, provenance_statement, sign_statement
from pipeline.trust.signing import sign_bytes, signing_payload, verify_bytes
from pipeline.trust.vex import oci_purl, openvex_document

DIGEST = "sha256:" + "a" * 64
COMMIT = "c" * 40


def test_key_pair_roundtrip_modes_and_wrong_passphrase(tmp_path: Path) -> None:
    paths = generate_key_pair(KeyPaths(tmp_path / "k"), "correct horse")
    pem = paths.private.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    body = json.loads(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    assert body["kdf"]["name"] == "scrypt" and body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert body["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(body["cipher"]["nonce"])) == 24
    assert b"correct horse" not in pem
    assert stat.S_IMODE(paths.private.stat().st_mode) == 0o600
    key = decrypt_private_key(pem, b"correct horse")
    pub = load_public_key(paths.public)
    assert verify_bytes(pub, b"x", sign_bytes(key, b"x"))
    with pytest.raises(UsageError, match="wrong passphrase"):
        decrypt_private_key(pem, b"wrong")
    with pytest.raises(UsageError, match="exists"):
        generate_key_pair(paths, "correct horse")


def test_signing_payload_is_cosign_simple_signing() -> None:
    doc = json.loads(signing_payload("127.0.0.1:5000/ns/app", DIGEST))
    assert doc["critical"] == {"identity": {"docker-reference": "127.0.0.1:5000/ns/app"},
                               "image": {"docker-manifest-digest": DIGEST},
                               "type": "cosign container image signature"}


def test_attachment_tags_follow_the_tag_schema() -> None:
    assert attachment_tag(DIGEST, "sig") == "sha256-" + "a" * 64 + ".sig"
    with pytest.raises(ValueError):
        attachment_tag("latest", "sig")


def _facts(**over: object) -> BuildFacts:
    base = dict(repository="r/app", digest=DIGEST, commit=COMMIT, dirty=False, source_uri="git+https://x/y",
                dockerfile="dockerfiles/app.Dockerfile", dockerfile_sha256="0" * 64, input_digest="sha256:" + "1" * 64,
                build_args={"GO_IMAGE": "veza-local/golang:bookworm"},
                base_images={"veza-local/golang:bookworm": "sha256:" + "2" * 64}, builder_id="https://x/y/veza-pipeline")
    base.update(over)
    return BuildFacts(**base)  # type: ignore[arg-type]


def test_provenance_statement_carries_the_slsa_fields() -> None:
    st = provenance_statement(_facts(dirty=True))
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    assert st["subject"] == [{"name": "r/app", "digest": {"sha256": "a" * 64}}]
    bd = st["predicate"]["buildDefinition"]
    assert bd["externalParameters"]["buildArgs"] == {"GO_IMAGE": "veza-local/golang:bookworm"}
    assert bd["internalParameters"]["inputDigest"] == "sha256:" + "1" * 64
    deps = bd["resolvedDependencies"]
    assert deps[0]["digest"] == {"gitCommit": COMMIT} and deps[0]["annotations"]["treeState"] == "dirty"
    assert {"uri": "dockerfiles/app.Dockerfile", "name": "Dockerfile", "digest": {"sha256": "0" * 64}} in deps
    assert {"uri": "docker-image://veza-local/golang:bookworm", "name": "base-image",
            "digest": {"sha256": "2" * 64}} in deps
    assert st["predicate"]["runDetails"]["builder"]["id"] == "https://x/y/veza-pipeline"


def test_envelope_checks_each_way_it_can_be_wrong() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    env = sign_statement(provenance_statement(_facts()), key)
    assert check_envelope(env, [key.public_key()], digest=DIGEST, commit=COMMIT).ok
    assert check_envelope(env, [other.public_key(), key.public_key()], digest=DIGEST, commit=COMMIT).ok
    assert "trusted key" in check_envelope(env, [other.public_key()], digest=DIGEST, commit=COMMIT).problem
    tampered = dict(env)
    st = json.loads(base64.b64decode(env["payload"]))
    st["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"] = "d" * 40
    tampered["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    assert "tampered" in check_envelope(tampered, [key.public_key()], digest=DIGEST, commit=COMMIT).problem
    assert "subject" in check_envelope(env, [key.public_key()], digest="sha256:" + "b" * 64, commit=COMMIT).problem
    assert "commit" in check_envelope(env, [key.public_key()], digest=DIGEST, commit="d" * 40).problem
    assert "DSSE" in check_envelope({"payload": 1}, [key.public_key()], digest=DIGEST, commit=COMMIT).problem


def test_openvex_document_from_justified_entries() -> None:
    entries = [IgnoreEntry("CVE-2024-1", "never reached", date(2099, 1, 1), packages=("bash",))]
    doc = openvex_document(entries, [("127.0.0.1:5000/ns/app", DIGEST)], author="me", timestamp="2026-01-01T00:00:00Z")
    assert doc["@context"] == "https://openvex.dev/ns/v0.2.0" and doc["@id"].startswith("urn:sha256:")
    (st,) = doc["statements"]
    assert st["vulnerability"] == {"name": "CVE-2024-1"} and st["status"] == "not_affected"
    assert st["impact_statement"] == "never reached" and "bash" in st["status_notes"]
    assert st["products"] == [{"@id": oci_purl("127.0.0.1:5000/ns/app", DIGEST)}]
    assert oci_purl("127.0.0.1:5000/ns/app", DIGEST) == (
        "pkg:oci/app@sha256%3A" + "a" * 64 + "?repository_url=127.0.0.1:5000/ns/app")


def test_images_in_rendered_manifests() -> None:
    text = """
kind: Deployment
spec: {template: {spec: {initContainers: [{image: "r/init@sha256:1"}], containers: [{image: "r/a@sha256:2"}]}}}
---
kind: Service
spec: {}
---
kind: CronJob
spec: {jobTemplate: {spec: {template: {spec: {containers: [{image: "r/c:v1"}]}}}}}
---
kind: Pod
spec: {containers: [{image: "r/a@sha256:2"}]}
"""
    assert images_in_manifests(text) == ["r/init@sha256:1", "r/a@sha256:2", "r/c:v1"]


def test_split_image() -> None:
    assert split_image("127.0.0.1:5000/ns/app@sha256:ab") == ("127.0.0.1:5000/ns/app", "", "sha256:ab")
    assert split_image("127.0.0.1:5000/ns/app:v1") == ("127.0.0.1:5000/ns/app", "v1", "")
    assert split_image("127.0.0.1:5000/ns/app:v1@sha256:ab") == ("127.0.0.1:5000/ns/app", "v1", "sha256:ab")


def test_every_stage_name_has_a_stage_object_in_the_release_order() -> None:
    from pipeline.core.stage_registry import STAGE_REGISTRY, ordering_problem
    from pipeline.release.runner import make_stages

    assert [s.name for s in make_stages(list(STAGE_REGISTRY))] == list(STAGE_REGISTRY)
    assert ordering_problem(("build", "push", "sign", "verify-images", "deploy")) is None
    for wrong in (("build", "sign", "push"), ("build", "push", "verify-images", "sign"),
                  ("build", "push", "deploy", "verify-images")):
        assert ordering_problem(wrong) is not None, wrong


def test_signed_identity_is_compared_by_repository() -> None:
    from pipeline.trust.signing import _repository_of

    assert _repository_of("127.0.0.1:5000/ns/app") == "127.0.0.1:5000/ns/app"
    assert _repository_of("127.0.0.1:5000/ns/app:v1") == "127.0.0.1:5000/ns/app"
    assert _repository_of("127.0.0.1:5000/ns/app@sha256:ab") == "127.0.0.1:5000/ns/app"
    assert _repository_of("127.0.0.1:5000/ns/other") != "127.0.0.1:5000/ns/app"


def test_every_container_list_anywhere_is_collected_for_the_trust_check() -> None:
    """Lists, kinds we never render (ReplicationController, custom workloads such as an Argo Rollout) and
    ephemeral containers: whatever the cluster could run is checked (the review's case: a List holding a
    Deployment of `evil:latest` came back empty)."""
    text = """
kind: List
items:
- kind: Deployment
  spec: {template: {spec: {containers: [{image: "evil:latest"}]}}}
- kind: DeploymentList
  items: [{kind: Deployment, spec: {template: {spec: {containers: [{image: "r/nested:1"}]}}}}]
---
kind: ReplicationController
spec: {template: {spec: {containers: [{image: "r/rc:1"}]}}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
spec: {template: {spec: {initContainers: [{image: "r/roll-init:1"}], containers: [{image: "r/roll:1"}]}}}
---
kind: Pod
spec: {containers: [{image: "ok@sha256:00"}], ephemeralContainers: [{image: "r/debug:1"}]}
"""
    assert images_in_manifests(text) == ["evil:latest", "r/nested:1", "r/rc:1", "r/roll-init:1", "r/roll:1",
                                         "ok@sha256:00", "r/debug:1"]


def test_promotion_from_an_environment_that_vouches_for_nothing_into_one_that_signs_is_refused() -> None:
    """A build-and-push-only source: no trusted key ever vouched for its images, so a target that signs (with its
    own key) or verifies must not take them; between two environments that do neither it is a plain copy."""
    import dataclasses

    from pipeline.core.config import load_config
    from pipeline.core.errors import PolicyBlocked
    from pipeline.core.manifest import Manifest
    from pipeline.stages.sign import check_before_promotion

    cfg = load_config(check_files=False)
    src = dataclasses.replace(cfg.env("dev"), stages=("build", "push"))
    dst = cfg.env("prod")
    man = Manifest.new(Path("/nonexistent/manifest.json"), env="dev", release_id="dev-x", version={"sha": "a" * 40})
    images = [("veza-docs", "127.0.0.1:5000/veza-dev/veza-docs", "sha256:" + "1" * 64)]
    with pytest.raises(PolicyBlocked) as exc:
        check_before_promotion(cfg, src, man, images, dst=dst)
    assert "dev neither signs nor verifies" in exc.value.message and "prod would trust them" in exc.value.message
    plain = dataclasses.replace(dst, stages=("build", "push"))
    check_before_promotion(cfg, src, man, images, dst=plain)   # nothing to vouch for, nothing trusting it


def test_a_rollback_target_is_checked_against_todays_pod_security_gate_with_its_hooks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A revision deployed before a gate fix, or with a hook Job, is not put back unchecked: its manifests and
    hooks (as Helm stored them) pass the restricted profile first, before any image is looked at."""
    from pipeline.core.config import load_config
    from pipeline.core.errors import PolicyBlocked
    from pipeline.core.reporter import PlainReporter
    from pipeline.stages.deploy import trust_gate
    from pipeline.stages.deploy.target import ReleaseTarget

    cfg = load_config(check_files=False)
    rt = ReleaseTarget.of(cfg.env("dev"))
    hook = """apiVersion: batch/v1
kind: Job
metadata: {name: pre-rollback, annotations: {"helm.sh/hook": pre-rollback}}
spec: {template: {spec: {containers: [{name: h, image: "r/h@sha256:1", securityContext: {privileged: true}}]}}}
"""
    monkeypatch.setattr(trust_gate.helm, "get_manifest", lambda *_a, **_k: "")
    monkeypatch.setattr(trust_gate.helm, "get_hooks", lambda *_a, **_k: hook)
    monkeypatch.setattr(trust_gate, "verify_applied", lambda *_a, **_k: pytest.fail("images checked first"))
    with pytest.raises(PolicyBlocked) as exc:
        trust_gate.verify_revision(cfg, rt, 3, PlainReporter(sink=lambda _l: None), action="invoke rollback --to 3")
    assert "revision 3" in exc.value.message and "privileged" in exc.value.message
