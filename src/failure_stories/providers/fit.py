"""Does a cluster kfs did not build have what a story needs? Answered before the
run starts, in one line that says what is missing and where: enough schedulable
nodes, nodes that run containers (a node agent cannot live on a simulated
one), the masq agent as the SNAT owner for a story that changes pod egress
(kfs deploys none on a cluster it did not build), and the user's right to
create namespaces, pods and pods/exec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubernetes import client

from failure_stories.core.errors import GuardRefusedError, ProviderError
from failure_stories.providers import snat

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario
    from failure_stories.providers.kube import Kube

# What every run does with the user's credentials (namespaced verbs are asked
# cluster-wide, since the run's namespace does not exist yet).
RIGHTS = (
    ("", "namespaces", "", "create"),
    ("", "pods", "", "create"),
    ("", "pods", "exec", "create"),
)


def simulated(node: Any) -> bool:
    """A node whose pods are only status (kwok): nothing runs on it."""
    annotations = node.metadata.annotations or {}
    version = (node.status.node_info.kubelet_version or "") if node.status.node_info else ""
    return "kwok.x-k8s.io/node" in annotations or version.startswith("kwok")


def schedulable(node: Any) -> bool:
    if node.spec.unschedulable:
        return False
    return not any(t.effect in ("NoSchedule", "NoExecute") for t in node.spec.taints or [])


def check(kube: Kube, scenario: Scenario, context: str, node_abilities: tuple[str, ...]) -> None:
    _check_rights(kube, context)
    nodes = [n for n in kube.core.list_node().items if schedulable(n)]
    need = scenario.meta.min_nodes
    if len(nodes) < need:
        raise ProviderError(
            f"{scenario.id} needs {need} schedulable nodes; context {context} has {len(nodes)}"
        )
    if "node-failure" in scenario.meta.needs:
        real = [n.metadata.name for n in nodes if not simulated(n)]
        if len(real) < need:
            fake = sorted(n.metadata.name for n in nodes if simulated(n))
            raise ProviderError(
                f"{scenario.id} fails nodes through the node agent, which needs {need} "
                f"schedulable nodes that run containers; context {context} has {len(real)}"
                + (f" ({', '.join(fake)} are simulated)" if fake else "")
            )
    if "egress-snat" in scenario.meta.needs and snat.find(kube) is None:
        raise GuardRefusedError(
            f"{scenario.id} changes the node's pod-egress SNAT through kfs's masq agent "
            f"(images/workloads/{snat.SCRIPT}, ip-masq-agent's config), and no DaemonSet of "
            f"context {context} runs it: run the agent as your SNAT owner, or skip this story"
        )
    if any(n in node_abilities for n in scenario.meta.needs) and all(simulated(n) for n in nodes):
        raise ProviderError(
            f"{scenario.id} reaches a node through the node agent, but every schedulable node "
            f"of context {context} is simulated"
        )


def _check_rights(kube: Kube, context: str) -> None:
    api = client.AuthorizationV1Api(kube.api)
    missing = []
    for group, resource, sub, verb in RIGHTS:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    group=group, resource=resource, subresource=sub or None, verb=verb
                )
            )
        )
        if not api.create_self_subject_access_review(review).status.allowed:
            missing.append(f"{verb} {resource}{'/' + sub if sub else ''}")
    if missing:
        raise GuardRefusedError(
            f"your credentials in context {context} may not {', '.join(missing)}: every story "
            "creates its namespace and pods and execs into them (JW Player's attack, the probes)"
        )
