"""A second Docker engine for the CI tests, reached only as GitLab's `docker:dind` service is: over TCP with TLS.

`remote_engine` (session) starts Debian's dockerd on 127.0.0.3:19300 (or the next free slot) with `--tlsverify` (a
CA, a server and a client certificate made here), its own data-root, exec-root, pidfile and containerd, and yields
the client environment (DOCKER_HOST=tcp://127.0.0.3:<port>, DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH). Nothing of the
machine's engine is shared: no image, no build cache, no socket.

Networking, so that the two engines never meet: slot i's default bridge is made here (vezaci<i>, 10.213.<i>.1/24)
and its user networks come from 10.<214+i>.0.0/16, none used by the machine's engine; `--iptables=false
--ip-masq=false` (this engine makes no chain and no NAT rule: its containers reach nothing outside it, and the
Dockerfiles build offline). Bridged traffic passes the host's FORWARD chain (br_netfilter; the machine's engine
sets its policy to DROP), so the fixture adds one chain of its own, VEZA-CI-<i>, jumped to first from FORWARD,
accepting only traffic between the slot's own subnets (a compose stack's services talking to each other), and
removes it afterwards. Published ports go through docker-proxy on the host, so checks on 127.0.0.1 work.

The bases (golang, rust, debian, …) come as a real runner's do, from a registry mirror: dockerd's
`--registry-mirror` points at a registry started here (the slot's port + 1) that holds the machine engine's bases
under their upstream names (library/golang:…), so `invoke build` on the empty engine pulls them through the mirror
instead of rebuilding them (about 40 s to fill on an idle machine, 100 s at load 14). Everything (processes,
directories, the bridge) is removed at the end of the session.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ADDRESS = "127.0.0.3"
SLOTS = 8   # concurrent sessions: slot i uses ports 19300+2i (engine), 19301+2i (mirror), bridge vezaci<i>,
            # 10.213.<i>.0/24 for the default bridge and 10.<214+i>.0.0/16 for user networks


@dataclass(frozen=True)
class Slot:
    engine_port: int
    mirror_port: int
    bridge: str
    bridge_cidr: str
    address_pool: str
    chain: str                  # iptables filter chain of this slot (FORWARD jumps to it first)
    subnets: tuple[str, ...]    # the default bridge's and the user networks' ranges


def free_slot() -> Slot:
    """The first slot whose engine port is free on 127.0.0.3 and whose bridge and chain do not exist."""
    import socket

    for i in range(SLOTS):
        port, bridge = 19300 + 2 * i, f"vezaci{i}"
        if Path(f"/sys/class/net/{bridge}").exists() or _iptables("-n", "-L", f"VEZA-CI-{i}", check=False):
            continue
        with socket.socket() as s:
            try:
                s.bind((ADDRESS, port))
            except OSError:
                continue
        return Slot(port, port + 1, bridge, f"10.213.{i}.1/24", f"base=10.{214 + i}.0.0/16,size=24",
                    f"VEZA-CI-{i}", (f"10.213.{i}.0/24", f"10.{214 + i}.0.0/16"))
    raise RuntimeError(f"no free slot for a second engine on {ADDRESS}:19300-{19300 + 2 * SLOTS - 1}")
DEBIAN_DOCKER = "/usr/bin/docker"   # Debian's 20.10 CLI: drives the engine's BuildKit without buildx


@dataclass(frozen=True)
class RemoteEngine:
    host: str          # tcp://127.0.0.3:19300
    cert_path: Path    # ca.pem, cert.pem, key.pem (the client's), as DOCKER_CERT_PATH wants them
    mirror: str        # 127.0.0.3:19301, the upstream bases' mirror
    data_root: Path
    base_pins: dict[str, str] = field(default_factory=dict)   # upstream → upstream@digest the mirror serves

    def env(self) -> dict[str, str]:
        """The client variables a CI job gets from a docker:dind service."""
        return {"DOCKER_HOST": self.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.cert_path)}

    def docker(self, *args: str, timeout: float = 300,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, **self.env(), "DOCKER_BUILDKIT": "1"}
        return subprocess.run([DEBIAN_DOCKER, *args], env=env, capture_output=True, timeout=timeout, input=input,
                              check=False)


def _certificates(out: Path) -> tuple[Path, Path]:
    """A test CA, the engine's server certificate (IP SAN 127.0.0.3) and a client certificate.
    Returns (server dir, client dir); each holds ca.pem, cert.pem, key.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("veza-ci test engine CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage: x509.ObjectIdentifier, ip: str | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if ip:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), pem_key(key)

    dirs = []
    for kind, usage, ip in (("server", ExtendedKeyUsageOID.SERVER_AUTH, ADDRESS),
                            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, None)):
        d = out / kind
        d.mkdir(mode=0o700)
        cert, key = leaf(f"veza-ci {kind}", usage, ip)
        (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (d / "cert.pem").write_bytes(cert)
        (d / "key.pem").write_bytes(key)
        (d / "key.pem").chmod(0o600)
        dirs.append(d)
    return dirs[0], dirs[1]


def _iptables(*args: str, check: bool = True) -> bool:
    return subprocess.run(["iptables", "-w", "10", *args], check=check, capture_output=True,
                          timeout=30).returncode == 0


def _forward_chain(slot: Slot) -> None:
    """Accept traffic between the slot's own subnets, in a chain of its own jumped to first from FORWARD."""
    _iptables("-N", slot.chain)
    for src in slot.subnets:
        for dst in slot.subnets:
            _iptables("-A", slot.chain, "-s", src, "-d", dst, "-j", "ACCEPT")
    _iptables("-I", "FORWARD", "1", "-j", slot.chain)


def _drop_forward_chain(slot: Slot) -> None:
    while _iptables("-D", "FORWARD", "-j", slot.chain, check=False):
        pass
    _iptables("-F", slot.chain, check=False)
    _iptables("-X", slot.chain, check=False)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


def _wait(pred: object, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f}s; log: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _mirror_bases(mirror: str) -> dict[str, str]:
    """Copy the machine engine's bases to the mirror under their upstream names (what a Docker Hub mirror serves),
    three at a time, gzip level 1 (the copy is CPU-bound on 2 cores). Returns each upstream reference with the
    digest the mirror serves it by (`name:tag` → `name:tag@sha256:…`): a runner pulls bases only by a pin
    (pipeline/local/bases.py upstream_pin), so the clone's pipeline.toml pins them, as a team pins its upstreams.
    Fails when the machine engine lacks one (run `invoke bases`)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.core.config import load_config
    from pipeline.core.paths import ROOT

    cfg = load_config(ROOT / "pipeline.toml", check_files=False)

    def copy(local: str, upstream: str) -> tuple[str, str]:
        repo = upstream if "/" in upstream.split(":")[0] else f"library/{upstream}"
        digest_file = Path(tempfile.mkdtemp(prefix="veza-mirror-")) / "digest"
        try:
            res = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-level",
                                  "1", "--digestfile", str(digest_file), f"docker-daemon:{local}",
                                  f"docker://{mirror}/{repo}"],
                                 capture_output=True, text=True, timeout=900, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"cannot mirror base {local} as {repo}: {res.stderr.strip()[-500:]} "
                                   "(run: invoke bases)")
            return upstream, f"{upstream}@{digest_file.read_text().strip()}"
        finally:
            shutil.rmtree(digest_file.parent, ignore_errors=True)

    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(lambda b: copy(b.local, b.upstream.split("@", 1)[0]), cfg.bases.values()))


@pytest.fixture(scope="session")
def remote_engine() -> Iterator[RemoteEngine]:
    """A second, empty Docker engine on tcp://127.0.0.3:19300 (TLS, client certificates) with a mirror of the
    bases; stopped and removed (processes, data, bridge) when the session ends."""
    if os.geteuid() != 0:
        pytest.fail("the second Docker engine needs root")
    work = Path(tempfile.mkdtemp(prefix="veza-ci-engine-"))
    procs: list[subprocess.Popen[bytes]] = []
    bridge_made = chain_made = False
    slot = free_slot()
    try:
        server, client = _certificates(work)
        mirror_dir = work / "mirror"
        mirror_dir.mkdir()
        (work / "mirror.yml").write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {mirror_dir}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{ADDRESS}:{slot.mirror_port}'}}\n")
        mlog = work / "mirror.log"
        with open(mlog, "ab") as fh:
            procs.append(subprocess.Popen(["docker-registry", "serve", str(work / "mirror.yml")], stdout=fh,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        _ip("link", "add", slot.bridge, "type", "bridge")
        bridge_made = True
        _ip("addr", "add", slot.bridge_cidr, "dev", slot.bridge)
        _ip("link", "set", slot.bridge, "up")
        chain_made = True
        _forward_chain(slot)
        log = work / "dockerd.log"
        argv = ["dockerd", "--data-root", str(work / "data"), "--exec-root", str(work / "exec"),
                "--pidfile", str(work / "dockerd.pid"), "--host", f"tcp://{ADDRESS}:{slot.engine_port}",
                "--tlsverify", "--tlscacert", str(server / "ca.pem"), "--tlscert", str(server / "cert.pem"),
                "--tlskey", str(server / "key.pem"), "--bridge", slot.bridge, "--iptables=false", "--ip-masq=false",
                "--ip-forward=false", "--default-address-pool", slot.address_pool,
                "--registry-mirror", f"http://{ADDRESS}:{slot.mirror_port}",
                "--insecure-registry", f"{ADDRESS}:{slot.mirror_port}", "--userland-proxy=true"]
        with open(log, "ab") as fh:
            procs.append(subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
        engine = RemoteEngine(f"tcp://{ADDRESS}:{slot.engine_port}", client, f"{ADDRESS}:{slot.mirror_port}",
                              work / "data")
        _wait(lambda: engine.docker("version", "--format", "{{.Server.Version}}", timeout=10).returncode == 0,
              "the second dockerd", log)
        engine.base_pins.update(_mirror_bases(engine.mirror))
        yield engine
    finally:
        for p in reversed(procs):
            _stop(p)
        if chain_made:
            _drop_forward_chain(slot)
        if bridge_made:
            _ip("link", "del", slot.bridge, check=False)
        # dockerd's exec-root holds mounts while it runs; once stopped, nothing is mounted below work.
        subprocess.run(["umount", "-R", str(work / "data")], capture_output=True, timeout=60, check=False)
        shutil.rmtree(work, ignore_errors=True)
