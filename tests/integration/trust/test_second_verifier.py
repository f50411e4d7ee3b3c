"""A second verifier: what the pipeline signs and attests is accepted by an implementation that is not ours.

The pipeline signs and attests a tiny image in a real registry (distribution 2.8 on 127.0.0.1:196xx); skopeo
fetches the image manifest and the `.sig`/`.att` artifacts (no pipeline code reads the registry here), and
Sigstore's JavaScript verifier (@sigstore/verify, what npm's own provenance checks use; `sigstore_js/`)
checks them with the environment's cosign.pub:
- the DSSE envelope of the SLSA provenance: the ECDSA signature over DSSE's PAE(payloadType, payload), the
  payload type, and the statement's subject digest = the digest of the manifest skopeo fetched;
- the cosign simple-signing signature: ECDSA over the payload, which names that same digest.
A tampered byte (payload, payload type, signature, signed artifact) and another key are each rejected by it.
An image signed with a key cosign itself made (its published test key) verifies the same way.

Why this verifier: the pipeline makes and checks its envelopes with securesystemslib's DSSE code, so the
in-toto/securesystemslib libraries would check ours with ours; @sigstore/verify shares no code with it (its own
PAE, Node's crypto) and is maintained by Sigstore. OpenVEX (`.vex`) is attached unsigned, so there is no
signature of it to verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from pipeline.core.reporter import PlainReporter
from pipeline.stages.sign import sign_images
from pipeline.trust import envkeys
from pipeline.trust.attach import attachment_tag
from pipeline.trust.keys import KeyPaths, generate_key_pair
from tests.integration.trust.trust_fixtures import COMMIT, PASS_VARS, SigstoreVerify, TrustWorld

pytestmark = pytest.mark.registry
QUIET = PlainReporter(sink=lambda _line: None)
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_KEYS = Path(__file__).parents[2] / "unit" / "fixtures" / "cosign"


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60, check=False)


def _fetch(ref: str, out: Path) -> list[tuple[dict[str, Any], bytes]]:
    """skopeo copy of an attachment tag to a dir: each layer's descriptor and bytes."""
    got = _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}")
    assert got.returncode == 0, got.stderr
    layers = json.loads((out / "manifest.json").read_text())["layers"]
    return [(layer, (out / layer["digest"].split(":")[1]).read_bytes()) for layer in layers]


def _flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture
def signed(trust_world: TrustWorld, tmp_path: Path) -> dict[str, Any]:
    """A pushed image signed and attested by the pipeline's sign stage; its digest as skopeo sees it,
    the artifacts as skopeo fetched them, the env's public key and another one."""
    w = trust_world
    digest = w.push("dev")
    envkeys.keygen(w.cfg, w.cfg.env("dev"))
    sign_images(w.cfg, w.cfg.env("dev"), w.manifest(digest, "dev"), QUIET)
    repository = w.repository("dev")
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{repository}@{digest}")
    assert raw.returncode == 0, raw.stderr
    other = generate_key_pair(KeyPaths(tmp_path / "other"), "another passphrase")
    return {
        "digest": "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest(),
        "recorded": digest,
        "sig": _fetch(f"{repository}:{attachment_tag(digest, 'sig')}", tmp_path / "sig"),
        "att": _fetch(f"{repository}:{attachment_tag(digest, 'att')}", tmp_path / "att"),
        "key": envkeys.key_paths(w.cfg, w.cfg.env("dev")).public.read_text(),
        "other": other.public.read_text(),
    }


def test_provenance_envelope_verifies_with_sigstore_js(signed: dict[str, Any], sigstore_verify: SigstoreVerify,
                                                        ) -> None:
    assert signed["digest"] == signed["recorded"]   # the registry serves the manifest the pipeline recorded
    ((layer, data),) = signed["att"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1"
    envelope = json.loads(data)
    got = sigstore_verify({"publicKey": signed["key"], "dsseEnvelope": envelope})
    assert got["ok"], got
    assert got["payloadType"] == IN_TOTO
    statement = json.loads(base64.b64decode(got["payload"]))   # the bytes the verifier checked, not ours
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert [s["digest"] for s in statement["subject"]] == [{"sha256": signed["digest"].split(":")[1]}]
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {"gitCommit": COMMIT} in [d["digest"] for d in deps]


def test_sigstore_js_rejects_a_tampered_envelope_and_another_key(signed: dict[str, Any],
                                                                 sigstore_verify: SigstoreVerify) -> None:
    ((_, data),) = signed["att"]
    envelope = json.loads(data)
    payload_len = len(base64.b64decode(envelope["payload"]))
    cases = {
        "payload byte": {**envelope, "payload": _flip(envelope["payload"], payload_len // 2)},
        "last payload byte": {**envelope, "payload": _flip(envelope["payload"], payload_len - 1)},
        "payload type": {**envelope, "payloadType": "application/vnd.in-toto+jsoN"},
        "signature byte": {**envelope, "signatures": [{**envelope["signatures"][0],
                                                       "sig": _flip(envelope["signatures"][0]["sig"], 40)}]},
    }
    for name, bad in cases.items():
        got = sigstore_verify({"publicKey": signed["key"], "dsseEnvelope": bad})
        assert not got["ok"] and got["code"] == "SIGNATURE_ERROR", (name, got)
    got = sigstore_verify({"publicKey": signed["other"], "dsseEnvelope": envelope})
    assert not got["ok"] and got["code"] == "SIGNATURE_ERROR", got


def test_image_signature_verifies_with_sigstore_js_and_names_the_digest(signed: dict[str, Any],
                                                                        sigstore_verify: SigstoreVerify) -> None:
    ((layer, payload),) = signed["sig"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == signed["digest"]
    sig = layer["annotations"]["dev.cosignproject.cosign/signature"]
    request = {"publicKey": signed["key"], "signature": sig, "artifact": base64.b64encode(payload).decode()}
    assert sigstore_verify(request)["ok"]
    tampered = bytearray(payload)
    tampered[payload.index(b"sha256:") + 7] ^= 0x01   # the first hex digit of the signed digest
    for name, bad in {"artifact byte": {**request, "artifact": base64.b64encode(bytes(tampered)).decode()},
                      "signature byte": {**request, "signature": _flip(sig, 40)},
                      "another key": {**request, "publicKey": signed["other"]}}.items():
        got = sigstore_verify(bad)
        assert not got["ok"] and got["code"] == "SIGNATURE_ERROR", (name, got)


def test_an_image_signed_with_a_key_cosign_made_verifies_with_sigstore_js(
        trust_world: TrustWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sigstore_verify: SigstoreVerify) -> None:
    """dev's key is cosign's own test key (tests/unit/fixtures/cosign, passphrase `hello`); its public key is
    the one OpenSSL derives. The pipeline signs with it; Sigstore's verifier accepts the registry's envelope."""
    w = trust_world
    paths = envkeys.key_paths(w.cfg, w.cfg.env("dev"))
    paths.directory.mkdir(parents=True)
    paths.private.write_bytes((COSIGN_KEYS / "sigstore-label.key").read_bytes())
    monkeypatch.setenv(PASS_VARS["dev"], "hello")
    der = envkeys.signing_key(w.cfg, w.cfg.env("dev")).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = subprocess.run(["openssl", "pkey", "-inform", "DER", "-pubout"], input=der, capture_output=True,
                         timeout=30, check=True).stdout
    paths.public.write_bytes(pub)
    digest = w.push("dev")
    sign_images(w.cfg, w.cfg.env("dev"), w.manifest(digest, "dev"), QUIET)
    ((_, data),) = _fetch(f"{w.repository('dev')}:{attachment_tag(digest, 'att')}", tmp_path / "att")
    got = sigstore_verify({"publicKey": pub.decode(), "dsseEnvelope": json.loads(data)})
    assert got["ok"], got
    assert json.loads(base64.b64decode(got["payload"]))["subject"][0]["digest"] == {"sha256": digest.split(":")[1]}
