"""A node's pod-egress SNAT owner, configured the way ip-masq-agent is: a
ConfigMap lists the destinations that keep the pod's own address
(``nonMasqueradeCIDRs``); everything else leaving the node is masqueraded
behind the node's address.

Run on every node with the host's network namespace (privileged):

    python3 masq_agent.py --chain KFS-MASQ-AGENT --configmap kube-system/kfs-masq-agent \
        [--cluster-cidr 10.244.0.0/16 ...] [--api-server https://10.244.0.1:16443]

The ConfigMap's key ``config`` holds ip-masq-agent's format (YAML or JSON):

    nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16]
    masqLinkLocal: false      # true: 169.254.0.0/16 is masqueraded too
    resyncInterval: 1s        # how often the node's rules are checked (and healed)

Rules, in the nat table: POSTROUTING jumps to the chain for every packet not
bound for an address of this node (with ``--cluster-cidr``, only for packets
from those ranges, the pods: a node that is also a workstation or a Docker
host keeps its other traffic as it was); the chain RETURNs (leaves the source
alone) for link-local, each ``--cluster-cidr`` and each listed CIDR, and
MASQUERADEs whatever is left. The chain is rewritten in one iptables-restore
--noflush transaction, so no packet ever sees half a list.

Why the ConfigMap is read through the API server, once a second, and not from
a mounted volume: the kubelet refreshes a ConfigMap volume only on its sync
period (a minute or more), and a fault and its fix must take effect at once.

The defaults, when the ConfigMap or its ``config`` key does not exist, are
ip-masq-agent's: the three private ranges of RFC 1918 (10.0.0.0/8,
172.16.0.0/12, 192.168.0.0/16) keep pod addresses, link-local does too, and
the rules are resynced every 60 s (the ConfigMap is still polled every second).
A config that does not parse or validate is refused in one log line and the
last good rules stay (before any good one: the rules already on the node).
On SIGTERM the agent exits and leaves its rules, as ip-masq-agent does: pod
egress keeps working across an upgrade of the agent.
Removing the chain is the cluster's cleanup, not the agent's.

Standard library only: it runs from the toolbox image, which has python3 and
iptables but no kfs code.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LINK_LOCAL = "169.254.0.0/16"
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
DEFAULT_RESYNC = 60.0
CIDR_LIMIT = 64  # ip-masq-agent's guard against a runaway list
COMMENT = "kfs masq agent"


class ConfigError(ValueError):
    """The ConfigMap's text cannot be used; the last good rules stay."""


@dataclass(frozen=True)
class Config:
    non_masquerade: tuple[str, ...] = RFC1918
    masq_link_local: bool = False
    resync_seconds: float = DEFAULT_RESYNC
    source: str = "defaults"
    ignored_keys: tuple[str, ...] = field(default=(), compare=False)


# -- config parsing ---------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration syntax, which ip-masq-agent's config uses: 1s, 500ms, 1m30s."""
    text = text.strip()
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ConfigError(f"resyncInterval {text!r} is not a duration like 1s, 500ms or 1m")
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not text or total <= 0:
        raise ConfigError(f"resyncInterval {text!r} must be a positive duration")
    return total


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _strip_comment(line: str) -> str:
    # A '#' starts a comment only at the line's start or after a space (YAML's rule).
    return re.sub(r"(^|\s)#.*$", "", line).rstrip()


def load_mapping(text: str) -> dict[str, Any]:
    """The small part of YAML that ip-masq-agent configs use: top-level keys
    with scalars, flow lists ``[a, b]`` or block lists ``- a``; or JSON."""
    try:
        loaded = json.loads(text)
    except ValueError:
        loaded = None
    if isinstance(loaded, dict):
        return loaded
    out: dict[str, Any] = {}
    key: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() == "---":
            continue
        if line.lstrip().startswith("- "):
            if key is None or not isinstance(out.get(key), list):
                raise ConfigError(f"line {number}: a list item without its key: {raw.strip()!r}")
            out[key].append(_scalar(line.lstrip()[2:]))
            continue
        if line[0].isspace() or ":" not in line:
            raise ConfigError(f"line {number}: expected 'key: value', got {raw.strip()!r}")
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not value:
            out[key] = []  # a block list follows (or the key is empty)
        elif value.startswith("["):
            if not value.endswith("]"):
                raise ConfigError(f"line {number}: unclosed list {value!r}")
            inner = value[1:-1].strip()
            out[key] = [_scalar(v) for v in inner.split(",")] if inner else []
        else:
            out[key] = _scalar(value)
    return out


def _cidr(text: Any) -> str:
    try:
        net = ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"nonMasqueradeCIDRs entry {text!r} is not a CIDR block ({exc})"
        ) from None
    if net.version != 4:
        raise ConfigError(
            f"nonMasqueradeCIDRs entry {text!r} is IPv6; this agent writes IPv4 rules"
        )
    return str(net)


KNOWN_KEYS = ("nonMasqueradeCIDRs", "masqLinkLocal", "resyncInterval")


def parse_config(text: str, source: str = "config") -> Config:
    """A Config from the ConfigMap's text; keys it omits keep their defaults."""
    data = load_mapping(text)
    cidrs = data.get("nonMasqueradeCIDRs", list(RFC1918))
    if not isinstance(cidrs, list):
        raise ConfigError(f"nonMasqueradeCIDRs must be a list, got {cidrs!r}")
    if len(cidrs) > CIDR_LIMIT:
        raise ConfigError(f"nonMasqueradeCIDRs has {len(cidrs)} entries; at most {CIDR_LIMIT}")
    link_local = data.get("masqLinkLocal", False)
    if not isinstance(link_local, bool):
        raise ConfigError(f"masqLinkLocal must be true or false, got {link_local!r}")
    resync = data.get("resyncInterval")
    return Config(
        non_masquerade=tuple(_cidr(c) for c in cidrs),
        masq_link_local=link_local,
        resync_seconds=DEFAULT_RESYNC if resync is None else parse_duration(str(resync)),
        source=source,
        ignored_keys=tuple(sorted(k for k in data if k not in KNOWN_KEYS)),
    )


# -- rules --------------------------------------------------------------------------------


def jump_args(chain: str, source: str = "") -> list[str]:
    """The POSTROUTING rule that sends non-local traffic (from ``source``) to the chain."""
    return [
        *(["-s", source] if source else []),
        "-m", "comment", "--comment", f"{COMMENT}: non-local traffic goes to {chain}",
        "-m", "addrtype", "!", "--dst-type", "LOCAL",
        "-j", chain,
    ]  # fmt: skip


def returned(config: Config, cluster_cidrs: tuple[str, ...]) -> list[str]:
    """Destinations that keep the pod's address, in rule order, without repeats."""
    order = ([] if config.masq_link_local else [LINK_LOCAL]) + [
        *cluster_cidrs,
        *config.non_masquerade,
    ]
    return list(dict.fromkeys(order))


def jump_sources(cluster_cidrs: tuple[str, ...]) -> tuple[str, ...]:
    """One POSTROUTING jump per pod range, or one for every source without any."""
    return cluster_cidrs or ("",)


def render(
    chain: str,
    config: Config,
    cluster_cidrs: tuple[str, ...] = (),
    missing_jumps: tuple[str, ...] | None = None,
) -> str:
    """iptables-restore --noflush input: the chain declared (so flushed and
    refilled in one commit), and the POSTROUTING jumps that are missing (by
    source; all of them if ``missing_jumps`` is None)."""
    lines = ["*nat", f":{chain} - [0:0]"]
    if missing_jumps is None:
        missing_jumps = jump_sources(cluster_cidrs)
    for source in missing_jumps:
        lines.append(_line(["-A", "POSTROUTING", *jump_args(chain, source)]))
    for cidr in returned(config, cluster_cidrs):
        lines.append(
            _line(["-A", chain, "-d", cidr, "-m", "comment", "--comment",
                   f"{COMMENT}: {cidr} keeps pod addresses", "-j", "RETURN"])
        )  # fmt: skip
    lines.append(
        _line(["-A", chain, "-m", "comment", "--comment",
               f"{COMMENT}: everything else leaves as the node", "-j", "MASQUERADE"])
    )  # fmt: skip
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _line(words: list[str]) -> str:
    return " ".join(f'"{w}"' if " " in w else w for w in words)


# -- the node's iptables ---------------------------------------------------------------


def pick_backend(prefer: str = "auto") -> str:
    """``iptables`` program family the node itself uses (legacy or nft): rules in
    the other one would be evaluated in a different order from kube-proxy's."""
    if prefer != "auto":
        return prefer
    counts = {}
    for backend in ("nft", "legacy"):
        save = shutil.which(f"iptables-{backend}-save")
        if save is None:
            continue
        out = subprocess.run([save, "-t", "nat"], capture_output=True, text=True, check=False)
        counts[backend] = sum(1 for ln in out.stdout.splitlines() if ln.startswith("-A "))
    if not counts:
        return ""
    return max(counts, key=lambda b: (counts[b], b == "nft"))


class Iptables:
    def __init__(self, backend: str) -> None:
        suffix = f"-{backend}" if backend else ""
        self.iptables = f"iptables{suffix}"
        self.restore = f"iptables{suffix}-restore"

    def has_jump(self, chain: str, source: str = "") -> bool:
        argv = [self.iptables, "-w", "-t", "nat", "-C", "POSTROUTING", *jump_args(chain, source)]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def chain_rules(self, chain: str) -> list[str]:
        """The chain's rules as ``iptables -S`` prints them (empty if it is missing)."""
        argv = [self.iptables, "-w", "-t", "nat", "-S", chain]
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return [ln for ln in out.splitlines() if ln.startswith("-A ")]

    def apply(self, text: str) -> None:
        done = subprocess.run(
            [self.restore, "-w", "--noflush"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise OSError(f"iptables-restore failed: {last}")


# -- the ConfigMap ----------------------------------------------------------------------


class NotFound(Exception):
    pass


class ApiReader:
    """GETs one ConfigMap with the pod's ServiceAccount token, trying each
    server in turn: the given ones first (a host-network pod may have no route
    to the Service address), then the one the cluster advertises."""

    def __init__(self, namespace: str, name: str, servers: list[str]) -> None:
        env = os.environ
        if env.get("KUBERNETES_SERVICE_HOST"):
            servers = [
                *servers,
                f"https://{env['KUBERNETES_SERVICE_HOST']}:{env['KUBERNETES_SERVICE_PORT']}",
            ]
        if not servers:
            raise SystemExit("masq agent: no API server: pass --api-server or run in a pod")
        self.servers = servers
        self.path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.tls = ssl.create_default_context(cafile=f"{SA_DIR}/ca.crt")

    def __call__(self) -> str | None:
        """The ``config`` key's text, or None if the ConfigMap or key is absent."""
        with open(f"{SA_DIR}/token") as f:  # re-read: projected tokens rotate
            headers = {"Authorization": f"Bearer {f.read().strip()}"}
        errors = []
        for server in self.servers:
            # https URLs given on the command line, never user input.
            request = urllib.request.Request(server + self.path, headers=headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, context=self.tls, timeout=2) as resp:  # noqa: S310
                    data = json.load(resp).get("data") or {}
                return data.get("config")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                errors.append(f"{server}: HTTP {exc.code}")
            except (OSError, ValueError) as exc:
                errors.append(f"{server}: {exc}")
        raise OSError("no API server answered (" + "; ".join(errors) + ")")


# -- the loop ---------------------------------------------------------------------------


class Agent:
    """One poll: read the config, keep the last good one on bad input, and
    rewrite the rules when they change or the resync interval is up."""

    def __init__(
        self,
        chain: str,
        read: Callable[[], str | None],
        rules: Iptables,
        cluster_cidrs: tuple[str, ...] = (),
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.read = read
        self.rules = rules
        self.cluster_cidrs = tuple(_cidr(c) for c in cluster_cidrs)
        self.log = log
        self.clock = clock
        self.config: Config | None = None  # the last good one
        self.applied: tuple[str, ...] | None = None
        self.applied_at = 0.0
        self._complaint = ""  # logged once until it changes

    def _complain(self, text: str) -> None:
        if text != self._complaint:
            self.log(text)
            self._complaint = text

    def _load(self) -> Config | None:
        try:
            text = self.read()
        except OSError as exc:
            self._complain(f"cannot read the config, rules unchanged: {exc}")
            return self.config
        if text is None:
            return Config()
        try:
            config = parse_config(text, source="configmap")
        except ConfigError as exc:
            # Before any good config (a restart), the node's rules are the last
            # agent's: they stay too, as ip-masq-agent leaves them.
            kept = (
                "the last good rules stay" if self.config else "the node's rules stay as they are"
            )
            self._complain(f"bad config, {kept}: {exc}")
            return self.config
        self._complaint = ""
        return config

    def step(self) -> bool:
        """Poll once; True if the rules were checked against the config (and
        rewritten where the node's differ)."""
        config = self._load()
        if config is None:
            return False
        if config != self.config and config.ignored_keys:
            self.log(f"ignoring unknown config keys: {', '.join(config.ignored_keys)}")
        self.config = config
        wanted = tuple(returned(config, self.cluster_cidrs))
        due = self.clock() - self.applied_at >= config.resync_seconds
        if wanted == self.applied and not due:
            return False
        missing = tuple(
            s for s in jump_sources(self.cluster_cidrs) if not self.rules.has_jump(self.chain, s)
        )
        text = render(self.chain, config, self.cluster_cidrs, missing)
        # A resync leaves rules that are already right alone, so their packet
        # counters keep telling who masqueraded what.
        in_place = [ln for ln in text.splitlines() if ln.startswith(f"-A {self.chain} ")]
        if missing or self.rules.chain_rules(self.chain) != in_place:
            try:
                self.rules.apply(text)
            except OSError as exc:
                self._complain(f"rules not written: {exc}")
                return False
        if wanted != self.applied:
            self.log(
                f"{self.chain}: pod addresses kept for {', '.join(wanted)}; "
                f"everything else masqueraded ({config.source})"
            )
        self.applied, self.applied_at = wanted, self.clock()
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", required=True, help="nat chain to own, e.g. KFS-MASQ-AGENT")
    parser.add_argument("--configmap", required=True, metavar="NAMESPACE/NAME")
    parser.add_argument(
        "--cluster-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="the pod network: only its traffic is masqueraded, and never towards it "
        "(whatever the config says)",
    )
    parser.add_argument("--api-server", action="append", default=[], metavar="URL")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--iptables", choices=("auto", "nft", "legacy"), default="auto")
    args = parser.parse_args(argv)
    namespace, _, name = args.configmap.partition("/")
    if not namespace or not name:
        parser.error(f"--configmap {args.configmap!r}: expected NAMESPACE/NAME")
    if len(args.chain) > 28:
        parser.error(f"--chain {args.chain!r}: iptables chain names have at most 28 characters")
    try:
        cluster = tuple(_cidr(c) for c in args.cluster_cidr)
    except ConfigError as exc:
        parser.error(f"--cluster-cidr: {exc}")

    def log(text: str) -> None:
        print(
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} masq-agent: {text}", flush=True
        )

    # Exit at once and leave the rules: the next agent takes them over.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    backend = pick_backend(args.iptables)
    log(f"chain {args.chain}, config {args.configmap}, iptables {backend or 'default'}")
    agent = Agent(args.chain, ApiReader(namespace, name, args.api_server), Iptables(backend),
                  cluster, log)  # fmt: skip
    while True:
        agent.step()
        time.sleep(args.poll_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
