"""A log backend that a node's log shipper writes to, and that keeps count.

It is the outside world of the story, not the system under test: it takes writes
in two protocols and counts what arrived.

* OTLP/HTTP logs (`POST /v1/logs`), what the OpenTelemetry Collector's otlphttp
  exporter sends: an ExportLogsServiceRequest in protobuf (the exporter's default)
  or JSON, gzip-compressed or not, answered with an empty ExportLogsServiceResponse.
  The protobuf wire format is decoded here by hand (the toolbox has no protobuf
  library), reading only the fields on the way to each log record's body.
* Elasticsearch's `_bulk` API, what fluent-bit's `es` output and fluentd's
  elasticsearch plugin send (the real fluent-bit manifests for kind): NDJSON pairs
  of an action line and a document, answered with `{"errors": false, "items": [...]}`.

Each log line carries the writer's `seq=N ts=T`; the sink records which sequence
numbers arrived (and how often) and how old the newest line is, which is the
end-to-end freshness canary an SRE alerts on.

Fault: `POST /fault {"reject": true, "seconds": 15}` makes every write fail with
HTTP 429 until `{"reject": false}` or the seconds run out (timed here, so the
fault's length does not depend on the caller): for OTLP a google.rpc.Status
RESOURCE_EXHAUSTED, as a collector gateway answers when its memory limiter refuses
data; for `_bulk` the body Elasticsearch sends when its write thread pool queue is
full (`es_rejected_execution_exception`).

Endpoints: GET /healthz, GET / (cluster info), POST /v1/logs, POST /_bulk and
/<index>/_bulk, GET /stats[?from=A&to=B&since=T], POST /fault.
Run as: python3 /opt/kfs/workloads/logsink.py --port 9200
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import secrets
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpserve

SEQ_RE = re.compile(r"\bseq=(\d+)\b")
TS_RE = re.compile(r"\bts=(\d+(?:\.\d+)?)\b")
# Actions whose next line is a document (delete has none).
_WITH_SOURCE = {"index", "create", "update"}
_ACTIONS = _WITH_SOURCE | {"delete"}


class BulkError(ValueError):
    """A request Elasticsearch would refuse with 400 illegal_argument_exception."""


def parse_bulk(body: bytes) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """Split a `_bulk` body into (action, metadata, document) triples.

    Follows Elasticsearch's rules: one JSON object per line, every action line
    names exactly one known action, index/create/update are followed by their
    document, and the body must end with a newline.
    """
    if body and not body.endswith(b"\n"):
        raise BulkError("The bulk request must be terminated by a newline [\\n]")
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    out: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    i = 0
    while i < len(lines):
        try:
            action_line = json.loads(lines[i])
        except ValueError as exc:
            raise BulkError(f"Malformed action/metadata line [{i + 1}]: {exc}") from exc
        if not isinstance(action_line, dict) or len(action_line) != 1:
            raise BulkError(
                f"Malformed action/metadata line [{i + 1}], expected a single action object"
            )
        action, meta = next(iter(action_line.items()))
        if action not in _ACTIONS:
            raise BulkError(
                f"Action/metadata line [{i + 1}] contains an unknown parameter [{action}]"
            )
        doc: dict[str, Any] | None = None
        if action in _WITH_SOURCE:
            if i + 1 >= len(lines):
                raise BulkError(
                    f"Validation Failed: 1: no requests added; [{action}] without source"
                )
            try:
                parsed = json.loads(lines[i + 1])
            except ValueError as exc:
                raise BulkError(f"failed to parse document on line [{i + 2}]: {exc}") from exc
            if not isinstance(parsed, dict):
                raise BulkError(f"document on line [{i + 2}] is not an object")
            doc = parsed
            i += 1
        out.append((action, meta if isinstance(meta, dict) else {}, doc))
        i += 1
    if not out:
        raise BulkError("Validation Failed: 1: no requests added;")
    return out


def rejection_body(index: str, count: int) -> dict[str, Any]:
    """The error Elasticsearch returns (HTTP 429) when its write queue is full."""
    reason = (
        f"rejected execution of processing of [{secrets.randbelow(10**9)}]"
        f"[indices:data/write/bulk[s][p]]: request: BulkShardRequest [[{index}][0]] "
        f"containing [{count}] requests, target allocation id: {secrets.token_hex(8)}, "
        "primary term: 1 on EsThreadPoolExecutor[name = logsink/write, queue capacity = 200, "
        "org.elasticsearch.common.util.concurrent.EsThreadPoolExecutor[Running, pool size = 2, "
        "active threads = 2, queued tasks = 200]]"
    )
    cause = {"type": "es_rejected_execution_exception", "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": 429}


def bad_request_body(reason: str) -> dict[str, Any]:
    cause = {"type": "illegal_argument_exception", "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": 400}


class OtlpError(ValueError):
    """A request an OTLP/HTTP server answers with 400 Bad Request."""


# Field numbers of opentelemetry/proto/{collector/logs/v1,logs/v1,common/v1}.
_RESOURCE_LOGS, _SCOPE_LOGS, _LOG_RECORDS, _BODY = 1, 2, 2, 5
_STRING_VALUE = 1
RESOURCE_EXHAUSTED = 8  # google.rpc.Code


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise OtlpError("truncated or overlong varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def proto_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message: ints for varint and fixed
    fields, bytes for length-delimited ones (sub-messages, strings)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise OtlpError("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire in {1, 5}:
            size = 8 if wire == 1 else 4
            if i + size > len(data):
                raise OtlpError("truncated fixed-size field")
            fmt = "<Q" if wire == 1 else "<I"
            out.append((number, struct.unpack_from(fmt, data, i)[0]))
            i += size
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise OtlpError("length-delimited field runs past the message")
            out.append((number, data[i : i + length]))
            i += length
        else:
            raise OtlpError(f"unsupported wire type {wire}")
    return out


def _sub(data: bytes, number: int) -> list[bytes]:
    return [v for n, v in proto_fields(data) if n == number and isinstance(v, bytes)]


def otlp_log_bodies(body: bytes, content_type: str) -> list[str]:
    """The body of every log record of an ExportLogsServiceRequest (string bodies;
    others as their JSON or an empty string)."""
    if content_type.startswith("application/json"):
        try:
            req = json.loads(body or b"{}")
        except ValueError as exc:
            raise OtlpError(f"invalid JSON: {exc}") from exc
        if not isinstance(req, dict):
            raise OtlpError("the request is not a JSON object")
        out = []
        for rl in req.get("resourceLogs") or []:
            for sl in rl.get("scopeLogs") or []:
                for rec in sl.get("logRecords") or []:
                    value = rec.get("body") or {}
                    out.append(str(value.get("stringValue", json.dumps(value))))
        return out
    if not content_type.startswith("application/x-protobuf"):
        raise OtlpError(f"unsupported content type {content_type or '(none)'}")
    out = []
    for rl in _sub(body, _RESOURCE_LOGS):
        for sl in _sub(rl, _SCOPE_LOGS):
            for rec in _sub(sl, _LOG_RECORDS):
                strings = [
                    v.decode("utf-8", "replace")
                    for value in _sub(rec, _BODY)
                    for n, v in proto_fields(value)
                    if n == _STRING_VALUE and isinstance(v, bytes)
                ]
                out.append(strings[0] if strings else "")
    return out


def decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise OtlpError(f"bad {encoding} body: {exc}") from exc
    raise OtlpError(f"unsupported Content-Encoding {encoding}")


def _proto_string(number: int, text: str) -> bytes:
    data = text.encode()
    out = bytearray([number << 3 | 2])
    n = len(data)
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out) + data


def rpc_status(code: int, message: str, content_type: str) -> bytes:
    """A google.rpc.Status, the error body OTLP/HTTP servers send."""
    if content_type.startswith("application/json"):
        return json.dumps({"code": code, "message": message}).encode()
    return bytes([1 << 3, code]) + _proto_string(2, message)


def ranges(numbers: Iterable[int]) -> list[list[int]]:
    """Compress sorted-able integers into [lo, hi] runs: [1,2,3,7] -> [[1,3],[7,7]]."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        elif not out or n > out[-1][1]:
            out.append([n, n])
    return out


@dataclass
class Store:
    """What the sink has accepted, and the freshness of it over time."""

    counts: dict[int, int] = field(default_factory=dict)
    documents: int = 0
    accepted_requests: int = 0
    rejected_requests: int = 0
    newest_ts: float | None = None
    # (arrival time, newest line timestamp just before it) each time the newest
    # line moved forward: enough to know the exact maximum lag over any interval.
    advances: list[tuple[float, float | None]] = field(default_factory=list)
    reject_until: float = 0.0
    seq_no: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rejecting(self, now: float) -> bool:
        return now < self.reject_until

    def set_fault(self, reject: bool, seconds: float | None, now: float) -> None:
        with self.lock:
            if not reject:
                self.reject_until = 0.0
            else:
                self.reject_until = now + seconds if seconds else float("inf")

    def accept(self, docs: Iterable[dict[str, Any]], now: float) -> None:
        with self.lock:
            self.accepted_requests += 1
            for doc in docs:
                self.documents += 1
                text = str(doc.get("log", doc.get("message", "")))
                m = SEQ_RE.search(text)
                if m:
                    seq = int(m.group(1))
                    self.counts[seq] = self.counts.get(seq, 0) + 1
                t = TS_RE.search(text)
                if t:
                    ts = float(t.group(1))
                    if self.newest_ts is None or ts > self.newest_ts:
                        self.advances.append((now, self.newest_ts))
                        self.newest_ts = ts

    def lag(self, now: float) -> float | None:
        return None if self.newest_ts is None else max(0.0, now - self.newest_ts)

    def max_lag(self, since: float, now: float) -> float | None:
        """Largest age of the newest line at any moment in [since, now].

        The age grows linearly between arrivals and drops when a newer line
        arrives, so the maximum is at ``now`` or just before an arrival.
        """
        with self.lock:
            best = self.lag(now)
            for at, before in self.advances:
                if at > since and before is not None:
                    lag = at - before
                    best = lag if best is None else max(best, lag)
            return None if best is None else round(best, 3)

    def window(self, lo: int, hi: int) -> dict[str, Any]:
        with self.lock:
            expected = range(lo, hi + 1)
            missing = [n for n in expected if n not in self.counts]
            dupes = sum(self.counts[n] - 1 for n in expected if self.counts.get(n, 0) > 1)
            return {
                "from": lo,
                "to": hi,
                "expected": len(expected),
                "received": len(expected) - len(missing),
                "missing": len(missing),
                "duplicates": dupes,
                "missing_ranges": ranges(missing)[:50],
            }

    def stats(self, now: float) -> dict[str, Any]:
        with self.lock:
            lag = self.lag(now)
            return {
                "now": now,
                "rejecting": self.rejecting(now),
                "reject_remaining_seconds": (
                    round(self.reject_until - now, 3)
                    if self.rejecting(now) and self.reject_until != float("inf")
                    else 0.0
                ),
                "accepted_requests": self.accepted_requests,
                "rejected_requests": self.rejected_requests,
                "documents": self.documents,
                "unique_seqs": len(self.counts),
                "duplicate_lines": sum(c - 1 for c in self.counts.values()),
                "max_seq": max(self.counts, default=0),
                "newest_ts": self.newest_ts,
                "freshness_lag_seconds": None if lag is None else round(lag, 3),
                "received_ranges": ranges(self.counts)[-50:],
            }


class Handler(BaseHTTPRequestHandler):
    server_version = "kfs-logsink/1"
    store: Store  # set on the subclass made by make_server
    quiet = False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        now = time.time()
        if url.path == "/healthz":
            self._json(200, {"status": "green"})
        elif url.path == "/":
            self._json(
                200,
                {
                    "name": "logsink",
                    "cluster_name": "kfs",
                    "version": {"number": "7.10.2", "build_flavor": "oss"},
                    "tagline": "You Know, for Search",
                },
            )
        elif url.path == "/stats":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            out = self.store.stats(now)
            if "from" in q and "to" in q:
                out["window"] = self.store.window(int(q["from"]), int(q["to"]))
            if "since" in q:
                out["max_lag_since_seconds"] = self.store.max_lag(float(q["since"]), now)
            self._json(200, out)
        else:
            self._json(404, {"error": "not found", "status": 404})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        now = time.time()
        if url.path == "/fault":
            try:
                req = json.loads(body or b"{}")
                self.store.set_fault(bool(req.get("reject")), req.get("seconds"), now)
            except (ValueError, AttributeError, TypeError) as exc:
                self._json(400, bad_request_body(f"bad fault request: {exc}"))
                return
            self._json(200, self.store.stats(now))
        elif url.path == "/v1/logs":
            self._otlp(body, now)
        elif url.path == "/_bulk" or url.path.endswith("/_bulk"):
            self._bulk(url.path, body, now)
        else:
            self._json(404, {"error": "not found", "status": 404})

    def _otlp(self, body: bytes, now: float) -> None:
        content_type = (self.headers.get("Content-Type") or "").lower()
        reply_type = (
            "application/json"
            if content_type.startswith("application/json")
            else "application/x-protobuf"
        )
        try:
            raw = decompress(body, self.headers.get("Content-Encoding") or "")
            bodies = otlp_log_bodies(raw, content_type)
        except OtlpError as exc:
            httpserve.reply(self, 400, rpc_status(3, str(exc), reply_type), reply_type)
            return
        if self.store.rejecting(now):
            with self.store.lock:
                self.store.rejected_requests += 1
            message = f"rejected {len(bodies)} log records: the backend is over its write capacity"
            data = rpc_status(RESOURCE_EXHAUSTED, message, reply_type)
            httpserve.reply(self, 429, data, reply_type)
            return
        self.store.accept(({"log": text} for text in bodies), now)
        # An empty ExportLogsServiceResponse: no partial_success, all accepted.
        httpserve.reply(self, 200, b"{}" if reply_type == "application/json" else b"", reply_type)

    def _bulk(self, path: str, body: bytes, now: float) -> None:
        default_index = path.strip("/").split("/")[0] if path.count("/") > 1 else "logs"
        try:
            ops = parse_bulk(body)
        except BulkError as exc:
            self._json(400, bad_request_body(str(exc)))
            return
        if self.store.rejecting(now):
            with self.store.lock:
                self.store.rejected_requests += 1
            index = str(ops[0][1].get("_index", default_index))
            self._json(429, rejection_body(index, len(ops)))
            return
        t0 = time.monotonic()
        self.store.accept((doc for _a, _m, doc in ops if doc is not None), now)
        items = []
        with self.store.lock:
            for action, meta, _doc in ops:
                self.store.seq_no += 1
                status = 200 if action in ("delete", "update") else 201
                items.append(
                    {
                        action: {
                            "_index": meta.get("_index", default_index),
                            "_type": "_doc",
                            "_id": meta.get("_id") or secrets.token_urlsafe(15),
                            "_version": 1,
                            "result": "created" if status == 201 else "updated",
                            "_shards": {"total": 1, "successful": 1, "failed": 0},
                            "_seq_no": self.store.seq_no,
                            "_primary_term": 1,
                            "status": status,
                        }
                    }
                )
        took = int((time.monotonic() - t0) * 1000)
        self._json(200, {"took": took, "errors": False, "items": items})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        # Elasticsearch's own content type and body, without a trailing newline.
        data = json.dumps(payload).encode()
        httpserve.reply(self, status, data, "application/json; charset=UTF-8")

    def log_message(self, format: str, *args: object) -> None:
        # Only what an operator needs: rejected writes and fault switches, not
        # every accepted bulk (several a second).
        if self.quiet:
            return
        line = format % args
        if '" 429 ' in line or "/fault" in line:
            httpserve.log_line(self, line)


def make_server(host: str, port: int, store: Store | None = None) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": store or Store()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a pod must be reachable
    args = parser.parse_args(argv)
    server = make_server(args.bind, args.port)
    return httpserve.serve(server, f"logsink listening on {args.bind}:{args.port}")


if __name__ == "__main__":
    sys.exit(main())
