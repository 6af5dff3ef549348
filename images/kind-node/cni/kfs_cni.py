"""kfs's pod network for kind nodes (kindnetd's source is not available here).

Runs on every node (a DaemonSet with the host's network namespace) and, once a
second, reads the Node objects from the API server and makes the node match:

- /etc/cni/net.d/10-kfs.conflist: the CNI ``ptp`` plugin with ``host-local``
  addresses from this node's ``spec.podCIDR`` (written once it is known; the
  kubelet reports the node Ready only after a CNI config exists);
- one route per other node: its pod CIDR via its InternalIP on the kind network;
- IP forwarding on.

Masquerading is not done here: the second container of the DaemonSet
(masq_agent.py) owns the KIND-MASQ-AGENT chain.

Standard library only: it runs from an image holding Debian's python3 and
iproute2, and no kfs code. The API server is reached at CONTROL_PLANE_ENDPOINT,
which kind adds to this container when it installs the manifest, so the network
does not wait for kube-proxy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import Any

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONF = "/etc/cni/net.d/10-kfs.conflist"
INTERVAL = 1.0


def conflist(pod_cidr: str, mtu: int) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "kfs",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def routes_for(nodes: list[dict[str, Any]], me: str) -> dict[str, str]:
    """Pod CIDR -> InternalIP of every other node that has both."""
    found: dict[str, str] = {}
    for node in nodes:
        if node["metadata"]["name"] == me:
            continue
        cidr = node.get("spec", {}).get("podCIDR")
        ips = [
            a["address"]
            for a in node.get("status", {}).get("addresses", [])
            if a.get("type") == "InternalIP" and ipaddress.ip_address(a["address"]).version == 4
        ]
        if cidr and ips:
            found[cidr] = ips[0]
    return found


def api_get(path: str) -> dict[str, Any]:
    endpoint = os.environ.get("CONTROL_PLANE_ENDPOINT") or "{}:{}".format(
        os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    )
    with open(f"{SA_DIR}/token") as fh:
        token = fh.read().strip()
    ctx = ssl.create_default_context(cafile=f"{SA_DIR}/ca.crt")
    req = urllib.request.Request(
        f"https://{endpoint}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:  # noqa: S310 - https only
        data: dict[str, Any] = json.load(resp)
        return data


def mtu_of(dev: str = "eth0") -> int:
    try:
        with open(f"/sys/class/net/{dev}/mtu") as fh:
            return int(fh.read())
    except OSError:
        return 1500


def write_conf(pod_cidr: str) -> bool:
    text = json.dumps(conflist(pod_cidr, mtu_of()), indent=2) + "\n"
    try:
        with open(CONF) as fh:
            if fh.read() == text:
                return False
    except OSError:
        pass
    tmp = CONF + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, CONF)
    return True


def sync(me: str, installed: dict[str, str]) -> None:
    nodes = api_get("/api/v1/nodes")["items"]
    mine = next((n for n in nodes if n["metadata"]["name"] == me), None)
    cidr = (mine or {}).get("spec", {}).get("podCIDR")
    if cidr and write_conf(cidr):
        print(f"kfs-cni: wrote {CONF} for {cidr}", flush=True)
    want = routes_for(nodes, me)
    for dst, via in want.items():
        if installed.get(dst) != via:
            subprocess.run(["ip", "route", "replace", dst, "via", via], check=True)
            print(f"kfs-cni: route {dst} via {via}", flush=True)
            installed[dst] = via
    for dst in set(installed) - set(want):
        subprocess.run(["ip", "route", "del", dst], check=False)
        print(f"kfs-cni: removed route {dst}", flush=True)
        del installed[dst]


def main() -> int:
    me = os.environ["NODE_NAME"]
    with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
        fh.write("1\n")
    installed: dict[str, str] = {}
    while True:
        try:
            sync(me, installed)
        except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as exc:
            print(f"kfs-cni: sync failed, retrying: {exc}", file=sys.stderr, flush=True)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
