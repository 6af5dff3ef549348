"""Watch a RedisFailover from inside the cluster, as Redis and Sentinel see it.

Every --interval seconds: the Redis pods (listed through the API with this pod's
service account), each one's INFO (role, master, link, sync, offsets, keys in
database 0) and the Sentinels' answer to get-master-addr-by-name. One JSON line
per sample goes to --out; it stops when --stop-file exists.

    python3 redis_watch.py --namespace NS --selector app.kubernetes.io/component=redis \
        --sentinel 10.96.0.20 --out /tmp/watch.jsonl --stop-file /tmp/watch.stop

Only the standard library: the toolbox has no Redis or Kubernetes client.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
FIELDS = (
    "role",
    "master_host",
    "master_link_status",
    "master_sync_in_progress",
    "master_repl_offset",
    "slave_repl_offset",
    "loading",
)


def command(host: str, port: int, *args: str, timeout: float = 0.5) -> Any:
    """One RESP command; a bulk string, an array of bulk strings, or a status line."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(
            b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
        )
        reader = sock.makefile("rb")
        line = reader.readline()
        if line.startswith(b"$"):
            size = int(line[1:])
            return "" if size < 0 else reader.read(size + 2)[:-2].decode()
        if line.startswith(b"*"):
            items = []
            for _ in range(max(0, int(line[1:]))):
                size = int(reader.readline()[1:])
                items.append(reader.read(size + 2)[:-2].decode())
            return items
        return line.decode().strip()


def parse_info(text: str) -> dict[str, Any]:
    pairs = dict(line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#")
    out: dict[str, Any] = {k: pairs[k].strip() for k in FIELDS if k in pairs}
    db0 = pairs.get("db0", "")
    out["keys"] = int(db0.split(",")[0].split("=")[1]) if db0.startswith("keys=") else 0
    return out


def redis_state(ip: str) -> dict[str, Any]:
    try:
        reply = command(ip, 6379, "INFO")
    except OSError as exc:
        return {"err": type(exc).__name__}
    if not isinstance(reply, str) or reply.startswith(("-", "ERR", "LOADING")):
        return {"err": str(reply)[:60]}
    return parse_info(reply)


def sentinel_master(host: str) -> str:
    try:
        reply = command(host, 26379, "SENTINEL", "get-master-addr-by-name", "mymaster")
    except OSError as exc:
        return type(exc).__name__
    return reply[0] if isinstance(reply, list) and reply else str(reply)


def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    query = urllib.parse.urlencode({"labelSelector": selector})
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods?{query}"
    with open(f"{SA}/token") as fh:
        token = fh.read().strip()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    # An https URL built from the service environment above, never user input.
    with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:  # noqa: S310
        items: list[dict[str, Any]] = json.load(resp)["items"]
    return items


def sample(namespace: str, selector: str, sentinel: str) -> dict[str, Any]:
    pods: dict[str, Any] = {}
    for pod in list_pods(namespace, selector):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        meta = pod["metadata"]
        conditions = (pod.get("status") or {}).get("conditions") or []
        pods[meta["name"]] = {
            "ip": ip,
            "uid": meta["uid"],
            "ready": any(c["type"] == "Ready" and c["status"] == "True" for c in conditions),
            "deleting": bool(meta.get("deletionTimestamp")),
            **redis_state(ip),
        }
    return {"t": round(time.time(), 3), "pods": pods, "sentinel": sentinel_master(sentinel)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", required=True)
    parser.add_argument("--sentinel", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    with open(args.out, "a", buffering=1) as out:
        while time.monotonic() < deadline and not os.path.exists(args.stop_file):
            started = time.monotonic()
            try:
                row = sample(args.namespace, args.selector, args.sentinel)
            except (OSError, ValueError, KeyError) as exc:  # the API blinked: a gap
                row = {"t": round(time.time(), 3), "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(row) + "\n")
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
