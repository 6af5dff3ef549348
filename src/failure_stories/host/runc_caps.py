#!/usr/bin/python3
"""A runtime wrapper for dockerd: runc, minus the capabilities this host cannot grant.

Docker 20.10 asks for every capability it knows for a ``--privileged`` container
(and for ``docker exec --privileged``). On a host whose capability bounding set
lacks one of them (this machine family has no CAP_SYS_RESOURCE) runc then fails
with "unable to apply caps: operation not permitted", and kind, which always
runs its nodes privileged, cannot start a node. Registered as dockerd's default
runtime, this script removes from the OCI process the capabilities that are not
in its own bounding set (the set dockerd and every child inherit) and execs the
real runc with the same arguments. On a normal host nothing is outside the
bounding set, so the spec is left untouched: a no-op.

Standard library only, and no kfs imports: dockerd runs it as a plain file
copied into the engine's state directory (host/docker_engine.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NUMBERS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW",
            "CAP_IPC_LOCK",
            "CAP_IPC_OWNER",
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN",
            "CAP_SYS_BOOT",
            "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE",
            "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG",
            "CAP_MKNOD",
            "CAP_LEASE",
            "CAP_AUDIT_WRITE",
            "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN",
            "CAP_SYSLOG",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
            "CAP_AUDIT_READ",
            "CAP_PERFMON",
            "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        )
    )
}
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
RUNC = "/usr/bin/runc"


def bounding_mask(status: str) -> int:
    """The CapBnd mask from the text of /proc/self/status."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapBnd line in /proc/self/status")


def grantable(caps: list[str], mask: int) -> list[str]:
    """``caps`` without those the bounding set ``mask`` lacks. A name this table
    does not know is kept: runc, not this wrapper, judges what it cannot read."""
    return [c for c in caps if c not in CAP_NUMBERS or mask >> CAP_NUMBERS[c] & 1]


def trim_process(process: dict[str, Any], mask: int) -> bool:
    """Trim an OCI process's capability sets in place; True if anything changed."""
    sets = process.get("capabilities") or {}
    changed = False
    for name in CAP_SETS:
        if name in sets and sets[name] is not None:
            kept = grantable(list(sets[name]), mask)
            if kept != sets[name]:
                sets[name] = kept
                changed = True
    return changed


def spec_file(argv: list[str]) -> tuple[Path, bool] | None:
    """The JSON file runc will read a process from, for the subcommands that start
    one: (path, whether it is a whole bundle config); None for the rest
    (state, kill, delete... are passed on untouched)."""
    args = argv[1:]
    command = next((i for i, a in enumerate(args) if a in ("create", "run", "exec")), None)
    if command is None:
        return None
    sub = args[command]
    rest = args[command + 1 :]
    if sub == "exec":
        for i, a in enumerate(rest):
            if a in ("--process", "-p") and i + 1 < len(rest):
                return Path(rest[i + 1]), False
            if a.startswith("--process="):
                return Path(a.split("=", 1)[1]), False
        return None
    bundle = Path.cwd()
    for i, a in enumerate(rest):
        if a in ("--bundle", "-b") and i + 1 < len(rest):
            bundle = Path(rest[i + 1])
        elif a.startswith("--bundle="):
            bundle = Path(a.split("=", 1)[1])
    return bundle / "config.json", True


def main(argv: list[str]) -> None:
    target = spec_file(argv)
    if target is not None:
        path, whole = target
        mask = bounding_mask(Path("/proc/self/status").read_text())
        doc = json.loads(path.read_text())
        process = doc.get("process") if whole else doc
        if isinstance(process, dict) and trim_process(process, mask):
            path.write_text(json.dumps(doc))
    runc = os.environ.get("KFS_REAL_RUNC", RUNC)
    os.execv(runc, [runc, *argv[1:]])  # noqa: S606 - a runtime wrapper execs runc


if __name__ == "__main__":
    main(sys.argv)
