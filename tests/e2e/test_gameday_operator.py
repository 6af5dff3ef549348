"""GameDay resources against the real cluster: the operator runs stories from the cluster.

A namespace-scoped operator (operator/gameday.py only) on this host follows
GameDays created in the test's namespace. Each test checks what an SRE would:
the verdict and the measurements in status, the Events, the metrics, that a
drill keeps the fault live until it is revealed, that deleting a GameDay
reverts its fault before the object goes, and that an operator crash neither
loses a run (its worker carries on and is re-attached) nor leaks one (a dead
worker's leftovers are reverted and the run starts again).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.contract.scenario import PHASES
from failure_stories.core.errors import WaitTimeout
from failure_stories.core.wait import sample, wait_for
from failure_stories.gameday.resource import GROUP, KIND, PLURAL, VERSION, Worker
from failure_stories.host import netns
from failure_stories.operator import runtime
from failure_stories.providers.base import Provider
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import layout as L

pytestmark = pytest.mark.e2e

NAME = "drill"
# A run of moonlight takes about 40 s on this machine, jwplayer about 35 s.
RUN_TIMEOUT = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GameDays:
    """The test's operator and the GameDays of its namespace."""

    def __init__(self, kube: Kube, namespace: str, state: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.state = state
        self.metrics_port = _free_port()
        self.operator = runtime.HostOperator(
            kube.kubeconfig,
            state,
            name=f"e2e-gameday-{namespace}",
            namespaces=(namespace,),
            handler_files=("gameday.py",),
            env={"KFS_METRICS_PORT": str(self.metrics_port)},
        )
        self.custom = client.CustomObjectsApi(kube.api)

    def create(self, scenario: str, **spec: Any) -> str:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": NAME},
            "spec": {"scenario": scenario, **spec},
        }
        obj = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return str(obj["metadata"]["uid"])

    def get(self) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, NAME
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def status(self) -> dict[str, Any]:
        obj = self.get()
        assert obj is not None, "the GameDay is gone"
        return dict(obj.get("status") or {})

    def wait_state(self, *states: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        return self.wait_status(
            lambda st: st.get("state") in states, what=f"GameDay state {states}", timeout=timeout
        )

    def wait_status(
        self, done: Callable[[dict[str, Any]], bool], what: str, timeout: float = RUN_TIMEOUT
    ) -> dict[str, Any]:
        """The status once ``done`` holds; a timeout says the status last seen."""
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            seen.clear()
            seen.update(self.status())
            return dict(seen) if done(seen) else None

        try:
            return wait_for(reached, what=what, timeout=timeout, interval=1)
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; the GameDay's status: {seen}") from exc

    def reveal(self) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, NAME, {"spec": {"reveal": True}}
        )

    def delete(self) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, NAME)

    def events(self) -> list[tuple[str, str]]:
        """(reason, message) of the GameDay's Events."""
        events = self.kube.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={NAME}"
        ).items
        return [(e.reason, e.message) for e in events]

    def event_reasons(self) -> list[str]:
        return [reason for reason, _ in self.events()]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def worker(self, uid: str, attempt: int) -> Worker:
        return Worker(self.state, uid, attempt)


@pytest.fixture
def gamedays(
    kfs_provider: Provider, kube: Kube, namespace: str, tmp_path: Path
) -> Iterator[GameDays]:
    if kfs_provider.name != "local":
        pytest.skip("GameDay workers drive the embedded cluster from its host (local provider)")
    runtime.ensure_crds(kube)
    gd = GameDays(kube, namespace, tmp_path / "operator")
    gd.operator.start()
    yield gd
    try:
        # A GameDay still present is deleted while its operator can revert it.
        if gd.get() is not None:
            if not gd.operator.alive():
                gd.operator.start()
            gd.delete()
            wait_for(lambda: gd.get() is None, what="the GameDay to go", timeout=300, interval=1)
        gd.operator.stop()
    finally:
        # Shown when the test fails; the files go with the test's temp dir.
        print(f"operator log: {gd.operator.log_path}")
        print(_tail(gd.operator.log_path, OPERATOR_LOG_LINES))
        for log in sorted(gd.state.glob("logs/gameday-*.log")):
            print(f"{log.name}:\n{_tail(log, WORKER_LOG_LINES)}")


OPERATOR_LOG_LINES = 40
WORKER_LOG_LINES = 15


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} was not written)"


def _not_ready_sim_nodes(kube: Kube) -> list[str]:
    return [n for n in L.SIMULATED_NODES if not kube.node_ready(n)]


def _wait_nodes_ready(kube: Kube) -> None:
    wait_for(
        lambda: not _not_ready_sim_nodes(kube),
        what="every simulated node Ready again",
        timeout=90,
        interval=1,
    )


def _when_holding(gd: GameDays, kube: Kube) -> dict[str, Any]:
    """Wait for the drill's hold and check the fault is live: a node is down."""
    st = gd.wait_state("Holding")
    assert st["phase"] == "symptom"
    assert st["measurements"]["symptom"]["outage_seconds"] > 0
    frozen = wait_for(
        lambda: _not_ready_sim_nodes(kube), what="the failed node NotReady", timeout=60
    )
    assert len(frozen) == 1
    return st


def test_verify_gameday_reaches_passed_with_measurements_events_and_metrics(
    gamedays: GameDays, kube: Kube
) -> None:
    target = f"kfs-gameday-{gamedays.namespace[-6:]}-jw"
    gamedays.create("jwplayer-exposed-dashboard", targetNamespace=target)
    st = gamedays.wait_state("Finished")
    assert st["verdict"] == "passed", st.get("message")
    assert st["namespace"] == target
    assert st["attempt"] == 1 and st["runs"] == 1
    symptom, verify = st["measurements"]["symptom"], st["measurements"]["verify"]
    assert symptom["outside_exec_succeeded"] == 1 and verify["outside_exec_succeeded"] == 0
    assert symptom["miner_processes_detected"] >= 1 and verify["miner_processes_detected"] == 0
    assert [p["name"] for p in st["phases"]] == list(PHASES)
    assert all(p["ok"] for p in st["phases"])
    assert Path(st["report"]).is_file()
    assert kube.namespace_gone(st["namespace"])
    reasons = gamedays.event_reasons()
    # Events carry second-resolution timestamps: count them, do not order them.
    assert reasons.count("Started") == 1 and reasons.count("Finished") == 1
    assert reasons.count("PhaseDone") == 7 and "PhaseFailed" not in reasons
    text = gamedays.metrics()
    scenario = 'scenario="jwplayer-exposed-dashboard"'
    assert f'kfs_gameday_runs_total{{mode="verify",{scenario}}} 1.0' in text
    assert f'kfs_gameday_verdicts_total{{{scenario},verdict="passed"}} 1.0' in text
    assert f'kfs_gameday_phase_seconds_count{{phase="symptom",{scenario}}} 1.0' in text
    assert f"kfs_gameday_runs_in_progress{{{scenario}}} 0.0" in text
    assert not netns.leftovers()


def test_drill_holds_the_fault_until_revealed(gamedays: GameDays, kube: Kube) -> None:
    gamedays.create("moonlight-anti-affinity", mode="drill")
    _when_holding(gamedays, kube)
    # Trainees investigate: the fault stays, however long they take.
    states: list[tuple[str, int]] = []
    sample(
        lambda: states.append((gamedays.status()["state"], len(_not_ready_sim_nodes(kube)))),
        every=1,
        duration=20,
        what="the held drill",
    )
    assert len(states) >= 15
    assert set(states) == {("Holding", 1)}
    gamedays.reveal()
    st = gamedays.wait_state("Finished")
    assert st["verdict"] == "passed", st.get("message")
    assert st["heldSeconds"] >= 20
    assert st["measurements"]["verify"]["outage_seconds"] == 0
    assert {"Holding", "Revealed", "Finished"} <= set(gamedays.event_reasons())
    _wait_nodes_ready(kube)


def test_deleting_a_gameday_mid_run_reverts_its_fault_first(gamedays: GameDays, kube: Kube) -> None:
    uid = gamedays.create("moonlight-anti-affinity", mode="drill")
    run_ns = _when_holding(gamedays, kube)["namespace"]
    gamedays.delete()
    # The finalizer holds the object until the run is reverted: when it goes,
    # the run's namespace is already gone and the node is back.
    seen: list[bool] = []

    def gone() -> bool:
        if gamedays.get() is None:
            seen.append(kube.namespace_gone(run_ns))
            return True
        return False

    wait_for(gone, what="the GameDay to be finalized", timeout=300, interval=0.5)
    assert seen == [True]
    _wait_nodes_ready(kube)
    assert not gamedays.worker(uid, 1).alive()


def test_stopping_the_operator_reverts_the_run_in_progress(gamedays: GameDays, kube: Kube) -> None:
    uid = gamedays.create("moonlight-anti-affinity", mode="drill")
    run_ns = _when_holding(gamedays, kube)["namespace"]
    # SIGTERM, as `kfs operator uninstall` or a pod stop sends; it exits once
    # the run is reverted (a pod has 300 s for that).
    gamedays.operator.stop(timeout=180)
    assert not gamedays.worker(uid, 1).alive()
    assert kube.namespace_gone(run_ns)
    _wait_nodes_ready(kube)
    st = gamedays.status()
    assert st["state"] == "Reverted", st
    assert "the operator is stopping" in st["message"]
    gamedays.operator.start()  # the fixture deletes the GameDay with an operator present


def _kill_worker(gd: GameDays, uid: str, attempt: int) -> None:
    rec = gd.worker(uid, attempt).sup.record(f"gameday-{uid}-{attempt}")
    assert rec is not None
    os.killpg(rec.pid, signal.SIGKILL)
    wait_for(lambda: not gd.worker(uid, attempt).alive(), what="the worker to die", timeout=10)


def test_a_crashed_operator_resumes_the_run_on_restart(gamedays: GameDays, kube: Kube) -> None:
    uid = gamedays.create("moonlight-anti-affinity", mode="drill")
    _when_holding(gamedays, kube)
    gamedays.operator.crash()
    assert gamedays.worker(uid, 1).alive(), "the worker must outlive its operator"
    gamedays.reveal()  # revealed while no operator is there
    gamedays.operator.start()
    st = gamedays.wait_state("Finished")
    assert st["verdict"] == "passed", st.get("message")
    assert st["attempt"] == 1
    assert "Resumed" in gamedays.event_reasons()
    _wait_nodes_ready(kube)


def test_a_run_whose_worker_died_too_is_reverted_and_run_again(
    gamedays: GameDays, kube: Kube
) -> None:
    uid = gamedays.create("moonlight-anti-affinity", mode="drill")
    first_ns = _when_holding(gamedays, kube)["namespace"]
    gamedays.operator.crash()
    _kill_worker(gamedays, uid, 1)  # no teardown ran: the node stays failed
    assert len(_not_ready_sim_nodes(kube)) == 1
    gamedays.operator.start()
    st = gamedays.wait_status(
        lambda s: s.get("attempt") == 2 and s.get("state") == "Holding",
        what="the second attempt to hold the fault",
    )
    assert st["namespace"] != first_ns
    assert kube.namespace_gone(first_ns)
    (reverted,) = [m for r, m in gamedays.events() if r == "Reverted"]
    assert f"deleted namespace {first_ns}" in reverted
    assert "its kwok agent was frozen" in reverted  # the node-level fault, undone
    gamedays.reveal()
    st = gamedays.wait_state("Finished")
    assert st["verdict"] == "passed", st.get("message")
    _wait_nodes_ready(kube)


def test_a_scheduled_gameday_waits_for_its_cron_tick(gamedays: GameDays, kube: Kube) -> None:
    gamedays.create("moonlight-anti-affinity", mode="drill", schedule="* * * * *")
    st = gamedays.wait_state("Scheduled", timeout=60)
    tick = dt.datetime.fromisoformat(st["nextRunAt"])
    assert 0 < (tick - dt.datetime.now(dt.UTC)).total_seconds() <= 60
    assert "attempt" not in st  # nothing runs before the tick
    st = gamedays.wait_state("Running", "Holding", timeout=120)
    assert dt.datetime.fromisoformat(st["startedAt"]) >= tick
    assert st["attempt"] == 1
    # The fixture deletes it mid-run: the run is reverted before the object goes.


def test_invalid_gameday_says_why_in_status(gamedays: GameDays) -> None:
    gamedays.create("moonlight-antiaffinity")
    st = gamedays.wait_state("Invalid", timeout=60)
    assert "did you mean moonlight-anti-affinity" in st["message"]
    assert gamedays.event_reasons() == ["InvalidSpec"]
    # Only reveal may change: the API server refuses a new story for the same object.
    with pytest.raises(ApiException) as refused:
        gamedays.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            gamedays.namespace,
            PLURAL,
            NAME,
            {"spec": {"scenario": "moonlight-anti-affinity"}},
        )
    assert refused.value.status == 422
    assert "spec.scenario cannot change; create a new GameDay" in str(refused.value.body)
