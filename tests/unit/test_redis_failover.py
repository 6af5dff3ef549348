"""The RedisFailover operator's decisions, without a cluster.

The planner is a pure function of a snapshot, so each situation from the Flant
story (a replica ready while empty, the master replaced first, an unsynced
replica promoted) and each guard of the safe policy is one small table here.
The pods' readiness script (images/workloads/) and the Flant story's writer are loaded
from their folders.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from failure_stories.operator import redis_failover as rf

REPO = Path(__file__).resolve().parents[2]
# The operator's readiness probe is shared; the writer is the Flant story's own.
WORKLOADS = {
    "redis_ready": REPO / "images" / "workloads",
    "redis_writer": REPO / "scenarios" / "flant-redis-data-loss" / "workloads",
    "redis_fill": REPO / "scenarios" / "flant-redis-data-loss" / "workloads",
}
IMAGE = "localhost/kfs/toolbox:v1"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"kfs_workload_{name}", WORKLOADS[name] / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- INFO

INFO_SYNCING = """# Replication\r
role:slave\r
master_host:10.244.0.5\r
master_port:6379\r
master_link_status:down\r
master_last_io_seconds_ago:-1\r
master_sync_in_progress:0\r
slave_read_repl_offset:1\r
slave_repl_offset:1\r
master_link_down_since_seconds:-1\r
connected_slaves:0\r
master_repl_offset:0\r
# Persistence\r
loading:0\r
"""

INFO_SYNCED = """# Replication
role:slave
master_host:10.244.0.5
master_link_status:up
master_sync_in_progress:0
slave_repl_offset:5230
connected_slaves:0
master_repl_offset:5230
# Persistence
loading:0
# Keyspace
db0:keys=300000,expires=0,avg_ttl=0
db1:keys=12,expires=0,avg_ttl=0
"""

INFO_MASTER = """# Replication
role:master
connected_slaves:2
master_repl_offset:5230
# Persistence
loading:0
# Keyspace
db0:keys=300000,expires=0,avg_ttl=0
"""


def test_info_is_parsed_into_replication_facts() -> None:
    syncing = rf.RedisState.from_info(rf.parse_info(INFO_SYNCING))
    assert syncing.role == "slave"
    assert syncing.master_host == "10.244.0.5"
    assert not syncing.master_link_up
    assert syncing.keys == 0
    assert syncing.link_down_since_seconds == -1
    synced = rf.RedisState.from_info(rf.parse_info(INFO_SYNCED))
    assert synced.master_link_up and synced.offset == 5230 and synced.keys == 300000
    master = rf.RedisState.from_info(rf.parse_info(INFO_MASTER))
    assert master.role == "master" and master.master_host is None
    assert master.offset == 5230 and master.connected_replicas == 2


def test_keyspace_counts_one_database() -> None:
    fields = rf.parse_info(INFO_SYNCED)
    assert rf.keyspace_keys(fields) == 300000
    assert rf.keyspace_keys(fields, db=1) == 12
    assert rf.keyspace_keys(fields, db=5) == 0


# A replica waiting for its first full sync: this is the state in which the
# story's probe said "ready". Redis 7 reports master_sync_in_progress:0 during
# the diskless-sync delay, so only the link status tells the truth.
READINESS_CASES = [
    ("syncing replica", INFO_SYNCING, True, False),
    ("synced replica", INFO_SYNCED, True, True),
    ("master", INFO_MASTER, True, True),
    (
        "transfer running",
        INFO_SYNCED.replace("sync_in_progress:0", "sync_in_progress:1"),
        True,
        False,
    ),
    ("loading", INFO_MASTER.replace("loading:0", "loading:1"), True, False),
    ("link down", INFO_SYNCED.replace("link_status:up", "link_status:down"), True, False),
]


@pytest.mark.parametrize(("case", "info", "naive", "safe"), READINESS_CASES)
def test_readiness_of_each_policy(case: str, info: str, naive: bool, safe: bool) -> None:
    state = rf.RedisState.from_info(rf.parse_info(info))
    assert rf.readiness(state, "naive")[0] is naive, case
    assert rf.readiness(state, "safe")[0] is safe, case
    assert rf.readiness(None, "naive")[0] is False


@pytest.mark.parametrize(("case", "info", "naive", "safe"), READINESS_CASES)
def test_the_pods_probe_script_agrees_with_the_operator(
    case: str, info: str, naive: bool, safe: bool
) -> None:
    probe = _load("redis_ready")
    ok, reason = probe.decide(probe.fields(info))
    assert ok is safe, f"{case}: {reason}"
    assert (ok, reason) == rf.readiness(rf.RedisState.from_info(rf.parse_info(info)), "safe")


# --------------------------------------------------------------------------- spec


def test_spec_defaults_and_hash() -> None:
    spec = rf.parse_spec({"replicas": 1, "memory": "256Mi", "safety": "naive"}, IMAGE)
    assert spec.image == IMAGE and spec.node_selector == {"kfs.dev/real-node": "true"}
    scaled = rf.parse_spec({"replicas": 3, "memory": "256Mi", "safety": "naive"}, IMAGE)
    smaller = rf.parse_spec({"replicas": 3, "memory": "192Mi", "safety": "naive"}, IMAGE)
    # Scaling alone replaces nothing; a memory change replaces every pod.
    assert spec.template_hash == scaled.template_hash != smaller.template_hash


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"replicas": 0}, "between 1 and"),
        ({"replicas": "3"}, "integer"),
        ({"memory": "12 apples"}, "quantity"),
        ({"safety": "yolo"}, "naive, safe"),
        ({"persistence": {"enabled": True}}, "hostPath"),
        ({"persistence": {"enabled": True, "hostPath": "relative"}}, "absolute"),
        ({"nodeSelector": ["x"]}, "nodeSelector"),
    ],
)
def test_invalid_specs_say_what_to_fix(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(rf.InvalidSpec, match=message):
        rf.parse_spec(raw, IMAGE)


# --------------------------------------------------------------------------- the planner

OLD = rf.parse_spec({"replicas": 1, "memory": "256Mi", "safety": "naive"}, IMAGE)


def _spec(safety: str = "naive", **kw: Any) -> rf.Spec:
    raw = {"replicas": 3, "memory": "192Mi", "safety": safety, **kw}
    return rf.parse_spec(raw, IMAGE)


def _state(info: str, **kw: Any) -> rf.RedisState:
    return replace(rf.RedisState.from_info(rf.parse_info(info)), **kw)


def _master(spec_hash: str, name: str = "cache-0", index: int = 0, **kw: Any) -> rf.Instance:
    return rf.Instance(
        name=name,
        index=index,
        spec_hash=spec_hash,
        is_master=True,
        epoch=kw.pop("epoch", 1),
        phase="Running",
        ip=kw.pop("ip", "10.244.0.5"),
        ready=True,
        state=kw.pop("state", _state(INFO_MASTER)),
        **kw,
    )


def _replica(index: int, spec_hash: str, info: str = INFO_SYNCED, **kw: Any) -> rf.Instance:
    return rf.Instance(
        name=f"cache-{index}",
        index=index,
        spec_hash=spec_hash,
        phase="Running",
        ip=f"10.244.0.{10 + index}",
        ready=kw.pop("ready", True),
        synced_to=kw.pop("synced_to", "cache-0/1" if info is INFO_SYNCED else ""),
        state=kw.pop("state", _state(info)),
        **kw,
    )


def test_first_instance_starts_as_master() -> None:
    action = rf.plan(rf.Snapshot(OLD, ()))
    assert action == rf.Create((0,), None, 1, action.reason)  # type: ignore[union-attr]


def test_scale_up_creates_replicas_of_the_master() -> None:
    snap = rf.Snapshot(_spec(), (_master(OLD.template_hash),))
    action = rf.plan(snap)
    assert isinstance(action, rf.Create)
    assert action.indexes == (1, 2) and action.replica_of == "10.244.0.5"


def test_naive_replaces_the_master_while_replicas_are_still_empty() -> None:
    """The story: PING-ready replicas, so the master (index 0) goes first."""
    spec = _spec("naive")
    snap = rf.Snapshot(
        spec,
        (
            _master(OLD.template_hash),
            _replica(1, spec.template_hash, INFO_SYNCING),
            _replica(2, spec.template_hash, INFO_SYNCING),
        ),
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Delete) and action.name == "cache-0"
    assert "master" in action.reason


def test_naive_promotes_the_first_ready_replica_even_if_empty() -> None:
    spec = _spec("naive")
    gone = replace(_master(OLD.template_hash), terminating=True)
    snap = rf.Snapshot(
        spec,
        (
            gone,
            _replica(1, spec.template_hash, INFO_SYNCING),
            _replica(2, spec.template_hash, INFO_SYNCING),
        ),
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Failover)
    assert (action.target, action.source, action.planned) == ("cache-1", "cache-0", False)
    assert action.synced is False


def test_safe_waits_for_the_replicas_to_sync() -> None:
    spec = _spec("safe")
    snap = rf.Snapshot(
        spec,
        (
            _master(OLD.template_hash),
            _replica(1, spec.template_hash, INFO_SYNCING),
            _replica(2, spec.template_hash),
        ),
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Wait) and "cache-1" in action.reason


def test_safe_rolls_outdated_replicas_before_the_master() -> None:
    spec = _spec("safe")
    snap = rf.Snapshot(
        spec,
        (
            _master(OLD.template_hash),
            _replica(1, OLD.template_hash),
            _replica(2, spec.template_hash),
        ),
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Delete) and action.name == "cache-1"


def test_safe_fails_over_to_the_furthest_synced_replica_then_replaces_the_old_master() -> None:
    spec = _spec("safe")
    behind = _replica(1, spec.template_hash, state=_state(INFO_SYNCED, offset=100))
    ahead = _replica(2, spec.template_hash, state=_state(INFO_SYNCED, offset=5230))
    snap = rf.Snapshot(spec, (_master(OLD.template_hash), behind, ahead))
    action = rf.plan(snap)
    assert isinstance(action, rf.Failover)
    assert (action.target, action.source, action.planned, action.synced) == (
        "cache-2",
        "cache-0",
        True,
        True,
    )
    # After the failover the old master is an outdated replica: replaced like one.
    demoted = replace(
        _replica(0, OLD.template_hash, state=_state(INFO_SYNCED, master_host="10.244.0.12")),
        synced_to="cache-2/2",
    )
    new_master = _master(spec.template_hash, name="cache-2", index=2, ip="10.244.0.12", epoch=2)
    follower = _replica(1, spec.template_hash, state=_state(INFO_SYNCED, master_host="10.244.0.12"))
    action = rf.plan(rf.Snapshot(spec, (demoted, follower, new_master)))
    assert isinstance(action, rf.Delete) and action.name == "cache-0"


def test_safe_unplanned_failover_only_promotes_a_replica_seen_synced() -> None:
    spec = _spec("safe")
    gone = replace(_master(spec.template_hash), terminating=True)
    empty = _replica(1, spec.template_hash, INFO_SYNCING)
    holder = _replica(2, spec.template_hash, synced_to="cache-0/1", state=_state(INFO_SYNCING))
    action = rf.plan(rf.Snapshot(spec, (gone, empty, holder)))
    assert isinstance(action, rf.Failover) and action.target == "cache-2" and action.synced
    nobody = rf.plan(rf.Snapshot(spec, (gone, empty)))
    assert isinstance(nobody, rf.Wait) and nobody.warning


def test_safe_refuses_to_replicate_an_empty_master_over_data() -> None:
    spec = _spec("safe")
    empty_master = _master(spec.template_hash, state=_state(INFO_MASTER, keys=0))
    holding = _replica(1, spec.template_hash, state=_state(INFO_MASTER, keys=300000))
    action = rf.plan(rf.Snapshot(spec, (empty_master, holding)))
    assert isinstance(action, rf.Wait) and action.warning and "cache-1" in action.reason
    # The naive operator does it, which is how the old master lost its copy.
    naive = _spec("naive")
    action = rf.plan(rf.Snapshot(naive, (empty_master, holding)))
    assert isinstance(action, rf.Repoint) and action.names == ("cache-1",)


def test_a_crash_between_two_labels_is_resolved_by_epoch() -> None:
    spec = _spec("safe")
    old = _master(spec.template_hash, epoch=1)
    new = _master(spec.template_hash, name="cache-1", index=1, ip="10.244.0.11", epoch=2)
    action = rf.plan(rf.Snapshot(spec, (old, new)))
    assert action == rf.Unlabel(("cache-0",), action.reason)  # type: ignore[union-attr]


def test_a_labelled_master_that_is_a_replica_loses_its_label() -> None:
    spec = _spec("safe")
    liar = _master(spec.template_hash, state=_state(INFO_SYNCED))
    action = rf.plan(rf.Snapshot(spec, (liar,)))
    assert isinstance(action, rf.Unlabel) and action.names == ("cache-0",)


def test_converged_when_everything_is_current_and_synced() -> None:
    spec = _spec("safe")
    snap = rf.Snapshot(
        spec,
        (
            _master(spec.template_hash),
            _replica(1, spec.template_hash),
            _replica(2, spec.template_hash),
        ),
    )
    assert isinstance(rf.plan(snap), rf.Converged)


def test_a_terminating_pod_is_waited_for_before_its_name_is_reused() -> None:
    spec = _spec("safe")
    leaving = replace(_replica(1, OLD.template_hash), terminating=True)
    snap = rf.Snapshot(
        spec, (_master(spec.template_hash), leaving, _replica(2, spec.template_hash))
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Wait) and "index 1" in action.reason


def test_single_instance_safe_rollout_needs_persistence() -> None:
    persistent = _spec("safe", replicas=1, persistence={"enabled": True, "hostPath": "/data"})
    action = rf.plan(rf.Snapshot(persistent, (_master(OLD.template_hash),)))
    assert isinstance(action, rf.Delete) and "RDB" in action.reason
    volatile = _spec("safe", replicas=1)
    action = rf.plan(rf.Snapshot(volatile, (_master(OLD.template_hash),)))
    assert isinstance(action, rf.Wait) and action.warning


def test_sync_marks_name_the_master_and_its_epoch() -> None:
    spec = _spec("safe")
    snap = rf.Snapshot(
        spec,
        (
            _master(spec.template_hash, epoch=4),
            _replica(1, spec.template_hash, synced_to="cache-0/3"),
            _replica(2, spec.template_hash, INFO_SYNCING),
        ),
    )
    assert rf.sync_marks(snap) == {"cache-1": "cache-0/4"}


# --------------------------------------------------------------------------- manifests


def test_pod_manifest_differs_by_policy_where_the_story_says() -> None:
    owner = rf.Owner("cache", "ns", "uid-1")
    naive = rf.pod_manifest(owner, _spec("naive"), 1, replica_of="10.0.0.1", epoch=1)
    safe = rf.pod_manifest(
        owner,
        _spec("safe", persistence={"enabled": True, "hostPath": "/var/tmp/x"}),
        1,
        replica_of="10.0.0.1",
        epoch=1,
    )
    container = naive["spec"]["containers"][0]
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    assert container["command"][-3:] == ["--replicaof", "10.0.0.1", "6379"]
    assert naive["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}
    assert naive["metadata"]["labels"][rf.LABEL_ROLE] == rf.ROLE_REPLICA
    assert safe["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][-1] == (
        rf.READY_SCRIPT
    )
    assert safe["spec"]["volumes"][0]["hostPath"]["path"] == "/var/tmp/x/cache-1"
    master = rf.pod_manifest(owner, _spec("safe"), 0, replica_of=None, epoch=3)
    assert master["metadata"]["labels"][rf.LABEL_ROLE] == rf.ROLE_MASTER
    assert master["metadata"]["annotations"] == {rf.ANN_EPOCH: "3"}
    assert master["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    service = rf.service_manifest(owner)
    assert service["spec"]["selector"] == {rf.LABEL_OWNER: "cache", rf.LABEL_ROLE: "master"}


# --------------------------------------------------------------------------- RESP


def test_resp_replies_are_decoded() -> None:
    wire = b"*3\r\n+OK\r\n:42\r\n$5\r\nhello\r\n"
    assert rf.read_reply(io.BytesIO(wire)) == ["OK", 42, "hello"]
    assert rf.read_reply(io.BytesIO(b"$-1\r\n")) is None
    with pytest.raises(rf.RedisError, match="READONLY"):
        rf.read_reply(io.BytesIO(b"-READONLY You can't write against a read only replica.\r\n"))
    with pytest.raises(ConnectionError):
        rf.read_reply(io.BytesIO(b"+OK"))
    assert rf.encode_command(["GET", "k"]) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


@pytest.fixture
def fake_redis() -> Iterator[tuple[str, int]]:
    """A one-shot server answering INFO the way redis-server does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            body = INFO_SYNCED.replace("\n", "\r\n").encode()
            conn.sendall(b"$%d\r\n%s\r\n" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()
    thread.join(timeout=5)
    server.close()


def test_client_reads_the_state_of_a_server(fake_redis: tuple[str, int]) -> None:
    host, port = fake_redis
    state = rf.RedisClient(host, port).state()
    assert rf.is_synced(state) and state.keys == 300000


# --------------------------------------------------------------------------- workloads


def test_fill_stream_is_the_redis_protocol() -> None:
    fill = _load("redis_fill")
    data = b"".join(fill.stream(3, 4, "k:", batch=2))
    assert data.count(b"*3\r\n$3\r\nSET\r\n") == 3
    assert b"$3\r\nk:2\r\n$4\r\nvvvv\r\n" in data


def test_writer_summary_counts_time_until_the_next_attempt() -> None:
    writer = _load("redis_writer")
    records = [
        {"t": 10.0, "ok": True, "err": ""},
        {"t": 10.1, "ok": False, "err": "ConnectionRefusedError"},
        {"t": 10.6, "ok": False, "err": "ConnectionRefusedError"},
        {"t": 11.1, "ok": True, "err": ""},
        {"t": 11.2, "ok": False, "err": "READONLY"},
        {"t": 11.3, "ok": True, "err": ""},
        {"t": 99.0, "ok": False, "err": "outside the window"},
    ]
    summary = writer.summarize(records, since=10.0, until=12.0)
    assert summary["attempts"] == 6 and summary["failed"] == 3
    assert summary["unavailable_seconds"] == pytest.approx(1.1)
    assert summary["longest_outage_seconds"] == pytest.approx(1.0)
    assert summary["errors"] == {"ConnectionRefusedError": 2, "READONLY": 1}


def test_naive_calls_the_rollout_done_before_the_replicas_hold_the_data() -> None:
    spec = _spec("naive")
    snap = rf.Snapshot(
        spec,
        (
            _master(spec.template_hash),
            _replica(1, spec.template_hash, INFO_SYNCING),
            _replica(2, spec.template_hash),
        ),
    )
    action = rf.plan(snap)
    assert isinstance(action, rf.Converged) and action.settled is False
