"""`kfs cleanup`'s sweep of KFS-* chains, over a node's `iptables -S` as text: a
crashed run's chain goes with the rules that jump to it; the masq agent's chain
is kept while the agent runs (pod egress depends on it) and swept once it is gone."""

from __future__ import annotations

import shlex

from failure_stories.host import iptables

NAT = [
    "-P POSTROUTING ACCEPT",
    "-N KFS-MASQ-AGENT",
    "-N KFS-NOMASQ-AB12CD",
    "-N KUBE-POSTROUTING",
    "-A POSTROUTING -j KFS-NOMASQ-AB12CD",
    "-A POSTROUTING -j KUBE-POSTROUTING",
    '-A POSTROUTING -s 10.244.0.0/16 -m comment --comment "kfs masq agent: x" -j KFS-MASQ-AGENT',
    "-A KFS-MASQ-AGENT -j MASQUERADE",
    "-A KFS-NOMASQ-AB12CD -d 198.51.100.0/24 -j ACCEPT",
]


class Node:
    """The nat table as `iptables -S` shows it; -D/-F/-X edit it."""

    def __init__(self) -> None:
        self.nat = list(NAT)

    def __call__(self, argv: list[str], check: bool = True) -> str:
        table, verb, rest = argv[3], argv[4], argv[5:]
        if table != "nat":
            return ""
        if verb == "-S":
            return "\n".join(self.nat)
        if verb == "-D":
            self.nat.remove(shlex.join(["-A", *rest]).replace("'", '"'))
        elif verb == "-F":
            self.nat = [r for r in self.nat if not r.startswith(f"-A {rest[0]} ")]
        elif verb == "-X":
            self.nat.remove(f"-N {rest[0]}")
        return ""


def test_a_live_addons_chain_is_kept_and_a_runs_chain_swept():
    node = Node()
    keep = iptables.excluding(iptables.SCENARIO_CHAIN, ("KFS-MASQ-AGENT",))
    assert iptables.sweep(keep, node) == ["iptables chain nat/KFS-NOMASQ-AB12CD"]
    assert not [r for r in node.nat if "NOMASQ" in r]
    assert "-N KFS-MASQ-AGENT" in node.nat
    assert any(r.endswith("-j KFS-MASQ-AGENT") for r in node.nat)


def test_once_the_agent_is_gone_its_chain_and_jump_are_swept_too():
    node = Node()
    assert iptables.sweep(iptables.SCENARIO_CHAIN, node) == [
        "iptables chain nat/KFS-MASQ-AGENT",
        "iptables chain nat/KFS-NOMASQ-AB12CD",
    ]
    assert node.nat == ["-P POSTROUTING ACCEPT", "-N KUBE-POSTROUTING", NAT[5]]


def test_excluding_names_whole_chains_only():
    keep = iptables.excluding(iptables.SCENARIO_CHAIN, ("KFS-MASQ-AGENT",))
    assert [bool(keep.match(c)) for c in ("KFS-MASQ-AGENT", "KFS-MASQ-AGENT2", "KUBE-X")] == [
        False,
        True,
        False,
    ]
    assert iptables.excluding(iptables.SCENARIO_CHAIN, ()) is iptables.SCENARIO_CHAIN
