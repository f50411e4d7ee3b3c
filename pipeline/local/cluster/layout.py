"""Where the local cluster lives: the build cache (outside the work tree) and the machine-wide state.

One local cluster per machine: its state (PIDs, PKI, kubeconfigs, logs, the sysctl values found before
start) lives under /var/lib/veza-pipeline/local/cluster/, whichever work tree started it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.paths import CACHE_DIR

K8S_VERSION = "1.20.2"
# The kubelet's default sandbox image in 1.20; built locally from the tree's pause.c (nothing can be pulled).
PAUSE_IMAGE = "k8s.gcr.io/pause:3.2"
NODE_NAME = "veza-node"
CLUSTER_NAME = "veza-local"
API_PORT = 6443
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
POD_CIDR = "172.17.0.0/16"  # dockershim pods sit on the engine's default bridge

# Every component of the control plane and node, in start order.
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")

ASSETS = Path(__file__).resolve().parent
OOM_PATCH = ASSETS / "kubelet-min-oom.patch"

BUILD_ROOT = CACHE_DIR / "k8s"
DOWNLOADS = BUILD_ROOT / "downloads"
APT_DIR = BUILD_ROOT / "apt"
GOPATH = BUILD_ROOT / "gopath"
SOURCE_TREE = GOPATH / "src" / "k8s.io" / "kubernetes"
GOCACHE = BUILD_ROOT / "gocache"

STATE = Path(os.environ.get("VEZA_CLUSTER_STATE", "/var/lib/veza-pipeline/local/cluster"))
PKI = STATE / "pki"
RUN = STATE / "run"
LOGS = STATE / "logs"
ETCD_DATA = STATE / "etcd-data"
KUBELET_ROOT = STATE / "kubelet"
DOCKERSHIM_ROOT = STATE / "dockershim"
KUBECONFIG = STATE / "kubeconfig"
STATE_FILE = STATE / "state.json"
SYSCTL_BEFORE = STATE / "sysctl-before.json"
HOSTS_MARK = STATE / "hosts-entry-added"
LOCK_FILE = STATE / ".lock"


def binaries_dir(key: str) -> Path:
    return BUILD_ROOT / key / "bin"
