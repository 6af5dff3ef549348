"""The toolbox's base layer: a debootstrapped Debian rootfs, made small and
free of build-host details, and the host tools and mirror the build needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.host import commands
from failure_stories.images.cache import RECIPE_VERSION, _remove, prune
from failure_stories.images.oci import (
    Blob,
    Log,
    _debian_arch,
    _sha256_json,
    write_layer,
)

DEBIAN_SUITE = "bookworm"


TOOLBOX_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "curl",
    "iproute2",
    "iptables",
    "procps",
    "python3",
    "redis-server",
    "redis-tools",
)


def base_key(packages: tuple[str, ...] | None = None) -> str:
    """Key of a debootstrapped rootfs layer (the toolbox's unless ``packages`` are
    given): only the recipe, never the workloads."""
    return _sha256_json(
        {
            "recipe": RECIPE_VERSION,
            "suite": DEBIAN_SUITE,
            "arch": _debian_arch(),
            "variant": "minbase",
            "packages": sorted(TOOLBOX_PACKAGES if packages is None else packages),
        }
    )


# debootstrap lives in /usr/sbin, which a non-login root shell often lacks in PATH.
_SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def _require(tool: str, how: str) -> str:
    found = shutil.which(tool)
    if found is None:
        for d in _SBIN_DIRS:
            candidate = Path(d) / tool
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise MissingToolError(tool, how)
    return found


def debian_mirror(
    suite: str = DEBIAN_SUITE, apt_dir: Path = Path("/etc/apt")
) -> tuple[str, str | None]:
    """The URI (and keyring, if any) apt is configured to use for ``suite``.

    Read from apt's own config at run time so that the mirror is whatever this
    machine was set up with, never a host written into the repository.
    """
    override = os.environ.get("KFS_DEBIAN_MIRROR")
    if override:
        return override, None
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for src in sources:
        for stanza in re.split(r"\n\s*\n", src.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if suite in fields.get("suites", "").split() and fields.get("uris"):
                keyring = fields.get("signed-by")
                if keyring is not None and not keyring.startswith("/"):
                    keyring = None  # an inline key block; debootstrap cannot take it
                return fields["uris"].split()[0], keyring.split()[0] if keyring else None
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for lst in lists:
        if not lst.is_file():
            continue
        for line in lst.read_text().splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1], None
    raise ProviderError(
        f"no apt source for Debian {suite} in {apt_dir}; set KFS_DEBIAN_MIRROR to a mirror URI"
    )


def _apt_proxy_env() -> dict[str, str]:
    """debootstrap downloads with wget, which ignores apt's proxy setting; pass it on."""
    env = dict(os.environ)
    if "http_proxy" in env or shutil.which("apt-config") is None:
        return env
    out = commands.run(["apt-config", "shell", "P", "Acquire::http::Proxy"], check=False)
    m = re.match(r"P='(.*)'", out.strip())
    if m and m.group(1) and m.group(1).upper() != "DIRECT":
        env["http_proxy"] = m.group(1)
    return env


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix) or target == prefix[:-1]:
            found.append(target)
    return found


def _safe_rmtree(path: Path) -> None:
    """Remove a chroot, unmounting first.

    debootstrap mounts /proc and /sys (and in some containers bind-mounts the
    host's /dev) inside the target; it normally undoes that, but after a crash
    an rmtree would walk into the host's /dev. Refuse rather than risk it.
    """
    if not path.exists():
        return
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        commands.run(["umount", "-l", target], check=False)
    left = _mounts_under(path)
    if left:
        raise ProviderError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


def _clean_rootfs(root: Path) -> None:
    """Make the debootstrap result small and free of build-host details."""
    commands.run(["chroot", str(root), "apt-get", "clean"], check=False)
    for rel in (
        "var/lib/apt/lists",
        "usr/share/man",
        "usr/share/info",
        "usr/share/lintian",
        "usr/share/locale",
        "tmp",
        "var/tmp",
    ):
        d = root / rel
        if d.is_dir():
            for child in d.iterdir():
                _remove(child)
    # Logs and the .deb cache lose their files but keep their directories:
    # packages own some of them (/var/log/redis belongs to the redis user).
    for rel in ("var/log", "var/cache/apt"):
        d = root / rel
        if d.is_dir():
            for f in d.rglob("*"):
                if not f.is_dir() or f.is_symlink():
                    f.unlink()
    # Docs go, but each package's copyright file stays: it is the licence notice.
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for pkg in doc.iterdir():
            if pkg.is_dir() and not pkg.is_symlink():
                for child in pkg.iterdir():
                    if child.name != "copyright":
                        _remove(child)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    for leftover in [*root.glob("var/cache/debconf/*-old"), *root.glob("var/lib/dpkg/*-old")]:
        leftover.unlink()
    # debootstrap copies the host's resolv.conf and hostname; the runtime
    # mounts its own over these, so empty files are what an image should hold.
    for rel in ("etc/resolv.conf", "etc/hostname"):
        f = root / rel
        if f.is_symlink() or f.exists():
            f.unlink()
        f.write_text("")
        f.chmod(0o644)
    # The mirror debootstrap used is a detail of this build machine, and with
    # the lists removed apt could not use it anyway.
    (root / "etc/apt/sources.list").write_text(
        "# kfs toolbox: built offline from a debootstrap; add a source to use apt.\n"
    )
    # Keep later `apt-get install`s inside the image from bringing the docs back.
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/kfs-nodoc").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\n"
    )


def build_base_layer(
    cache: Path,
    log: Log = print,
    *,
    packages: tuple[str, ...] | None = None,
    name: str = "base",
) -> Blob:
    """The cleaned debootstrap rootfs as layer tarball, built once per base_key().

    The toolbox's by default; another image's (the kind node's) with its own
    ``packages`` and file ``name`` prefix, so that neither prunes the other."""
    include = TOOLBOX_PACKAGES if packages is None else packages
    what = "toolbox base" if name == "base" else name
    key = base_key(include)
    layer = cache / f"{name}-{key[:16]}.layer.tar"
    meta = cache / f"{name}-{key[:16]}.layer.json"
    if layer.is_file() and meta.is_file():
        recorded = json.loads(meta.read_text())
        log(f"{what}: cached ({layer.name})")
        return Blob(layer, str(recorded["digest"]), int(recorded["size"]))

    debootstrap = _require("debootstrap", "apt-get install debootstrap")
    _require("chroot", "apt-get install coreutils")
    if os.geteuid() != 0:
        raise ProviderError(f"building the {what} needs root (debootstrap); run as root")
    mirror, keyring = debian_mirror()
    work = cache / f"rootfs-{key[:16]}.tmp"
    _safe_rmtree(work)
    work.mkdir(parents=True)
    cmd = [
        debootstrap,
        "--variant=minbase",
        "--include=" + ",".join(sorted(include)),
        "--components=main",
        f"--arch={_debian_arch()}",
    ]
    if keyring is not None and Path(keyring).is_file():
        cmd.append(f"--keyring={keyring}")
    cmd += [DEBIAN_SUITE, str(work), mirror]
    log_file = cache / "logs" / ("debootstrap.log" if name == "base" else f"debootstrap-{name}.log")
    log(
        f"{what}: debootstrap {DEBIAN_SUITE} with {len(include)} packages "
        f"(about a minute; log: {log_file})"
    )
    started = time.time()
    try:
        # Anything touched from here on was made by this build, so gets FIXED_MTIME.
        built_since = started - 1
        commands.run(
            cmd,
            what="debootstrap",
            log_file=log_file,
            redact=mirror,
            env=_apt_proxy_env(),
            timeout=None,
        )
        log(f"{what}: debootstrap took {time.time() - started:.0f}s; cleaning and packing")
        _clean_rootfs(work)
        blob = write_layer(
            work, layer, built_since=built_since, skip_contents_of=("dev", "proc", "sys")
        )
    finally:
        _safe_rmtree(work)
    meta.write_text(json.dumps({"digest": blob.digest, "size": blob.size}))
    prune(cache, f"{name}-*.layer.*", {layer, meta})
    log(f"{what}: {blob.size / 1e6:.0f} MB layer {blob.digest[:19]}")
    return blob
