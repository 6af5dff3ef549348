"""The log shipper and log sink of prometheuskube-missing-logs, without a cluster.

The shipper is driven tick by tick with a synthetic clock, so retries, drops and
restarts are exact and the tests take milliseconds; the end-to-end cases talk
HTTP to a real logsink server on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent / "workloads"
SHARED = Path(__file__).resolve().parents[2] / "images" / "workloads"
# In a pod the workloads run as scripts and find their shared module (httpserve)
# next to them; loaded from here they need its directory on the path.
sys.path.insert(0, str(SHARED))


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"kfs_workload_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


shipper = _load("shipper")
logsink = _load("logsink")
logwriter = _load("logwriter")

NS = "kfs-prometheuskube-missing-logs-abc123"


# -- fixtures --------------------------------------------------------------------------


class App:
    """Writes numbered lines into a kubelet-style CRI log file, as containerd does."""

    def __init__(self, pods: Path, namespace: str = NS, pod: str = "app") -> None:
        self.file = pods / f"{namespace}_{pod}_0b1c-uid" / "app" / "0.log"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.touch()
        self.seq = 0
        self.clock = 1_700_000_000.0

    def write(self, n: int) -> None:
        with self.file.open("a") as f:
            for _ in range(n):
                self.seq += 1
                self.clock += 0.05
                text = logwriter.line(self.seq, self.clock)
                f.write(f"2024-05-01T10:00:00.000000000Z stdout F {text}\n")


@pytest.fixture
def pods(tmp_path: Path) -> Path:
    d = tmp_path / "pods"
    d.mkdir()
    return d


def _seqs(docs: list[dict[str, Any]]) -> list[int]:
    return [int(logsink.SEQ_RE.search(d["log"]).group(1)) for d in docs]


class FakeSink:
    """A post function: records accepted bulks, or answers 429 while rejecting."""

    def __init__(self) -> None:
        self.rejecting = False
        self.accepted: list[int] = []
        self.calls = 0

    def __call__(self, url: str, body: bytes) -> tuple[int, Any]:
        self.calls += 1
        ops = logsink.parse_bulk(body)
        if self.rejecting:
            return 429, logsink.rejection_body("kfs-logs", len(ops))
        self.accepted += _seqs([doc for _a, _m, doc in ops if doc is not None])
        return 200, {"errors": False, "items": [{"create": {"status": 201}} for _ in ops]}


def _make(
    pods: Path,
    durable: bool,
    state: Path | None = None,
    post: Any = None,
    sink: str = "http://sink",
) -> Any:
    """A shipper in one of the scenario's two configurations, freshly started."""
    if durable:
        assert state is not None
        positions = shipper.PositionDB(state / "positions.json")
        buffer = shipper.FileBuffer(state / "buffer")
        settings = shipper.Settings(
            sink=sink, flush=2.0, retry_limit=None, retry_wait=1.0, retry_max_wait=4.0
        )
    else:
        positions, buffer = shipper.PositionDB(None), shipper.MemoryBuffer()
        settings = shipper.Settings(sink=sink, flush=1.0, retry_limit=1, retry_wait=2.0)
    tailer = shipper.Tailer(pods, NS, "app", positions)
    s = shipper.Shipper(tailer, buffer, settings, **({"post": post} if post else {}))
    tailer.discover()
    return s


def _run(s: Any, app: App, start: float, seconds: float, lines_per_tick: int = 2) -> float:
    """Tick every 0.1 s (as the real loop does) while the app keeps writing."""
    now = start
    for _ in range(round(seconds * 10)):
        app.write(lines_per_tick)
        now += 0.1
        s.tick(now)
    return now


# -- CRI parsing and tailing -----------------------------------------------------------


def test_cri_lines_are_split_into_time_stream_tag_and_message() -> None:
    assert shipper.parse_cri("2024-05-01T10:00:00Z stdout F hello world\n") == (
        "2024-05-01T10:00:00Z",
        "stdout",
        True,
        "hello world",
    )
    assert shipper.parse_cri("2024-05-01T10:00:00Z stderr P part")[2] is False
    assert shipper.parse_cri("2024-05-01T10:00:00Z stdout F") == (
        "2024-05-01T10:00:00Z",
        "stdout",
        True,
        "",
    )
    assert shipper.parse_cri("not a cri line") is None


def test_partial_lines_are_joined_and_half_written_lines_wait(pods: Path) -> None:
    app = App(pods)
    t = shipper.Tailer(pods, NS, "app", shipper.PositionDB(None), read_from_head=True)
    t.discover()
    with app.file.open("a") as f:
        f.write("2024-05-01T10:00:00Z stdout P first half, \n")
        f.write("2024-05-01T10:00:01Z stdout F second half\n")
        f.write("2024-05-01T10:00:02Z stdout F not finish")
    records = t.read()
    assert [r.doc["log"] for r in records] == ["first half, second half"]
    assert records[0].doc["@timestamp"] == "2024-05-01T10:00:00Z"
    assert records[0].doc["kubernetes"] == {
        "namespace_name": NS,
        "pod_name": "app",
        "container_name": "app",
    }
    with app.file.open("a") as f:
        f.write("ed\n")
    assert [r.doc["log"] for r in t.read()] == ["not finished"]


def test_only_the_app_pod_of_the_namespace_is_followed(pods: Path) -> None:
    App(pods)
    App(pods, pod="shipper-x7k2p")
    App(pods, namespace=NS + "-other")
    App(pods, namespace="default")
    t = shipper.Tailer(pods, NS, "app", shipper.PositionDB(None))
    assert [p.parent.parent.name for p in t.matching()] == [f"{NS}_app_0b1c-uid"]


def test_without_a_position_db_a_start_skips_what_is_already_written(pods: Path) -> None:
    app = App(pods)
    app.write(50)
    t = shipper.Tailer(pods, NS, "app", shipper.PositionDB(None))
    t.discover()
    app.write(3)
    assert _seqs([r.doc for r in t.read()]) == [51, 52, 53]


def test_read_from_head_and_files_appearing_later_are_read_whole(pods: Path) -> None:
    app = App(pods)
    app.write(5)
    t = shipper.Tailer(pods, NS, "app", shipper.PositionDB(None), read_from_head=True)
    t.discover()
    assert _seqs([r.doc for r in t.read()]) == [1, 2, 3, 4, 5]

    late = shipper.Tailer(pods, NS, "app*", shipper.PositionDB(None))
    late.discover()  # only the first file exists now: followed from its end
    second = App(pods, pod="app-2")
    second.write(2)
    late.discover()
    assert _seqs([r.doc for r in late.read()]) == [1, 2]


def test_a_position_db_resumes_where_the_last_process_stopped(pods: Path, tmp_path: Path) -> None:
    app = App(pods)
    db = tmp_path / "positions.json"
    first = shipper.Tailer(pods, NS, "app", shipper.PositionDB(db))
    first.discover()
    app.write(4)
    records = first.read()
    first.positions.update(records[:2])  # only two made it into the buffer
    first.positions.save()
    app.write(3)  # written while no shipper runs

    second = shipper.Tailer(pods, NS, "app", shipper.PositionDB(db))
    second.discover()
    assert _seqs([r.doc for r in second.read()]) == [3, 4, 5, 6, 7]


def test_a_truncated_or_replaced_file_is_read_from_its_start(pods: Path, tmp_path: Path) -> None:
    app = App(pods)
    app.write(10)
    db = shipper.PositionDB(tmp_path / "positions.json")
    t = shipper.Tailer(pods, NS, "app", db, read_from_head=True)
    t.discover()
    db.update(t.read())
    db.save()
    app.file.write_text("")  # truncated in place
    app.write(2)
    t.discover()
    assert _seqs([r.doc for r in t.read()]) == [11, 12]

    # A new file under the same name while the shipper was down (new inode).
    app.file.rename(app.file.with_suffix(".log.old"))
    app.write(1)
    db.save()
    restarted = shipper.Tailer(pods, NS, "app", shipper.PositionDB(tmp_path / "positions.json"))
    restarted.discover()
    assert _seqs([r.doc for r in restarted.read()]) == [13]


def test_lines_left_in_a_rotated_file_are_read_before_the_new_one(pods: Path) -> None:
    app = App(pods)
    t = shipper.Tailer(pods, NS, "app", shipper.PositionDB(None))
    t.discover()
    app.write(2)
    assert _seqs([r.doc for r in t.read()]) == [1, 2]
    app.write(2)
    app.file.rename(app.file.with_suffix(".log.20240501-100000"))
    app.write(1)
    t.discover()
    assert _seqs([r.doc for r in t.read()]) == [3, 4, 5]


# -- retry, drop and restart -----------------------------------------------------------


def test_fragile_a_refused_chunk_is_retried_once_then_dropped(pods: Path) -> None:
    app = App(pods)
    sink = FakeSink()
    s = _make(pods, durable=False, post=sink)
    sink.rejecting = True
    now = _run(s, app, 0.0, 1.5)  # the first chunk is cut after 1 s and refused
    assert sink.calls == 1 and len(s.buffer.chunks) == 1
    now = _run(s, app, now, 2.0)  # its one retry, 2 s later, is refused too
    assert s.metrics.chunks_dropped >= 1
    assert s.metrics.records_dropped >= 20
    sink.rejecting = False
    now = _run(s, app, now, 5.0)
    assert not s.buffer.chunks
    missing = set(range(1, app.seq - 20)) - set(sink.accepted)
    assert missing, "chunks refused twice are gone for good"
    assert len(missing) == s.metrics.records_dropped


def test_fragile_a_chunk_refused_once_still_arrives(pods: Path) -> None:
    app = App(pods)
    sink = FakeSink()
    s = _make(pods, durable=False, post=sink)
    sink.rejecting = True
    now = _run(s, app, 0.0, 1.5)
    sink.rejecting = False
    _run(s, app, now, 4.0)
    assert s.metrics.chunks_dropped == 0
    assert sorted(sink.accepted) == list(range(1, len(sink.accepted) + 1))


def test_durable_retries_with_backoff_oldest_first_until_accepted(
    pods: Path, tmp_path: Path
) -> None:
    app = App(pods)
    sink = FakeSink()
    s = _make(pods, durable=True, state=tmp_path / "state", post=sink)
    sink.rejecting = True
    now = _run(s, app, 0.0, 20.0)
    # 1, 2, 4, 4, 4... s between tries of the oldest chunk, nothing newer sent meanwhile.
    assert 5 <= sink.calls <= 8
    assert s.metrics.chunks_dropped == 0
    assert len(s.buffer.chunks) in (9, 10)  # one every 2 s
    sink.rejecting = False
    now = _run(s, app, now, 6.0)
    assert sink.accepted == sorted(sink.accepted)
    assert set(range(1, app.seq - 40)) <= set(sink.accepted)


def test_backoff_doubles_up_to_its_cap() -> None:
    s = shipper.Shipper(
        None, shipper.MemoryBuffer(), shipper.Settings(sink="x", retry_wait=1, retry_max_wait=4)
    )
    assert [s._backoff(n) for n in range(1, 6)] == [1, 2, 4, 4, 4]


def test_durable_a_restart_during_the_outage_loses_nothing(pods: Path, tmp_path: Path) -> None:
    app = App(pods)
    sink = FakeSink()
    state = tmp_path / "state"
    s = _make(pods, durable=True, state=state, post=sink)
    now = _run(s, app, 0.0, 3.0)
    sink.rejecting = True
    now = _run(s, app, now, 5.0)
    assert len(list((state / "buffer").glob("*.chunk"))) >= 2
    del s  # killed: memory is gone, the state dir is not
    app.write(60)  # written while no shipper runs
    s = _make(pods, durable=True, state=state, post=sink)
    assert len(s.buffer.chunks) >= 2
    now = _run(s, app, now + 3, 7.0)
    sink.rejecting = False
    _run(s, app, now, 8.0, lines_per_tick=0)
    assert set(sink.accepted) == set(range(1, app.seq + 1))
    assert not list((state / "buffer").glob("*.chunk"))


def test_fragile_a_restart_during_the_outage_loses_the_gap_and_the_buffer(pods: Path) -> None:
    app = App(pods)
    sink = FakeSink()
    s = _make(pods, durable=False, post=sink)
    now = _run(s, app, 0.0, 3.0)
    sink.rejecting = True
    now = _run(s, app, now, 1.5)  # refused once, waiting for its retry
    in_memory = [seq for c in s.buffer.chunks for seq in _seqs(c.docs)]
    assert in_memory
    del s
    app.write(60)
    gap = range(app.seq - 59, app.seq + 1)
    s = _make(pods, durable=False, post=sink)
    sink.rejecting = False
    _run(s, app, now + 3, 3.0)
    assert not set(in_memory) & set(sink.accepted)
    assert not set(gap) & set(sink.accepted)


# -- the sink --------------------------------------------------------------------------


def _bulk(*docs: dict[str, Any]) -> bytes:
    return b"".join(
        json.dumps({"create": {"_index": "kfs-logs"}}).encode()
        + b"\n"
        + json.dumps(d).encode()
        + b"\n"
        for d in docs
    )


def test_bulk_bodies_are_parsed_as_elasticsearch_does() -> None:
    body = _bulk({"log": "seq=1 ts=1.0"}) + b'{"delete": {"_id": "x"}}\n{"index": {}}\n{"a": 1}\n'
    ops = logsink.parse_bulk(body)
    assert [(a, d) for a, _m, d in ops] == [
        ("create", {"log": "seq=1 ts=1.0"}),
        ("delete", None),
        ("index", {"a": 1}),
    ]
    assert ops[0][1] == {"_index": "kfs-logs"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"index": {}}\n{"a": 1}', "terminated by a newline"),
        (b"not json\n", "Malformed action/metadata line [1]"),
        (b'{"upsert": {}}\n{"a": 1}\n', "unknown parameter [upsert]"),
        (b'{"index": {}, "create": {}}\n{"a": 1}\n', "single action"),
        (b'{"index": {}}\n', "without source"),
        (b"\n", "no requests added"),
    ],
)
def test_bad_bulk_bodies_are_refused(body: bytes, says: str) -> None:
    with pytest.raises(logsink.BulkError) as err:
        logsink.parse_bulk(body)
    assert says in str(err.value)


def test_ranges_compress_sequence_numbers() -> None:
    assert logsink.ranges([7, 1, 2, 3, 3, 9, 8]) == [[1, 3], [7, 9]]
    assert logsink.ranges([]) == []


def test_the_store_counts_missing_and_duplicate_lines_in_a_window() -> None:
    store = logsink.Store()
    store.accept([{"log": f"seq={n} ts={n}.0"} for n in (1, 2, 2, 3, 6, 7)], now=10.0)
    w = store.window(1, 7)
    assert (w["expected"], w["received"], w["missing"], w["duplicates"]) == (7, 5, 2, 1)
    assert w["missing_ranges"] == [[4, 5]]


def test_the_store_knows_the_largest_freshness_lag_over_an_interval() -> None:
    store = logsink.Store()
    store.accept([{"log": "seq=1 ts=100.0"}], now=101.0)
    store.accept([{"log": "seq=2 ts=101.0"}], now=102.0)
    store.accept([{"log": "seq=3 ts=102.0"}], now=120.0)  # 19 s without news before this
    store.accept([{"log": "seq=4 ts=119.0"}], now=121.0)
    assert store.max_lag(since=0.0, now=121.5) == 19.0  # just before the 3rd arrival
    # At 120.5 the newest line (ts 102) is already 18.5 s old, 19 s just before 121.
    assert store.max_lag(since=120.5, now=122.0) == 19.0
    assert store.max_lag(since=121.5, now=122.0) == 3.0
    assert store.lag(130.0) == 11.0


@pytest.fixture
def sink_url() -> Iterator[tuple[str, Any]]:
    store = logsink.Store()
    server = logsink.make_server("127.0.0.1", 0, store)
    server.RequestHandlerClass.quiet = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _http(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    method = "POST" if body is not None else "GET"
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - 127.0.0.1 only
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_sink_answers_bulk_writes_like_elasticsearch(sink_url: tuple[str, Any]) -> None:
    url, _store = sink_url
    status, body = _http(f"{url}/_bulk", _bulk({"log": "seq=1 ts=1.5"}, {"log": "seq=2 ts=2.5"}))
    assert status == 200 and body["errors"] is False
    assert [i["create"]["status"] for i in body["items"]] == [201, 201]
    assert body["items"][0]["create"]["_index"] == "kfs-logs"
    status, body = _http(f"{url}/_bulk", b'{"index": {}}\n{"a": 1}')
    assert status == 400 and body["error"]["type"] == "illegal_argument_exception"
    stats = _http(f"{url}/stats?from=1&to=3&since=0")[1]
    assert stats["window"]["missing"] == 1 and stats["newest_ts"] == 2.5


def test_the_sink_rejects_with_429_while_faulted(sink_url: tuple[str, Any]) -> None:
    url, store = sink_url
    assert _http(f"{url}/fault", json.dumps({"reject": True}).encode())[1]["rejecting"]
    status, body = _http(f"{url}/_bulk", _bulk({"log": "seq=1 ts=1.0"}))
    assert status == 429 and body["status"] == 429
    assert body["error"]["type"] == "es_rejected_execution_exception"
    assert body["error"]["root_cause"][0]["type"] == "es_rejected_execution_exception"
    assert "queue capacity" in body["error"]["reason"]
    assert store.documents == 0 and store.rejected_requests == 1
    assert not _http(f"{url}/fault", json.dumps({"reject": False}).encode())[1]["rejecting"]
    assert _http(f"{url}/_bulk", _bulk({"log": "seq=1 ts=1.0"}))[0] == 200


def test_a_timed_fault_ends_by_itself() -> None:
    store = logsink.Store()
    store.set_fault(True, 15, now=100.0)
    assert store.rejecting(114.9)
    assert not store.rejecting(115.0)


@pytest.mark.parametrize(("durable", "lost"), [(False, True), (True, False)])
def test_fault_and_restart_end_to_end_over_http(
    pods: Path, tmp_path: Path, sink_url: tuple[str, Any], durable: bool, lost: bool
) -> None:
    """The scenario's sequence in miniature: 429s for 15 s, a restart 5 s in."""
    url, store = sink_url
    app = App(pods)
    state = tmp_path / "state"
    s = _make(pods, durable, state, sink=url)
    now = _run(s, app, 0.0, 2.0)
    first = app.seq + 1
    store.set_fault(True, None, now=0)
    now = _run(s, app, now, 5.0)
    del s
    app.write(60)  # 3 s without a shipper
    s = _make(pods, durable, state, sink=url)
    now = _run(s, app, now + 3, 7.0)
    store.set_fault(False, None, now=0)
    now = _run(s, app, now, 5.0)
    last = app.seq
    _run(s, app, now, 10.0, lines_per_tick=0)
    w = store.window(first, last)
    assert (w["missing"] > 0) is lost
    if lost:
        assert w["missing"] > 200
