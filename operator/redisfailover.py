"""kopf handlers of the RedisFailover operator (kfs.dev/v1alpha1).

Run:  kopf run --standalone --namespace NS operator/redisfailover.py

Each reconciliation observes the world (the pods, their labels and annotations,
and the ``INFO`` of every reachable redis-server), asks
``failure_stories.operator.redis_failover.plan`` for the single next step, performs it,
and writes ``status``. Nothing is remembered between calls: the master is the
pod labelled ``kfs.dev/role=master``, so the operator can be killed at any
point (even mid-failover) and continue after a restart.

Errors follow kopf's contract: ``kopf.TemporaryError(delay=...)`` while waiting
(a replica syncing, an old pod terminating), ``kopf.PermanentError`` for a spec
that can never work. Kubernetes Events on the RedisFailover say what was done
and why, in particular which pod became master and in what replication state.

This file is a kopf entry file, not an importable module (the standard library
owns the name ``operator``); more handler files can sit beside it and be passed
to the same ``kopf run``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.core.errors import WaitTimeout
from failure_stories.core.wait import wait_for
from failure_stories.operator import redis_failover as rf
from failure_stories.operator.runtime import load_client_config

RESOURCE = (rf.GROUP, rf.VERSION, rf.PLURAL)
DEFAULT_IMAGE = os.environ.get("KFS_REDIS_IMAGE", "localhost/kfs/toolbox:v1")
# Writes on the old master are paused for at most this long during a planned
# failover; the replica normally catches up in milliseconds.
PAUSE_MS = 10_000
CATCH_UP_SECONDS = 8.0
KEEP_FAILOVERS = 10

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
# Objects whose reconciliation was skipped because another one was running;
# the running one goes round again so that no pod event is lost.
_dirty: set[str] = set()
_MAX_ROUNDS = 5


class Api:
    core: client.CoreV1Api
    policy: client.PolicyV1Api
    custom: client.CustomObjectsApi


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Our own Events are posted with kopf.event(); kopf's log-derived events
    # would post one per TemporaryError retry, so they are switched off.
    settings.posting.level = logging.CRITICAL
    settings.watching.server_timeout = 120
    # At least 8 (other handler files in the same operator may want more).
    settings.execution.max_workers = max(settings.execution.max_workers or 0, 8)
    where = load_client_config()
    Api.core = client.CoreV1Api()
    Api.policy = client.PolicyV1Api()
    Api.custom = client.CustomObjectsApi()
    logger.info(f"RedisFailover operator ready ({where}); default image {DEFAULT_IMAGE}")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def reconcile_spec(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Drive a new or changed spec to completion: kopf retries until converged."""
    action = reconcile(body, logger)
    if isinstance(action, rf.Wait):
        raise kopf.TemporaryError(f"waiting: {action.reason}", delay=action.delay)
    if not isinstance(action, rf.Converged):
        raise kopf.TemporaryError(f"in progress: {action.reason}", delay=0.5)
    if not action.settled:
        # Nothing changes on the pods when a naive replica finishes syncing, so
        # no pod event would tell us; keep looking until it has.
        raise kopf.TemporaryError("done; watching replicas finish their sync", delay=2)


@kopf.on.event("", "v1", "pods", labels={rf.LABEL_OWNER: kopf.PRESENT})
def pod_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Heal between spec changes: any change of one of our pods (a master pod
    deleted by hand, a readiness flip) re-reconciles its RedisFailover.

    Event handlers need no finalizer, unlike kopf timers and daemons: an operator
    that is gone (killed, uninstalled) never blocks deleting a RedisFailover or
    its namespace.
    """
    owner = (body.get("metadata", {}).get("labels") or {}).get(rf.LABEL_OWNER)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner or not namespace:
        return
    try:
        obj = Api.custom.get_namespaced_custom_object(
            rf.GROUP, rf.VERSION, namespace, rf.PLURAL, owner
        )
    except ApiException as exc:
        if exc.status == 404:
            return  # the RedisFailover is gone; the garbage collector takes the pods
        raise
    try:
        reconcile(obj, logger, report_invalid=False)
    except kopf.PermanentError:
        return  # reported once by reconcile_spec; nothing to heal in a broken spec


# --------------------------------------------------------------------------- one round


def reconcile(body: Mapping[str, Any], logger: Any, report_invalid: bool = True) -> rf.Action:
    """One or more rounds of observe - plan - act - report for one RedisFailover."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return rf.Converged("being deleted")
    owner = rf.Owner(meta["name"], meta["namespace"], meta["uid"])
    lock = _lock(owner.uid)
    if not lock.acquire(timeout=0.2):
        with _locks_guard:
            _dirty.add(owner.uid)
        return rf.Wait("another reconciliation of this object is running", delay=1)
    try:
        action = _round(body, owner, logger, report_invalid)
        for _ in range(_MAX_ROUNDS):
            with _locks_guard:
                if owner.uid not in _dirty:
                    break
                _dirty.discard(owner.uid)
            fresh = Api.custom.get_namespaced_custom_object(*_ref(owner))
            action = _round(fresh, owner, logger, report_invalid)
        return action
    finally:
        lock.release()


def _round(
    body: Mapping[str, Any], owner: rf.Owner, logger: Any, report_invalid: bool
) -> rf.Action:
    try:
        spec = rf.parse_spec(body.get("spec") or {}, DEFAULT_IMAGE)
    except rf.InvalidSpec as exc:
        if report_invalid:
            kopf.event(body, type="Warning", reason="InvalidSpec", message=str(exc))
            _write_status(body, _invalid_status(body, str(exc)))
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    _ensure_service(owner)
    _ensure_pdb(owner, spec.safety)
    snap = observe(owner, spec)
    _mark_synced(snap, owner, logger)
    action = rf.plan(snap)
    try:
        perform(action, owner, spec, snap, body, logger)
    except (OSError, rf.RedisError) as exc:
        action = rf.Wait(f"{type(action).__name__} failed, will retry: {exc}", delay=2)
        logger.warning(action.reason)
    if not isinstance(action, rf.Wait | rf.Converged):
        snap = observe(owner, spec)
    _write_status(body, _status(body, spec, snap, action))
    return action


def observe(owner: rf.Owner, spec: rf.Spec) -> rf.Snapshot:
    pods = Api.core.list_namespaced_pod(
        owner.namespace, label_selector=f"{rf.LABEL_OWNER}={owner.name}"
    ).items
    instances = []
    for pod in pods:
        labels = pod.metadata.labels or {}
        annotations = pod.metadata.annotations or {}
        terminating = pod.metadata.deletion_timestamp is not None
        phase = pod.status.phase or "Pending"
        ip = pod.status.pod_ip
        state = None
        if ip and phase == "Running" and not terminating:
            try:
                state = rf.RedisClient(ip, timeout=1.0).state()
            except (OSError, rf.RedisError):
                state = None
        try:
            index = int(labels.get(rf.LABEL_INDEX, "-1"))
            epoch = int(annotations.get(rf.ANN_EPOCH, "0"))
        except ValueError:
            index, epoch = -1, 0
        instances.append(
            rf.Instance(
                name=pod.metadata.name,
                index=index,
                spec_hash=labels.get(rf.LABEL_HASH, ""),
                is_master=labels.get(rf.LABEL_ROLE) == rf.ROLE_MASTER,
                epoch=epoch,
                phase=phase,
                terminating=terminating,
                ip=ip,
                ready=any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
                ),
                synced_to=annotations.get(rf.ANN_SYNCED_TO, ""),
                state=state,
            )
        )
    return rf.Snapshot(spec=spec, instances=tuple(instances))


def perform(
    action: rf.Action,
    owner: rf.Owner,
    spec: rf.Spec,
    snap: rf.Snapshot,
    body: Mapping[str, Any],
    logger: Any,
) -> None:
    if isinstance(action, rf.Create):
        for index in action.indexes:
            manifest = rf.pod_manifest(
                owner, spec, index, replica_of=action.replica_of, epoch=action.epoch
            )
            try:
                Api.core.create_namespaced_pod(owner.namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        names = ", ".join(rf.pod_name(owner.name, i) for i in action.indexes)
        if action.replica_of is None:
            _event(body, "MasterChosen", f"{names} is master: {action.reason}", logger)
        else:
            _event(body, "Created", f"{names} created as replicas ({action.reason})", logger)
    elif isinstance(action, rf.Delete):
        _event(body, "Replacing", f"deleting {action.name}: {action.reason}", logger)
        try:
            Api.core.delete_namespaced_pod(action.name, owner.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
    elif isinstance(action, rf.Failover):
        _failover(action, owner, snap, body, logger)
    elif isinstance(action, rf.Repoint):
        master = snap.by_name(action.master)
        assert master is not None and master.ip
        for name in action.names:
            inst = snap.by_name(name)
            if inst is None or not inst.ip:
                continue
            rf.RedisClient(inst.ip).call("REPLICAOF", master.ip, str(rf.REDIS_PORT))
            _label(owner, name, rf.ROLE_REPLICA)
        _event(body, "Repointed", f"{', '.join(action.names)} now replicate {master.name}", logger)
    elif isinstance(action, rf.Unlabel):
        for name in action.names:
            _label(owner, name, rf.ROLE_REPLICA)
        _event(
            body,
            "MasterLabelRemoved",
            f"{', '.join(action.names)}: {action.reason}",
            logger,
            warning=True,
        )
    elif isinstance(action, rf.Wait):
        logger.info(f"waiting: {action.reason}")
        if action.warning:
            kopf.event(body, type="Warning", reason="Blocked", message=action.reason)


def _failover(
    action: rf.Failover,
    owner: rf.Owner,
    snap: rf.Snapshot,
    body: Mapping[str, Any],
    logger: Any,
) -> None:
    target = snap.by_name(action.target)
    assert target is not None and target.ip
    target_redis = rf.RedisClient(target.ip)
    source = snap.by_name(action.source) if action.source else None
    source_redis = rf.RedisClient(source.ip) if source and source.ip and source.live else None
    chosen = target.state
    master_offset: int | None = None
    if action.planned:
        if source_redis is None:
            raise OSError(f"planned failover needs the master {action.source} reachable")
        # Stop new writes, then let the replica drain the stream: after this
        # the replica holds exactly what the master holds.
        source_redis.call("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
        try:
            master_offset = source_redis.state().offset

            def caught_up() -> rf.RedisState | None:
                now = target_redis.state()
                return now if rf.is_synced(now) and now.offset >= (master_offset or 0) else None

            chosen = wait_for(
                caught_up,
                what=f"{target.name} to reach the master's offset {master_offset}",
                timeout=CATCH_UP_SECONDS,
                interval=0.1,
                retry_on=(OSError, rf.RedisError),
            )
        except WaitTimeout as exc:
            source_redis.call("CLIENT", "UNPAUSE")
            raise OSError(str(exc)) from exc
    synced = action.synced and (not action.planned or chosen is not None)
    target_redis.call("REPLICAOF", "NO", "ONE")
    epoch = max((i.epoch for i in snap.instances), default=0) + 1
    # Label the new master first: a crash before the old label goes leaves two
    # labels, which the next round resolves by epoch.
    _label(owner, target.name, rf.ROLE_MASTER, epoch=epoch)
    if source is not None and source.live:
        _label(owner, source.name, rf.ROLE_REPLICA)
    if source_redis is not None and action.planned:
        source_redis.call("REPLICAOF", target.ip, str(rf.REDIS_PORT))
        source_redis.call("CLIENT", "UNPAUSE")
    record = {
        "time": _now(),
        "pod": target.name,
        "from": action.source or "",
        "planned": action.planned,
        "synced": synced,
        "keys": chosen.keys if chosen else -1,
        "replicaOffset": chosen.offset if chosen else -1,
        "masterOffset": master_offset if master_offset is not None else -1,
        "replicaState": chosen.describe() if chosen else "unreachable",
        "reason": action.reason,
    }
    _append_failover(owner, record)
    kind = "planned failover" if action.planned else "unplanned failover"
    detail = (
        f"offset {record['replicaOffset']} caught up with the paused master's {master_offset}"
        if action.planned
        else f"state when chosen: {record['replicaState']}"
    )
    _event(
        body,
        "Promoted" if synced else "PromotedUnsynced",
        f"{target.name} is master (epoch {epoch}, {kind} from {action.source or '?'}): "
        f"{action.reason}; {detail}; {record['keys']} keys",
        logger,
        warning=not synced,
    )


# --------------------------------------------------------------------------- Kubernetes helpers


def _event(
    body: Mapping[str, Any], reason: str, message: str, logger: Any, warning: bool = False
) -> None:
    (logger.warning if warning else logger.info)(f"{reason}: {message}")
    kopf.event(body, type="Warning" if warning else "Normal", reason=reason, message=message)


def _label(owner: rf.Owner, pod: str, role: str, epoch: int | None = None) -> None:
    patch: dict[str, Any] = {"metadata": {"labels": {rf.LABEL_ROLE: role}}}
    if epoch is not None:
        patch["metadata"]["annotations"] = {rf.ANN_EPOCH: str(epoch)}
    Api.core.patch_namespaced_pod(pod, owner.namespace, patch)


def _mark_synced(snap: rf.Snapshot, owner: rf.Owner, logger: Any) -> None:
    """Remember on each replica that it was seen holding the master's data."""
    for name, ref in rf.sync_marks(snap).items():
        annotations = {rf.ANN_SYNCED_TO: ref}
        pod = Api.core.read_namespaced_pod(name, owner.namespace)
        if rf.ANN_SYNCED_AFTER not in (pod.metadata.annotations or {}):
            started = pod.status.start_time or pod.metadata.creation_timestamp
            seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
            annotations[rf.ANN_SYNCED_AFTER] = f"{seconds:.1f}"
        Api.core.patch_namespaced_pod(
            name, owner.namespace, {"metadata": {"annotations": annotations}}
        )
        logger.info(f"{name} fully synced with {ref}")


def _ensure(read: Any, create: Any, manifest: dict[str, Any], namespace: str) -> None:
    try:
        read(manifest["metadata"]["name"], namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        try:
            create(namespace, manifest)
        except ApiException as exc2:
            if exc2.status != 409:
                raise


def _ensure_service(owner: rf.Owner) -> None:
    _ensure(
        Api.core.read_namespaced_service,
        Api.core.create_namespaced_service,
        rf.service_manifest(owner),
        owner.namespace,
    )


def _ensure_pdb(owner: rf.Owner, safety: rf.Safety) -> None:
    if safety == "safe":
        _ensure(
            Api.policy.read_namespaced_pod_disruption_budget,
            Api.policy.create_namespaced_pod_disruption_budget,
            rf.pdb_manifest(owner),
            owner.namespace,
        )
        return
    try:
        Api.policy.delete_namespaced_pod_disruption_budget(rf.pdb_name(owner.name), owner.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _append_failover(owner: rf.Owner, record: dict[str, Any]) -> None:
    fresh = Api.custom.get_namespaced_custom_object(*_ref(owner))
    history = list((fresh.get("status") or {}).get("failovers") or [])
    history = [*history, record][-KEEP_FAILOVERS:]
    Api.custom.patch_namespaced_custom_object_status(
        *_ref(owner), {"status": {"failovers": history, "master": record["pod"]}}
    )


def _ref(owner: rf.Owner) -> tuple[str, str, str, str, str]:
    return rf.GROUP, rf.VERSION, owner.namespace, rf.PLURAL, owner.name


# --------------------------------------------------------------------------- status


def _condition(
    old: Mapping[str, Any], kind: str, ok: bool, reason: str, message: str, generation: int
) -> dict[str, Any]:
    previous: Mapping[str, Any] = next(
        (c for c in old.get("conditions") or [] if c.get("type") == kind), {}
    )
    status = "True" if ok else "False"
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:500],
        "observedGeneration": generation,
        "lastTransitionTime": previous.get("lastTransitionTime", _now())
        if previous.get("status") == status
        else _now(),
    }


def _status(
    body: Mapping[str, Any], spec: rf.Spec, snap: rf.Snapshot, action: rf.Action
) -> dict[str, Any]:
    old = body.get("status") or {}
    generation = int(body["metadata"].get("generation") or 0)
    live = [i for i in snap.instances if i.live]
    master = next((i for i in live if i.is_master), None)
    done = isinstance(action, rf.Converged)
    reason = "Converged" if done else type(action).__name__
    return {
        "master": master.name if master else "",
        "observedGeneration": generation,
        "replicas": len(live),
        "readyReplicas": sum(1 for i in live if i.ready),
        "updatedReplicas": sum(
            1 for i in live if i.spec_hash == spec.template_hash and i.index < spec.replicas
        ),
        "message": action.reason[:500],
        "conditions": [
            _condition(old, "Ready", done, reason, action.reason, generation),
            _condition(old, "Progressing", not done, reason, action.reason, generation),
        ],
    }


def _invalid_status(body: Mapping[str, Any], message: str) -> dict[str, Any]:
    old = body.get("status") or {}
    generation = int(body["metadata"].get("generation") or 0)
    return {
        "observedGeneration": generation,
        "message": message,
        "conditions": [
            _condition(old, "Ready", False, "InvalidSpec", message, generation),
            _condition(old, "Progressing", False, "InvalidSpec", message, generation),
        ],
    }


def _write_status(body: Mapping[str, Any], status: dict[str, Any]) -> None:
    old = body.get("status") or {}
    if all(old.get(k) == v for k, v in status.items()):
        return
    meta = body["metadata"]
    owner = rf.Owner(meta["name"], meta["namespace"], meta["uid"])
    try:
        Api.custom.patch_namespaced_custom_object_status(*_ref(owner), {"status": status})
    except ApiException as exc:
        if exc.status != 404:  # deleted meanwhile
            raise
