"""The `existing` provider pointed at the local cluster's kubeconfig, as a user
points kfs at a cluster it did not build: every story the cluster's shape
allows runs through the node agent, and kfs runs no command on this host.

The local cluster has one node that runs containers (kfs-worker) and three
simulated ones, so Moonlight, which fails three nodes, is refused up front."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from failure_stories.contract import scenario as scenarios
from failure_stories.core.wait import wait_for
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.providers import snat
from failure_stories.providers.agent import NodeAgent, agent_namespaces
from failure_stories.providers.existing import ExistingProvider
from failure_stories.providers.kube import KFS, MANAGED_BY, Kube
from failure_stories.run.session import Session

CONTEXT = "kfs-local"  # the local provider's admin kubeconfig names its context so
NODE = "kfs-worker"
THE_SHAPE_ALLOWS = [
    "buffer-cpu-throttling",
    "flant-redis-data-loss",
    "jwplayer-exposed-dashboard",
    "mindtickle-external-snat",
    "prometheuskube-missing-logs",
]


@pytest.fixture
def kubeconfig(kfs_provider: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = Path(kfs_provider.kubeconfig)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def images_on_the_nodes(kfs_provider: Any) -> None:
    """What a user does for their own cluster once: the images kfs builds made
    available to its nodes (there, by a registry; here, imported beforehand)."""
    from failure_stories.images import redis_operator
    from failure_stories.operator import image as operator_image
    from failure_stories.operator.image import OPERATOR_IMAGE

    kfs_provider.load_images({OPERATOR_IMAGE: operator_image.build()})
    kfs_provider.load_images(redis_operator.build_image())


@pytest.fixture
def existing(kubeconfig: Path, images_on_the_nodes: None) -> ExistingProvider:
    return ExistingProvider(context=CONTEXT, allow=CONTEXT)


@pytest.fixture
def host_commands(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every process this test's kfs code starts on this host (it must start none)."""
    seen: list[Any] = []
    real = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        seen.append(args)
        real(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    return seen


def _kfs_chains() -> str:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if "KFS-" in line)


def _outside_links() -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("kfsx")]


@pytest.mark.parametrize("story", THE_SHAPE_ALLOWS)
def test_story_through_the_node_agent(
    existing: ExistingProvider, kube: Kube, host_commands: list[Any], tmp_path: Path, story: str
) -> None:
    before = _kfs_chains()
    host_commands.clear()  # the test's own look at the node above
    session = Session(existing, tmp_path)
    with session:
        report = session.run(scenarios.get(story))
    seen = list(host_commands)
    assert report.verdict == "passed", (report.error, [p.error for p in report.phases])
    assert report.info["node_access"] == "node agent"
    judged = [m for p in report.phases for m in p.measurements.values() if m.ok is not None]
    assert judged and all(m.ok for m in judged)
    assert seen == [], f"kfs ran commands on this host: {seen}"
    # Nothing of the run is left on the cluster or on the node.
    assert agent_namespaces(kube) == {}
    assert not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items
    assert _kfs_chains() == before
    assert _outside_links() == []


def test_a_cluster_too_small_is_refused_in_one_line(
    existing: ExistingProvider, kube: Kube, tmp_path: Path
) -> None:
    session = Session(existing, tmp_path)
    with session:
        report = session.run(scenarios.get("moonlight-anti-affinity"))
    assert report.verdict == "error"
    assert "\n" not in report.error
    assert re.search(
        r"moonlight-anti-affinity fails nodes through the node agent, which needs 3 "
        r"schedulable nodes that run containers; context kfs-local has 1 \(kfs-sim-a, "
        r"kfs-sim-b, kfs-sim-c are simulated\)",
        report.error,
    ), report.error
    # Refused before anything was created.
    assert not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items


def _kubelet() -> tuple[int, str]:
    pid = int(
        subprocess.run(
            ["pgrep", "-o", "-x", "kubelet"], capture_output=True, text=True, check=True
        ).stdout
    )
    state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    return pid, state


@pytest.fixture
def agent(kube: Kube) -> Iterator[NodeAgent]:
    namespace = kube.create_namespace("e2e-agent")
    node_agent = NodeAgent(kube, namespace, TOOLBOX_IMAGE, log=lambda _m: None)
    yield node_agent
    node_agent.tear_down()
    kube.delete_namespace(namespace)


def test_freeze_and_thaw_a_real_kubelet(agent: NodeAgent, kube: Kube) -> None:
    """The node failure any Linux node can take: its kubelet stopped, and brought
    back through the API server (the frozen kubelet cannot serve exec)."""
    pid, state = _kubelet()
    assert state in ("S", "R")
    agent.freeze_kubelet(NODE, deadline=120)
    assert _kubelet() == (pid, "T")
    started = time.monotonic()
    agent.thaw_kubelet(NODE)
    thaw_seconds = time.monotonic() - started
    assert _kubelet()[0] == pid and _kubelet()[1] in ("S", "R")
    assert thaw_seconds < 15, thaw_seconds
    assert wait_for(lambda: kube.node_ready(NODE), what=f"{NODE} Ready", timeout=60)


def test_a_frozen_kubelet_thaws_at_its_deadline_when_kfs_dies(kube: Kube, tmp_path: Path) -> None:
    """The deadline is set at freeze time: a kfs process killed with SIGKILL right
    after freezing leaves a kubelet that comes back by itself."""
    namespace = kube.create_namespace("e2e-agent-deadline")
    script = (
        "import os, signal, sys\n"
        "from failure_stories.providers.agent import NodeAgent\n"
        "from failure_stories.providers.kube import Kube\n"
        f"agent = NodeAgent(Kube(sys.argv[1]), {namespace!r}, {TOOLBOX_IMAGE!r})\n"
        f"agent.freeze_kubelet({NODE!r}, deadline=10)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(kube.kubeconfig)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        frozen_at = time.monotonic()
        assert _kubelet()[1] == "T"
        wait_for(lambda: _kubelet()[1] != "T", what="the deadline to thaw the kubelet", timeout=60)
        assert 5 <= time.monotonic() - frozen_at <= 30
        # The journal still names the change for `kfs cleanup` on another machine.
        agents = agent_namespaces(kube)
        assert namespace in agents.values()
        journal = kube.core.read_namespaced_config_map(
            "kfs-node-changes", next(a for a, r in agents.items() if r == namespace)
        ).data
        assert any(k.startswith("freeze.") for k in journal or {})
    finally:
        from failure_stories.providers.agent import revert

        revert(kube, active=lambda _run: False, only=[namespace])
        kube.delete_namespace(namespace)
    assert agent_namespaces(kube) == {}


def test_sigkill_mid_fault_then_cleanup_from_a_fresh_process(
    kubeconfig: Path, kube: Kube, tmp_path: Path
) -> None:
    """kfs killed with SIGKILL while MindTickle's fault (the SNAT owner's config
    naming the outside network, an outside host beside the node) is live; `kfs
    cleanup --provider existing`, a new process that knows only the cluster, puts
    the config and the node back as they were."""
    kfs = str(Path(sys.executable).with_name("kfs"))
    cluster = ["--provider", "existing", "--kubeconfig", str(kubeconfig)]
    before = _kfs_chains()
    owner = snat.find(kube)
    assert owner is not None
    config_before = snat.read_config(kube, owner)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [
                kfs,
                "run",
                "mindtickle-external-snat",
                *cluster,
                "--allow-context",
                CONTEXT,
                "--report-dir",
                str(tmp_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    try:
        wait_for(
            lambda: "mindtickle-external-snat symptom" in log.read_text(),
            what="the symptom phase",
            timeout=300,
        )
        # The fault is live: the owner leaves the outside network un-NATed.
        assert "198.51.100.0/24" in (snat.read_config(kube, owner) or "")
        assert _outside_links()  # and the outside host beside it
        assert agent_namespaces(kube)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
    finally:
        if run.poll() is None:
            run.kill()
    # Nothing was undone by the dead run: cleanup finds it all on the cluster.
    assert "198.51.100.0/24" in (snat.read_config(kube, owner) or "")

    def cleanup() -> str:
        done = subprocess.run(
            [kfs, "cleanup", *cluster, "--allow-context", CONTEXT],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        return done.stdout

    # The dead run's lease must expire first (it may be another machine's live run).
    outputs: list[str] = []

    def settled() -> bool:
        outputs.append(cleanup())
        return "in progress" not in outputs[-1]

    wait_for(settled, what="cleanup to find the run over", timeout=90, interval=3)
    said = "\n".join(outputs)
    assert "restored the SNAT config in ConfigMap kube-system/kfs-masq-agent" in said, said
    assert "deleted outside host" in said and "deleted node agent namespace" in said, said
    assert snat.read_config(kube, owner) == config_before
    # The owner applies the restored config within its resync interval (1 s).
    wait_for(lambda: _kfs_chains() == before, what="the node's SNAT rules as before", timeout=15)
    assert _outside_links() == []
    assert agent_namespaces(kube) == {}
    # The run's namespace was deleted by cleanup; Kubernetes finishes that in seconds.
    wait_for(
        lambda: not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items,
        what="the dead run's namespace to be gone",
        timeout=60,
    )
    leases = kube.dynamic.resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
    assert not leases.get(namespace="default", label_selector=f"{MANAGED_BY}={KFS}").items


def test_operator_gameday_through_the_node_agent(
    kubeconfig: Path, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """The operator, given a kubeconfig context (KFS_GAMEDAY_PROVIDER=existing),
    runs a GameDay's story on that cluster through the node agent."""
    from kubernetes import client

    from failure_stories.gameday.resource import GROUP, KIND, PLURAL, VERSION
    from failure_stories.operator import runtime

    runtime.ensure_crds(kube)
    operator = runtime.HostOperator(
        kubeconfig,
        tmp_path / "operator",
        name=f"e2e-existing-{namespace}",
        namespaces=(namespace,),
        handler_files=("gameday.py",),
        env={"KFS_GAMEDAY_PROVIDER": "existing", "KFS_GAMEDAY_CONTEXT": CONTEXT},
    )
    custom = client.CustomObjectsApi(kube.api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "via-agent"},
        "spec": {"scenario": "mindtickle-external-snat"},
    }
    operator.start()
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

        def finished() -> dict[str, Any] | None:
            obj = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "via-agent"
            )
            st = dict(obj.get("status") or {})
            return st if st.get("state") in ("Finished", "Failed", "Reverted") else None

        st = wait_for(finished, what="the GameDay to finish", timeout=300, interval=1)
        assert st["verdict"] == "passed", st.get("message")
        report = json.loads(Path(st["report"]).read_text())
        assert report["info"]["node_access"] == "node agent"
        assert report["info"]["context"] == CONTEXT
        assert st["measurements"]["symptom"]["external_success_ratio"] == 0
        assert st["measurements"]["verify"]["external_success_ratio"] == 1
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "via-agent")
        operator.stop()
    assert agent_namespaces(kube) == {}
    assert _outside_links() == []


def test_kfs_gameday_on_an_existing_cluster(kubeconfig: Path, kube: Kube, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("kfs")),
            "gameday",
            "mindtickle-external-snat",
            "--provider",
            "existing",
            "--kubeconfig",
            str(kubeconfig),
            "--allow-context",
            CONTEXT,
            "--reveal-after",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    report = json.loads((tmp_path / "mindtickle-external-snat.json").read_text())
    assert report["verdict"] == "passed"
    assert report["info"]["node_access"] == "node agent"
    assert report["info"]["time_to_diagnosis_seconds"] >= 1
    assert agent_namespaces(kube) == {}


def test_a_cluster_whose_policy_forbids_the_agent_is_refused_before_any_fault(
    existing: ExistingProvider, kube: Kube, tmp_path: Path
) -> None:
    """A cluster that does not admit privileged host-namespace pods (here a
    ValidatingAdmissionPolicy, as a hardened cluster would have) gets a one-line
    refusal that quotes the policy, and nothing of the run stays behind."""
    name = "kfs-e2e-no-host-pid"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.spec.hostPID) || !object.spec.hostPID",
                    "message": "hostPID pods are not allowed on this cluster",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    kube.apply([policy, binding], None)
    try:
        # A binding takes a moment to be enforced: wait until a probe is refused.
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {"hostPID": True, "containers": [{"name": "c", "image": TOOLBOX_IMAGE}]},
        }
        wait_for(
            lambda: kube.dry_run_admission(probe, "default"), what="the policy enforced", timeout=30
        )
        with Session(existing, tmp_path) as session:
            report = session.run(scenarios.get("mindtickle-external-snat"))
    finally:
        kube.delete(binding, None)
        kube.delete(policy, None)
    assert report.verdict == "error"
    assert "\n" not in report.error
    assert report.error.startswith(
        "this cluster refuses the node agent (a privileged pod with the host's PID and "
        "network namespaces): "
    ), report.error
    assert "hostPID pods are not allowed on this cluster" in report.error
    assert [p.name for p in report.phases if p.ok is False and not p.skipped] == ["setup"]
    assert agent_namespaces(kube) == {}
    wait_for(
        lambda: not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items,
        what="the refused run's namespace to be gone",
        timeout=60,
    )
    assert _outside_links() == []


@pytest.mark.parametrize("run_holds", ["a flock file (the local provider)", "a Lease (existing)"])
def test_cleanup_through_either_provider_keeps_the_other_ones_live_run(
    kfs_provider: Any, existing: ExistingProvider, kube: Kube, run_holds: str
) -> None:
    """The same cluster, driven as `local` and as `existing` from this machine:
    a cleanup through one provider must not take a live run of the other for dead."""
    from failure_stories.host.locks import FileLocks
    from failure_stories.providers.leases import LeaseLocks
    from failure_stories.run import cleanup

    lease_run = run_holds.startswith("a Lease")
    holder, sweeper = (LeaseLocks(kube), kfs_provider) if lease_run else (FileLocks(), existing)
    name = kube.create_namespace("e2e-live-run")
    try:
        with holder.held(f"run-{name}", "the test's live run"):
            done = cleanup.sweep(sweeper)
            assert f"kept namespace {name}: its run is in progress" in done, done
            assert kube.core.read_namespace(name).status.phase == "Active"
        # Its lock released, the run is over: now the same sweep removes it.
        done = cleanup.sweep(sweeper)
        assert f"deleted namespace {name}" in done, done
    finally:
        with contextlib.suppress(ApiException):  # a namespace already terminating: 409
            kube.core.delete_namespace(name)
        wait_for(lambda: kube.namespace_gone(name), what=f"namespace {name} gone", timeout=120)
