"""Finding the node's SNAT owner by the DaemonSet container that runs kfs's masq
agent, and reading its chain and ConfigMap from that container's arguments; an
existing cluster that runs none is refused before a run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kubernetes import client

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import GuardRefusedError
from failure_stories.providers import fit, snat
from failure_stories.providers.local import masq_addon


def test_the_local_addon_is_found_with_its_chain_and_configmap():
    (ds,) = [o for o in masq_addon.objects("img") if o["kind"] == "DaemonSet"]
    containers = ds["spec"]["template"]["spec"]["containers"]
    assert snat.owner_of("kube-system", ds["metadata"]["name"], containers) == snat.SnatOwner(
        "kube-system", "kfs-masq-agent", "KFS-MASQ-AGENT", "kube-system", "kfs-masq-agent"
    )


@pytest.mark.parametrize(
    ("container", "chain", "configmap"),
    [
        # kind's CNI DaemonSet: the agent beside the CNI agent, args apart from command.
        (
            {
                "command": ["python3", "/opt/kfs/workloads/masq_agent.py"],
                "args": ["--chain=KIND-MASQ-AGENT", "--configmap", "kube-system/kind-masq"],
            },
            "KIND-MASQ-AGENT",
            "kube-system/kind-masq",
        ),
        (
            {"command": ["sh", "-c", "exec python3 masq_agent.py --chain X --configmap ns/cm"]},
            "X",
            "ns/cm",
        ),
    ],
)
def test_flags_are_read_in_either_form_and_through_a_shell(container, chain, configmap):
    owner = snat.owner_of("kube-system", "kindnet", [{"command": ["kindnetd"]}, container])
    assert owner is not None
    assert (owner.chain, f"{owner.configmap_namespace}/{owner.configmap}") == (chain, configmap)


@pytest.mark.parametrize(
    "container",
    [
        {"command": ["ip-masq-agent", "--masq-chain", "IP-MASQ-AGENT"]},  # not ours
        {"command": ["python3", "masq_agent.py", "--chain", "X"]},  # no ConfigMap named
        {"command": ["python3", "masq_agent.py", "--chain", "X", "--configmap", "nons"]},
    ],
)
def test_other_agents_and_incomplete_arguments_are_no_owner(container):
    assert snat.owner_of("kube-system", "ds", [container]) is None


def test_config_text_is_the_agents_format():
    assert snat.config_text(["10.244.0.0/16", "10.96.0.0/16"]) == (
        "nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16]\n"
        "masqLinkLocal: false\nresyncInterval: 1s\n"
    )


class _Kube:
    """What fit.check reads: the nodes and the DaemonSets (as the API lists them)."""

    def __init__(self, daemonsets: list[dict]) -> None:
        node = client.V1Node(
            metadata=client.V1ObjectMeta(name="n1", annotations={}),
            spec=client.V1NodeSpec(),
            status=client.V1NodeStatus(),
        )
        self.core = SimpleNamespace(list_node=lambda: SimpleNamespace(items=[node]))
        self.apps = SimpleNamespace(list_daemon_set_for_all_namespaces=lambda: daemonsets)
        self.api = SimpleNamespace(sanitize_for_serialization=lambda d: {"items": d})


def test_an_existing_cluster_without_the_masq_agent_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(fit, "_check_rights", lambda kube, context: None)
    story = scenarios.get("mindtickle-external-snat")
    aws_node = {"metadata": {"namespace": "kube-system", "name": "aws-node"}, "spec": {
        "template": {"spec": {"containers": [{"command": ["/app/aws-vpc-cni"]}]}}}}  # fmt: skip
    with pytest.raises(GuardRefusedError) as refused:
        fit.check(_Kube([aws_node]), story, "prod-lab", ())  # type: ignore[arg-type]
    (line,) = str(refused.value).splitlines()
    assert "no DaemonSet of context prod-lab runs it" in line
    (ds,) = [o for o in masq_addon.objects("img") if o["kind"] == "DaemonSet"]
    fit.check(_Kube([aws_node, ds]), story, "prod-lab", ())  # type: ignore[arg-type]
