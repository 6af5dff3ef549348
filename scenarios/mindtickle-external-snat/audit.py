"""The mindtickle-external-snat story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import yaml

from failure_stories.audit.model import (
    HIGH,
    INFO,
    LOW,
    MEDIUM,
    Finding,
    Obj,
    Snapshot,
    _get,
    _meta,
)

STORY = "mindtickle-external-snat"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "pod egress that leaves without source NAT"


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


_PRIVATE: tuple[Net, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT space, used for pods on EKS custom networking
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def _subnet_of(a: Net, b: Net) -> bool:
    return a.version == b.version and a.subnet_of(b)  # type: ignore[arg-type]


def cluster_ranges(snap: Snapshot) -> list[Net]:
    """Address ranges the cluster itself uses: pod CIDRs, service CIDRs, kube-proxy's
    clusterCIDR, and the addresses of nodes and pods."""
    texts: list[str] = list(snap.service_cidrs)
    for node in snap.nodes:
        texts += list(_get(node, "spec", "podCIDRs") or [])
        texts.append(str(_get(node, "spec", "podCIDR") or ""))
        texts += [
            str(a.get("address"))
            for a in _get(node, "status", "addresses") or []
            if a.get("type") in ("InternalIP", "ExternalIP")
        ]
    for pod in snap.pods:
        texts += [str(p.get("ip")) for p in _get(pod, "status", "podIPs") or []]
    for cm in snap.configmaps:
        if _meta(cm)[1] == "kube-proxy":
            for value in (cm.get("data") or {}).values():
                texts += re.findall(r"clusterCIDR:\s*\"?([0-9a-fA-F:./,]+)", str(value))
    out: list[Net] = []
    for text in texts:
        for part in text.split(","):
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                continue
    return out


def classify_cidr(cidr: str, known: list[Net]) -> tuple[str, str] | None:
    """(severity, why) for a CIDR that pod traffic reaches without SNAT, or None if fine."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return LOW, "is not a valid CIDR (the agent may reject the whole config)"
    if not any(_subnet_of(net, p) for p in _PRIVATE):
        return HIGH, (
            "includes public addresses: pods reach them with their own pod IPs, which "
            "nothing on the internet routes back"
        )
    if net.version == 4 and net.prefixlen <= 8:
        return MEDIUM, (
            "is a whole /8 (or more) of private space: every private network beyond the "
            "cluster and its VPC (VPN, peered or partner networks) sees pod IPs"
        )
    if known and not any(net.overlaps(k) for k in known if k.version == net.version):
        return MEDIUM, (
            "is no range this cluster uses (pods, services, nodes): that network sees pod "
            "IPs and must route them back, or connections time out"
        )
    return None


_CIDR_FIX = (
    "list only ranges that route pod IPs back (pod CIDR, service CIDR, the VPC's own "
    "CIDRs); everything else then leaves masqueraded to the node's address"
)


def _external_snat(namespace: str, name: str, var: Obj | None) -> Finding:
    """What the AWS VPC CNI's external-SNAT setting means. Either value can be the
    wrong one (MindTickle's fix was to turn it on), and which is right depends on
    the subnets' route tables, which the API does not show: always informational."""
    value = "false (the default)" if var is None else var.get("value")
    if value is None:
        meaning = "it is set from elsewhere (valueFrom), so its value is unknown here"
    elif str(value).lower() == "true":
        meaning = (
            "the node does not source-NAT pod traffic leaving the VPC, so something else "
            "must: a NAT gateway on the subnet's default route, or a VPN/peering that "
            "routes the pod addresses back. Right for private subnets behind a NAT "
            "gateway; nodes in public subnets then lose internet egress"
        )
    else:
        meaning = (
            "the node rewrites pod traffic leaving the VPC to its own primary address. "
            "Right for nodes in public subnets; across VPN, peering or a NAT gateway that "
            "expects pod addresses, answers can go astray and connections time out"
        )
    return Finding(
        STORY,
        "external-snat",
        "DaemonSet",
        namespace,
        name,
        INFO,
        f"AWS_VPC_K8S_CNI_EXTERNALSNAT={value if value is not None else '?'}: {meaning}",
        "set it to match the network and test egress after changing it: true where a NAT "
        "gateway translates pod egress, false for nodes in public subnets",
    )


def check_snat(snap: Snapshot) -> Iterator[Finding]:
    known = cluster_ranges(snap)
    for ds in snap.daemonsets:
        ns, name = _meta(ds)
        for c in _get(ds, "spec", "template", "spec", "containers") or []:
            env = {e.get("name"): e for e in c.get("env") or []}
            vpc_cni = "amazon-k8s-cni" in str(c.get("image")) or any(
                str(k).startswith("AWS_VPC_K8S_CNI_") for k in env
            )
            if vpc_cni:
                yield _external_snat(ns, name, env.get("AWS_VPC_K8S_CNI_EXTERNALSNAT"))
            excluded = env.get("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")
            for cidr in str((excluded or {}).get("value") or "").split(","):
                if not cidr.strip():
                    continue
                verdict = classify_cidr(cidr, known)
                if verdict:
                    yield Finding(
                        STORY,
                        "non-masquerade-cidr",
                        "DaemonSet",
                        ns,
                        name,
                        verdict[0],
                        f"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS entry {cidr.strip()} {verdict[1]}",
                        _CIDR_FIX,
                    )
    for cm in snap.configmaps:
        ns, name = _meta(cm)
        for value in (cm.get("data") or {}).values():
            if "nonMasqueradeCIDRs" not in str(value) and not name.startswith("ip-masq-agent"):
                continue
            try:
                config = yaml.safe_load(str(value))
            except yaml.YAMLError:
                continue
            if not isinstance(config, dict):
                continue
            for cidr in config.get("nonMasqueradeCIDRs") or []:
                verdict = classify_cidr(str(cidr), known)
                if verdict:
                    yield Finding(
                        STORY,
                        "non-masquerade-cidr",
                        "ConfigMap",
                        ns,
                        name,
                        verdict[0],
                        f"ip-masq-agent nonMasqueradeCIDRs entry {cidr} {verdict[1]}",
                        _CIDR_FIX,
                    )


CHECKS = (check_snat,)
