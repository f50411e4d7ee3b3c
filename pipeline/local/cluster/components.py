"""Every component's command line and config files, from the verified recipe. Everything listens on 127.0.0.1,
with one exception: the apiserver relay on the engine bridge's gateway.

How pods reach the API. Pods sit on the engine's default bridge; they cannot reach the host's 127.0.0.1, and an
Endpoints object may not hold a loopback address, so with the apiserver on 127.0.0.1 alone the in-cluster
`kubernetes` Service had no endpoint and nothing in a pod (Prometheus's pod discovery, a controller) could ask
the API. So:
- the apiserver still binds 127.0.0.1:API_PORT (kubeconfigs, kubectl, Helm, the control plane use that);
- it advertises the bridge's gateway (e.g. 172.17.0.1, an address of the host's own docker0 interface, which only
  this machine and its containers route to), so the `kubernetes` Service's endpoint is `<gateway>:API_PORT` and
  kube-proxy sends pods' `10.0.0.1:443` there;
- a TCP relay (Debian's socat, `apiserver_relay`) listens on `<gateway>:API_PORT` only and passes each connection
  to 127.0.0.1:API_PORT unchanged (TLS end to end: the relay sees ciphertext; the apiserver still authenticates
  every request: a pod gets only what its ServiceAccount's RBAC allows);
- the serving certificate names the gateway too (pki.apiserver_sans), remade when it does not.
Nothing listens on 0.0.0.0 or on an interface that leaves the machine.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.local.cluster import layout
from pipeline.local.cluster.pki import Pki

ETCD_CLIENT = "http://127.0.0.1:2379"
# Ports each component listens on (checked free before start).
PORTS = {"etcd": (2379, 2380, 2381), "kube-apiserver": (layout.API_PORT,), "kube-controller-manager": (10257,),
         "kube-scheduler": (10259,), "kubelet": (10250, 10248), "kube-proxy": (10249, 10256)}


def kubeconfig_text(pki: Pki, token: str, *, namespace: str = "default") -> str:
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": layout.CLUSTER_NAME, "cluster": {
            "server": f"https://127.0.0.1:{layout.API_PORT}", "certificate-authority": str(pki.ca_crt)}}],
        "users": [{"name": f"{layout.CLUSTER_NAME}-user", "user": {"token": token}}],
        "contexts": [{"name": layout.CLUSTER_NAME, "context": {
            "cluster": layout.CLUSTER_NAME, "user": f"{layout.CLUSTER_NAME}-user", "namespace": namespace}}],
        "current-context": layout.CLUSTER_NAME,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def etcd(binary: Path) -> list[str]:
    return [str(binary), "--name", "veza-local", "--data-dir", str(layout.ETCD_DATA),
            "--listen-client-urls", ETCD_CLIENT, "--advertise-client-urls", ETCD_CLIENT,
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "veza-local=http://127.0.0.1:2380", "--listen-metrics-urls", "http://127.0.0.1:2381",
            "--log-level", "warn"]


def apiserver(bindir: Path, pki: Pki, advertise: str) -> list[str]:
    """The apiserver on 127.0.0.1:API_PORT, advertising `advertise` (the bridge gateway the relay listens on: the
    `kubernetes` Service's endpoint)."""
    return [str(bindir / "kube-apiserver"), f"--etcd-servers={ETCD_CLIENT}", "--bind-address=127.0.0.1",
            f"--advertise-address={advertise}", f"--secure-port={layout.API_PORT}", "--insecure-port=0",
            f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}", f"--token-auth-file={pki.tokens_csv}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki.kubelet_client_crt}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
            "--enable-priority-and-fairness=false", "--profiling=false"]


def apiserver_relay(socat: Path, gateway: str) -> list[str]:
    """socat listening on `gateway`:API_PORT only (never 0.0.0.0), one child per connection, each passed to the
    apiserver on 127.0.0.1:API_PORT (see the module's docstring)."""
    return [str(socat), "-d", f"TCP4-LISTEN:{layout.API_PORT},bind={gateway},reuseaddr,fork",
            f"TCP4:127.0.0.1:{layout.API_PORT}"]


def controller_manager(bindir: Path, pki: Pki, kubeconfig: Path) -> list[str]:
    # No cloud, no IPAM, no service controller (load balancers): pods use the engine's bridge.
    return [str(bindir / "kube-controller-manager"), f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
            "--port=0", "--secure-port=10257", "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
            "--use-service-account-credentials=false", f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_crt}", "--leader-elect=false", "--concurrent-deployment-syncs=5",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--profiling=false"]


def scheduler(bindir: Path, kubeconfig: Path) -> list[str]:
    return [str(bindir / "kube-scheduler"), f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", "--port=0",
            "--secure-port=10259", "--leader-elect=false", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--profiling=false"]


def kubelet_config(pki: Pki) -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_crt)}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "volumePluginDir": str(layout.STATE / "volume-plugins"),
        # Never garbage-collect the engine's images (they are the pipeline's and the developer's).
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet(bindir: Path, config: Path, kubeconfig: Path, docker_endpoint: str) -> list[str]:
    return [str(bindir / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={layout.NODE_NAME}", "--container-runtime=docker",
            f"--docker-endpoint={docker_endpoint}", f"--pod-infra-container-image={layout.PAUSE_IMAGE}",
            f"--container-runtime-endpoint=unix://{layout.RUN / 'dockershim.sock'}",
            f"--experimental-dockershim-root-directory={layout.DOCKERSHIM_ROOT}",
            f"--root-dir={layout.KUBELET_ROOT}", f"--cert-dir={layout.KUBELET_ROOT / 'pki'}", "--v=1"]


def kube_proxy(bindir: Path, kubeconfig: Path, cluster_cidr: str) -> list[str]:
    # conntrack values 0: leave the host's conntrack sysctls alone.
    return [str(bindir / "kube-proxy"), f"--kubeconfig={kubeconfig}", f"--hostname-override={layout.NODE_NAME}",
            "--proxy-mode=iptables", f"--cluster-cidr={cluster_cidr}", "--bind-address=127.0.0.1",
            "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
            "--nodeport-addresses=127.0.0.0/8", "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0"]
