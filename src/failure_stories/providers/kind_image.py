"""What the kind provider needs on this host, each built or started once:
the kind binary, a Docker engine, and the offline node image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from failure_stories.host import docker_engine
from failure_stories.images.kind_node import BINARIES, NodeInputs, build_node_image
from failure_stories.providers.local import binaries


def kind_binary() -> Path:
    """sigs.k8s.io/kind at binaries.KIND_VERSION, built by `make setup`."""
    return binaries.kind()


def node_inputs() -> NodeInputs:
    binaries.ensure()
    tools = {name: binaries.path(name) for name in BINARIES}
    tools["coredns"] = binaries.ensure_image_tool("coredns")
    return NodeInputs(tools=tools)


def ensure_node_image(log: Callable[[str], None] = print) -> str:
    """The node image's ref, built offline into the Docker engine if missing or stale."""
    docker_engine.ensure_engine()
    return build_node_image(node_inputs(), docker_engine.docker(), log=log)
