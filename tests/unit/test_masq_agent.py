"""The masq agent (images/workloads/masq_agent.py): its config parsing, the rules it
renders, and what one poll does with a good, a changed or a bad config. The last
test runs the real iptables-restore in a network namespace of its own."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "images" / "workloads" / "masq_agent.py"
_spec = importlib.util.spec_from_file_location("masq_agent", SCRIPT)
assert _spec and _spec.loader
agent = importlib.util.module_from_spec(_spec)
sys.modules["masq_agent"] = agent  # dataclasses resolve their module by name
_spec.loader.exec_module(agent)

CHAIN = "KFS-MASQ-AGENT"
POD = "10.244.0.0/16"
OUTSIDE = "198.51.100.0/24"


@pytest.mark.parametrize(
    ("text", "cidrs", "link_local", "resync"),
    [
        # ip-masq-agent's defaults for every key the config leaves out.
        ("", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), False, 60.0),
        (
            "nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16]\nresyncInterval: 1s\n",
            ("10.244.0.0/16", "10.96.0.0/16"),
            False,
            1.0,
        ),
        (
            "# block list\nnonMasqueradeCIDRs:\n  - 10.244.0.0/16\n  - '198.51.100.0/24'\n"
            "masqLinkLocal: true\nresyncInterval: 1m30s\n",
            ("10.244.0.0/16", "198.51.100.0/24"),
            True,
            90.0,
        ),
        ('{"nonMasqueradeCIDRs": [], "resyncInterval": "500ms"}', (), False, 0.5),
    ],
)
def test_config_parses_like_ip_masq_agents(text, cidrs, link_local, resync):
    config = agent.parse_config(text)
    assert config.non_masquerade == cidrs
    assert config.masq_link_local is link_local
    assert config.resync_seconds == resync


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nonMasqueradeCIDRs: [10.244.0.1/16]", "not a CIDR block"),
        ("nonMasqueradeCIDRs: [banana]", "not a CIDR block"),
        ("nonMasqueradeCIDRs: [fd00::/8]", "IPv6"),
        ("nonMasqueradeCIDRs: 10.0.0.0/8", "must be a list"),
        ("masqLinkLocal: maybe", "true or false"),
        ("resyncInterval: soon", "duration"),
        ("nonMasqueradeCIDRs: [10.0.0.0/8", "unclosed list"),
        ("  - 10.0.0.0/8", "without its key"),
        ("just words", "key: value"),
        (
            "nonMasqueradeCIDRs: [" + ", ".join(f"10.{i}.0.0/16" for i in range(65)) + "]",
            "at most 64",
        ),
    ],
)
def test_a_bad_config_is_refused_with_the_reason(text, says):
    with pytest.raises(agent.ConfigError, match=says):
        agent.parse_config(text)


def test_unknown_keys_are_ignored_as_ip_masq_agent_does_but_named():
    config = agent.parse_config("nonMasqueradeCIDR: [10.0.0.0/8]\ncidrLimit: 10\n")
    assert config.ignored_keys == ("cidrLimit", "nonMasqueradeCIDR")
    assert config.non_masquerade == agent.RFC1918


def _chain_rules(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f"-A {CHAIN} ")]


@pytest.mark.parametrize(
    ("config", "returned"),
    [
        (agent.Config(), ["169.254.0.0/16", POD, *agent.RFC1918]),
        (agent.Config(non_masquerade=(POD, OUTSIDE)), ["169.254.0.0/16", POD, OUTSIDE]),
        (agent.Config(non_masquerade=(), masq_link_local=True), [POD]),
    ],
)  # fmt: skip
def test_rules_return_for_each_kept_range_then_masquerade(config, returned):
    rules = _chain_rules(agent.render(CHAIN, config, (POD,)))
    assert [r.split(" -d ")[1].split()[0] for r in rules[:-1]] == returned
    assert all(r.endswith("-j RETURN") for r in rules[:-1])
    assert rules[-1].endswith("-j MASQUERADE") and " -d " not in rules[-1]


def test_the_jump_is_for_pod_sources_to_non_local_destinations_and_only_when_missing():
    text = agent.render(CHAIN, agent.Config(), (POD,))
    lines = text.splitlines()
    assert lines[:2] == ["*nat", f":{CHAIN} - [0:0]"]  # declared: flushed in the same commit
    assert lines[2].startswith(f"-A POSTROUTING -s {POD} ")
    assert "-m addrtype ! --dst-type LOCAL" in lines[2] and lines[2].endswith(f"-j {CHAIN}")
    assert lines[-1] == "COMMIT"
    again = agent.render(CHAIN, agent.Config(), (POD,), missing_jumps=())
    assert "POSTROUTING" not in again
    everyone = agent.render(CHAIN, agent.Config())  # no --cluster-cidr: every source
    assert " -s " not in next(ln for ln in everyone.splitlines() if "POSTROUTING" in ln)


class FakeRules:
    def __init__(self) -> None:
        self.written: list[str] = []
        self.rules: list[str] = []
        self.jumps: set[str] = set()

    def has_jump(self, chain: str, source: str = "") -> bool:
        return source in self.jumps

    def chain_rules(self, chain: str) -> list[str]:
        return list(self.rules)

    def apply(self, text: str) -> None:
        self.written.append(text)
        self.rules = _chain_rules(text)
        self.jumps.add(POD)


def _agent(texts: list[object]) -> tuple[object, FakeRules, list[str]]:
    feed = iter(texts)
    logs: list[str] = []
    now = [0.0]

    def read() -> str | None:
        item = next(feed)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    rules = FakeRules()
    a = agent.Agent(CHAIN, read, rules, (POD,), logs.append, clock=lambda: now[0])
    a.tick = now  # type: ignore[attr-defined]
    return a, rules, logs


def test_a_bad_config_keeps_the_last_good_rules_and_says_so_once():
    good = "nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16]\nresyncInterval: 1s\n"
    bad = "nonMasqueradeCIDRs: [10.96.0.1/16]\n"
    a, rules, logs = _agent([good, bad, bad, bad])
    assert a.step() is True
    first = rules.written[-1]
    for _ in range(3):
        a.tick[0] += 1.5  # resync due each time: the good rules are kept, not rewritten
        a.step()
    assert rules.written == [first]
    assert "-d 10.96.0.0/16" in first
    complaints = [ln for ln in logs if ln.startswith("bad config")]
    assert complaints == [
        "bad config, the last good rules stay: nonMasqueradeCIDRs entry '10.96.0.1/16' "
        "is not a CIDR block (10.96.0.1/16 has host bits set)"
    ]


def test_a_bad_config_at_start_writes_nothing():
    a, rules, logs = _agent(["masqLinkLocal: maybe\n"])
    assert a.step() is False
    assert rules.written == []
    assert logs == [
        "bad config, the node's rules stay as they are: masqLinkLocal must be true or false, "
        "got 'maybe'"
    ]


def test_a_changed_config_is_written_at_the_next_poll_and_a_missing_one_means_defaults():
    a, rules, logs = _agent(
        [
            "nonMasqueradeCIDRs: [10.244.0.0/16]\n",
            "nonMasqueradeCIDRs: [10.244.0.0/16, 198.51.100.0/24]\n",
            None,
        ]
    )
    a.step()
    a.step()
    assert "-d 198.51.100.0/24" in rules.written[-1]
    assert "POSTROUTING" not in rules.written[-1]  # the jump was already there
    a.step()
    assert "-d 198.51.100.0/24" not in rules.written[-1]
    assert "-d 192.168.0.0/16" in rules.written[-1]
    assert logs[-1].endswith("everything else masqueraded (defaults)")
    assert len(rules.written) == 3


def test_an_unreachable_api_server_leaves_the_rules_alone():
    a, rules, logs = _agent(["nonMasqueradeCIDRs: [10.244.0.0/16]\n", OSError("no route")])
    a.step()
    a.tick[0] += 120
    a.step()
    assert len(rules.written) == 1
    assert logs[-1] == "cannot read the config, rules unchanged: no route"


def test_real_iptables_restore_takes_the_rules_and_a_resync_changes_nothing():
    """In a network namespace of its own: the rules land, the jump is added
    once, and a second poll with the same config rewrites nothing."""
    program = f"""
import importlib.util, json, subprocess, sys
spec = importlib.util.spec_from_file_location("masq_agent", {str(SCRIPT)!r})
m = importlib.util.module_from_spec(spec); sys.modules["masq_agent"] = m; spec.loader.exec_module(m)
rules = m.Iptables(m.pick_backend())
writes = []
apply = rules.apply
rules.apply = lambda text: (writes.append(text), apply(text))
text = "nonMasqueradeCIDRs: [10.244.0.0/16, 198.51.100.0/24]\\nresyncInterval: 1s\\n"
clock = iter(range(0, 100, 5)).__next__  # each poll 5 s later: a resync is due
a = m.Agent({CHAIN!r}, lambda: text, rules, ({POD!r},), log=lambda _l: None, clock=clock)
a.step(); a.step()
out = subprocess.run([rules.iptables, "-t", "nat", "-S"], capture_output=True, text=True).stdout
print(json.dumps({{"writes": len(writes), "rules": out.splitlines()}}))
"""
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.fail("unshare -n needs root here: " + done.stderr.strip()[-200:])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["writes"] == 1
    jumps = [r for r in result["rules"] if r.startswith("-A POSTROUTING")]
    assert len(jumps) == 1 and jumps[0].startswith(f"-A POSTROUTING -s {POD} ")
    chain = [r for r in result["rules"] if r.startswith(f"-A {CHAIN}")]
    assert [r.split(" -d ")[1].split()[0] for r in chain[:-1]] == [
        "169.254.0.0/16",
        POD,
        "198.51.100.0/24",
    ]
    assert chain[-1].endswith("-j MASQUERADE")
