"""The Docker engine the kind provider needs, started by kfs when none runs.

Debian's docker.io is installed without its service (scripts/install-system.sh);
``ensure_engine`` starts /usr/sbin/dockerd itself, beside the local cluster, so
it prepares the host first:

- ``net.ipv4.ip_forward=1`` before dockerd starts: dockerd turns the FORWARD
  policy to DROP only when it has to enable forwarding itself, and a DROP
  policy silently kills the local node's pod traffic;
- inotify limits raised: every kind node runs systemd, a kubelet and
  containerd, and the host's default of 128 instances runs out at a few nodes;
- a runtime wrapper (host/runc_caps.py) as the default runtime, because this
  host cannot grant every capability Docker asks for a privileged container.

What it changed (the sysctls' old values, the iptables rules before dockerd)
is recorded in the state directory; ``stop_engine_if_ours`` stops a dockerd
that kfs started, removes the DOCKER* chains and the docker0/br-* rules it
added, and restores the sysctls. A dockerd that kfs did not start is used as
it is and never stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from failure_stories.core import atomic
from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import commands, iptables
from failure_stories.host.processes import Supervisor

DOCKERD = Path("/usr/sbin/dockerd")
DOCKER_CHAINS = re.compile(r"^DOCKER")
# Interfaces dockerd makes: the default bridge and one bridge per network.
DOCKER_LINKS = re.compile(r"(^|\s)!?\s*-[io] (docker0|br-[0-9a-f]{12})(\s|$)")
BUILTIN_CHAINS = {"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}
# Raised only, never lowered: the values kind's documentation asks for.
SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "fs.inotify.max_user_instances": 8192,
    "fs.inotify.max_user_watches": 524288,
}
RUNTIME = "kfs-runc"
LIB_MODULES = Path("/lib/modules")


def state_dir() -> Path:
    return Path(os.environ.get("KFS_STATE_DOCKER", "/var/lib/kfs/docker"))


def _supervisor() -> Supervisor:
    return Supervisor(state_dir())


def _changes_file() -> Path:
    return state_dir() / "host-changes.json"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    state_dir().mkdir(parents=True, exist_ok=True)
    with (state_dir() / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def docker() -> str:
    found = shutil.which("docker")
    if found is None:
        raise MissingToolError("docker", "run `make setup` (installs Debian's docker.io)")
    return found


def engine_answers() -> bool:
    return shutil.which("docker") is not None and commands.succeeds(
        [docker(), "version", "--format", "{{.Server.Version}}"], timeout=10
    )


def started_by_kfs() -> bool:
    return _supervisor().alive("dockerd")


def daemon_config(root: Path) -> dict[str, object]:
    return {
        "data-root": str(root / "data"),
        "exec-root": str(root / "exec"),
        "pidfile": str(root / "dockerd.pid"),
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "storage-driver": "overlay2",
        "runtimes": {RUNTIME: {"path": str(root / "runc-kfs")}},
        "default-runtime": RUNTIME,
        # This host does not let root lower oom_score_adj (no CAP_SYS_RESOURCE).
        "oom-score-adjust": 0,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
    }


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _prepare_host(root: Path) -> None:
    """Record, then raise, the sysctls; keep the iptables rules as they were."""
    changes = _read_changes()
    for name, want in SYSCTLS.items():
        path = _sysctl_path(name)
        have = int(path.read_text().split()[0])
        if have < want:
            changes.setdefault("sysctls", {}).setdefault(name, have)
            path.write_text(f"{want}\n")
    # kind mounts /lib/modules into every node, and Docker would create it if
    # missing; this host has none. Made here so that it is recorded and undone.
    if not LIB_MODULES.exists():
        LIB_MODULES.mkdir(parents=True)
        changes["created_lib_modules"] = True
    # Kept from the first start: a crashed dockerd's rules must not count as the host's.
    changes.setdefault("forward_policy", _forward_policy())
    changes.setdefault("rules_before", {t: _rules(t) for t in ("filter", "nat")})
    atomic.write_text(_changes_file(), json.dumps(changes, indent=2))


def _read_changes() -> dict[str, Any]:
    path = _changes_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _rules(table: str) -> list[str]:
    return commands.run(["iptables", "-w", "-t", table, "-S"], check=False).splitlines()


def _forward_policy() -> str:
    for line in _rules("filter"):
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return "ACCEPT"


def _install_runtime(root: Path) -> None:
    wrapper = Path(__file__).with_name("runc_caps.py")
    target = root / "runc-kfs"
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(wrapper, tmp)
    tmp.chmod(0o755)
    tmp.replace(target)


def ensure_engine() -> None:
    """A Docker engine answers on the default socket when this returns."""
    if engine_answers():
        return
    with _locked():
        if engine_answers():
            return
        if not DOCKERD.is_file():
            raise MissingToolError("dockerd", "run `make setup` (installs Debian's docker.io)")
        root = state_dir()
        _prepare_host(root)
        _install_runtime(root)
        config = root / "daemon.json"
        atomic.write_text(config, json.dumps(daemon_config(root), indent=2))
        sup = _supervisor()
        sup.start("dockerd", [str(DOCKERD), "--config-file", str(config)])

        def up() -> bool:
            if not sup.alive("dockerd"):
                raise ProviderError(f"dockerd exited: {sup.tail('dockerd')}")
            return engine_answers()

        wait_for(up, what="dockerd to answer", timeout=60, interval=0.5, retry_on=())
        before = str(_read_changes().get("forward_policy", "ACCEPT"))
        if _forward_policy() != before:
            # Never leave the local node's pod traffic to a DROP policy.
            commands.run(["iptables", "-w", "-P", "FORWARD", before], what="restore FORWARD")
            raise ProviderError(
                f"dockerd changed the FORWARD policy to DROP (restored to {before}); "
                f"log: {sup.log_path('dockerd')}"
            )


def stop_engine_if_ours() -> list[str]:
    """Stop the dockerd kfs started and undo its host changes; what was done."""
    done: list[str] = []
    if not state_dir().is_dir():
        return done  # kfs never started an engine here
    with _locked():
        sup = _supervisor()
        if sup.record("dockerd") is None and not _changes_file().exists():
            return done
        if sup.alive("dockerd"):
            # Networks are removed while dockerd can still do it cleanly; a
            # network with containers on it is refused and kept.
            names = commands.run([docker(), "network", "ls", "--format", "{{.Name}}"], check=False)
            for net in names.split():
                if net not in ("bridge", "host", "none") and commands.succeeds(
                    [docker(), "network", "rm", net]
                ):
                    done.append(f"removed docker network {net}")
            sup.stop("dockerd", timeout=30)
            done.append("stopped dockerd")
        done += remove_docker_rules()
        if commands.succeeds(["ip", "link", "show", "docker0"]):
            commands.run(["ip", "link", "delete", "docker0"], check=False)
            done.append("removed link docker0")
        changes = _read_changes()
        sysctls = changes.get("sysctls", {})
        assert isinstance(sysctls, dict)
        for name, old in sysctls.items():
            if name == "net.ipv4.ip_forward" and _local_cluster_running():
                # It forwards the local node's pod traffic; the local provider
                # restores the value it found at its own `down`.
                done.append("kept net.ipv4.ip_forward=1: the local cluster runs")
                continue
            _sysctl_path(name).write_text(f"{old}\n")
            done.append(f"restored {name}={old}")
        if changes.get("created_lib_modules") and LIB_MODULES.is_dir():
            with contextlib.suppress(OSError):  # kept if something was put in it
                LIB_MODULES.rmdir()
                done.append(f"removed the empty {LIB_MODULES} it made")
        _changes_file().unlink(missing_ok=True)
    return done


def cleanup_if_idle() -> list[str]:
    """`kfs cleanup`'s part: the dockerd kfs started, once no container is left
    in it (a kind cluster still running keeps it), or what a crashed one left."""
    if not started_by_kfs():
        return stop_engine_if_ours()  # nothing, unless a dead dockerd left its changes
    out = commands.run([docker(), "ps", "-aq"], check=False, what="docker ps")
    if out.split():
        return [f"kept dockerd: {len(out.split())} containers are still in it"]
    return stop_engine_if_ours()


def _local_cluster_running() -> bool:
    local = Supervisor(Path(os.environ.get("KFS_STATE", "/var/lib/kfs/local")))
    return any(local.alive(name) for name in local.names())


def remove_docker_rules() -> list[str]:
    """DOCKER* chains and the rules dockerd added to the built-in chains."""
    before = _read_changes().get("rules_before", {})
    assert isinstance(before, dict)
    removed = iptables.sweep(DOCKER_CHAINS, commands.run)
    for table in ("filter", "nat"):
        old = set(before.get(table, []))
        for line in _rules(table):
            parts = shlex.split(line)
            if parts[:1] != ["-A"] or parts[1] not in BUILTIN_CHAINS or line in old:
                continue
            if DOCKER_LINKS.search(line):
                commands.run(["iptables", "-w", "-t", table, "-D", *parts[1:]], check=False)
                removed.append(f"iptables rule {table}: {line}")
    return removed
