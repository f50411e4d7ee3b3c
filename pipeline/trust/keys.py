"""Signing key pairs in cosign's encrypted format, made offline; keys cosign itself made are read too.

Private key: a PEM block of type `ENCRYPTED COSIGN PRIVATE KEY` (what the pipeline writes) or
`ENCRYPTED SIGSTORE PRIVATE KEY` (what `cosign generate-key-pair` writes since cosign 2; cosign and
containers/image read both labels) whose body is the JSON envelope of
go-tuf's `encrypted` package: `{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"},
"cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}` (byte fields base64 with padding, as Go's
encoding/json writes []byte). The plaintext is the PKCS#8 DER of an ECDSA P-256 key; the secretbox key is
scrypt(passphrase, salt, N=32768, r=8, p=1, 32 bytes) — cosign's own parameters (a key's own N/r/p are
honoured when read). As cosign's LoadPrivateKey, anything but PKCS#8 inside (e.g. a SEC1 `EC PRIVATE KEY`)
is refused. Sources: sigstore/cosign `pkg/cosign/keys.go` (LoadPrivateKey), containers/image
`signature/sigstore/copied.go` (loadPrivateKey), go-tuf `encrypted/encrypted.go`. Checked against cosign's
own published test keys: `tests/unit/test_cosign_keys.py`.
Public key: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), what a `sigstoreSigned` policy's `keyPath` names.

The passphrase never touches argv or a log: it comes from an environment variable (pipeline.toml names it)
and reaches skopeo through a 0600 file removed after use.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pipeline.core.errors import UsageError

PRIVATE_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"   # cosign >= 2 writes this label
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
PRIVATE_NAME, PUBLIC_NAME = "cosign.key", "cosign.pub"


@dataclass(frozen=True)
class KeyPaths:
    """Where an environment's key pair lives (outside the repository)."""

    directory: Path

    @property
    def private(self) -> Path:
        return self.directory / PRIVATE_NAME

    @property
    def public(self) -> Path:
        return self.directory / PUBLIC_NAME


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _secretbox_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=n, r=r, p=p).derive(passphrase)


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """PEM bytes of `key` encrypted with `passphrase` (scrypt + nacl/secretbox), as cosign writes them."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt = secrets.token_bytes(32)
    box = nacl.secret.SecretBox(_secretbox_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(der, nonce)
    envelope = {"kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                        "salt": _b64(salt)},
                "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
                "ciphertext": _b64(sealed.ciphertext)}
    body = base64.encodebytes(json.dumps(envelope).encode()).decode()
    body = "".join(body.split())
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {PRIVATE_PEM_TYPE}-----", *lines, f"-----END {PRIVATE_PEM_TYPE}-----"])
            + "\n").encode()


def _pem_body(text: str) -> str | None:
    """The base64 body of the first encrypted cosign/sigstore PEM block in `text`, else None."""
    for label in (PRIVATE_PEM_TYPE, SIGSTORE_PEM_TYPE):
        begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
        if begin in text and end in text.split(begin, 1)[1]:
            return text.split(begin, 1)[1].split(end, 1)[0]
    return None


def _is_pkcs8(der: bytes) -> bool:
    """Does `der` start as a PKCS#8 PrivateKeyInfo (SEQUENCE { INTEGER 0, SEQUENCE algorithm, … }), not a
    SEC1 ECPrivateKey (SEQUENCE { INTEGER 1, OCTET STRING, … })? RFC 5208 §5 / RFC 5915 §3."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    head = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)   # short or long DER length form
    return der[head:head + 4] == b"\x02\x01\x00\x30"


def decrypt_private_key(pem: bytes, passphrase: bytes, *, where: str = "private key") -> ec.EllipticCurvePrivateKey:
    """The ECDSA key inside a cosign-encrypted PEM (either label); UsageError (exit 2) on a wrong passphrase,
    another format, a non-PKCS#8 plaintext (cosign refuses those too) or a key that is not ECDSA."""
    body = _pem_body(pem.decode(errors="replace"))
    if body is None:
        raise UsageError(f"{where} is not a {PRIVATE_PEM_TYPE} (or {SIGSTORE_PEM_TYPE}) PEM",
                         "make one with `invoke keygen --env ENV`")
    try:
        env = json.loads(base64.b64decode("".join(body.split())))
        params = env["kdf"]["params"]
        key = _secretbox_key(passphrase, base64.b64decode(env["kdf"]["salt"]), int(params["N"]),
                             int(params["r"]), int(params["p"]))
        der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(env["ciphertext"]),
                                                 base64.b64decode(env["cipher"]["nonce"]))
    except nacl.exceptions.CryptoError:
        raise UsageError(f"cannot decrypt {where}: wrong passphrase",
                         "export the passphrase the key was made with in the variable pipeline.toml names") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{where} is not a valid encrypted key", "make one with `invoke keygen --env ENV`") from None
    if not _is_pkcs8(der):
        raise UsageError(f"{where} does not hold a PKCS#8 key (cosign refuses it too)",
                         "re-import it with `cosign import-key-pair`, or make one with `invoke keygen --env ENV`")
    try:
        loaded = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError(f"{where} holds a key this pipeline cannot read", "make one with `invoke keygen --env ENV`"
                         ) from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{where} is not an ECDSA key", "make one with `invoke keygen --env ENV`")
    return loaded


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A PEM public key from `path`; UsageError naming the file when missing or not an ECDSA key."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"trusted key {path} does not exist",
                         "run `invoke keygen --env ENV` or fix the path") from None
    except ValueError:
        raise UsageError(f"trusted key {path} is not a PEM public key", "point at the env's cosign.pub") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise UsageError(f"trusted key {path} is not an ECDSA public key", "use a key from `invoke keygen`")
    return loaded


def generate_key_pair(paths: KeyPaths, passphrase: str, *, force: bool = False) -> KeyPaths:
    """Write a new ECDSA P-256 pair: private key 0600 (encrypted), public key 0644; directory 0700.

    UsageError when a pair exists (unless force) or the passphrase is empty.
    """
    if not passphrase:
        raise UsageError("the signing passphrase is empty", "export it in the variable pipeline.toml names")
    if paths.private.exists() and not force:
        raise UsageError(f"a signing key exists at {paths.private}",
                         "keep it, or pass --force to replace it (images signed with it stop verifying)")
    paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(paths.private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(encrypt_private_key(key, passphrase.encode()))
    paths.public.write_bytes(public_pem(key))
    return paths


