"""The local cluster's PKI, made with `cryptography` (no openssl calls): a CA, the apiserver's serving cert,
the apiserver → kubelet client cert, the service-account key pair and static bearer tokens.

Kept across restarts (kubeconfigs stay valid); a leaf is remade when its file is missing, it nears expiry, or
(the apiserver's) it does not name every address the apiserver is reached at: 127.0.0.1 (kubeconfigs), the
`kubernetes` Service IP and the engine bridge's gateway (pods: components.py, "How pods reach the API"). A
machine whose PKI predates a SAN, or whose bridge moved to another subnet, gets a new serving cert from the same
CA on the next cluster-up; the CA, tokens and kubeconfigs stay.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.local.cluster import layout

VALID_DAYS = 365
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def kubelet_client_crt(self) -> Path:
        return self.dir / "kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.dir / "kubelet-client.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def tokens_csv(self) -> Path:
        return self.dir / "tokens.csv"

    def token(self, user: str) -> str:
        for line in self.tokens_csv.read_text().splitlines():
            parts = line.split(",")
            if len(parts) >= 2 and parts[1] == user:
                return parts[0]
        raise KeyError(user)


# Static token users: who each component is to the apiserver (token,user,uid,"groups").
TOKEN_USERS = {
    "admin": ("admin", "system:masters"),
    "node": (f"system:node:{layout.NODE_NAME}", "system:nodes"),
    "proxy": ("system:kube-proxy", ""),
}


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _valid(crt: Path, sans: list[x509.GeneralName] | None = None) -> bool:
    """The cert at `crt` parses, is valid for more than RENEW_BEFORE_DAYS, and names at least `sans`."""
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    if not sans:
        return True
    try:
        have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(sans) <= have


def apiserver_sans(extra_ips: tuple[str, ...] = ()) -> list[x509.GeneralName]:
    """The apiserver serving cert's SANs: 127.0.0.1, the `kubernetes` Service IP, `extra_ips` (the bridge
    gateway pods reach it at), the node name and the in-cluster DNS names of the `kubernetes` Service.
    ValueError for an `extra_ips` item that is not an IP address."""
    ips = dict.fromkeys(["127.0.0.1", layout.SERVICE_IP, *extra_ips])
    return [*[x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
            *[x509.DNSName(n) for n in ("localhost", layout.NODE_NAME, "kubernetes", "kubernetes.default",
                                        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")]]


def _issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: x509.Name,
           key: ec.EllipticCurvePrivateKey, *, server: bool, sans: list[x509.GeneralName]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def ensure_pki(directory: Path = layout.PKI, *, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Make whatever part of the PKI is missing or expiring, and the apiserver's serving cert again when it
    lacks one of apiserver_sans(extra_ips); returns the file set. ValueError for a bad `extra_ips` item."""
    p = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    remake_all = not (_valid(p.ca_crt) and p.ca_key.is_file())
    if remake_all:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name("veza-local-ca")
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=VALID_DAYS * 5))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .sign(key, hashes.SHA256()))
        _write_private(p.ca_key, _key_pem(key))
        p.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca_cert = x509.load_pem_x509_certificate(p.ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(p.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)

    leafs = [
        (p.apiserver_crt, p.apiserver_key, _name("kube-apiserver"), True, apiserver_sans(extra_ips)),
        # apiserver → kubelet (logs, exec, port-forward): authorized as a cluster admin by the kubelet's webhook.
        (p.kubelet_client_crt, p.kubelet_client_key, _name("kube-apiserver-kubelet-client", "system:masters"),
         False, []),
    ]
    for crt, keyfile, subject, server, sans in leafs:
        if remake_all or not _valid(crt, sans) or not keyfile.is_file():
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue(ca_cert, ca_key, subject, key, server=server, sans=sans)
            _write_private(keyfile, _key_pem(key))
            crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    if remake_all or not (p.sa_key.is_file() and p.sa_pub.is_file()):
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(p.sa_key, sa.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                                  serialization.NoEncryption()))
        p.sa_pub.write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))

    if remake_all or not p.tokens_csv.is_file() or any(_missing_user(p, u) for u, _g in TOKEN_USERS.values()):
        lines = []
        for i, (user, group) in enumerate(TOKEN_USERS.values()):
            lines.append(f'{secrets.token_hex(24)},{user},{1000 + i}' + (f',"{group}"' if group else ""))
        _write_private(p.tokens_csv, ("\n".join(lines) + "\n").encode())
    return p


def _missing_user(p: Pki, user: str) -> bool:
    try:
        p.token(user)
    except (KeyError, OSError):
        return True
    return False
