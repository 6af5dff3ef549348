"""MindTickle 2020: pod egress without SNAT - inside works, outside times out."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from failure_stories import RefusedError, RunContext, RunError, snat, wait_for, watch

OUTSIDE_NET = "198.51.100.0/24"
CALLS = 20
# The agent polls its ConfigMap every second; an edit not on the node by then was not taken.
APPLY_SECONDS = 30.0
# What the masq agent (like ip-masq-agent) keeps un-NATed when its config lists nothing.
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def setup(ctx: RunContext) -> None:
    owner = ctx.egress_snat.snat_owner()
    if owner is None:
        raise RunError(
            f"no DaemonSet runs kfs's masq agent ({snat.SCRIPT}): the node's pod-egress SNAT "
            "has no owner whose setting this story can change"
        )
    ctx.state["owner"] = owner
    ctx.log(f"pod egress SNAT owner: {owner}")
    # Saved before anything changes; whatever a later phase writes, teardown puts it back.
    saved = snat.read_config(ctx.kube, owner)
    # Also on the ConfigMap, for `kfs cleanup` if this run dies before its teardown.
    snat.save_for_run(ctx.kube, owner, ctx.namespace, saved)

    def restore() -> None:
        snat.write_config(ctx.kube, owner, saved)
        snat.forget_for_run(ctx.kube, owner)

    ctx.defer(f"restore the config of {owner}", restore)
    ctx.apply("baseline.yaml")
    wait_for(
        lambda: ctx.kube.ready_endpoints(ctx.namespace, "internal") == 1,
        what="the internal service ready",
        timeout=90,
    )
    ctx.kube.wait_pod_running(ctx.namespace, "caller")
    ctx.kube.wait_service_answers(ctx.namespace, "internal", from_pod="caller")
    ctx.state["node"] = ctx.kube.core.read_namespaced_pod("caller", ctx.namespace).spec.node_name
    # Beside the caller's node: its egress is what the fault changes.
    outside = ctx.outside_network.outside_host(OUTSIDE_NET, node=ctx.state["node"])
    ctx.defer(f"delete outside host {outside.name}", outside.delete)
    outside.serve_http(80, "partner API\n")
    ctx.state["outside"] = outside
    ctx.log(f"outside host {outside.address} in netns {outside.name}")
    # Like the internal service above, the outside path must answer a few times
    # in a row before steady state is measured: with other runs starting pods
    # beside it, the very first SYN from the caller to a new outside host was
    # occasionally lost (2 of 10 parallel suite runs), which is the bench's
    # noise, not the story's fault.
    tries: list[int] = []

    def outside_answers() -> bool:
        result = _probe(ctx, f"http://{outside.address}/", 3)
        tries.append(result["ok"])
        return bool(result["ok"] == result["count"])

    wait_for(outside_answers, what="the outside host answering the caller", timeout=60, interval=1)
    if len(tries) > 1:
        ctx.log(f"outside path answered 3 in a row after {len(tries)} tries ({tries})")


def _probe(ctx: RunContext, url: str, count: int) -> dict[str, Any]:
    code, out, err = ctx.kube.exec(
        ctx.namespace,
        "caller",
        ["python3", "/opt/kfs/workloads/callprobe.py", "--url", url, "--count", str(count)],
        timeout=count * 3 + 30,
    )
    if code != 0:
        raise RunError(f"call probe failed ({code}): {err.strip()[-200:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _calls(ctx: RunContext, url: str, series: str) -> dict[str, Any]:
    result = _probe(ctx, url, CALLS)
    for r in result["results"]:
        ctx.record(series, 1.0 if r["ok"] else 0.0)
    return result


def _measure(ctx: RunContext) -> dict[str, float]:
    internal_ip = ctx.kube.core.read_namespaced_service("internal", ctx.namespace).spec.cluster_ip
    internal = _calls(ctx, f"http://{internal_ip}/healthz", "internal_success")
    external = _calls(ctx, f"http://{ctx.state['outside'].address}/", "external_success")
    return call_numbers(external, internal)


def call_numbers(external: dict[str, Any], internal: dict[str, Any]) -> dict[str, float]:
    """Success ratios of the two call probes, the outside calls' SYN retransmits
    and their median duration (a timed-out call counts its whole timeout)."""
    durations = sorted(r["ms"] for r in external["results"])
    return {
        "external_success_ratio": external["ok"] / external["count"],
        "internal_success_ratio": internal["ok"] / internal["count"],
        "syn_retransmits": external["syn_retransmits"],
        "external_p50_ms": durations[len(durations) // 2],
    }


def steady_state(ctx: RunContext) -> dict[str, float]:
    return _measure(ctx)


# -- the fault and the fix: two settings of the node's SNAT owner -----------------------


def kept_ranges(config: str | None) -> list[str]:
    """The ranges a masq agent config keeps un-NATed (the agent's defaults, RFC
    1918, when there is no config or it lists none)."""
    data = yaml.safe_load(config) if config else None
    listed = data.get("nonMasqueradeCIDRs") if isinstance(data, dict) else None
    return [str(c) for c in listed] if listed is not None else list(RFC1918)


def config_variables(config: str | None, cidrs: list[str]) -> dict[str, str]:
    """fault.yaml's and mitigation.yaml's variables: the owner's other settings
    kept as they were, the non-masquerade list as given."""
    data = yaml.safe_load(config) if config else None
    data = data if isinstance(data, dict) else {}
    return {
        "NON_MASQUERADE_CIDRS": ", ".join(cidrs),
        "MASQ_LINK_LOCAL": "true" if data.get("masqLinkLocal") is True else "false",
        "RESYNC_INTERVAL": str(data.get("resyncInterval") or "60s"),
    }


def _chain_keeps_outside(ctx: RunContext) -> bool:
    owner = ctx.state["owner"]
    rules = ctx.node_shell.node_exec(
        ctx.state["node"], ["iptables", "-w", "-t", "nat", "-S", owner.chain], check=False
    )
    return any(f"-d {OUTSIDE_NET} " in r and r.endswith("-j RETURN") for r in rules.splitlines())


def _edit_list(ctx: RunContext, manifest: str, keeps_outside: bool) -> bool:
    """Edit the owner's current non-masquerade list (the outside network added
    or taken out) through ``manifest``, watch for the node's rules to follow it,
    and forget established flows (they keep their old NAT mapping). Whether the
    agent applied it in time."""
    owner = ctx.state["owner"]
    current = snat.read_config(ctx.kube, owner)
    cidrs = [c for c in kept_ranges(current) if c != OUTSIDE_NET]
    if keeps_outside:
        cidrs.append(OUTSIDE_NET)
    extra = {
        "MASQ_NAMESPACE": owner.configmap_namespace,
        "MASQ_CONFIGMAP": owner.configmap,
        **config_variables(current, cidrs),
    }
    (cm,) = ctx.manifest(manifest, **extra)
    start = time.monotonic()
    snat.write_config(ctx.kube, owner, cm["data"][snat.CONFIG_KEY])
    applied = watch(
        lambda: _chain_keeps_outside(ctx) == keeps_outside,
        every=0.2,
        within=APPLY_SECONDS,
        what=f"chain {owner.chain} on {ctx.state['node']} to follow the new config",
    )
    ctx.node_shell.node_exec(
        ctx.state["node"], ["conntrack", "-D", "-d", ctx.state["outside"].address], check=False
    )
    where = f"{owner.configmap_namespace}/{owner.configmap}"
    listed = f"nonMasqueradeCIDRs [{', '.join(cidrs)}]"
    if applied:
        ctx.log(f"{where}: {listed}, on the node after {time.monotonic() - start:.1f}s")
    else:
        ctx.log(
            f"{where}: {listed}, not on the node's chain {owner.chain} after {APPLY_SECONDS:g}s"
        )
    return applied


def inject(ctx: RunContext) -> None:
    # The outside network is listed as if it routed pod addresses back: the
    # node leaves that traffic un-NATed, as a wrong EXCLUDE_SNAT_CIDRS would.
    # An agent that ignores the edit leaves the fault out: the symptom's calls
    # then succeed and say so (not-reproduced), no error here.
    _edit_list(ctx, "fault.yaml", keeps_outside=True)


def symptom(ctx: RunContext) -> dict[str, float]:
    return _measure(ctx)


def mitigate(ctx: RunContext) -> None:
    # The list as the platform team would correct it: the outside network out,
    # every range that does route pod addresses back left as it is.
    if not _edit_list(ctx, "mitigation.yaml", keeps_outside=False):
        owner = ctx.state["owner"]
        raise RefusedError(
            f"the SNAT owner did not apply the corrected list within {APPLY_SECONDS:g}s: "
            f"chain {owner.chain} on {ctx.state['node']} still leaves {OUTSIDE_NET} un-NATed "
            f"(see the logs of {owner.namespace}/{owner.daemonset})"
        )


def verify(ctx: RunContext) -> dict[str, float]:
    return _measure(ctx)
