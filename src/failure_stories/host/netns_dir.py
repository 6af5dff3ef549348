"""`/run/netns`, the directory where containerd's pod network namespaces and
iproute2's named ones are pinned, made into what both expect before the first
pod starts, and emptied of ours again at `down`.

Why this module exists: on a new host `/run/netns` is a plain directory.
containerd pins each pod's namespace there with a bind mount that lands on the
root filesystem. The first `ip netns add` (an outside-world host) then sees
that the directory is not a mount point and bind-mounts it onto itself,
recursively. The pods' original mounts stay underneath, covered, and the
directory entry they sit on can no longer be unlinked ("unlinkat
/run/netns/cni-...: device or resource busy"): those pods never finish
terminating. Long-lived machines never show it, because their `/run/netns`
was made a mount point long ago.

So whoever comes first (the local cluster's `up`, or an outside host on a host
without that cluster) makes `/run/netns` a shared mount point while nothing is
pinned in it, exactly as iproute2 would, and records that kfs did and who
relies on it. Each holder releases it when done (`down`, an outside host's
delete, `kfs cleanup`); the last one undoes the mount point, if kfs made it and
nobody else has pinned anything there since. `down` also unmounts and removes
our pod namespaces, including ones covered by a later mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from failure_stories.core import atomic
from failure_stories.host.commands import run

NETNS_DIR = Path("/run/netns")


def record_path() -> Path:
    """What kfs did to /run/netns, and who relies on it: under /run, so a reboot,
    which undoes the mount, forgets it too."""
    return Path(os.environ.get("KFS_NETNS_RECORD", "/run/kfs-netns-dir.json"))


# containerd's CRI names its pod namespaces cni-<uuid>; ours outside hosts kfs-ext-*.
OURS = ("cni-", "kfs-ext-")


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    point: str
    fstype: str
    shared: bool


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/self/mountinfo, as far as this module needs it (see proc(5))."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 6 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        optional = fields[6:]
        mounts.append(
            Mount(
                int(fields[0]),
                int(fields[1]),
                point,
                right.split()[0],
                any(o.startswith("shared:") for o in optional),
            )
        )
    return mounts


def _mounts() -> list[Mount]:
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def _ours(name: str) -> bool:
    return name.startswith(OURS)


def _prefixes(path: str) -> list[str]:
    parts = [x for x in path.split("/") if x]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def resolve(mounts: list[Mount], path: str) -> list[Mount]:
    """The mounts on ``path`` itself that a lookup of it passes through, bottom
    first (a mount stacked on another is its child at the same point); empty
    when ``path`` is no mount point as this process sees the tree.

    The table lists covered mounts too, under the path they were made on, so a
    mount point is judged by walking from the root as the kernel does."""
    children: dict[tuple[int, str], Mount] = {}
    for m in mounts:
        children[(m.parent_id, m.point)] = m
    ids = {m.mount_id for m in mounts}
    roots = [m for m in mounts if m.point == "/" and m.parent_id not in ids]
    if not roots:
        return []
    cur = roots[0]
    chain = [cur]
    for prefix in _prefixes(path):
        chain = [cur] if prefix == "/" else []
        while (cur.mount_id, prefix) in children:
            cur = children[(cur.mount_id, prefix)]
            chain.append(cur)
    return chain if cur.point == path else []


def covers(mounts: list[Mount], directory: str = str(NETNS_DIR)) -> list[Mount]:
    """The mounts of ``directory`` itself that a lookup reaches, the visible one last."""
    return resolve(mounts, directory)


def pinned(mounts: list[Mount], directory: str = str(NETNS_DIR)) -> list[Mount]:
    """Namespace files of ours pinned under ``directory``, visible or covered."""
    prefix = directory.rstrip("/") + "/"
    return [
        m
        for m in mounts
        if m.point.startswith(prefix) and m.fstype == "nsfs" and _ours(m.point[len(prefix) :])
    ]


def hidden(mounts: list[Mount], directory: str = str(NETNS_DIR)) -> list[Mount]:
    """Pinned namespaces no lookup reaches: a later mount of ``directory`` (or
    above it) covers them. Ones stacked on the same file are reachable, one
    unmount at a time."""
    return [m for m in pinned(mounts, directory) if m not in resolve(mounts, m.point)]


@contextlib.contextmanager
def _record() -> Iterator[dict[str, object] | None]:
    """The record, read and written under a lock (stories run side by side).

    The lock is a flock on the record's directory, not on a file of its own:
    a lock file would outlive every holder on a host that had none before."""
    path = record_path()
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rec: dict[str, object] | None = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            rec = json.loads(path.read_text())
        yield rec
    finally:
        os.close(fd)


def _write(rec: dict[str, object]) -> None:
    atomic.write_text(record_path(), json.dumps(rec))


def _holders(rec: dict[str, object]) -> set[str]:
    held = rec.get("holders", [])
    return {str(h) for h in held} if isinstance(held, list) else set()


def ensure_mount_point(holder: str) -> None:
    """Make ``/run/netns`` a shared mount point before the first namespace is pinned.

    Only while nothing is pinned there: a self-bind over pinned namespaces is
    exactly what hides them. A host that already has the mount point keeps it;
    if kfs made it, ``holder`` joins those that rely on it."""
    with _record() as rec:
        created_dir = not NETNS_DIR.exists()
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        mounts = _mounts()
        if covers(mounts):
            if not covers(mounts)[-1].shared:
                run(["mount", "--make-shared", str(NETNS_DIR)])
            if rec is not None:
                _write({**rec, "holders": sorted(_holders(rec) | {holder})})
            return
        if pinned(mounts):
            return  # pods of a cluster started before this fix: `down` sweeps them
        run(["mount", "--bind", str(NETNS_DIR), str(NETNS_DIR)])
        run(["mount", "--make-shared", str(NETNS_DIR)])
        _write({"mounted": True, "created_dir": created_dir, "holders": [holder]})


def holders() -> set[str]:
    """Who relies on the mount point kfs made (empty when kfs made none)."""
    with _record() as rec:
        return _holders(rec) if rec is not None else set()


def _unmount(point: str) -> None:
    """Take the topmost mount off ``point``; detach it lazily if it is busy."""
    before = _mount_count(point)
    run(["umount", point], check=False, timeout=30)
    if _mount_count(point) == before:
        run(["umount", "-l", point], check=False, timeout=30)


def _mount_count(point: str) -> int:
    return sum(m.point == point for m in _mounts())


def _foreign_entries() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.name for p in NETNS_DIR.iterdir() if not _ours(p.name))
    return []


def sweep(holder: str, names: tuple[str, ...] = ("cni-",)) -> list[str]:
    """Unpin and remove our namespaces under ``/run/netns``, covered ones too.

    Returns what could not be removed, one line each, with what to do about it.
    ``names`` are the prefixes swept here (outside hosts go through iproute2);
    then ``holder`` releases the mount point."""
    problems: list[str] = []
    # Visible ones first: unmount each path until nothing is mounted on it.
    for _ in range(8):
        visible = [m for m in pinned(_mounts()) if m not in hidden(_mounts())]
        visible = [m for m in visible if Path(m.point).name.startswith(names)]
        if not visible:
            break
        for m in visible:
            _unmount(m.point)
    covered = hidden(_mounts())
    if covered:
        foreign = _foreign_entries()
        if foreign:
            problems.append(
                f"{len(covered)} pod network namespaces are covered by a later mount of "
                f"{NETNS_DIR}, which also holds {', '.join(foreign[:5])}: stop what uses those, "
                f"then `umount {NETNS_DIR}` and run `kfs cluster down` again"
            )
        else:
            # The cover holds nothing but ours: take it away to reach what it hides.
            for _ in range(len(covers(_mounts()))):
                if not hidden(_mounts()):
                    break
                _unmount(str(NETNS_DIR))
                for m in pinned(_mounts()):
                    if m not in hidden(_mounts()):
                        _unmount(m.point)
    for entry in NETNS_DIR.glob("*") if NETNS_DIR.is_dir() else []:
        if entry.name.startswith(names) and not _mount_count(str(entry)):
            with contextlib.suppress(OSError):
                entry.unlink()
    release(holder)
    return problems


def release(holder: str) -> None:
    """``holder`` no longer relies on the mount point; the last one undoes what
    ``ensure_mount_point`` did, unless something else is there now."""
    with _record() as rec:
        if rec is None:
            return
        rest = _holders(rec) - {holder}
        if rest:
            _write({**rec, "holders": sorted(rest)})
            return
        if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
            if rec.get("mounted") and covers(_mounts()):
                _unmount(str(NETNS_DIR))
            if rec.get("created_dir") and not covers(_mounts()):
                with contextlib.suppress(OSError):
                    NETNS_DIR.rmdir()
        record_path().unlink(missing_ok=True)


def leftovers() -> list[str]:
    """Our namespaces still pinned or present under ``/run/netns``."""
    out = {m.point for m in pinned(_mounts())}
    if NETNS_DIR.is_dir():
        out |= {str(p) for p in NETNS_DIR.glob("cni-*")}
    return sorted(out)
