"""The embedded control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the kwok controller that simulates the extra nodes."""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass
from typing import Any

from failure_stories.core.errors import ProviderError, WaitTimeout
from failure_stories.core.wait import wait_for
from failure_stories.host.processes import Supervisor
from failure_stories.providers.local import binaries
from failure_stories.providers.local import layout as L
from failure_stories.providers.local.pki import PKI, Identity

API_URL = f"https://127.0.0.1:{L.API_PORT}"

IDENTITIES = [
    Identity(
        "apiserver",
        "kube-apiserver",
        server=True,
        client=False,
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", L.BRIDGE_IP, L.SERVICE_API_IP),
    ),
    Identity("admin", "kfs-admin", "system:masters"),
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("kwok", "kfs-kwok", "system:masters"),
    Identity("kube-proxy", "system:kube-proxy"),
    Identity(f"kubelet-{L.REAL_NODE}", f"system:node:{L.REAL_NODE}", "system:nodes"),
]


@dataclass
class Component:
    name: str
    argv: list[str]


def components(paths: L.Paths, pki: PKI) -> list[Component]:
    kc = paths.kubeconfigs
    sa_key, sa_pub = pki.dir / "sa.key", pki.dir / "sa.pub"
    etcd = f"http://127.0.0.1:{L.ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{L.ETCD_PEER_PORT}"
    return [
        Component(
            "etcd",
            [
                str(binaries.path("etcd")),
                "--name=kfs",
                f"--data-dir={paths.etcd_data}",
                f"--listen-client-urls={etcd}",
                f"--advertise-client-urls={etcd}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kfs={peer}",
                # A throwaway test cluster: durability costs seconds per write here.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=1073741824",
            ],
        ),
        Component(
            "kube-apiserver",
            [
                str(binaries.path("kube-apiserver")),
                f"--etcd-servers={etcd}",
                "--bind-address=0.0.0.0",
                f"--secure-port={L.API_PORT}",
                f"--advertise-address={L.BRIDGE_IP}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={L.SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                # Reach kubelets by address: no name lookups leave this host.
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--event-ttl=30m",
                "--v=1",
            ],
        ),
        Component(
            "kube-controller-manager",
            [
                str(binaries.path("kube-controller-manager")),
                f"--kubeconfig={kc / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={kc / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={kc / 'controller-manager.kubeconfig'}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.key('ca')}",
                "--use-service-account-credentials=true",
                f"--cluster-cidr={L.CLUSTER_CIDR}",
                f"--service-cluster-ip-range={L.SERVICE_CIDR}",
                f"--node-monitor-grace-period={L.NODE_MONITOR_GRACE}",
                f"--node-monitor-period={L.NODE_MONITOR_PERIOD}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--profiling=false",
                "--v=1",
            ],
        ),
        Component(
            "kube-scheduler",
            [
                str(binaries.path("kube-scheduler")),
                f"--kubeconfig={kc / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={kc / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={kc / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--profiling=false",
            ],
        ),
        # One kwok agent per simulated node, like one kubelet per machine: a node
        # "crashes" when its agent is frozen, and nothing else keeps it alive.
        *(
            Component(
                kwok_component(node),
                [
                    str(binaries.path("kwok")),
                    f"--kubeconfig={kc / 'kwok.kubeconfig'}",
                    f"--manage-single-node={node}",
                    f"--cidr={L.SIMULATED_POD_CIDR}",
                    f"--node-lease-duration-seconds={L.NODE_LEASE_SECONDS}",
                    f"--server-address=127.0.0.1:{L.KWOK_PORT + i}",
                ],
            )
            for i, node in enumerate(L.SIMULATED_NODES)
        ),
    ]


def kwok_component(node: str) -> str:
    return f"kwok-{node}"


def write_kubeconfigs(paths: L.Paths, pki: PKI) -> None:
    paths.kubeconfigs.mkdir(parents=True, exist_ok=True)
    for user, file in [
        ("admin", "admin"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("kwok", "kwok"),
        ("kube-proxy", "kube-proxy"),
        (f"kubelet-{L.REAL_NODE}", "kubelet"),
    ]:
        pki.kubeconfig("kfs-local", API_URL, user, paths.kubeconfigs / f"{file}.kubeconfig")


def _http_ok(url: str, context: Any = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def start(paths: L.Paths, sup: Supervisor) -> None:
    """Start (or keep) every control-plane process and wait until the API answers."""
    pki = PKI(paths.pki)
    pki.ensure(IDENTITIES)
    write_kubeconfigs(paths, pki)
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    for comp in components(paths, pki):
        sup.start(comp.name, comp.argv)
        if comp.name == "etcd":
            _wait_healthy(
                sup, "etcd", lambda: _http_ok(f"http://127.0.0.1:{L.ETCD_CLIENT_PORT}/health"), 30
            )
        elif comp.name == "kube-apiserver":
            _wait_healthy(sup, "kube-apiserver", lambda: _http_ok(f"{API_URL}/livez", tls), 90)


def _wait_healthy(sup: Supervisor, name: str, check: Any, timeout: float) -> None:
    def ok() -> bool:
        if not sup.alive(name):
            raise ProviderError(f"{name} exited: {sup.tail(name)}")
        return bool(check())

    try:
        wait_for(ok, what=f"{name} to become healthy", timeout=timeout, interval=0.3)
    except WaitTimeout as exc:
        raise ProviderError(f"{exc}; last log lines: {sup.tail(name)}") from exc


def component_names() -> tuple[str, ...]:
    """In stopping order: the kwok agents first, etcd last."""
    kwoks = tuple(kwok_component(n) for n in L.SIMULATED_NODES)
    return (*kwoks, "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def stop(sup: Supervisor) -> None:
    for comp in component_names():
        sup.stop(comp)
