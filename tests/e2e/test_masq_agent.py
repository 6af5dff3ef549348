"""The local cluster's SNAT owner, the masq agent addon: its chain is on the node,
a pod's egress is masqueraded by it (not by the CNI bridge), and an edit of its
ConfigMap flips that egress within seconds, both ways. The story MindTickle
depends on exactly this; the outside network is taken as its runs take it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from failure_stories.core.wait import wait_for
from failure_stories.host import locks, netns
from failure_stories.host.commands import run
from failure_stories.providers import snat
from failure_stories.providers.base import Provider, toolbox_pod
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import layout as L
from failure_stories.providers.local import masq_addon

OUTSIDE = "198.51.100.0/24"
# The agent polls its ConfigMap every second; an edit must show within this.
FLIP_SECONDS = 5.0


@pytest.fixture
def outside_network(kfs_provider: Provider) -> Iterator[None]:
    if kfs_provider.name != "local":
        pytest.fail("the masq agent addon is the local provider's; run with --kfs-provider local")
    # Shared node lock, then the outside network to ourselves: as MindTickle's runs.
    with (
        locks.held("node", "runs that need the node alone", shared=True),
        locks.held("node-outside-network", "another run using outside-network to end"),
    ):
        yield


def _nat_rules(chain: str) -> list[str]:
    out = run(["iptables", "-w", "-t", "nat", "-S", chain], check=False)
    return [ln for ln in out.splitlines() if ln.startswith("-A ")]


def _calls_out(kube: Kube, ns: str, url: str) -> bool:
    code, _, _ = kube.exec(ns, "caller", ["curl", "-s", "-o", "/dev/null", "-m", "1", url], 15)
    return code == 0


def test_the_addon_owns_pod_egress_and_a_configmap_edit_flips_it_within_seconds(
    kube: Kube, namespace: str, outside_network: None
):
    owner = snat.find(kube)
    assert owner == snat.SnatOwner(
        "kube-system", masq_addon.NAME, masq_addon.CHAIN, "kube-system", masq_addon.NAME
    )
    rules = _nat_rules(masq_addon.CHAIN)
    kept = [r.split(" -d ")[1].split()[0] for r in rules if r.endswith("-j RETURN")]
    assert kept == ["169.254.0.0/16", L.CLUSTER_CIDR, L.SERVICE_CIDR]
    assert rules[-1].endswith("-j MASQUERADE")

    kube.apply([toolbox_pod("caller", "caller")], namespace)
    kube.wait_pod_running(namespace, "caller")
    ip = kube.core.read_namespaced_pod("caller", namespace).status.pod_ip
    # The bridge no longer masquerades: no rule of the CNI's names this pod.
    postrouting = _nat_rules("POSTROUTING")
    assert not [r for r in postrouting if f"-s {ip}/32" in r], postrouting

    host = netns.create(OUTSIDE)
    saved = snat.read_config(kube, owner)
    try:
        host.serve_http(80, "outside\n")
        url = f"http://{host.address}/"
        wait_for(lambda: _calls_out(kube, namespace, url), what="the outside host", timeout=30)

        def flip(config: str, answers: bool) -> tuple[float, float]:
            start = time.monotonic()
            snat.write_config(kube, owner, config)
            wait_for(
                lambda: (f"-d {OUTSIDE}" in " ".join(_nat_rules(masq_addon.CHAIN))) != answers,
                what="the agent's rules to follow its ConfigMap",
                timeout=FLIP_SECONDS,
                interval=0.1,
            )
            in_rules = time.monotonic() - start
            wait_for(
                lambda: _calls_out(kube, namespace, url) == answers,
                what=f"outside calls to {'answer' if answers else 'time out'}",
                timeout=FLIP_SECONDS + 5,
                interval=0.1,
            )
            return in_rules, time.monotonic() - start

        wrong = snat.config_text([L.CLUSTER_CIDR, L.SERVICE_CIDR, OUTSIDE])
        to_rules, to_broken = flip(wrong, answers=False)
        back_rules, to_fixed = flip(masq_addon.CONFIG, answers=True)
        print(
            f"un-NATed: rules after {to_rules:.2f}s, calls failing after {to_broken:.2f}s; "
            f"NATed again: rules after {back_rules:.2f}s, calls answering after {to_fixed:.2f}s"
        )
        assert to_rules < FLIP_SECONDS and back_rules < FLIP_SECONDS
    finally:
        snat.write_config(kube, owner, saved)
        host.delete()
