"""iptables chains kfs creates, found and removed by name on any node: the host's
own (local), or a node reached through a provider (the node agent runs the same
commands there). Scenarios name their chains KFS-*, so a crashed run's are
recognisable."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

SCENARIO_CHAIN = re.compile(r"^KFS-")
TABLES = ("filter", "nat", "mangle")


def excluding(pattern: re.Pattern[str], names: tuple[str, ...]) -> re.Pattern[str]:
    """``pattern`` without the chains named ``names`` (a cluster addon's, kept while
    it runs: the KFS-MASQ-AGENT chain of the local masq agent)."""
    if not names:
        return pattern
    others = "|".join(re.escape(n) for n in names)
    return re.compile(f"(?!(?:{others})$){pattern.pattern}")


# Runs one command on the node and returns its stdout (host.commands.run's shape).
Run = Callable[..., str]


def chains(pattern: re.Pattern[str], run: Run) -> dict[str, list[str]]:
    """Chains in the filter, nat and mangle tables that match ``pattern``, by table."""
    out: dict[str, list[str]] = {}
    for table in TABLES:
        rules = run(["iptables", "-w", "-t", table, "-S"], check=False)
        names = [line.split()[1] for line in rules.splitlines() if line.startswith("-N ")]
        out[table] = [n for n in names if pattern.match(n)]
    return out


def sweep(pattern: re.Pattern[str], run: Run) -> list[str]:
    """Remove every rule that jumps to a matching chain, then the chains."""
    removed: list[str] = []
    for table, found in chains(pattern, run).items():
        if not found:
            continue
        rules = run(["iptables", "-w", "-t", table, "-S"], check=False).splitlines()
        for line in rules:
            parts = shlex.split(line)
            if parts[:1] != ["-A"] or pattern.match(parts[1]):
                continue
            if "-j" in parts and pattern.match(parts[parts.index("-j") + 1]):
                run(["iptables", "-w", "-t", table, "-D", *parts[1:]], check=False)
        for chain in found:
            run(["iptables", "-w", "-t", table, "-F", chain], check=False)
        for chain in found:
            run(["iptables", "-w", "-t", table, "-X", chain], check=False)
            removed.append(f"iptables chain {table}/{chain}")
    return removed
