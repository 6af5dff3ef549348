"""Addresses, ports and names of the embedded cluster, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

API_PORT = 16443
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
KWOK_PORT = 10350  # one per simulated node from here; clear of kubelet and kube-proxy

# The real node's pods live on a bridge whose gateway address also carries the
# API server's advertised address, so pods reach the API server through the
# `kubernetes` Service without touching any address outside this host.
BRIDGE = "kfs0"
POD_CIDR = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
# A Linux bridge without an address of its own takes the lowest MAC of its
# ports, so it changes as pods come and go and pods' ARP entries for their
# gateway go stale; a fixed, locally administered MAC ("kfs" in hex) cannot.
BRIDGE_MAC = "02:6b:66:73:00:01"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_API_IP = "10.96.0.1"
# kwok hands out fake pod IPs from here; nothing ever routes to them.
SIMULATED_POD_CIDR = "10.245.0.0/16"

REAL_NODE = "kfs-worker"
SIMULATED_NODES = ("kfs-sim-a", "kfs-sim-b", "kfs-sim-c")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"

# How fast a dead node is noticed: seconds, not the default minute, so the
# node-failure story runs quickly. Heartbeats must be well inside this.
NODE_MONITOR_GRACE = "8s"
NODE_MONITOR_PERIOD = "1s"
NODE_LEASE_SECONDS = 4  # renewed every quarter of this by kubelet and kwok


DEFAULT_STATE = Path("/var/lib/kfs/local")


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(Path(os.environ.get("KFS_STATE", str(DEFAULT_STATE))))

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig" / "admin.kubeconfig"

    @property
    def operator(self) -> Path:
        """The installed operator's GameDay workers: pid files, logs, event logs."""
        return self.root / "operator"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
