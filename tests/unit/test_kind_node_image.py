"""The kind node image's cache key and its version checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.images import kind_node


def _inputs(tmp_path: Path) -> kind_node.NodeInputs:
    tools = {}
    for name in (*kind_node.BINARIES, "coredns"):
        path = tmp_path / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
        tools[name] = path
    files = tmp_path / "kind-node"
    (files / "files").mkdir(parents=True)
    (files / "cni").mkdir()
    (files / "files" / "entrypoint").write_text("#!/bin/sh\n")
    (files / "cni" / "kfs_cni.py").write_text("print()\n")
    agent = tmp_path / "masq_agent.py"
    agent.write_text("print('agent')\n")
    return kind_node.NodeInputs(tools=tools, files=files, masq_agent=agent)


def test_key_is_stable_and_follows_every_input(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    key, preload = kind_node.node_key(inputs), kind_node.preload_key(inputs)
    assert kind_node.node_key(inputs) == key

    (inputs.files / "files" / "entrypoint").write_text("#!/bin/sh\necho changed\n")
    assert kind_node.node_key(inputs) != key
    # The entrypoint is not in /var/lib/containerd: the big preload layer stays cached.
    assert kind_node.preload_key(inputs) == preload

    key = kind_node.node_key(inputs)
    inputs.tools["etcd"].write_bytes(b"another etcd")
    assert kind_node.preload_key(inputs) != preload
    assert kind_node.node_key(inputs) != key

    key, preload = kind_node.node_key(inputs), kind_node.preload_key(inputs)
    inputs.tools["kubelet"].write_bytes(b"another kubelet")
    assert kind_node.preload_key(inputs) == preload
    assert kind_node.node_key(inputs) != key


def test_key_ignores_a_group_write_bit_but_not_the_exec_bit(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    entry = inputs.files / "files" / "entrypoint"
    key = kind_node.node_key(inputs)
    entry.chmod(0o664)
    assert kind_node.node_key(inputs) == key
    entry.chmod(0o744)
    assert kind_node.node_key(inputs) != key


def test_the_node_image_follows_the_masquerade_agent(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    assert inputs.masq_source() == inputs.masq_agent
    key = kind_node.preload_key(inputs)
    inputs.masq_agent.write_text("print('changed agent')\n")
    assert kind_node.preload_key(inputs) != key


def test_a_binary_of_another_version_is_never_tagged(tmp_path: Path, monkeypatch) -> None:
    inputs = _inputs(tmp_path)
    answers = {
        "etcd": "etcd Version: 3.6.4\nGit SHA: x\n",
        "coredns": "CoreDNS-1.12.1\n",
        "kubelet": "Kubernetes v1.34.4\n",
    }
    monkeypatch.setattr(kind_node.commands, "run", lambda argv, **kw: answers[Path(argv[0]).name])
    with pytest.raises(kind_node.ProviderError, match=r"etcd 3\.6\.4.*wants 3\.6\.5-0"):
        kind_node.check_versions(inputs.tools)
    answers["etcd"] = "etcd Version: 3.6.5\n"
    kind_node.check_versions(inputs.tools)
