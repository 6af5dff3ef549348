"""Chaos Toolkit beside kfs, on the same local cluster, for `make bench`.

Chaos Toolkit is what users would pick instead: an experiment is a steady-state
hypothesis, a method and rollbacks. The bench installs it (pinned in
bench/chaostoolkit/requirements.txt) into a venv of its own, runs the two
experiments of bench/chaostoolkit/ and measures each run's framework overhead as
kfs measures its own: wall time minus the waits the experiment itself imposes
(its pauses). The workloads are applied and removed by the bench, with the same
client kfs uses, since Chaos Toolkit has no setup or teardown; that time is
reported apart, and counted when the overheads are compared, because a user
has to script it around every experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from failure_stories.core import paths
from failure_stories.core.errors import ClusterUnreachableError
from failure_stories.host import commands
from failure_stories.host.locks import FileLocks
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.providers.kube import KFS, MANAGED_BY, Kube, render
from failure_stories.providers.local import LocalProvider, binaries, controlplane
from failure_stories.providers.local import layout as L

# Bench inputs, read from the checkout (the bench is not part of the wheel).
HERE = (paths.CHECKOUT or paths.DATA) / "bench" / "chaostoolkit"
REQUIREMENTS = HERE / "requirements.txt"
# The simulated node the node-failure experiment stops (any of them would do).
NODE = L.SIMULATED_NODES[-1]

# What each tool can assert about one story; Chaos Toolkit's experiment format has
# a hypothesis checked before and after the method, and nothing after a fix.
ASSERTS = {
    "kfs": {
        "steady state before the fault": True,
        "the fault reproduces the symptom": True,
        "the mitigation removes the symptom": True,
        "thresholds on measured numbers": True,
    },
    "chaostoolkit": {
        "steady state before the fault": True,
        "the fault reproduces the symptom": "only as a deviated hypothesis (a failed run)",
        "the mitigation removes the symptom": False,
        "thresholds on measured numbers": "tolerances on probe results",
    },
}


def venv_dir() -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    return binaries.cache_dir() / f"chaostoolkit-{key}"


def ensure_installed() -> tuple[Path, float]:
    """The `chaos` program of the pinned venv, and the seconds spent installing it
    (0 when cached). A venv's scripts name its own path, so it is made in place and
    counts as installed only once its marker is written."""
    venv = venv_dir()
    chaos, marker = venv / "bin" / "chaos", venv / ".installed"
    if marker.exists():
        return chaos, 0.0
    t0 = time.monotonic()
    commands.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], what="a venv for Chaos Toolkit"
    )
    commands.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)],
        what="Chaos Toolkit (pip install)",
        timeout=600,
    )
    marker.touch()
    return chaos, time.monotonic() - t0


@dataclass
class Experiment:
    name: str
    # Seconds the experiment itself waits (its pauses): its physics.
    pauses: float
    outcome: str = ""
    wall: float = 0.0
    setup: float = 0.0
    teardown: float = 0.0

    @property
    def file(self) -> Path:
        return HERE / f"{self.name}.json"

    def numbers(self) -> dict[str, Any]:
        overhead = self.wall - self.pauses
        around = self.setup + self.teardown
        return {
            "status": self.outcome,
            "wall_seconds": round(self.wall, 2),
            "pauses_seconds": self.pauses,
            "overhead_seconds": round(overhead, 2),
            "setup_and_teardown_seconds": round(around, 2),
            "overhead_with_setup_and_teardown_seconds": round(overhead + around, 2),
        }


def _pauses(path: Path) -> float:
    doc = json.loads(path.read_text())
    return float(sum((a.get("pauses") or {}).get("after", 0) for a in doc["method"]))


def _workloads(kube: Kube, namespace: str) -> None:
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels={MANAGED_BY: KFS}))
    )
    objs = render(
        (HERE / "manifests.yaml").read_text(), {"NODE": NODE, "TOOLBOX_IMAGE": TOOLBOX_IMAGE}
    )
    kube.apply(objs, namespace)
    for name in ("web", "echo"):
        kube.wait_rollout(namespace, name, timeout=120)


def _chaos(chaos: Path, exp: Experiment, env: dict[str, str], journal: Path) -> None:
    t0 = time.monotonic()
    # A deviated experiment exits 1: a result here, read from its journal.
    commands.run(
        [
            str(chaos),
            "--no-version-check",
            "--log-file",
            str(journal.with_suffix(".log")),
            "run",
            "--rollback-strategy",
            "always",
            "--journal-path",
            str(journal),
            str(exp.file),
        ],
        check=False,
        timeout=300,
        what=f"chaos run {exp.file.name}",
        env=env,
    )
    exp.wall = time.monotonic() - t0
    journal_doc = json.loads(journal.read_text())
    # Chaos Toolkit ends a run whose hypothesis failed after the method as
    # "completed" with deviated: true; that deviation is the symptom.
    exp.outcome = "deviated" if journal_doc.get("deviated") else str(journal_doc.get("status"))


def compare(p: LocalProvider, out_dir: Path) -> dict[str, Any]:
    """Both experiments once, on the running local cluster."""
    chaos, install_seconds = ensure_installed()
    kube = p.kube()
    out_dir.mkdir(parents=True, exist_ok=True)
    node_pid = p.sup.record(controlplane.kwok_component(NODE))
    if node_pid is None:
        raise ClusterUnreachableError(f"kwok for {NODE} is not running: `kfs cluster up`")
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "KFS_CTK_NODE_PID": str(node_pid.pid),
    }
    experiments = [
        Experiment("moonlight-node-failure", _pauses(HERE / "moonlight-node-failure.json")),
        Experiment("pod-kill", _pauses(HERE / "pod-kill.json")),
    ]
    locks = FileLocks()
    # The same locks as a Moonlight run: the node is shared, the simulated nodes not.
    with (
        locks.held("node", "runs that need the node alone", shared=True),
        locks.held("node-simulated-nodes", "another run using simulated-nodes to end"),
    ):
        for exp in experiments:
            namespace = f"kfs-bench-ctk-{secrets.token_hex(3)}"
            env["KFS_CTK_NAMESPACE"] = namespace
            t0 = time.monotonic()
            try:
                _workloads(kube, namespace)
                exp.setup = time.monotonic() - t0
                _chaos(chaos, exp, env, out_dir / f"{exp.name}.journal.json")
            finally:
                t0 = time.monotonic()
                kube.delete_namespace(namespace)
                exp.teardown = time.monotonic() - t0
                p.start_node(NODE)  # a rollback that did not run must not leave it frozen
    return {
        "chaostoolkit_version": _version(chaos),
        "install_seconds": round(install_seconds, 1),
        "experiments": {e.name: e.numbers() for e in experiments},
        "asserts": ASSERTS,
    }


def _version(chaos: Path) -> str:
    out = commands.run([str(chaos), "--no-version-check", "--version"], what="chaos --version")
    return out.strip().split()[-1]


def overhead_ratio(kfs_story: dict[str, Any], ctk: dict[str, Any]) -> dict[str, Any]:
    """kfs's Moonlight overhead (wall minus physics, both directions proved) against
    Chaos Toolkit's Moonlight experiment (wall minus pauses, plus the setup and
    teardown a user scripts around it)."""
    exp = ctk["experiments"]["moonlight-node-failure"]
    physics = kfs_story["physics_seconds"] + kfs_story["namespace_deletion_delay_seconds"]
    kfs_overhead = kfs_story["seconds"] - kfs_story["lock_wait_seconds"] - physics
    ctk_overhead = exp["overhead_with_setup_and_teardown_seconds"]
    return {
        "kfs_overhead_seconds": round(kfs_overhead, 2),
        "chaostoolkit_overhead_seconds": ctk_overhead,
        "ratio": round(kfs_overhead / ctk_overhead, 2) if ctk_overhead > 0 else None,
        # The tool's own run only, as if setup and teardown cost a user nothing.
        "ratio_to_chaos_run_alone": round(kfs_overhead / exp["overhead_seconds"], 2)
        if exp["overhead_seconds"] > 0
        else None,
        "goal": "ratio <= 1 (kfs proves fault and fix; Chaos Toolkit only the deviation)",
    }
