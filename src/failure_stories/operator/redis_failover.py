"""The brain of the RedisFailover operator, kept free of Kubernetes and kopf.

The operator in ``operator/redisfailover.py`` observes (pods, their labels, the
``INFO`` each Redis answers), asks :func:`plan` for the single next step, and
performs it. Everything here is pure and typed so the decisions that lost
Flant's data - when is a replica "ready", which pod may become master, in what
order pods are replaced - are unit-tested without a cluster.

Two policies, chosen per object with ``spec.safety``:

``naive``
    what the operator in the story did: a pod is ready when it answers PING;
    pods are replaced in index order as soon as every pod is ready, the master
    included; when the master is gone, the first ready replica is promoted.
``safe``
    the upstream fixes: a replica is ready only when its link to the master is
    up, no full sync is running and it is not loading; replicas are replaced
    first, the master last and only after a planned failover to a replica whose
    replication offset caught up with the paused master's.

Module dependencies: the standard library only, so the operator image needs
nothing from the rest of the framework.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

GROUP = "kfs.dev"
VERSION = "v1alpha1"
PLURAL = "redisfailovers"
KIND = "RedisFailover"

# Labels and annotations the operator puts on the pods it owns. The role label
# is the single source of truth for "who is master": the Service selects it, and
# a restarted operator reads it back instead of remembering anything.
LABEL_OWNER = "kfs.dev/redisfailover"
LABEL_INDEX = "kfs.dev/index"
LABEL_HASH = "kfs.dev/spec-hash"
LABEL_ROLE = "kfs.dev/role"
ROLE_MASTER = "master"
ROLE_REPLICA = "replica"
# Raised on every promotion: if a crash leaves two pods labelled master, the
# higher epoch is the newer decision.
ANN_EPOCH = "kfs.dev/epoch"
# "<master pod>/<epoch>" once the operator has seen this replica fully synced
# with that master: after the master is lost, the link is down for everybody,
# and this is the only evidence of who had the data.
ANN_SYNCED_TO = "kfs.dev/synced-to"
ANN_SYNCED_AFTER = "kfs.dev/synced-after-seconds"

REDIS_PORT = 6379
DATA_DIR = "/data"
READY_SCRIPT = "/opt/kfs/workloads/redis_ready.py"
# Redis 7's own defaults, written out because the story depends on them: a
# master waits this long for more replicas before streaming a full sync, and
# during that wait a new replica is connected, empty, and answers PING.
DISKLESS_SYNC_DELAY_SECONDS = 5

Safety = Literal["naive", "safe"]
SAFETIES: tuple[Safety, ...] = ("naive", "safe")
DEFAULT_NODE_SELECTOR = {"kfs.dev/real-node": "true"}
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MAX_REPLICAS = 9


class InvalidSpec(ValueError):
    """The RedisFailover spec cannot be reconciled; retrying will not help."""


class RedisError(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Spec:
    replicas: int
    memory: str
    safety: Safety
    image: str
    persistence: bool = False
    host_path: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))

    @property
    def template_hash(self) -> str:
        """Hash of everything that needs a new pod to take effect (not the count).

        ``safety`` is part of it because probes are immutable in a pod spec.
        """
        material = {
            "memory": self.memory,
            "safety": self.safety,
            "image": self.image,
            "persistence": self.persistence,
            "hostPath": self.host_path,
            "nodeSelector": dict(sorted(self.node_selector.items())),
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        return digest[:10]


def parse_spec(raw: Mapping[str, Any], default_image: str) -> Spec:
    """Validate ``.spec``; raise InvalidSpec with a message a user can act on."""
    replicas = raw.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise InvalidSpec(f"spec.replicas must be an integer, not {replicas!r}")
    if not 1 <= replicas <= _MAX_REPLICAS:
        raise InvalidSpec(f"spec.replicas must be between 1 and {_MAX_REPLICAS}, not {replicas}")
    memory = str(raw.get("memory", "256Mi"))
    if not _QUANTITY.match(memory):
        raise InvalidSpec(f"spec.memory {memory!r} is not a Kubernetes quantity such as 256Mi")
    safety = raw.get("safety", "safe")
    if safety not in SAFETIES:
        raise InvalidSpec(f"spec.safety must be one of {', '.join(SAFETIES)}, not {safety!r}")
    image = str(raw.get("image") or default_image)
    persistence = raw.get("persistence") or {}
    if not isinstance(persistence, Mapping):
        raise InvalidSpec("spec.persistence must be a mapping with enabled and hostPath")
    enabled = bool(persistence.get("enabled", False))
    host_path = persistence.get("hostPath")
    if enabled and (not isinstance(host_path, str) or not host_path.startswith("/")):
        raise InvalidSpec("spec.persistence.hostPath must be an absolute path when enabled")
    selector = raw.get("nodeSelector", DEFAULT_NODE_SELECTOR)
    if not isinstance(selector, Mapping):
        raise InvalidSpec("spec.nodeSelector must be a mapping of label to value")
    return Spec(
        replicas=replicas,
        memory=memory,
        safety=safety,
        image=image,
        persistence=enabled,
        host_path=host_path.rstrip("/") if enabled and isinstance(host_path, str) else None,
        node_selector={str(k): str(v) for k, v in selector.items()},
    )


# --------------------------------------------------------------------------- INFO


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output (``# Section`` headers, ``key:value`` lines) as a dict."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        out[key] = value
    return out


def _int(fields: Mapping[str, str], key: str, default: int = 0) -> int:
    try:
        return int(fields.get(key, default))
    except ValueError:
        return default


def keyspace_keys(fields: Mapping[str, str], db: int = 0) -> int:
    """Keys in one database, from the keyspace line ``db0:keys=3,expires=0,...``."""
    raw = fields.get(f"db{db}", "")
    for part in raw.split(","):
        name, _, value = part.partition("=")
        if name == "keys":
            return int(value)
    return 0


@dataclass(frozen=True)
class RedisState:
    """The replication facts of one redis-server, read from its ``INFO``."""

    role: str
    loading: bool = False
    master_host: str | None = None
    master_link_up: bool = False
    sync_in_progress: bool = False
    # Bytes of the replication stream this server has processed: a master's
    # ``master_repl_offset``, a replica's ``slave_repl_offset``.
    offset: int = 0
    link_down_since_seconds: int | None = None
    keys: int = 0
    connected_replicas: int = 0

    @classmethod
    def from_info(cls, fields: Mapping[str, str]) -> RedisState:
        role = fields.get("role", "unknown")
        replica = role == "slave"
        down = fields.get("master_link_down_since_seconds")
        return cls(
            role=role,
            loading=fields.get("loading") == "1",
            master_host=fields.get("master_host") if replica else None,
            master_link_up=replica and fields.get("master_link_status") == "up",
            sync_in_progress=fields.get("master_sync_in_progress") == "1",
            offset=_int(fields, "slave_repl_offset" if replica else "master_repl_offset"),
            link_down_since_seconds=int(down) if down not in (None, "") else None,
            keys=keyspace_keys(fields),
            connected_replicas=_int(fields, "connected_slaves"),
        )

    def describe(self) -> str:
        if self.role == "master":
            return f"master, {self.keys} keys, offset {self.offset}"
        link = "up" if self.master_link_up else "down"
        sync = ", full sync running" if self.sync_in_progress else ""
        loading = ", loading" if self.loading else ""
        return f"replica of {self.master_host}, link {link}{sync}{loading}, {self.keys} keys"


def is_synced(state: RedisState | None) -> bool:
    """A replica that holds its master's dataset and follows its stream."""
    return (
        state is not None
        and state.role == "slave"
        and state.master_link_up
        and not state.sync_in_progress
        and not state.loading
    )


def readiness(state: RedisState | None, safety: Safety) -> tuple[bool, str]:
    """The readiness decision of each policy (the pods' probes implement the same).

    ``naive`` is ``redis-cli ping``: any server that answers is ready, which is
    exactly how an empty replica waiting for its first sync passed in the story.
    """
    if state is None:
        return False, "redis does not answer"
    if safety == "naive":
        return True, "answers PING"
    if state.loading:
        return False, "loading its dataset from disk"
    if state.role == "master":
        return True, "master"
    if state.role != "slave":
        return False, f"unexpected role {state.role}"
    if not state.master_link_up:
        return False, "link to the master is down (not synced yet)"
    if state.sync_in_progress:
        return False, "full sync from the master in progress"
    return True, "replica in sync"


# --------------------------------------------------------------------------- the world as seen


@dataclass(frozen=True)
class Instance:
    """One Redis pod as the operator observed it this round."""

    name: str
    index: int
    spec_hash: str
    is_master: bool = False
    epoch: int = 0
    phase: str = "Pending"
    terminating: bool = False
    ip: str | None = None
    ready: bool = False  # the kubelet's Ready condition (from the probe)
    synced_to: str = ""
    state: RedisState | None = None  # None: not reachable

    @property
    def live(self) -> bool:
        return not self.terminating and self.phase in ("Pending", "Running")

    @property
    def master_ref(self) -> str:
        return f"{self.name}/{self.epoch}"


@dataclass(frozen=True)
class Snapshot:
    spec: Spec
    instances: tuple[Instance, ...]

    def by_name(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Create:
    indexes: tuple[int, ...]
    # The master's address to start replicating from at once, or None to start
    # as the master (the very first pod).
    replica_of: str | None
    epoch: int
    reason: str


@dataclass(frozen=True)
class Delete:
    name: str
    reason: str


@dataclass(frozen=True)
class Failover:
    target: str
    source: str | None
    planned: bool
    synced: bool
    reason: str


@dataclass(frozen=True)
class Repoint:
    names: tuple[str, ...]
    master: str
    reason: str


@dataclass(frozen=True)
class Unlabel:
    names: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Wait:
    reason: str
    delay: float = 1.0
    warning: bool = False


@dataclass(frozen=True)
class Converged:
    reason: str = "every instance is up to date and ready"
    # Whether every replica also finished its sync. A naive operator calls the
    # rollout done before that; the operator still watches until it is true, to
    # record which replicas hold the data (the evidence a safe failover needs).
    settled: bool = True


Action = Create | Delete | Failover | Repoint | Unlabel | Wait | Converged


def choose_master(
    candidates: Sequence[Instance], safety: Safety, lost: Instance | None = None
) -> tuple[Instance | None, str]:
    """Pick the replica to promote when the master is gone (unplanned failover).

    ``naive`` takes the first ready pod by index, as a probe-driven operator
    does. ``safe`` only considers replicas seen fully synced with the lost
    master (its epoch) and takes the one furthest along the replication stream.
    """
    if safety == "naive":
        ready = sorted((c for c in candidates if c.ready and c.state), key=lambda c: c.index)
        if not ready:
            return None, "no ready pod to promote"
        return ready[0], "naive: the first ready pod by index"
    epochs = [_epoch_of(c.synced_to) for c in candidates if c.synced_to]
    wanted = lost.master_ref if lost is not None else None
    if wanted is None and epochs:
        top = max(epochs)
        wanted = next(c.synced_to for c in candidates if _epoch_of(c.synced_to) == top)
    fit = [
        c
        for c in candidates
        if c.state is not None and not c.state.loading and wanted and c.synced_to == wanted
    ]
    if not fit:
        return None, "safe: no replica was seen fully synced with the lost master"
    best = max(fit, key=lambda c: (c.state.offset if c.state else 0, -c.index))
    return best, f"safe: synced with {wanted}, furthest replication offset"


def _epoch_of(synced_to: str) -> int:
    _, _, epoch = synced_to.rpartition("/")
    return int(epoch) if epoch.isdigit() else -1


def plan(snap: Snapshot) -> Action:
    """The one next step towards ``snap.spec``; call again after performing it.

    Each decision is derived from the snapshot alone, so an operator that
    restarts half-way through (even mid-failover) picks up where it was.
    """
    spec = snap.spec
    safe = spec.safety == "safe"
    live = sorted((i for i in snap.instances if i.live), key=lambda i: i.index)
    masters = [i for i in live if i.is_master]

    # A crash between labelling the new master and unlabelling the old one.
    if len(masters) > 1:
        keep = max(masters, key=lambda i: (i.epoch, i.state.offset if i.state else -1))
        stale = tuple(m.name for m in masters if m is not keep)
        return Unlabel(stale, f"{keep.name} holds the newest master epoch {keep.epoch}")
    master = masters[0] if masters else None
    max_epoch = max((i.epoch for i in snap.instances), default=0)

    if master is None:
        if not live:
            if any(i.index == 0 for i in snap.instances):
                return Wait("waiting for the old pods to terminate before starting afresh")
            return Create((0,), None, max_epoch + 1, "no instance yet: the first one is master")
        lost = next((i for i in snap.instances if i.is_master and not i.live), None)
        target, why = choose_master(live, spec.safety, lost)
        if target is None:
            return Wait(f"master is gone and {why}", delay=2, warning=True)
        return Failover(
            target=target.name,
            source=lost.name if lost else None,
            planned=False,
            synced=bool(lost and target.synced_to == lost.master_ref) or is_synced(target.state),
            reason=f"master {lost.name if lost else '(unknown)'} is gone; {why}",
        )

    if master.state is None:
        return Wait(f"master {master.name} does not answer yet")
    if master.state.role != "master":
        # Restarted with a stale --replicaof, or demoted behind our back: the
        # label no longer tells the truth, so go through the failover rules.
        return Unlabel((master.name,), f"{master.name} is labelled master but is a replica")

    stray = [
        i
        for i in live
        if i is not master
        and i.state is not None
        and not i.state.loading
        and (i.state.role != "slave" or i.state.master_host != master.ip)
    ]
    if stray:
        if safe and master.state.keys == 0:
            holding = [i.name for i in stray if i.state and i.state.keys > 0]
            if holding:
                return Wait(
                    f"refusing to make {', '.join(holding)} replicate the empty master "
                    f"{master.name}: that would delete their data",
                    delay=5,
                    warning=True,
                )
        return Repoint(tuple(i.name for i in stray), master.name, "not replicating the master")

    present = {i.index for i in live}
    taken = {i.index for i in snap.instances}
    missing = [ix for ix in range(spec.replicas) if ix not in present]
    creatable = tuple(ix for ix in missing if ix not in taken)
    if creatable:
        return Create(creatable, master.ip, max_epoch, f"want {spec.replicas} instances")
    if missing:
        return Wait(f"waiting for the old pod with index {missing[0]} to terminate")

    not_ready = [i.name for i in live if not i.ready]
    if safe:
        not_ready += [i.name for i in live if i is not master and not is_synced(i.state)]
    if not_ready:
        names = ", ".join(sorted(set(not_ready)))
        return Wait(f"{names} not ready" + (" (replica syncing)" if safe else ""))

    outdated = [i for i in live if i.spec_hash != spec.template_hash or i.index >= spec.replicas]
    if not outdated:
        return Converged(settled=all(is_synced(i.state) for i in live if i is not master))
    if not safe:
        first = outdated[0]
        role = "the master" if first is master else "a replica"
        return Delete(first.name, f"naive rollout: replacing {role} in index order")
    replicas_first = [i for i in outdated if i is not master]
    if replicas_first:
        return Delete(replicas_first[0].name, "safe rollout: replicas first")
    targets = [
        i
        for i in live
        if i is not master
        and i.index < spec.replicas
        and i.spec_hash == spec.template_hash
        and is_synced(i.state)
    ]
    if targets:
        best = max(targets, key=lambda i: (i.state.offset if i.state else 0, -i.index))
        return Failover(
            target=best.name,
            source=master.name,
            planned=True,
            synced=True,
            reason=f"safe rollout: the master {master.name} goes last, after a planned failover",
        )
    if spec.persistence:
        return Delete(master.name, "safe rollout: single instance restarts from its RDB file")
    return Wait(
        "cannot replace the only instance without losing its data: add a replica "
        "or enable persistence",
        delay=10,
        warning=True,
    )


def sync_marks(snap: Snapshot) -> dict[str, str]:
    """Replicas now fully synced with the master whose mark should be (re)written."""
    master = next((i for i in snap.instances if i.live and i.is_master), None)
    if master is None or master.state is None or master.state.role != "master":
        return {}
    return {
        i.name: master.master_ref
        for i in snap.instances
        if i.live
        and i is not master
        and is_synced(i.state)
        and i.state is not None
        and i.state.master_host == master.ip
        and i.synced_to != master.master_ref
    }


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        # No blockOwnerDeletion: it would need extra RBAC on the owner, and the
        # garbage collector deletes our pods either way.
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


def pod_name(owner: str, index: int) -> str:
    return f"{owner}-{index}"


def master_service_name(owner: str) -> str:
    return f"{owner}-master"


def redis_args(spec: Spec, replica_of: str | None) -> list[str]:
    args = [
        "redis-server",
        "--port",
        str(REDIS_PORT),
        "--protected-mode",
        "no",
        "--dir",
        DATA_DIR,
        "--appendonly",
        "no",
        # With persistence an RDB is written on shutdown (SIGTERM) and loaded at start.
        "--save",
        "3600 1" if spec.persistence else "",
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        str(DISKLESS_SYNC_DELAY_SECONDS),
    ]
    if replica_of:
        args += ["--replicaof", replica_of, str(REDIS_PORT)]
    return args


def readiness_probe(safety: Safety) -> dict[str, Any]:
    command = ["redis-cli", "ping"] if safety == "naive" else ["python3", READY_SCRIPT]
    return {
        "exec": {"command": command},
        "periodSeconds": 1,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    }


def pod_manifest(
    owner: Owner, spec: Spec, index: int, *, replica_of: str | None, epoch: int
) -> dict[str, Any]:
    name = pod_name(owner.name, index)
    master = replica_of is None
    volume: dict[str, Any] = {"name": "data"}
    if spec.persistence and spec.host_path:
        volume["hostPath"] = {"path": f"{spec.host_path}/{name}", "type": "DirectoryOrCreate"}
    else:
        volume["emptyDir"] = {}
    annotations = {ANN_EPOCH: str(epoch)} if master else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                "app.kubernetes.io/name": "redis",
                LABEL_OWNER: owner.name,
                LABEL_INDEX: str(index),
                LABEL_HASH: spec.template_hash,
                LABEL_ROLE: ROLE_MASTER if master else ROLE_REPLICA,
            },
            "annotations": annotations,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "nodeSelector": dict(spec.node_selector),
            # Long enough for a SAVE on SIGTERM; Redis 7 also waits up to 10 s
            # for lagging replicas before it exits.
            "terminationGracePeriodSeconds": 15,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "redis",
                    "image": spec.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": redis_args(spec, replica_of),
                    "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                    "readinessProbe": readiness_probe(spec.safety),
                    "resources": {
                        "requests": {"memory": spec.memory},
                        "limits": {"memory": spec.memory},
                    },
                    "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
                }
            ],
            "volumes": [volume],
        },
    }


def service_manifest(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": master_service_name(owner.name),
            "namespace": owner.namespace,
            "labels": {LABEL_OWNER: owner.name},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "selector": {LABEL_OWNER: owner.name, LABEL_ROLE: ROLE_MASTER},
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": REDIS_PORT}],
        },
    }


def pdb_name(owner: str) -> str:
    return f"{owner}-redis"


def pdb_manifest(owner: Owner) -> dict[str, Any]:
    """At most one instance voluntarily disrupted (drains, evictions) at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": pdb_name(owner.name),
            "namespace": owner.namespace,
            "labels": {LABEL_OWNER: owner.name},
            "ownerReferences": [owner.reference()],
        },
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {LABEL_OWNER: owner.name}}},
    }


# --------------------------------------------------------------------------- RESP client

RespValue = str | int | None | list["RespValue"]


class RedisClient:
    """The few Redis commands the operator sends, over one short TCP connection each.

    The operator talks to pod IPs directly (from the host on the local
    provider, from its pod on kind), so it needs no exec permission.
    """

    def __init__(self, host: str, port: int = REDIS_PORT, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def call(self, *args: str) -> RespValue:
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(encode_command(args))
            reader = sock.makefile("rb")
            return read_reply(reader)

    def info(self) -> dict[str, str]:
        reply = self.call("INFO")
        if not isinstance(reply, str):
            raise RedisError(f"INFO returned {type(reply).__name__}")
        return parse_info(reply)

    def state(self) -> RedisState:
        return RedisState.from_info(self.info())


def encode_command(args: Sequence[str]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def read_reply(reader: Any) -> RespValue:
    line: bytes = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, body = line[:1], line[1:-2].decode(errors="replace")
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = reader.read(size + 2)
        return str(data[:-2].decode(errors="replace"))
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected reply type {kind!r}")
