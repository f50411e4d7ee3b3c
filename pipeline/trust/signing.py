"""Image signatures in cosign's "simple signing" layout, stored at `<repo>:sha256-<hex>.sig`.

Each signature is one layer of media type `application/vnd.dev.cosign.simplesigning.v1+json` whose bytes
are the payload

    {"critical": {"identity": {"docker-reference": "<registry>/<repo>"},
                  "image": {"docker-manifest-digest": "sha256:…"},
                  "type": "cosign container image signature"},
     "optional": {"creator": "veza-pipeline"}}

and whose annotation `dev.cosignproject.cosign/signature` is the base64 ASN.1 ECDSA-P256/SHA-256 signature
of those bytes: cosign's "simple signing" format, which containers/image's `sigstoreSigned` policy also
reads (sources: containers/image `signature/internal/sigstore_payload.go`, sigstore/cosign
`specs/SIGNATURE_SPEC.md`). Shown here: Sigstore's own verifier and OpenSSL accept these signatures
(tests/integration/trust/test_second_verifier.py, test_trust_gate.py). Not shown: Debian's skopeo 1.9.3 is
built with sigstore disabled ("Debian-local change: sigstore disabled"), so no `sigstoreSigned` policy check
runs on these machines.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.tools.registry_api import RegistryClient
from pipeline.trust.attach import Layer, attachment_tag, read_layers, write_layers

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
CREATOR = "veza-pipeline"


def signing_payload(docker_reference: str, digest: str) -> bytes:
    """The simple-signing payload for `docker_reference` (registry/repo, no tag) at manifest `digest`."""
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": digest}, "type": SIGNATURE_TYPE},
           "optional": {"creator": CREATOR}}
    return json.dumps(doc, separators=(",", ":")).encode()


def sign_bytes(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


@dataclass(frozen=True)
class SignatureCheck:
    """Verdict on one image: `ok`, else `problem` says what is missing or wrong (one line)."""

    ok: bool
    problem: str = ""
    signatures: int = 0


def check_signature(client: RegistryClient, repo: str, digest: str,
                    trusted: list[ec.EllipticCurvePublicKey]) -> SignatureCheck:
    """Does `repo@digest` carry a signature by one of `trusted` keys whose payload names this digest and repo?

    Reads `<repo>:sha256-<hex>.sig` from the registry (never the manifest's memory). The identity must be
    `<registry>/<repo>` (cosign's and containers/image's `matchRepository` semantics).
    """
    layers = read_layers(client, repo, attachment_tag(digest, "sig"))
    if not layers:
        return SignatureCheck(False, "no signature (nothing under the .sig tag)")
    want_ref = f"{client.address}/{repo}"
    seen: list[str] = []
    for layer in layers:
        if layer.media_type != SIMPLE_SIGNING or SIGNATURE_ANNOTATION not in layer.annotations:
            continue
        try:
            sig = base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION], validate=True)
            critical = json.loads(layer.data)["critical"]
            signed_digest = str(critical["image"]["docker-manifest-digest"])
            signed_ref = str(critical["identity"]["docker-reference"])
        except (ValueError, KeyError, TypeError):
            seen.append("a malformed signature")
            continue
        if not any(verify_bytes(k, layer.data, sig) for k in trusted):
            seen.append("a signature by an untrusted key")
            continue
        if signed_digest != digest:
            seen.append(f"a trusted signature of another digest ({signed_digest[:19]}…)")
            continue
        if _repository_of(signed_ref) != want_ref:
            seen.append(f"a trusted signature for another repository ({signed_ref})")
            continue
        return SignatureCheck(True, "", len(layers))
    return SignatureCheck(False, "not signed by a trusted key (found " + ", ".join(seen or ["no signature"]) + ")",
                          len(layers))


def _repository_of(reference: str) -> str:
    """`host:port/ns/app[:tag][@digest]` → `host:port/ns/app` (a tag is a colon in the last path segment)."""
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def sign_image(client: RegistryClient, repo: str, digest: str, key: ec.EllipticCurvePrivateKey) -> tuple[str, bool]:
    """Add a signature of `repo@digest` by `key` under the `.sig` tag; returns (tag, signed_now).

    Existing signatures by other keys are kept (cosign appends too); when one by this key already covers
    the digest, nothing is written (signed_now False): re-running a release is a no-op.
    """
    tag = attachment_tag(digest, "sig")
    existing = read_layers(client, repo, tag) or []
    if check_signature(client, repo, digest, [key.public_key()]).ok:
        return tag, False
    payload = signing_payload(f"{client.address}/{repo}", digest)
    sig = base64.b64encode(sign_bytes(key, payload)).decode()
    layers = [*existing, Layer(SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: sig})]
    write_layers(client, repo, tag, layers)
    return tag, True
