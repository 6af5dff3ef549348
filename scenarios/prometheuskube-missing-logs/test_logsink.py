"""The log sink of prometheuskube-missing-logs, without a cluster: the OTLP/HTTP
logs endpoint the collector writes to (protobuf decoded by hand, JSON, gzip), the
Elasticsearch `_bulk` endpoint of the real fluent-bit manifests, the 429 fault and
the counting. The cases marked HTTP talk to a real sink server on 127.0.0.1."""

from __future__ import annotations

import gzip
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


logsink = _load("logsink")


# -- OTLP/HTTP logs --------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def export_request(*bodies: str) -> bytes:
    """An ExportLogsServiceRequest as the collector's exporter writes it, with the
    fields around the body the sink must step over (resource attributes, a
    fixed64 timestamp, a severity varint, a record attribute)."""
    attr = _field(1, b"log.file.path") + _field(2, _field(1, b"/var/log/pods/x/app/0.log"))
    records = b"".join(
        _field(
            2,
            _varint(1 << 3 | 1)
            + (1_700_000_000_000_000_000).to_bytes(8, "little")
            + _varint(2 << 3)
            + _varint(9)
            + _field(5, _field(1, body.encode()))
            + _field(6, attr),
        )
        for body in bodies
    )
    resource = _field(1, _field(1, _field(1, b"k8s.namespace.name") + _field(2, _field(1, b"ns"))))
    scope_logs = _field(2, _field(1, _field(1, b"filelog")) + records)
    return _field(1, resource + scope_logs)


def test_protobuf_log_bodies_are_read_past_the_fields_around_them() -> None:
    body = export_request("seq=1 ts=1.5", "seq=2 ts=2.5 caf\u00e9")
    bodies = logsink.otlp_log_bodies(body, "application/x-protobuf")
    assert bodies == ["seq=1 ts=1.5", "seq=2 ts=2.5 caf\u00e9"]
    assert logsink.otlp_log_bodies(b"", "application/x-protobuf") == []


def test_json_log_bodies_and_non_string_bodies() -> None:
    req = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"body": {"stringValue": "seq=7 ts=7.0"}},
                            {"body": {"intValue": "3"}},
                        ]
                    }
                ]
            }
        ]
    }
    bodies = logsink.otlp_log_bodies(json.dumps(req).encode(), "application/json")
    assert bodies == ["seq=7 ts=7.0", '{"intValue": "3"}']


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"\x0a\x05ab", "application/x-protobuf", "runs past the message"),
        (b"\x0a\xff", "application/x-protobuf", "varint"),
        (b"\x0b", "application/x-protobuf", "wire type 3"),
        (b"\x00\x01", "application/x-protobuf", "field number 0"),
        (b"{", "application/json", "invalid JSON"),
        (b"seq=1", "text/plain", "unsupported content type"),
    ],
)
def test_malformed_otlp_requests_are_refused(body: bytes, content_type: str, says: str) -> None:
    with pytest.raises(logsink.OtlpError) as err:
        logsink.otlp_log_bodies(body, content_type)
    assert says in str(err.value)


def test_bodies_are_decompressed_as_their_encoding_says() -> None:
    assert logsink.decompress(gzip.compress(b"abc"), "gzip") == b"abc"
    assert logsink.decompress(b"abc", "") == b"abc"
    with pytest.raises(logsink.OtlpError, match="unsupported Content-Encoding zstd"):
        logsink.decompress(b"abc", "zstd")
    with pytest.raises(logsink.OtlpError, match="bad gzip body"):
        logsink.decompress(b"not gzip", "gzip")


def test_the_rejection_is_a_google_rpc_status() -> None:
    status = logsink.rpc_status(logsink.RESOURCE_EXHAUSTED, "busy", "application/x-protobuf")
    assert logsink.proto_fields(status) == [(1, 8), (2, b"busy")]
    as_json = logsink.rpc_status(8, "busy", "application/json")
    assert json.loads(as_json) == {"code": 8, "message": "busy"}


# -- Elasticsearch _bulk and the store -------------------------------------------------


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


def _otlp(url: str, body: bytes, gzipped: bool = True) -> tuple[int, bytes, str]:
    headers = {"Content-Type": "application/x-protobuf"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    req = urllib.request.Request(f"{url}/v1/logs", data=body, headers=headers, method="POST")  # noqa: S310 - 127.0.0.1 only
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.read(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_the_sink_takes_otlp_logs_and_rejects_them_while_faulted(
    sink_url: tuple[str, Any],
) -> None:
    url, store = sink_url
    status, body, ctype = _otlp(url, export_request("seq=1 ts=1.5", "seq=2 ts=2.5"))
    assert (status, body, ctype) == (200, b"", "application/x-protobuf")
    assert store.window(1, 2)["missing"] == 0
    _http(f"{url}/fault", json.dumps({"reject": True}).encode())
    status, body, _ = _otlp(url, export_request("seq=3 ts=3.5"), gzipped=False)
    assert status == 429
    code, message = logsink.proto_fields(body)
    assert code == (1, logsink.RESOURCE_EXHAUSTED) and b"over its write capacity" in message[1]
    assert store.rejected_requests == 1 and store.window(1, 3)["missing_ranges"] == [[3, 3]]
    status, body, _ = _otlp(url, b"\x0a\x05ab")
    assert status == 400 and logsink.proto_fields(body)[0] == (1, 3)
