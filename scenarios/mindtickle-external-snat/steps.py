"""MindTickle 2020: pod egress without SNAT - inside works, outside times out."""

from __future__ import annotations

import json
import secrets
from typing import Any

from failure_stories import RefusedError, RunContext, RunError, wait_for

OUTSIDE_NET = "198.51.100.0/24"
CALLS = 20


def setup(ctx: RunContext) -> None:
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


def _iptables(ctx: RunContext, *args: str, check: bool = True) -> str:
    return ctx.node_shell.node_exec(
        ctx.state["node"], ["iptables", "-w", "-t", "nat", *args], check=check
    )


def _remove_rule(ctx: RunContext, chain: str) -> None:
    _iptables(ctx, "-D", "POSTROUTING", "-j", chain, check=False)
    _iptables(ctx, "-F", chain, check=False)
    _iptables(ctx, "-X", chain, check=False)


def inject(ctx: RunContext) -> None:
    chain = f"KFS-NOMASQ-{secrets.token_hex(3).upper()}"
    pod_cidr = ctx.variables["POD_CIDR"]
    ctx.defer(f"remove iptables chain {chain}", lambda: _remove_rule(ctx, chain))
    _iptables(ctx, "-N", chain)
    _iptables(
        ctx,
        "-A",
        chain,
        "-s",
        pod_cidr,
        "-d",
        OUTSIDE_NET,
        "-m",
        "comment",
        "--comment",
        "kfs mindtickle fault: no SNAT to the outside network",
        "-j",
        "ACCEPT",
    )
    _iptables(ctx, "-I", "POSTROUTING", "1", "-j", chain)
    # Established flows keep their old NAT mapping; forget them so the fault applies.
    ctx.node_shell.node_exec(
        ctx.state["node"], ["conntrack", "-D", "-d", ctx.state["outside"].address], check=False
    )
    ctx.state["chain"] = chain
    ctx.log(f"node {ctx.state['node']}: {pod_cidr} -> {OUTSIDE_NET} leaves without SNAT")


def symptom(ctx: RunContext) -> dict[str, float]:
    return _measure(ctx)


def mitigate(ctx: RunContext) -> None:
    _remove_rule(ctx, ctx.state["chain"])
    ctx.node_shell.node_exec(
        ctx.state["node"], ["conntrack", "-D", "-d", ctx.state["outside"].address], check=False
    )
    rules = _iptables(ctx, "-S", "POSTROUTING")
    if ctx.state["chain"] in rules:
        raise RefusedError("the no-SNAT rule is still in POSTROUTING")


def verify(ctx: RunContext) -> dict[str, float]:
    return _measure(ctx)
