"""The scenario's "outside world": hosts in network namespaces we create, on the
documentation ranges, reachable from the node and nowhere else.

An outside host gets a veth pair: the host end carries the gateway address, the
namespace end the host's address; the namespace knows only its own /24, so a
reply to an un-NATed pod address has nowhere to go - exactly the MindTickle
failure. Every namespace is named kfs-ext-*, so cleanup can find strays.

Where the namespace lives is the caller's: by default this host (``run`` and
``start`` below); a provider that reaches its node another way (the node agent)
passes its own way to run a command there and to start a long-lived process."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from failure_stories.core.errors import ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import commands, netns_dir
from failure_stories.host.commands import run

# Runs a command where the namespace lives (host.commands.run's shape).
Run = Callable[..., str]
# Starts a long-lived process there; returns how to stop it.
Start = Callable[[list[str]], Callable[[], None]]


def _popen(argv: list[str]) -> Callable[[], None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    return stop


PREFIX = "kfs-ext-"
DOC_NETS = {
    "198.51.100.0/24": ("198.51.100.1", "198.51.100.10"),
    "203.0.113.0/24": ("203.0.113.1", "203.0.113.10"),
}


@dataclass
class OutsideHost:
    name: str
    subnet: str
    gateway: str  # on the node's side
    address: str  # the outside host itself
    host_veth: str
    run: Run = commands.run
    start: Start = _popen
    stops: list[Callable[[], None]] = field(default_factory=list)
    # Where this host reaches the node (its NodePorts): the gateway when the node
    # is this machine, the node container's own address on kind.
    node_address: str = ""

    def __post_init__(self) -> None:
        self.node_address = self.node_address or self.gateway

    @property
    def on_this_host(self) -> bool:
        """The namespace lives here, not on a node reached another way: only then
        is this host's /run/netns ours to keep track of."""
        return self.run is commands.run

    def exec(self, argv: list[str], **kw: object) -> str:
        return self.run(["ip", "netns", "exec", self.name, *argv], **kw)

    def serve_http(self, port: int = 80, body: str = "outside") -> None:
        """A plain HTTP server inside the namespace, owned by this object."""
        script = (
            "import http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            f"        b = {body!r}.encode()\n"
            "        self.send_response(200); self.send_header('Content-Length', str(len(b)))\n"
            "        self.end_headers(); self.wfile.write(b)\n"
            "    def log_message(self, *a): pass\n"
            f"h.ThreadingHTTPServer(('{self.address}', {port}), H).serve_forever()\n"
        )
        self.stops.append(self.start(["ip", "netns", "exec", self.name, "python3", "-c", script]))
        wait_for(
            lambda: f"{self.address}:{port}" in self.exec(["ss", "-ltnH"]),
            what=f"HTTP server on {self.address}:{port}",
            timeout=15,
            interval=0.1,
        )

    def delete(self) -> None:
        for stop in self.stops:
            stop()
        self.stops.clear()
        # Deleting the namespace removes its veth end and so the pair.
        self.run(["ip", "netns", "delete", self.name], check=False)
        self.run(["ip", "link", "delete", self.host_veth], check=False)
        if self.on_this_host:
            netns_dir.release(self.name)


def create(
    subnet: str = "198.51.100.0/24", run: Run = commands.run, start: Start = _popen
) -> OutsideHost:
    if subnet not in DOC_NETS:
        raise ProviderError(f"outside hosts live on documentation ranges only: {list(DOC_NETS)}")
    gateway, address = DOC_NETS[subnet]
    for line in run(["ip", "-o", "-4", "addr", "show"], check=False).splitlines():
        # One outside host per range: a second would clash on the same addresses.
        fields = line.split()
        if len(fields) > 3 and fields[1].startswith("kfsx") and f" {gateway}/" in line:
            raise ProviderError(
                f"an outside host on {subnet} already exists ({fields[1]}); "
                "run `kfs cleanup` if it is a leftover"
            )
    tag = secrets.token_hex(3)
    name, host_veth, ns_veth = PREFIX + tag, f"kfsx{tag}", f"kfsy{tag}"
    host = OutsideHost(name, subnet, gateway, address, host_veth, run=run, start=start)
    try:
        if host.on_this_host:
            # Before iproute2 self-binds /run/netns on a host without the local
            # cluster: so kfs knows it made the mount, and undoes it.
            netns_dir.ensure_mount_point(name)
        run(["ip", "netns", "add", name])
        run(["ip", "link", "add", host_veth, "type", "veth", "peer", "name", ns_veth])
        run(["ip", "link", "set", ns_veth, "netns", name])
        prefix = subnet.split("/")[1]
        run(["ip", "addr", "add", f"{gateway}/{prefix}", "dev", host_veth])
        run(["ip", "link", "set", host_veth, "up"])
        host.exec(["ip", "addr", "add", f"{address}/{prefix}", "dev", ns_veth])
        host.exec(["ip", "link", "set", ns_veth, "up"])
        host.exec(["ip", "link", "set", "lo", "up"])
    except Exception:
        host.delete()
        raise
    return host


def leftovers() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def sweep() -> list[str]:
    """Delete outside hosts a crashed run left behind; return their names."""
    names = leftovers()
    for name in names:
        tag = name[len(PREFIX) :]
        run(["ip", "netns", "delete", name], check=False)
        run(["ip", "link", "delete", f"kfsx{tag}"], check=False)
    # Holders a crash left behind: their namespaces are gone now.
    alive = set(leftovers())
    for holder in netns_dir.holders():
        if holder.startswith(PREFIX) and holder not in alive:
            netns_dir.release(holder)
    return names
