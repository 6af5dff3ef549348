"""Where the embedded cluster's binaries come from: built here from Go modules,
cached under a directory keyed by version so that only the first build is slow."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from failure_stories.core import paths
from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.host import commands

KUBERNETES_VERSION = "v1.34.4"
KWOK_VERSION = "v0.7.0"
CRICTL_VERSION = "v1.34.0"
KIND_VERSION = "v0.30.0"
COREDNS_VERSION = "v1.12.1"
K8S_COMMANDS = (
    "etcd",
    "kubeadm",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)


def cache_dir() -> Path:
    return Path(os.environ.get("KFS_CACHE", "~/.cache/kfs")).expanduser()


def k8s_dir() -> Path:
    return cache_dir() / f"k8s-{KUBERNETES_VERSION}"


# Small tools that install with a plain `go install`: command -> (module path, version).
GO_INSTALLS = {
    "kwok": ("sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", CRICTL_VERSION),
    "kind": ("sigs.k8s.io/kind", KIND_VERSION),
}
# Built only when the kind node image is (it holds a CoreDNS image), not by `make
# setup`; static, because that image has nothing but the binary.
IMAGE_GO_INSTALLS = {
    "coredns": ("github.com/coredns/coredns", COREDNS_VERSION),
}


def path(command: str) -> Path:
    for table in (GO_INSTALLS, IMAGE_GO_INSTALLS):
        if command in table:
            return cache_dir() / f"{command}-{table[command][1]}" / command
    return k8s_dir() / command


def kind() -> Path:
    """The kind binary (`make setup` builds it), built from sigs.k8s.io/kind at KIND_VERSION."""
    ensure()
    return path("kind")


def ensure_image_tool(command: str) -> Path:
    """A binary only an image needs (IMAGE_GO_INSTALLS), built once into the cache."""
    found = path(command)
    if not os.access(found, os.X_OK):
        module, version = IMAGE_GO_INSTALLS[command]
        _run(
            ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{module}@{version}"],
            f"install {command}",
            env={"GOBIN": str(found.parent), "CGO_ENABLED": "0"},
            log_name=command,
        )
    return found


def missing() -> list[str]:
    return [c for c in (*K8S_COMMANDS, *GO_INSTALLS) if not os.access(path(c), os.X_OK)]


def ensure(build: bool = True) -> None:
    """Build what is missing (slow, once) or say how to get it."""
    todo = missing()
    if not todo:
        return
    if not build:
        raise MissingToolError(
            ", ".join(todo), "run `make setup` to build the embedded cluster's binaries"
        )
    if shutil.which("go") is None:
        raise MissingToolError(
            "go", "install Go 1.24 or newer (the embedded cluster builds from source)"
        )
    need = (K8S_BYTES if any(c in K8S_COMMANDS for c in todo) else 0) + GO_INSTALL_BYTES * sum(
        c in GO_INSTALLS for c in todo
    )
    check_space(need, "the embedded cluster's binaries")
    if any(c in K8S_COMMANDS for c in todo):
        script = paths.BUILD / "k8s" / "build.sh"
        _run([str(script), str(k8s_dir())], "build Kubernetes components", log_name="k8s")
    for command, (module, version) in GO_INSTALLS.items():
        if command in todo:
            _run(
                ["go", "install", f"{module}@{version}"],
                f"install {command}",
                env={"GOBIN": str(path(command).parent)},
                log_name=command,
            )


# What the builds leave in the cache (measured: 560 MB of Kubernetes binaries, kwok
# 118 MB), with room for the one being linked.
K8S_BYTES = 700 * 2**20
GO_INSTALL_BYTES = 150 * 2**20


def check_space(need: int, what: str) -> None:
    """Refuse, before a long build starts, a cache that cannot hold its result: a
    full disk would otherwise end minutes later with an empty log."""
    cache = cache_dir()
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise ProviderError(
            f"not enough space under KFS_CACHE {cache} for {what} ({free / 2**20:.0f} MB "
            f"free, about {need / 2**20:.0f} MB needed): free some space or point KFS_CACHE "
            "at a larger disk"
        )


def log_path(name: str) -> Path:
    return cache_dir() / "logs" / f"build-{name}.log"


def current_step(log_text: str, default: str) -> str:
    """The last "building NAME (i/n)" line build.sh printed, or ``default``."""
    for line in reversed(log_text.splitlines()):
        if line.startswith("building ") and line.endswith(")"):
            return line[len("building ") :]
    return default


def _run(
    argv: list[str],
    what: str,
    log_name: str,
    env: dict[str, str] | None = None,
    say: Callable[[str], None] | None = None,
    every: float | None = None,
) -> None:
    """Run a long build with its output in a log, saying what it is doing meanwhile.

    A build of many minutes must not look hung: a line every few seconds on a
    terminal (rewritten in place), every 30 s otherwise, so CI logs show it too."""
    log = log_path(log_name)
    log.parent.mkdir(parents=True, exist_ok=True)
    tty = sys.stderr.isatty()
    if say is None:
        say = (
            (lambda m: print(f"\r\033[K{m}", end="", file=sys.stderr, flush=True))
            if tty
            else (lambda m: print(m, file=sys.stderr, flush=True))
        )
    every = every if every is not None else (5.0 if tty else 30.0)
    start = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every):
            doing = current_step(log.read_text(errors="replace"), log_name)
            say(f"prepare: {what}: {doing}, {_clock(time.monotonic() - start)} so far (log: {log})")

    print(f"prepare: {what} (log: {log})", file=sys.stderr, flush=True)
    log.write_text("")  # the reporter reads it from the start
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        commands.run(argv, what=what, log_file=log, env={**os.environ, **(env or {})}, timeout=None)
    finally:
        stop.set()
        reporter.join()
        if tty:
            print(file=sys.stderr)
    print(f"prepare: {what}: done in {_clock(time.monotonic() - start)}", file=sys.stderr)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
