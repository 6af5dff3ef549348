"""Host networking the real node needs, recorded so `down` can undo exactly it:
the pod bridge, forwarding and bridge-netfilter sysctls, and the iptables chains
that kube-proxy and the CNI plugins leave behind."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from failure_stories.core import atomic
from failure_stories.core.errors import ProviderError
from failure_stories.host import iptables
from failure_stories.host.commands import run
from failure_stories.providers.local import layout as L

SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    # Pod-to-Service replies on the same bridge must cross iptables for the DNAT
    # to be undone; the kernel has br_netfilter built in.
    "net/bridge/bridge-nf-call-iptables": "1",
}
# Set by the kubelet (its kernel tunables) or kube-proxy on start; saved before
# and restored by `down`, so the host ends as it began.
TOUCHED_BY_COMPONENTS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
)
# Chains created on our behalf: kube-proxy's, the CNI plugins' and scenarios'.
OUR_CHAIN = re.compile(r"^(KUBE-|CNI-|KFS-)")
SCENARIO_CHAIN = iptables.SCENARIO_CHAIN


def our_chains(pattern: re.Pattern[str] = OUR_CHAIN) -> dict[str, list[str]]:
    return iptables.chains(pattern, run)


def sweep_iptables(pattern: re.Pattern[str] = OUR_CHAIN) -> list[str]:
    return iptables.sweep(pattern, run)


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key


def apply_sysctls(record: Path) -> None:
    """Set the sysctls, remembering the values found the first time."""
    saved: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    for key in TOUCHED_BY_COMPONENTS:
        if _sysctl_path(key).exists():
            saved.setdefault(key, _sysctl_path(key).read_text().strip())
    for key, value in SYSCTLS.items():
        path = _sysctl_path(key)
        if not path.exists():
            raise ProviderError(f"sysctl {key} is missing on this kernel")
        saved.setdefault(key, path.read_text().strip())
        path.write_text(value)
    atomic.write_text(record, json.dumps(saved))


def restore_sysctls(record: Path) -> None:
    if not record.exists():
        return
    for key, value in json.loads(record.read_text()).items():
        with contextlib.suppress(OSError):
            _sysctl_path(key).write_text(value)
    record.unlink()


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ensure_bridge() -> None:
    """The pod bridge, with the gateway address the API server advertises."""
    if not link_exists(L.BRIDGE):
        run(["ip", "link", "add", L.BRIDGE, "address", L.BRIDGE_MAC, "type", "bridge"])
    if Path(f"/sys/class/net/{L.BRIDGE}/address").read_text().strip() != L.BRIDGE_MAC:
        run(["ip", "link", "set", L.BRIDGE, "address", L.BRIDGE_MAC])
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", L.BRIDGE])
    if f" {L.BRIDGE_IP}/" not in addrs:
        prefix = L.POD_CIDR.split("/")[1]
        run(["ip", "addr", "add", f"{L.BRIDGE_IP}/{prefix}", "dev", L.BRIDGE])
    run(["ip", "link", "set", L.BRIDGE, "up"])


# Cluster-internal ranges that must never be routed off this host: a packet to a
# Service IP that kube-proxy has not programmed yet, or to a simulated pod's fake
# IP, would otherwise follow the default route out of the machine.
FENCED = (L.CLUSTER_CIDR, L.SERVICE_CIDR, L.SIMULATED_POD_CIDR)


def fence_routes() -> None:
    existing = run(["ip", "route", "show", "type", "unreachable"], check=False)
    for cidr in FENCED:
        if cidr not in existing:
            run(["ip", "route", "add", "unreachable", cidr])


def unfence_routes() -> None:
    for cidr in FENCED:
        run(["ip", "route", "del", "unreachable", cidr], check=False)


def fenced_routes() -> list[str]:
    existing = run(["ip", "route", "show", "type", "unreachable"], check=False)
    return [c for c in FENCED if c in existing]


def delete_bridge() -> None:
    if link_exists(L.BRIDGE):
        run(["ip", "link", "delete", L.BRIDGE], check=False)


def host_veths() -> list[str]:
    """veth ends attached to our bridge (the CNI plugin names them vethXXXX)."""
    brif = Path(f"/sys/class/net/{L.BRIDGE}/brif")
    return sorted(p.name for p in brif.iterdir()) if brif.exists() else []
