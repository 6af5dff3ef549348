"""One run's node agent: commands in a node's namespaces, the kubelet frozen and
thawed, outside hosts, each change journalled on the cluster first.

The journal is a ConfigMap in the agent's namespace. An entry is written
before its change is made and removed once it is undone, so what a crashed run
left is always listed there; `revert` (from `kfs cleanup`, on any machine)
undoes the entries of runs that are over."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable, Collection
from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.core import timing
from failure_stories.core.errors import GuardRefusedError, ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import iptables, netns
from failure_stories.providers import node_cgroups, snat
from failure_stories.providers.agent import objects
from failure_stories.providers.agent.scripts import THAW_ANNOTATION, WATCHDOG
from failure_stories.providers.kube import RUN_LABEL, Kube

JOURNAL = "kfs-node-changes"
IMAGE_ANNOTATION = "kfs.dev/agent-image"
# The node's own namespaces are the kubelet's (PID 1 may refuse to be entered,
# and on a kind node it is the node container's init anyway): found afresh
# for every command, so a restarted kubelet is followed.
IN_NODE = [
    "sh",
    "-c",
    'exec nsenter -t "$(pgrep -o -x kubelet)" -m -u -i -n -p -- "$@"',
    "in-node",
]
# A failed node comes back by itself after this long, even if kfs died.
FREEZE_DEADLINE = float(os.environ.get("KFS_NODE_FAILURE_DEADLINE", "300"))
STOP_DELAY = 1.0


def _key(kind: str, ident: str) -> str:
    return f"{kind}.{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


class NodeAgent:
    def __init__(
        self, kube: Kube, run_namespace: str, image: str, log: Callable[[str], None] = print
    ) -> None:
        self.kube = kube
        self.run_namespace = run_namespace
        self.namespace = objects.namespace_name(run_namespace)
        self.image = image
        self.log = log
        self._set_up = False
        self._ready: set[str] = set()
        self._frozen: dict[str, dict[str, Any]] = {}
        self._keys: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------
    def set_up(self) -> None:
        """The agent's namespace, service account and journal; refused in one line,
        before anything changes on a node, if the cluster's policy forbids the agent."""
        if self._set_up:
            return
        self.kube.apply(objects.setup_objects(self.namespace, self.run_namespace), None)
        journal = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            # The image is kept for `kfs cleanup`, which may start the agent again.
            "metadata": {"name": JOURNAL, "annotations": {IMAGE_ANNOTATION: self.image}},
        }
        self.kube.apply([journal], self.namespace)
        self._set_up = True
        probe = objects.pod(self.namespace, self.run_namespace, "probe", self.image)
        refusal = self.kube.dry_run_admission(probe, self.namespace)
        if refusal is not None:
            self.tear_down()  # nothing half-made stays behind
            raise GuardRefusedError(
                "this cluster refuses the node agent (a privileged pod with the host's PID "
                f"and network namespaces): {refusal.splitlines()[0]}; allow it in namespaces "
                "labelled kfs.dev/node-agent, or run the story on a cluster that does"
            )

    def tear_down(self) -> None:
        """Thaw what is still frozen, then delete the agent with its namespace (and
        the outside hosts pinned in it). The story's own teardown has undone its
        node changes by then; KFS-* chains are swept only by `kfs cleanup`, under
        the node lock, since a live run beside this one may own some."""
        if not self._set_up:
            return
        revert_namespace(self.kube, self.namespace, sweep_nodes=False, log=self.log)
        self._set_up = False
        self._ready.clear()

    # -- reaching a node --------------------------------------------------------------
    def _pod(self, node: str) -> str:
        name = objects.pod_name(node)
        if node in self._ready:
            return name
        self.set_up()
        spec = objects.pod(
            self.namespace, self.run_namespace, node, self.image, " ".join(self._api_servers())
        )
        self.kube.apply([spec], None)

        def running() -> bool:
            pod = self.kube.core.read_namespaced_pod(name, self.namespace)
            if pod.status.phase in ("Failed", "Succeeded"):
                raise ProviderError(f"the node agent on {node} exited ({pod.status.phase})")
            return bool(pod.status.phase == "Running")

        wait_for(running, what=f"the node agent on {node} to run", timeout=120, interval=0.5)
        code, out, err = self.kube.exec(self.namespace, name, ["true"], timeout=30)
        if code != 0:
            raise ProviderError(
                f"the node agent on {node} cannot be reached ({(err or out).strip()[:200]}): "
                "does this node run containers (a simulated node does not)?"
            )
        self._ready.add(node)
        return name

    def _api_servers(self) -> list[str]:
        """Where the agent reaches the API server to learn of a thaw: as kfs does, then
        at the `kubernetes` Service's endpoints. kfs may itself run in a pod and use the
        Service address, which a host-network pod may have no route to."""
        servers = [str(self.kube.api.configuration.host)]
        try:
            eps = self.kube.core.read_namespaced_endpoints("kubernetes", "default")
        except ApiException:
            return servers  # not readable: the Service address stays the fallback
        for subset in eps.subsets or []:
            port = next((p.port for p in subset.ports or [] if p.name == "https"), None)
            for addr in subset.addresses or []:
                if port is not None:
                    url = f"https://{addr.ip}:{port}"
                    if url not in servers:
                        servers.append(url)
        return servers

    def in_agent(self, node: str, argv: list[str], check: bool = True, timeout: float = 120) -> str:
        """Run ``argv`` in the agent's container on ``node`` (the toolbox's programs,
        the node's network and PID namespaces)."""
        code, out, err = self.kube.exec(self.namespace, self._pod(node), argv, timeout=timeout)
        if check and code != 0:
            lines = [ln for ln in (err or out).splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit code {code}"
            raise ProviderError(
                f"on node {node}: {shlex.join(argv)[:200]} failed with exit code {code}: {last}"
            )
        return out

    @timing.timed(timing.EXEC)
    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        """Run ``argv`` in all of the node's own namespaces, with the node's programs."""
        self._journal(_key("shell", node), {"kind": "shell", "node": node})
        return self.in_agent(node, [*IN_NODE, *argv], check=check)

    # -- node failure: the kubelet frozen, with a deadline ----------------------------
    def freeze_kubelet(self, node: str, deadline: float = FREEZE_DEADLINE) -> None:
        pod = self._pod(node)
        found = self.in_agent(node, ["pgrep", "-o", "-x", "kubelet"], check=False).split()
        if not found:
            raise ProviderError(f"no kubelet process on node {node}")
        pid = int(found[0])
        start = self.in_agent(node, ["cut", "-d", " ", "-f", "22", f"/proc/{pid}/stat"]).strip()
        record = {"kind": "freeze", "node": node, "pod": pod, "pid": pid, "start": start}
        self._journal(_key("freeze", node), record)  # before the change, as every change
        # The watchdog sends SIGSTOP itself once this exec has answered, and
        # SIGCONT at the deadline: from here on the deadline holds, whatever
        # happens to kfs or the agent.
        watchdog = self.in_agent(
            node,
            [
                "sh",
                "-c",
                'setsid python3 -c "$0" "$@" </dev/null >/dev/null 2>&1 & echo $!',
                WATCHDOG,
                str(pid),
                start,
                str(STOP_DELAY),
                str(deadline),
            ],
        ).strip()
        record["watchdog"] = int(watchdog)
        self._journal(_key("freeze", node), record, update=True)
        wait_for(
            lambda: not self.answers(node),
            what=f"the kubelet of {node} to stop answering",
            timeout=30,
            interval=0.5,
        )
        self._frozen[node] = record
        self.log(f"node {node}: kubelet {pid} frozen (thawed by itself after {deadline:g}s)")

    def thaw_kubelet(self, node: str) -> None:
        record = self._frozen.pop(node, None) or self._journalled(_key("freeze", node))
        if record is None:
            return
        _request_thaw(self.kube, self.namespace, record)
        self._await_thaw(record)
        _clear_thaw(self.kube, self.namespace, record)
        self._forget(_key("freeze", node))

    def _await_thaw(self, record: dict[str, Any]) -> None:
        node = record["node"]
        wait_for(
            lambda: self.answers(node),
            what=f"the kubelet of {node} to answer again",
            timeout=FREEZE_DEADLINE + 30,
            interval=0.5,
        )
        # Its deadline has not come: it must not thaw a later freeze.
        if "watchdog" in record:  # absent if kfs died before it started
            self.in_agent(node, ["kill", str(record["watchdog"])], check=False)

    def answers(self, node: str) -> bool:
        """Whether the agent on ``node`` answers through its kubelet (a frozen one
        does not)."""
        try:
            self._pod(node)
            code, _, _ = self.kube.exec(self.namespace, objects.pod_name(node), ["true"], timeout=5)
        except Exception:  # any failure means "not yet"
            return False
        return code == 0

    # -- outside hosts ---------------------------------------------------------------
    def outside_host(self, node: str, subnet: str) -> netns.OutsideHost:
        """An outside host beside ``node``; its namespace is pinned in the agent's
        container, so it goes with the agent at the latest."""

        def run(argv: list[str], check: bool = True, timeout: float = 120) -> str:
            return self.in_agent(node, argv, check=check, timeout=timeout)

        def start(argv: list[str]) -> Callable[[], None]:
            spawn = 'setsid "$@" </dev/null >/dev/null 2>&1 & echo $!'
            pid = run(["sh", "-c", spawn, "sh", *argv]).strip()

            def stop() -> None:
                run(["kill", pid], check=False)

            return stop

        host = netns.create(subnet, run=run, start=start)
        key = _key("outside", host.name)
        self._journal(key, {"kind": "outside", "node": node, "name": host.name})
        delete = host.delete

        def delete_and_forget() -> None:
            delete()
            self._forget(key)

        host.delete = delete_and_forget  # type: ignore[method-assign]
        return host

    # -- cgroups ----------------------------------------------------------------------
    def read_cgroup(self, node: str, container_id: str, controller: str, filename: str) -> str:
        return node_cgroups.read(
            lambda argv: self.node_exec(node, argv), node, container_id, controller, filename
        )

    # -- the journal ------------------------------------------------------------------
    def _journal(self, key: str, record: dict[str, Any], update: bool = False) -> None:
        self.set_up()
        if key in self._keys and not update:
            return
        self.kube.core.patch_namespaced_config_map(
            JOURNAL, self.namespace, {"data": {key: json.dumps(record)}}
        )
        self._keys.add(key)

    def _journalled(self, key: str) -> dict[str, Any] | None:
        return _read_journal(self.kube, self.namespace).get(key)

    def _forget(self, key: str) -> None:
        self.kube.core.patch_namespaced_config_map(JOURNAL, self.namespace, {"data": {key: None}})
        self._keys.discard(key)


def _read_journal(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    cm = _journal_map(kube, namespace)
    return {k: json.loads(v) for k, v in ((cm.data if cm else None) or {}).items()}


def _journal_map(kube: Kube, namespace: str) -> Any:
    try:
        return kube.core.read_namespaced_config_map(JOURNAL, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _set_thaw(kube: Kube, namespace: str, record: dict[str, Any], value: str | None) -> None:
    try:
        kube.core.patch_namespaced_pod(
            record["pod"], namespace, {"metadata": {"annotations": {THAW_ANNOTATION: value}}}
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def _request_thaw(kube: Kube, namespace: str, record: dict[str, Any]) -> None:
    _set_thaw(kube, namespace, record, f"{record['pid']}:{record['start']}")


def _clear_thaw(kube: Kube, namespace: str, record: dict[str, Any]) -> None:
    _set_thaw(kube, namespace, record, None)


def agent_namespaces(kube: Kube) -> dict[str, str]:
    """Every node agent's namespace on the cluster -> the run it serves."""
    found = kube.core.list_namespace(label_selector=f"{objects.AGENT_LABEL}=true").items
    return {ns.metadata.name: (ns.metadata.labels or {}).get(RUN_LABEL, "") for ns in found}


def revert_namespace(
    kube: Kube, namespace: str, sweep_nodes: bool, log: Callable[[str], None] = print
) -> list[str]:
    """Undo every journalled change of one agent namespace, then delete it.

    ``sweep_nodes``: also remove KFS-* iptables chains on the nodes the run
    reached (a crashed run's; the caller holds the node lock)."""
    done: list[str] = []
    cm = _journal_map(kube, namespace)
    journal = _read_journal(kube, namespace)
    image = ((cm.metadata.annotations or {}) if cm else {}).get(IMAGE_ANNOTATION)
    run_namespace = agent_namespaces(kube).get(namespace) or namespace
    agent = NodeAgent(kube, run_namespace, image or "", log=log)
    # The cluster's own SNAT owner keeps its chain (pod egress depends on it).
    owner = snat.find(kube)
    keep = (owner.chain,) if owner is not None else ()
    agent._set_up = True  # its namespace is there: no new setup, no refusal probe
    # Frozen kubelets first: nothing else on their node answers until they run.
    order = {"freeze": 0, "outside": 1, "shell": 2}
    for key, record in sorted(journal.items(), key=lambda kv: order.get(kv[1]["kind"], 9)):
        node = record["node"]
        if record["kind"] == "freeze":
            _request_thaw(kube, namespace, record)
            agent._await_thaw(record)
            done.append(f"thawed the kubelet of node {node}")
        elif record["kind"] == "outside":
            done.append(f"deleted outside host {record['name']} on node {node}")
        elif record["kind"] == "shell" and sweep_nodes and image:

            def on_node(argv: list[str], check: bool = True, n: str = node) -> str:
                return agent.in_agent(n, [*IN_NODE, *argv], check=check)

            for chain in iptables.sweep(iptables.excluding(iptables.SCENARIO_CHAIN, keep), on_node):
                done.append(f"removed {chain} on node {node}")
        kube.core.patch_namespaced_config_map(JOURNAL, namespace, {"data": {key: None}})
    # The agent's pods go with the namespace, and the outside hosts with them.
    kube.delete_namespace(namespace)
    done.append(f"deleted node agent namespace {namespace}")
    return done


def revert(
    kube: Kube, active: Callable[[str], bool], only: Collection[str] | None = None
) -> list[str]:
    """`kfs cleanup`: undo the journals of agents whose run is over (``active``
    says whether a run still holds its lock); only of runs in ``only`` if given."""
    done: list[str] = []
    for namespace, run in sorted(agent_namespaces(kube).items()):
        if only is not None and run not in only:
            continue
        if run and active(run):
            done.append(f"kept node agent {namespace}: its run is in progress")
            continue
        done += revert_namespace(kube, namespace, sweep_nodes=True)
    return done
