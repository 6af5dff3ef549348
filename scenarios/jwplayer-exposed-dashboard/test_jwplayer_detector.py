"""The jwplayer-exposed-dashboard detector's parsing and classification, on fixed
node output: a miner hiding as gcc must be flagged, compilers doing their job not."""

from __future__ import annotations

import os
import subprocess
from types import ModuleType

import pytest

from failure_stories.contract.scenario import discover


@pytest.fixture(scope="module")
def steps() -> ModuleType:
    return discover()["jwplayer-exposed-dashboard"].steps()


MINER_UID = "2ff8c7d8-a2b0-470f-8ca9-06031a52fa6c"
BUILD_UID = "7a1c0e52-9d3b-4c1e-8f0a-5b6d7e8f9a01"
LABELLED_UID = "0b9e8d7c-6a5f-4e3d-9c2b-1a0f9e8d7c6b"


def _cg(uid: str, qos: str = "burstable", cid: str = "1467bcaabf09") -> str:
    path = f"/kfs/kubepods/{qos}/pod{uid}/{cid}"
    return ",".join(f"{n}:{c}:{path}" for n, c in ((9, "name=systemd"), (8, "pids"), (4, "cpu")))


# As `ps -e -ww -o pid=,cgroup:4096=,comm=` prints it (cgroup column padded).
PS = f"""\
    1 -                                                     systemd
    2 -                                                     kthreadd
  812 9:name=systemd:/user.slice,4:cpu:/user.slice          gcc
 4242 {_cg(MINER_UID)} gcc
 4243 {_cg(MINER_UID)} python3
 5100 {_cg(BUILD_UID, "besteffort")} cc1plus
 5101 {_cg(LABELLED_UID)} avr-gcc
 5102 {_cg(MINER_UID)} Web Content
"""


def test_parse_ps_keeps_pid_cgroup_and_comm_with_spaces(steps: ModuleType) -> None:
    rows = steps.parse_ps(PS)
    assert [r.pid for r in rows] == [1, 2, 812, 4242, 4243, 5100, 5101, 5102]
    assert rows[0].cgroup == "-"
    assert rows[3].comm == "gcc"
    assert f"pod{MINER_UID}" in rows[3].cgroup
    assert rows[-1].comm == "Web Content"


def test_parse_ps_skips_blank_and_malformed_lines(steps: ModuleType) -> None:
    assert steps.parse_ps("\n  PID CGROUP COMMAND\n\n 7 -\n") == []


@pytest.mark.parametrize(
    "comm",
    [
        "gcc",
        "g++",
        "cc",
        "c++",
        "cc1",
        "cc1plus",
        "clang",
        "clang++",
        "gcc-12",
        "avr-gcc",
        "aarch64-linux-gnu-g++",
    ],
)
def test_compiler_names(steps: ModuleType, comm: str) -> None:
    assert steps.is_compiler_name(comm)


@pytest.mark.parametrize(
    "comm", ["python3", "gccgo", "ccache", "xmrig", "kworker/0:1", "sgcc", "gcc.sh", ""]
)
def test_not_compiler_names(steps: ModuleType, comm: str) -> None:
    assert not steps.is_compiler_name(comm)


def test_pod_uid_from_cgroupfs_and_systemd_paths(steps: ModuleType) -> None:
    assert steps.pod_uid_from_cgroup(_cg(MINER_UID)) == MINER_UID
    systemd = (
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        + MINER_UID.replace("-", "_")
        + ".slice/cri-containerd-1467bcaabf09.scope"
    )
    assert steps.pod_uid_from_cgroup(systemd) == MINER_UID


def test_processes_outside_pods_have_no_pod_uid(steps: ModuleType) -> None:
    assert steps.pod_uid_from_cgroup("-") is None
    assert steps.pod_uid_from_cgroup("9:name=systemd:/user.slice/user-0.slice") is None
    # A pod-like name outside the kubepods hierarchy is not a pod.
    assert steps.pod_uid_from_cgroup(f"4:cpu:/docker/pod{MINER_UID}") is None


def test_stat_ticks_reads_utime_plus_stime_after_an_odd_comm(steps: ModuleType) -> None:
    line = "4242 (a) b c) R 4200 4242 4242 0 -1 4194560 2167 0 0 0 683 17 0 0 20 0 1 0 235209"
    assert steps.stat_ticks(line) == (4242, 700)


SAMPLE = """\
2359.02 2611.25
4242 (gcc) R 19608 4242 4242 0 -1 4194560 2167 0 0 0 683 1 0 0 20 0 1 0 235209 1658
5100 (cc1plus) R 5000 5100 5100 0 -1 4194560 10 0 0 0 50 0 0 0 20 0 1 0 235300 1658
5101 (avr-gcc) S 5000 5101 5101 0 -1 4194560 10 0 0 0 90 3 0 0 20 0 1 0 235300 1
812 (gcc) S 800 812 812 0 -1 4194560 10 0 0 0 400 0 0 0 20 0 1 0 1000 1
---
2362.02 2611.53
4242 (gcc) R 19608 4242 4242 0 -1 4194560 2167 0 0 0 823 11 0 0 20 0 1 0 235209 1658
5100 (cc1plus) R 5000 5100 5100 0 -1 4194560 10 0 0 0 350 0 0 0 20 0 1 0 235300 1658
812 (gcc) S 800 812 812 0 -1 4194560 10 0 0 0 700 0 0 0 20 0 1 0 1000 1
"""


def test_parse_cpu_sample_gives_cores_over_the_node_interval(steps: ModuleType) -> None:
    cores = steps.parse_cpu_sample(SAMPLE, 100)
    assert cores[4242] == pytest.approx(0.5)  # 150 ticks in 3 s
    assert cores[5100] == pytest.approx(1.0)
    assert 5101 not in cores  # exited during the interval
    assert cores[812] == pytest.approx(1.0)


def test_parse_cpu_sample_without_suspects(steps: ModuleType) -> None:
    assert steps.parse_cpu_sample("10.00 1.0\n---\n13.00 2.0\n", 100) == {}


def _pods(steps: ModuleType) -> dict[str, object]:
    info = steps.PodInfo
    return {
        MINER_UID: info("kfs-jw", "dashboard-abc", {"app": "dashboard"}, ("ReplicaSet",)),
        BUILD_UID: info("ci", "build-42-xyz", {}, ("Job",)),
        LABELLED_UID: info("ci", "kaniko", {steps.BUILD_LABEL: "true"}, ()),
    }


def test_classify_flags_only_the_busy_gcc_in_a_non_build_pod(steps: ModuleType) -> None:
    rows = steps.parse_ps(PS)
    cores = {812: 1.0, 4242: 0.5, 4243: 0.9, 5100: 1.0, 5101: 0.8, 5102: 0.9}
    found = steps.classify(rows, cores, _pods(steps))
    assert [(f.pid, f.comm, f.pod.name) for f in found] == [(4242, "gcc", "dashboard-abc")]
    # 812 is the host's own gcc (no pod), 4243/5102 are no compilers, 5100 runs in a
    # Job and 5101 in a pod labelled as a build.


def test_classify_ignores_an_idle_compiler(steps: ModuleType) -> None:
    rows = steps.parse_ps(PS)
    assert steps.classify(rows, {4242: 0.05}, _pods(steps)) == []
    assert steps.classify(rows, {}, _pods(steps)) == []


def test_classify_flags_a_pod_the_api_does_not_know(steps: ModuleType) -> None:
    # A process in a pod cgroup whose pod is gone from the API is still suspicious.
    found = steps.classify(steps.parse_ps(PS), {4242: 0.6}, {})
    assert [(f.pid, f.pod_uid, f.pod) for f in found] == [(4242, MINER_UID, None)]


def test_suspects_are_compilers_in_pods(steps: ModuleType) -> None:
    assert [r.pid for r in steps.suspects(steps.parse_ps(PS))] == [4242, 5100, 5101]


def test_build_pods(steps: ModuleType) -> None:
    info = steps.PodInfo
    assert steps.is_build_pod(info("ci", "b", {}, ("Job",)))
    assert steps.is_build_pod(info("ci", "b", {steps.BUILD_LABEL: "true"}, ()))
    assert not steps.is_build_pod(info("x", "d", {steps.BUILD_LABEL: "false"}, ("ReplicaSet",)))


def test_sample_script_survives_a_suspect_that_exits(steps: ModuleType) -> None:
    """The node command must not fail when the last suspect is gone (CI saw this)."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists, as when a suspect exits mid-scan
    me = str(os.getpid())
    out = subprocess.run(
        ["env", "KFS_INTERVAL=0.05", "sh", "-c", steps._SAMPLE, "kfs-sample", me, str(gone.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cores = steps.parse_cpu_sample(out, os.sysconf("SC_CLK_TCK"))
    assert set(cores) == {int(me)}
    assert cores[int(me)] >= 0.0
