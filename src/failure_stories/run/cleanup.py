"""`kfs cleanup`: find and remove what interrupted or crashed runs left behind.

Everything a run creates is findable: Kubernetes objects carry the kfs
managed-by label, node-level changes use the KFS- / kfs-ext- name prefixes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

from kubernetes.client.rest import ApiException

from failure_stories.core.errors import ClusterUnreachableError, KfsError
from failure_stories.host import docker_engine
from failure_stories.host.locks import FileLocks, LockBackend, remove_all
from failure_stories.providers import snat
from failure_stories.providers.agent.objects import AGENT_LABEL
from failure_stories.providers.base import Provider
from failure_stories.providers.kube import KFS, MANAGED_BY, RUN_LABEL, Kube
from failure_stories.providers.leases import LeaseLocks

# Cluster-scoped kinds a scenario may create (admission policies, CRDs...).
CLUSTER_KINDS = (
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("v1", "PersistentVolume"),
)


def sweep(provider: Provider) -> list[str]:
    """`kfs cleanup`: everything kfs-labelled whose run is over, the node's
    leftovers, and the Docker engine kfs started once nothing runs in it."""
    done = _sweep(provider, None, node_level=True)
    done += docker_engine.cleanup_if_idle()
    # The sweep's own node lock files (and any other no process holds) go too:
    # an unheld flock file says nothing, and a host without a cluster is left
    # as a new machine has it.
    remove_all(strict=False)
    return done or ["nothing to clean up"]


def revert_run(provider: Provider, namespaces: Collection[str], node_level: bool) -> list[str]:
    """Undo what one dead run left: its namespaces, the cluster-scoped objects it
    applied (labelled with its namespace) and, if its fault was node-level, the
    node's leftovers (swept under the node lock, so no live run loses its own)."""
    return _sweep(provider, set(namespaces), node_level=node_level)


def _sweep(provider: Provider, only: set[str] | None, node_level: bool) -> list[str]:
    done: list[str] = []
    selector = f"{MANAGED_BY}={KFS}"
    try:
        locks = provider.locks()
    except KfsError as exc:  # kept on the cluster: without it nothing can be judged
        return [f"cluster not reachable, nothing swept: it keeps the run locks ({_line(exc)})"]
    try:
        kube = provider.kube()
        active = _run_active(locks, kube)
        for ns in kube.core.list_namespace(label_selector=selector).items:
            name = ns.metadata.name
            labels = ns.metadata.labels or {}
            if AGENT_LABEL in labels and node_level:
                continue  # reverted with the node's changes below: it holds their journal
            run = labels.get(RUN_LABEL, name)  # an agent's namespace names its run
            if only is not None and run not in only:
                continue
            if active(run):
                done.append(f"kept namespace {name}: its run is in progress")
                continue
            kube.core.delete_namespace(name)
            done.append(f"deleted namespace {name}")
        for api_version, kind in CLUSTER_KINDS:
            resource = kube.dynamic.resources.get(api_version=api_version, kind=kind)
            for obj in resource.get(label_selector=selector).items:
                run = (obj.metadata.labels or {}).get(RUN_LABEL)
                if (only is not None and run not in only) or (run and active(run)):
                    continue
                resource.delete(name=obj.metadata.name)
                done.append(f"deleted {kind} {obj.metadata.name}")
        done += snat.restore_dead(kube, lambda run: not active(run), only)
    except (KfsError, ApiException) as exc:
        done.append(f"cluster not reachable, skipped its objects ({_line(exc)})")
    try:
        for namespace in locks.sweep_run_locks(only):
            done.append(f"removed the stale lock of run {namespace}")
    except (KfsError, ApiException) as exc:
        done.append(f"could not sweep stale run locks ({_line(exc)})")
    if not node_level:
        return done
    # Node-level leftovers are only swept while no run is changing the node.
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                locks.held("node", "runs that change the node to finish", timeout=600)
            )
        except (ClusterUnreachableError, ApiException) as exc:
            done.append(f"skipped the node's leftovers: cannot take the node lock ({_line(exc)})")
            return done
        for name in provider.sweep_node_changes(only):
            done.append(f"removed {name}")
    return done


def _run_active(locks: LockBackend, kube: Kube) -> Callable[[str], bool]:
    """Whether a run is live, by its lock in either backend: one cluster can be
    driven both ways from this machine (the embedded cluster's runs keep flock()
    files; the existing provider pointed at that cluster keeps Leases), and a
    cleanup through one must never take the other's live runs for dead."""
    others: list[LockBackend] = (
        [FileLocks()] if isinstance(locks, LeaseLocks) else [LeaseLocks(kube)]
    )

    def active(run: str) -> bool:
        if locks.run_active(run):
            return True
        try:
            return any(other.run_active(run) for other in others)
        except (KfsError, ApiException):
            return False  # a cluster without Leases (or RBAC for them) has no such runs

    return active


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def reset(provider: Provider) -> list[str]:
    """`kfs cluster reset`: the cluster down, then the lock records of every run
    gone, so the host holds nothing of kfs but its build caches - what a new
    machine has. Refused while another kfs process holds a lock."""
    provider.down()
    done = [f"{provider.name} cluster deleted with its state"]
    removed = remove_all()
    if removed:
        done.append(f"removed {len(removed)} lock records")
    return done
