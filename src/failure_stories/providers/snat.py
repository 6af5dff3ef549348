"""Who SNATs a node's pod egress, and how its setting is read and changed.

The owner is kfs's masq agent (images/workloads/masq_agent.py, ip-masq-agent's
config format): on local an addon in kube-system, on kind a container of the
kind CNI's DaemonSet, on an existing cluster whatever DaemonSet the user runs
it in. It is found the same way everywhere, by the DaemonSet container that
runs the script, and its chain and ConfigMap are read from that container's
arguments; nothing is per provider."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.providers.kube import Kube

SCRIPT = "masq_agent.py"
CONFIG_KEY = "config"


@dataclass(frozen=True)
class SnatOwner:
    """A DaemonSet running the masq agent, with the chain it owns on each node
    and the ConfigMap it reads its config from."""

    namespace: str
    daemonset: str
    chain: str
    configmap_namespace: str
    configmap: str

    def __str__(self) -> str:
        return (
            f"DaemonSet {self.namespace}/{self.daemonset} (chain {self.chain}, "
            f"ConfigMap {self.configmap_namespace}/{self.configmap})"
        )


def _flag(argv: list[str], name: str) -> str | None:
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def owner_of(namespace: str, name: str, containers: list[dict[str, Any]]) -> SnatOwner | None:
    """The masq agent among a DaemonSet's containers (as the API's camelCase
    dicts), or None. A shell wrapper (`sh -c "... masq_agent.py ..."`) counts."""
    for container in containers:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        words = [w for a in argv for w in (shlex.split(a) if " " in a else [a])]
        if not any(w.endswith(SCRIPT) for w in words):
            continue
        chain, configmap = _flag(words, "--chain"), _flag(words, "--configmap")
        if not chain or not configmap or "/" not in configmap:
            continue
        cm_ns, cm_name = configmap.split("/", 1)
        return SnatOwner(namespace, name, chain, cm_ns, cm_name)
    return None


def find(kube: Kube) -> SnatOwner | None:
    """The cluster's masq agent DaemonSet (kube-system's first), or None."""
    found = kube.api.sanitize_for_serialization(kube.apps.list_daemon_set_for_all_namespaces())
    owners = []
    for ds in found.get("items") or []:
        meta = ds.get("metadata") or {}
        spec = (((ds.get("spec") or {}).get("template") or {}).get("spec")) or {}
        containers = spec.get("containers") or []
        owner = owner_of(meta.get("namespace", ""), meta.get("name", ""), containers)
        if owner is not None:
            owners.append(owner)
    owners.sort(key=lambda o: (o.namespace != "kube-system", o.namespace, o.daemonset))
    return owners[0] if owners else None


def read_config(kube: Kube, owner: SnatOwner) -> str | None:
    """The agent's config text; None when its ConfigMap or key is absent (defaults)."""
    try:
        cm = kube.core.read_namespaced_config_map(owner.configmap, owner.configmap_namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    value = (cm.data or {}).get(CONFIG_KEY)
    return None if value is None else str(value)


def write_config(kube: Kube, owner: SnatOwner, text: str | None) -> None:
    """Set the agent's config (None: no ``config`` key, so the agent's defaults)."""
    try:
        kube.core.patch_namespaced_config_map(
            owner.configmap, owner.configmap_namespace, {"data": {CONFIG_KEY: text}}
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        if text is not None:
            body = {"metadata": {"name": owner.configmap}, "data": {CONFIG_KEY: text}}
            kube.core.create_namespaced_config_map(owner.configmap_namespace, body)


def config_text(cidrs: list[str], resync: str = "1s") -> str:
    """A config in the agent's format: ``cidrs`` keep pod addresses, the rest is masqueraded."""
    listed = ", ".join(cidrs)
    return f"nonMasqueradeCIDRs: [{listed}]\nmasqLinkLocal: false\nresyncInterval: {resync}\n"


# On the owner's ConfigMap while a run has changed it: the run and the text to put
# back, so `kfs cleanup` can restore it after the run died (the ConfigMap is the
# cluster's, not the run's: deleting the run's namespace does not undo it).
RESTORE_ANNOTATION = "kfs.dev/restore-config"


def save_for_run(kube: Kube, owner: SnatOwner, run: str, saved: str | None) -> None:
    record = json.dumps({"run": run, "config": saved})
    _annotate(kube, owner, record)


def forget_for_run(kube: Kube, owner: SnatOwner) -> None:
    _annotate(kube, owner, None)


def _annotate(kube: Kube, owner: SnatOwner, value: str | None) -> None:
    body = {"metadata": {"annotations": {RESTORE_ANNOTATION: value}}}
    try:
        kube.core.patch_namespaced_config_map(owner.configmap, owner.configmap_namespace, body)
    except ApiException as exc:
        if exc.status != 404 or value is None:
            if exc.status != 404:
                raise
            return
        created = {
            "metadata": {"name": owner.configmap, "annotations": {RESTORE_ANNOTATION: value}}
        }
        kube.core.create_namespaced_config_map(owner.configmap_namespace, created)


def restore_dead(
    kube: Kube, dead: Callable[[str], bool], only: Collection[str] | None = None
) -> list[str]:
    """Put back every SNAT config a run changed and did not restore because it died."""
    done = []
    for cm in kube.core.list_config_map_for_all_namespaces().items:
        raw = (cm.metadata.annotations or {}).get(RESTORE_ANNOTATION)
        if not raw:
            continue
        record = json.loads(raw)
        run = str(record.get("run"))
        if (only is not None and run not in only) or not dead(run):
            continue
        ns, name = cm.metadata.namespace, cm.metadata.name
        kube.core.patch_namespaced_config_map(
            name,
            ns,
            {
                "metadata": {"annotations": {RESTORE_ANNOTATION: None}},
                "data": {CONFIG_KEY: record.get("config")},
            },
        )
        done.append(f"restored the SNAT config in ConfigMap {ns}/{name} that run {run} changed")
    return done
