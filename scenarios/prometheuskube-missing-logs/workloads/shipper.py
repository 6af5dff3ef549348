"""A node log shipper: tails the kubelet's container log files and bulk-writes them
to an Elasticsearch-compatible backend. It is the system under test of the
prometheuskube-missing-logs scenario, built here because neither fluent-bit nor
fluentd can be installed into the toolbox image; it reproduces the documented
behaviours of their configurations, not their code.

Pipeline, as in fluent-bit: a tail input reads `/var/log/pods/<ns>_<pod>_<uid>/
<container>/N.log` (CRI format `<time> <stream> <F|P> <message>`) for the pods
it is told to follow; every `--flush` seconds the lines read become one chunk in
the buffer; the output sends each due chunk as one `POST /_bulk`.

Two knobs decide whether lines survive trouble:

- `--retry-limit N` (fluent-bit `Retry_Limit`, default 1): a chunk is tried once
  plus N retries, then dropped. `--retry-limit none` retries until accepted, with
  exponential backoff (`--retry-wait` doubling up to `--retry-max-wait`), oldest
  chunk first (fluentd's `retry_forever`).
- `--state-dir DIR`: a position database (fluent-bit tail `DB`, fluentd `pos_file`)
  and a filesystem buffer (`storage.type filesystem`, fluentd `@type file`) under
  DIR. Without it the buffer lives in memory and dies with the process, and on
  start every file is followed from its end (`Read_from_Head false`), so lines
  written while the shipper was down are never read.

Also serves GET /healthz and GET /metrics (JSON counters) on `--http-port`.
Run as: python3 /opt/kfs/workloads/shipper.py --namespace NS --pod 'app*' \
           --sink http://10.96.0.20:9200 [--state-dir /var/lib/kfs-shipper/NS]
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# (url, body) -> (HTTP status, parsed JSON body or None); status 0 = no answer.
Post = Callable[[str, bytes], tuple[int, Any]]


def log(event: str, **fields: Any) -> None:
    """One JSON line per event on stdout, like fluent-bit's own log."""
    sys.stdout.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}) + "\n")
    sys.stdout.flush()


# -- input: the kubelet's CRI log files -----------------------------------------------


def parse_cri(line: str) -> tuple[str, str, bool, str] | None:
    """`<time> <stream> <tag> <message>` -> (time, stream, is_full_line, message)."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or parts[2] not in ("F", "P"):
        return None
    message = parts[3] if len(parts) == 4 else ""
    return parts[0], parts[1], parts[2] == "F", message


def pod_of(log_file: Path) -> tuple[str, str, str]:
    """(namespace, pod, container) from .../<ns>_<pod>_<uid>/<container>/N.log."""
    ns, pod, _uid = log_file.parent.parent.name.split("_", 2)
    return ns, pod, log_file.parent.name


@dataclass
class Record:
    doc: dict[str, Any]
    path: str
    inode: int
    offset: int  # file offset just after this line: where to resume once it is safe


@dataclass
class _Followed:
    path: Path
    fh: Any
    inode: int
    offset: int
    partial: str = ""
    partial_time: str = ""


class PositionDB:
    """Offsets of followed files, saved atomically as JSON (the tail DB / pos_file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, int]] = {}
        if path is not None and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self.entries = json.loads(path.read_text()).get("files", {})

    def get(self, path: str, inode: int) -> int | None:
        entry = self.entries.get(path)
        return entry["offset"] if entry and entry.get("inode") == inode else None

    def update(self, records: list[Record]) -> None:
        for r in records:
            self.entries[r.path] = {"inode": r.inode, "offset": r.offset}

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"files": self.entries}))
        # rename is atomic: a kill leaves the old or the new file, never half of one.
        os.replace(tmp, self.path)


class Tailer:
    """Follows the log files of matching pods, like fluent-bit's tail input."""

    def __init__(
        self,
        pods_dir: Path,
        namespace: str,
        pod_glob: str,
        positions: PositionDB,
        read_from_head: bool = False,
    ) -> None:
        self.pods_dir = pods_dir
        self.namespace = namespace
        self.pod_glob = pod_glob
        self.positions = positions
        self.read_from_head = read_from_head
        self.files: dict[str, _Followed] = {}
        # Files renamed away by log rotation, read to their end before closing.
        self.rotated: list[_Followed] = []
        self.started = False

    def matching(self) -> list[Path]:
        found = []
        for pod_dir in self.pods_dir.glob(f"{self.namespace}_*"):
            parts = pod_dir.name.split("_", 2)
            if (
                len(parts) == 3
                and parts[0] == self.namespace
                and fnmatch.fnmatchcase(parts[1], self.pod_glob)
            ):
                found.extend(sorted(pod_dir.glob("*/*.log")))
        return found

    def _start_offset(self, path: Path, inode: int, size: int) -> int:
        known = self.positions.get(str(path), inode)
        if known is not None:
            return known if known <= size else 0  # truncated since: start over
        if str(path) in self.positions.entries:
            return 0  # replaced (rotated) while we were away: all of it is new
        # Files present at start without a saved position are followed from the
        # end unless read_from_head; files appearing later are new, read whole.
        if not self.started and not self.read_from_head:
            return size
        return 0

    def discover(self) -> None:
        for path in self.matching():
            key = str(path)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            cur = self.files.get(key)
            if cur is not None and cur.inode == st.st_ino:
                if st.st_size < cur.offset:  # truncated in place: start over
                    cur.fh.seek(0)
                    cur.offset = 0
                continue
            if cur is not None:
                self.rotated.append(cur)
            fh = path.open("rb")
            offset = 0 if cur is not None else self._start_offset(path, st.st_ino, st.st_size)
            fh.seek(offset)
            self.files[key] = _Followed(path, fh, st.st_ino, offset)
            log("follow", path=key, offset=offset, size=st.st_size)
        self.started = True

    def read(self, max_lines: int = 100_000) -> list[Record]:
        out: list[Record] = []
        for f in self.rotated:
            self._read_file(f, out, max_lines)
            f.fh.close()
        self.rotated = []
        for f in self.files.values():
            self._read_file(f, out, max_lines)
        return out

    def _read_file(self, f: _Followed, out: list[Record], max_lines: int) -> None:
        key = str(f.path)
        ns, pod, container = pod_of(f.path)
        while len(out) < max_lines:
            raw = f.fh.readline()
            if not raw or not raw.endswith(b"\n"):
                # Half a line: leave it for the next read.
                f.fh.seek(f.offset)
                break
            f.offset += len(raw)
            parsed = parse_cri(raw.decode("utf-8", "replace"))
            if parsed is None:
                continue
            ts, stream, full, message = parsed
            if not full:
                f.partial += message
                f.partial_time = f.partial_time or ts
                continue
            if f.partial:
                message, ts = f.partial + message, f.partial_time
                f.partial, f.partial_time = "", ""
            doc = {
                "@timestamp": ts,
                "stream": stream,
                "log": message,
                "kubernetes": {
                    "namespace_name": ns,
                    "pod_name": pod,
                    "container_name": container,
                },
            }
            out.append(Record(doc, key, f.inode, f.offset))


# -- buffer ----------------------------------------------------------------------------


@dataclass
class Chunk:
    id: str
    docs: list[dict[str, Any]]
    attempts: int = 0
    next_try: float = 0.0
    size: int = 0


class MemoryBuffer:
    """Chunks in memory (fluent-bit's default storage.type memory)."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def add(self, chunk: Chunk) -> None:
        chunk.size = sum(len(json.dumps(d)) for d in chunk.docs)
        self.chunks.append(chunk)

    def remove(self, chunk: Chunk) -> None:
        self.chunks.remove(chunk)

    def bytes(self) -> int:
        return sum(c.size for c in self.chunks)


class FileBuffer(MemoryBuffer):
    """Chunks as files, so a restarted shipper sends what its predecessor could not."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob("*.tmp"):
            leftover.unlink()
        for file in sorted(self.dir.glob("*.chunk")):
            try:
                docs = [json.loads(ln) for ln in file.read_text().splitlines() if ln]
            except (OSError, ValueError):
                file.unlink()
                continue
            chunk = Chunk(file.stem, docs, size=file.stat().st_size)
            self.chunks.append(chunk)
        if self.chunks:
            log("buffer-restored", chunks=len(self.chunks))

    def add(self, chunk: Chunk) -> None:
        tmp = self.dir / f"{chunk.id}.tmp"
        tmp.write_text("".join(json.dumps(d) + "\n" for d in chunk.docs))
        # No fsync: this guards against a killed process (the page cache survives),
        # not a power cut, like fluent-bit's storage.sync normal.
        os.replace(tmp, self.dir / f"{chunk.id}.chunk")
        super().add(chunk)

    def remove(self, chunk: Chunk) -> None:
        super().remove(chunk)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{chunk.id}.chunk").unlink()


# -- output ----------------------------------------------------------------------------


def http_post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(  # noqa: S310 - the sink URL comes from our own manifest
        url, data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError, OSError):
            return exc.code, json.loads(exc.read() or b"null")
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def bulk_body(chunk: Chunk, index: str) -> bytes:
    action = json.dumps({"create": {"_index": index}})
    return "".join(f"{action}\n{json.dumps(d)}\n" for d in chunk.docs).encode()


@dataclass
class Metrics:
    records_read: int = 0
    chunks_sent: int = 0
    records_sent: int = 0
    retries: int = 0
    chunks_dropped: int = 0
    records_dropped: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Settings:
    sink: str
    index: str = "kfs-logs"
    flush: float = 1.0
    retry_limit: int | None = 1  # None: retry until accepted
    retry_wait: float = 1.0
    retry_max_wait: float = 8.0
    buffer_limit: int = 64 << 20


class Shipper:
    """Input -> buffer -> output, driven by tick(now) so tests can run it step by step."""

    def __init__(
        self,
        tailer: Tailer,
        buffer: MemoryBuffer,
        settings: Settings,
        post: Post = http_post,
    ) -> None:
        self.tailer = tailer
        self.buffer = buffer
        self.settings = settings
        self.post = post
        self.metrics = Metrics()
        self.pending: list[Record] = []
        self.last_flush: float | None = None
        self.seq = 0
        self.lock = threading.Lock()

    def _new_chunk_id(self, now: float) -> str:
        self.seq += 1
        return f"{int(now * 1000):014d}-{os.getpid()}-{self.seq:06d}"

    def collect(self, now: float) -> None:
        """Read new lines and, every flush interval, turn them into a chunk."""
        if self.buffer.bytes() < self.settings.buffer_limit:
            # Over the limit the input pauses (fluentd overflow_action block,
            # fluent-bit Mem_Buf_Limit): the lines stay in the file, unread.
            new = self.tailer.read()
            self.metrics.records_read += len(new)
            self.pending.extend(new)
        if self.last_flush is None:
            self.last_flush = now
        if now - self.last_flush < self.settings.flush:
            return
        self.last_flush = now
        if not self.pending:
            return
        chunk = Chunk(self._new_chunk_id(now), [r.doc for r in self.pending], next_try=now)
        self.buffer.add(chunk)
        # The position moves only once the lines are in the buffer: with a file
        # buffer a kill in between re-reads them (duplicates), never skips them.
        self.tailer.positions.update(self.pending)
        self.tailer.positions.save()
        self.pending = []

    def _backoff(self, attempts: int) -> float:
        return float(
            min(self.settings.retry_max_wait, self.settings.retry_wait * 2 ** (attempts - 1))
        )

    def deliver(self, now: float) -> None:
        in_order = self.settings.retry_limit is None
        for chunk in list(self.buffer.chunks):
            if chunk.next_try > now:
                if in_order:
                    break  # oldest first: nothing newer overtakes a waiting chunk
                continue
            if chunk.attempts:
                self.metrics.retries += 1
            status, body = self.post(
                f"{self.settings.sink.rstrip('/')}/_bulk", bulk_body(chunk, self.settings.index)
            )
            ok = status == 200 and isinstance(body, dict) and body.get("errors") is False
            if ok:
                self.buffer.remove(chunk)
                self.metrics.chunks_sent += 1
                self.metrics.records_sent += len(chunk.docs)
                continue
            reason = _reason(status, body)
            self.metrics.errors[reason] = self.metrics.errors.get(reason, 0) + 1
            chunk.attempts += 1
            limit = self.settings.retry_limit
            if limit is not None and chunk.attempts > limit:
                self.buffer.remove(chunk)
                self.metrics.chunks_dropped += 1
                self.metrics.records_dropped += len(chunk.docs)
                log(
                    "chunk-dropped",
                    chunk=chunk.id,
                    records=len(chunk.docs),
                    attempts=chunk.attempts,
                    reason=reason,
                )
                continue
            chunk.next_try = now + self._backoff(chunk.attempts)
            log(
                "chunk-retry",
                chunk=chunk.id,
                records=len(chunk.docs),
                attempts=chunk.attempts,
                wait=round(chunk.next_try - now, 2),
                reason=reason,
            )
            if in_order:
                break

    def tick(self, now: float) -> None:
        with self.lock:
            self.collect(now)
            self.deliver(now)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            m = self.metrics
            return {
                "records_read": m.records_read,
                "chunks_sent": m.chunks_sent,
                "records_sent": m.records_sent,
                "retries": m.retries,
                "chunks_dropped": m.chunks_dropped,
                "records_dropped": m.records_dropped,
                "errors": dict(m.errors),
                "buffered_chunks": len(self.buffer.chunks),
                "buffered_bytes": self.buffer.bytes(),
                "followed_files": sorted(self.tailer.files),
            }


def _reason(status: int, body: Any) -> str:
    if status == 0:
        return "unreachable"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{status} {body['error'].get('type', '')}".strip()
    if status == 200:
        return "200 item errors"
    return str(status)


# -- process ---------------------------------------------------------------------------


def _serve(shipper: Shipper, port: int) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                data = b"ok\n"
            elif self.path == "/metrics":
                data = json.dumps(shipper.snapshot()).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), H)  # noqa: S104 - probes reach it
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _retry_limit(text: str) -> int | None:
    return None if text.lower() in ("none", "false", "no_limits") else int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pods-dir", type=Path, default=Path("/var/log/pods"))
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", ""))
    p.add_argument("--pod", default="*", help="shell pattern of the pod names to follow")
    p.add_argument("--sink", default=os.environ.get("SINK_URL", ""))
    p.add_argument("--index", default="kfs-logs")
    p.add_argument("--flush", type=float, default=1.0, help="seconds between chunks")
    p.add_argument("--retry-limit", type=_retry_limit, default=1, help="N or none")
    p.add_argument("--retry-wait", type=float, default=1.0)
    p.add_argument("--retry-max-wait", type=float, default=8.0)
    p.add_argument("--state-dir", type=Path, default=None, help="position DB + file buffer")
    p.add_argument("--read-from-head", action="store_true")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between file scans")
    p.add_argument("--http-port", type=int, default=2020)
    args = p.parse_args(argv)
    if not args.namespace or not args.sink:
        p.error("--namespace and --sink (or POD_NAMESPACE and SINK_URL) are required")

    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        positions = PositionDB(args.state_dir / "positions.json")
        buffer: MemoryBuffer = FileBuffer(args.state_dir / "buffer")
    else:
        positions, buffer = PositionDB(None), MemoryBuffer()
    tailer = Tailer(args.pods_dir, args.namespace, args.pod, positions, args.read_from_head)
    settings = Settings(
        sink=args.sink,
        index=args.index,
        flush=args.flush,
        retry_limit=args.retry_limit,
        retry_wait=args.retry_wait,
        retry_max_wait=args.retry_max_wait,
    )
    shipper = Shipper(tailer, buffer, settings)
    log(
        "start",
        namespace=args.namespace,
        pod=args.pod,
        sink=args.sink,
        flush=args.flush,
        retry_limit=args.retry_limit,
        state_dir=str(args.state_dir) if args.state_dir else None,
        buffered_chunks=len(buffer.chunks),
    )
    _serve(shipper, args.http_port)

    def stop(signum: int, _frame: Any) -> None:
        # Whatever is only in memory dies here, as it does when fluent-bit is
        # killed or OOM-killed; with a state dir it is all on disk already.
        snap = shipper.snapshot()
        log(
            "stop",
            signal=signum,
            lost_in_memory_chunks=0 if args.state_dir else snap["buffered_chunks"],
        )
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_scan = 0.0
    while True:
        now = time.time()
        if now >= next_scan:
            tailer.discover()
            next_scan = now + args.refresh
        shipper.tick(now)
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
