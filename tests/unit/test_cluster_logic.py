"""Pure logic of the local cluster provisioner: PKI, cache key, apt source parsing, iptables and mount
parsing, the /etc/hosts entry. No engine, no cluster."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.local.cluster import build, components, host, layout
from pipeline.local.cluster.pki import ensure_pki
from pipeline.tools import apt, netfilter


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_apiserver_cert_is_signed_by_the_ca_with_the_service_sans(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    ca, srv = _cert(p.ca_crt), _cert(p.apiserver_crt)
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    srv.verify_directly_issued_by(ca)
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", layout.SERVICE_IP}
    assert ipaddress.ip_address(layout.SERVICE_IP) in ipaddress.ip_network(layout.SERVICE_CIDR)
    assert {"kubernetes.default.svc", "localhost", layout.NODE_NAME} <= set(sans.get_values_for_type(x509.DNSName))
    eku = srv.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def _ip_sans(path: Path) -> set[str]:
    sans = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(i) for i in sans.get_values_for_type(x509.IPAddress)}


def test_pki_remakes_the_serving_cert_that_lacks_the_gateway_and_keeps_the_rest(tmp_path: Path) -> None:
    """A machine whose PKI was made before the bridge gateway SAN existed (or whose bridge moved): the next
    cluster-up names the gateway in a new serving cert from the same CA; CA, tokens and the client cert stay."""
    p = ensure_pki(tmp_path / "pki")                       # an old PKI: no gateway SAN
    keep = {f: f.read_bytes() for f in (p.ca_crt, p.ca_key, p.tokens_csv, p.kubelet_client_crt, p.sa_key)}
    ensure_pki(p.dir, extra_ips=("172.17.0.1",))
    assert _ip_sans(p.apiserver_crt) == {"127.0.0.1", layout.SERVICE_IP, "172.17.0.1"}
    _cert(p.apiserver_crt).verify_directly_issued_by(_cert(p.ca_crt))
    assert {f: f.read_bytes() for f in keep} == keep
    served = p.apiserver_crt.read_bytes()
    ensure_pki(p.dir, extra_ips=("172.17.0.1",))
    assert p.apiserver_crt.read_bytes() == served            # it names the gateway: not remade again
    ensure_pki(p.dir, extra_ips=("172.18.0.1",))             # the engine's bridge moved
    assert "172.18.0.1" in _ip_sans(p.apiserver_crt)


def test_the_bridge_gateway_must_be_a_private_address_of_this_machine() -> None:
    from pipeline.core.errors import UsageError
    from pipeline.local.cluster.start import bridge_gateway

    for subnet, gateway in (("0.0.0.0/8", "0.0.0.0"), ("127.0.0.0/8", "127.0.0.1"), ("8.8.8.0/24", "8.8.8.8"),
                            ("10.254.253.0/24", "10.254.253.1"), ("", "")):
        with pytest.raises(UsageError):
            bridge_gateway(subnet, gateway)     # unspecified, loopback, public, not on this machine, none


def test_pki_kubelet_client_is_a_cluster_admin_client_cert(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    c = _cert(p.kubelet_client_crt)
    c.verify_directly_issued_by(_cert(p.ca_crt))
    orgs = [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_pki_tokens_are_distinct_private_and_stable(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    tokens = {u: p.token(u) for u in ("admin", f"system:node:{layout.NODE_NAME}", "system:kube-proxy")}
    assert len(set(tokens.values())) == 3 and all(len(t) >= 32 for t in tokens.values())
    for f in (p.ca_key, p.apiserver_key, p.sa_key, p.tokens_csv):
        assert f.stat().st_mode & 0o077 == 0, f
    before = {f.name: f.read_bytes() for f in p.dir.iterdir()}
    ensure_pki(p.dir)
    assert {f.name: f.read_bytes() for f in p.dir.iterdir()} == before  # nothing remade


def test_pki_remakes_only_a_missing_leaf(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    ca_before, token_before = p.ca_crt.read_bytes(), p.token("admin")
    p.apiserver_crt.unlink()
    ensure_pki(p.dir)
    assert p.apiserver_crt.is_file()
    assert p.ca_crt.read_bytes() == ca_before and p.token("admin") == token_before


def test_pki_node_token_user_is_in_system_nodes(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    line = next(ln for ln in p.tokens_csv.read_text().splitlines() if f",system:node:{layout.NODE_NAME}," in ln)
    assert line.endswith(',"system:nodes"')


def test_build_key_depends_on_the_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = build.build_key()
    assert key.startswith(layout.K8S_VERSION + "-") and key == build.build_key()
    patched = tmp_path / "p.patch"
    shutil.copy(layout.OOM_PATCH, patched)
    patched.write_text(patched.read_text() + "\n")
    monkeypatch.setattr(layout, "OOM_PATCH", patched)
    assert build.build_key() != key


def test_binaries_are_cached_outside_the_work_tree() -> None:
    from pipeline.core.paths import ROOT

    d = layout.binaries_dir(build.build_key())
    assert not d.resolve().is_relative_to(ROOT.resolve())
    assert d.parent.name == build.build_key()


def test_openapi_inputs_follow_the_marker(tmp_path: Path) -> None:
    tree = tmp_path / "k"
    (tree / "pkg/apis/a").mkdir(parents=True)
    (tree / "pkg/apis/a/doc.go").write_text("// +k8s:openapi-gen=true\npackage a\n")
    (tree / "pkg/apis/b").mkdir(parents=True)
    (tree / "pkg/apis/b/doc.go").write_text("package b\n")
    (tree / "pkg/apis/c").mkdir(parents=True)
    (tree / "pkg/apis/c/x_test.go").write_text("// +k8s:openapi-gen=true\npackage c\n")
    (tree / "vendor/k8s.io/code-generator/x").mkdir(parents=True)
    (tree / "vendor/k8s.io/code-generator/x/doc.go").write_text("// +k8s:openapi-gen=true\npackage x\n")
    assert build._openapi_inputs(tree) == ["k8s.io/kubernetes/pkg/apis/a"]


def test_machine_sources_reads_deb822_and_one_line_formats(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (d / "other.sources.disabled").write_text("Types: deb\nURIs: http://x\nSuites: bookworm\nComponents: main\n")
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m2.example/debian bookworm main contrib\n"
                   "deb-src http://m2.example/debian bookworm main\n")
    found = apt.machine_sources(d, one, codename="bookworm")
    assert [(s.uri, s.suite, s.components, s.signed_by) for s in found] == [
        ("http://mirror.example/debian", "bookworm", ("main",), "/usr/share/keyrings/debian-archive-keyring.gpg"),
        ("http://m2.example/debian", "bookworm", ("main", "contrib"), "/k.gpg"),
    ]


def test_private_apt_writes_deb_and_deb_src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt, "machine_sources", lambda: [apt.AptSource("http://m/debian", "bookworm", ("main",), "")])
    papt = apt.PrivateApt(tmp_path / "apt")
    papt.configure()
    assert (tmp_path / "apt/sources.list").read_text().splitlines() == [
        "deb http://m/debian bookworm main", "deb-src http://m/debian bookworm main"]
    assert (tmp_path / "apt/lists/partial").is_dir()
    monkeypatch.setattr(apt, "machine_sources", lambda: [apt.AptSource("http://m/debian", "trixie", ("main",), "")])
    apt.PrivateApt(tmp_path / "apt2", source_suite="bookworm").configure()
    assert (tmp_path / "apt2/sources.list").read_text().splitlines() == [
        "deb http://m/debian trixie main", "deb-src http://m/debian bookworm main"]


SAVE = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A DOCKER -i docker0 -j RETURN
-A KUBE-SERVICES -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
COMMIT
"""


def test_parse_iptables_save_finds_kube_chains_and_jumps() -> None:
    r = netfilter.parse_save("iptables", SAVE)
    assert r.chains == (("nat", "KUBE-SERVICES"), ("nat", "KUBE-POSTROUTING"), ("filter", "KUBE-FIREWALL"))
    assert [(t, s[0], s[-1]) for t, s in r.jumps] == [("nat", "PREROUTING", "KUBE-SERVICES"),
                                                     ("nat", "POSTROUTING", "KUBE-POSTROUTING"),
                                                     ("filter", "INPUT", "KUBE-FIREWALL")]
    assert ("nat", ("PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j",
                    "KUBE-SERVICES")) in r.jumps


def test_kubelet_mounts_deepest_first_and_only_under_root() -> None:
    root = Path("/var/lib/x/kubelet")
    info = "\n".join([
        "22 1 0:21 / /proc rw - proc proc rw",
        f"30 22 0:50 / {root} rw shared:5 - ext4 /dev/vda rw",
        f"31 30 0:51 / {root}/pods/u1/volumes/kubernetes.io~secret/tok rw - tmpfs tmpfs rw",
        f"32 30 0:52 / {root}-other rw - tmpfs tmpfs rw",
    ])
    assert host.kubelet_mounts(root, info) == [f"{root}/pods/u1/volumes/kubernetes.io~secret/tok", str(root)]


def test_hosts_entry_added_once_and_removed_only_if_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost")
    monkeypatch.setattr(host, "HOSTS", hosts)
    monkeypatch.setattr(layout, "HOSTS_MARK", tmp_path / "mark")
    resolves = {"v": False}
    monkeypatch.setattr(host, "node_resolves_locally", lambda: resolves["v"])
    assert host.ensure_hosts_entry() is True
    assert hosts.read_text() == f"127.0.0.1 localhost\n{host.HOSTS_LINE}\n"
    resolves["v"] = True
    assert host.ensure_hosts_entry() is False  # idempotent
    assert host.remove_hosts_entry() is True
    assert hosts.read_text() == "127.0.0.1 localhost\n"
    assert host.remove_hosts_entry() is False  # not ours any more: left alone
    hosts.write_text(f"{host.HOSTS_LINE}\n")  # someone else's identical line, no mark: kept
    assert host.remove_hosts_entry() is False and hosts.read_text() == f"{host.HOSTS_LINE}\n"


def test_components_listen_on_loopback_only(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    bindir = tmp_path / "bin"
    argv = components.apiserver(bindir, p, "172.17.0.1")
    assert "--bind-address=127.0.0.1" in argv and "--insecure-port=0" in argv
    # pods reach it through the relay on the bridge gateway, the `kubernetes` Service's endpoint
    assert "--advertise-address=172.17.0.1" in argv
    relay = components.apiserver_relay(Path("/usr/bin/socat"), "172.17.0.1")
    assert relay[-2:] == [f"TCP4-LISTEN:{layout.API_PORT},bind=172.17.0.1,reuseaddr,fork",
                          f"TCP4:127.0.0.1:{layout.API_PORT}"]
    assert "--bind-address=127.0.0.1" in components.controller_manager(bindir, p, tmp_path / "kc")
    assert "--bind-address=127.0.0.1" in components.scheduler(bindir, tmp_path / "kc")
    assert "--bind-address=127.0.0.1" in components.kube_proxy(bindir, tmp_path / "kc", "172.17.0.0/16")
    etcd = components.etcd(tmp_path / "etcd")
    urls = [etcd[i + 1] for i, a in enumerate(etcd) if a.startswith("--listen")]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)
    cfg = yaml.safe_load(components.kubelet_config(p))
    assert cfg["address"] == "127.0.0.1" and cfg["healthzBindAddress"] == "127.0.0.1"
    assert cfg["readOnlyPort"] == 0 and cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["imageGCHighThresholdPercent"] == 100  # never deletes the engine's images


def test_kubeconfig_points_at_the_local_apiserver(tmp_path: Path) -> None:
    p = ensure_pki(tmp_path / "pki")
    doc = yaml.safe_load(components.kubeconfig_text(p, "tok"))
    assert doc["current-context"] == layout.CLUSTER_NAME
    assert doc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{layout.API_PORT}"
    assert doc["clusters"][0]["cluster"]["certificate-authority"] == str(p.ca_crt)
    assert doc["users"][0]["user"]["token"] == "tok"


def test_cluster_access_of_local_env_is_the_local_cluster() -> None:
    import pipeline.local.cluster as cluster
    from pipeline.core.config import load_config

    local = load_config(check_files=False).env("local")  # pipeline.toml: local has no kube_context
    assert cluster.cluster_access(local).kubeconfig == layout.KUBECONFIG


def test_cluster_access_of_env_with_context_is_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.local.cluster as cluster
    from pipeline.core.errors import UsageError

    user_kc = tmp_path / "config"
    user_kc.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "contexts": [
        {"name": "kind-veza", "context": {"cluster": "kind-veza", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(user_kc))
    monkeypatch.delenv("VEZA_PROD_KUBECONFIG", raising=False)
    from pipeline.core.config import load_config

    prod = load_config(check_files=False).env("prod")
    kind = dataclasses.replace(prod, kube_context="kind-veza")
    assert cluster.cluster_access(kind).kubeconfig == user_kc
    assert cluster.cluster_access(prod).kubeconfig == layout.KUBECONFIG  # no variable, no context: the own cluster
    assert cluster.cluster_up(kind, say=lambda _l: None) == user_kc  # a user's cluster: nothing provisioned
    with pytest.raises(UsageError, match="kube context 'nope' not found"):
        cluster.cluster_up(dataclasses.replace(prod, kube_context="nope"), say=lambda _l: None)


def test_kubepods_cgroups_removed_deepest_first(tmp_path: Path) -> None:
    (tmp_path / "cpu/kubepods/burstable/pod1").mkdir(parents=True)
    (tmp_path / "memory/kubepods/besteffort").mkdir(parents=True)
    (tmp_path / "memory/docker/abc").mkdir(parents=True)
    assert [p.parent.name for p in host.kubepods_cgroups(tmp_path)] == ["cpu", "memory"]
    assert host.remove_kubepods_cgroups(tmp_path) == []
    assert host.kubepods_cgroups(tmp_path) == [] and (tmp_path / "memory/docker/abc").is_dir()


def test_a_cluster_build_stopped_by_ctrl_c_ends_its_piece_interrupted_not_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str, str]] = []

    def steps(prog: build.ClusterBuildProgress) -> Path:   # the user presses Ctrl-C during the first step
        prog.start("tools")
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_build_steps", steps)
    with pytest.raises(KeyboardInterrupt):
        build._build(progress=lambda piece, text, state: events.append((piece, text, state)))
    piece, text, state = events[-1]
    assert (state, text) == ("interrupted", "stopped (Ctrl-C)")
    assert not any(s == "failed" for _, _, s in events)
