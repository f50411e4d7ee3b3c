"""Keys made by cosign itself (its published test data, tests/unit/fixtures/cosign/README.md) are read by
keygen's loader as the pipeline reads an environment's key (`envkeys.signing_key`), and what the pipeline
signs with them verifies by OpenSSL with the public key OpenSSL derives from the key (cosign publishes no
cosign.pub for these keys)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.errors import UsageError
from pipeline.trust import envkeys
from pipeline.trust.keys import decrypt_private_key, public_pem
from pipeline.trust.provenance import check_envelope, sign_statement
from pipeline.trust.signing import sign_bytes, signing_payload
from tests.integration.trust.trust_fixtures import COMMIT, PASS_VARS, write_config

COSIGN = Path(__file__).parent / "fixtures" / "cosign"
PASSPHRASE = "hello"   # cosign's keys_test.go: LoadPrivateKey(tc.pemData, []byte("hello"), nil)
DIGEST = "sha256:" + "d" * 64


def _openssl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=30, check=False)


def _openssl_public_key(key: ec.EllipticCurvePrivateKey, out: Path) -> Path:
    """OpenSSL's own derivation of the public key from the decrypted PKCS#8 key (PEM SubjectPublicKeyInfo)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    got = _openssl("pkey", "-inform", "DER", "-pubout", stdin=der)
    assert got.returncode == 0, got.stderr.decode()
    out.write_bytes(got.stdout)
    return out


@pytest.mark.parametrize("name", ["sigstore-label.key", "cosign-label.key"])
def test_a_key_cosign_made_is_read_by_the_env_loader_and_its_signatures_verify_by_openssl(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEZA_KEY_DIR", raising=False)   # the config's key_dir, not a caller's (a CI job's) override
    cfg = write_config(tmp_path / "project", "127.0.0.1:5000", tmp_path / "keys")
    env = cfg.env("dev")
    paths = envkeys.key_paths(cfg, env)
    paths.directory.mkdir(parents=True)
    paths.private.write_bytes((COSIGN / name).read_bytes())
    monkeypatch.setenv(PASS_VARS["dev"], PASSPHRASE)

    key = envkeys.signing_key(cfg, env)                      # keygen's loader, as sign and its preflight call it
    pub = _openssl_public_key(key, paths.public)             # the env's cosign.pub, written by OpenSSL
    assert public_pem(key) == pub.read_bytes()               # keygen would have written the same public key

    payload = tmp_path / "payload.json"                      # the .sig layer the pipeline signs
    payload.write_bytes(signing_payload("127.0.0.1:5000/ns/app", DIGEST))
    sig = tmp_path / "payload.sig"
    sig.write_bytes(sign_bytes(key, payload.read_bytes()))
    ok = _openssl("dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(payload))
    assert ok.returncode == 0 and b"Verified OK" in ok.stdout, ok.stderr.decode()
    payload.write_bytes(payload.read_bytes().replace(b"ddd", b"ddc", 1))
    assert _openssl("dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(payload)).returncode != 0

    # and the pipeline's own DSSE check trusts the OpenSSL-written cosign.pub
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                 "subject": [{"name": "127.0.0.1:5000/ns/app", "digest": {"sha256": "d" * 64}}],
                 "predicate": {"buildDefinition": {"resolvedDependencies": [{"digest": {"gitCommit": COMMIT}}]}}}
    envelope = sign_statement(statement, key)
    assert check_envelope(json.loads(json.dumps(envelope)), envkeys.trusted_keys(cfg, env), digest=DIGEST,
                          commit=COMMIT).ok


@pytest.mark.parametrize("name", ["sigstore-label.key", "cosign-label.key"])
def test_a_cosign_key_with_a_wrong_passphrase_is_one_clear_error(name: str) -> None:
    with pytest.raises(UsageError, match=f"cannot decrypt {name}: wrong passphrase"):
        decrypt_private_key((COSIGN / name).read_bytes(), b"hellO", where=name)


def test_a_sec1_key_inside_is_refused_as_cosign_refuses_it() -> None:
    """cosign's TestReadingPrivatePemTypes expects `pemcosigneckey` to fail (x509.ParsePKCS8PrivateKey):
    the loader refuses it too, so no key works here that cosign or skopeo would not read."""
    with pytest.raises(UsageError, match="does not hold a PKCS#8 key") as exc:
        decrypt_private_key((COSIGN / "cosign-label-sec1.key").read_bytes(), PASSPHRASE.encode(), where="k")
    assert PASSPHRASE not in exc.value.message and PASSPHRASE not in exc.value.hint


def test_another_pem_is_refused_naming_both_labels() -> None:
    with pytest.raises(UsageError, match="not a ENCRYPTED COSIGN PRIVATE KEY .or ENCRYPTED SIGSTORE PRIVATE KEY"):
        decrypt_private_key(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", b"x")
