"""kopf handlers of GameDay resources (kfs.dev/v1alpha1): game days run from the cluster.

Run:  kopf run --standalone --namespace NS operator/gameday.py

One daemon per GameDay. It starts a worker process per run
(``failure_stories.gameday.worker``: the same Runner as `kfs run`), follows the
worker's event log into ``status`` and Kubernetes Events, and counts runs,
verdicts and phase durations for Prometheus (``KFS_METRICS_PORT``).

* Deleting a GameDay stops its daemon: the worker gets SIGTERM and its runner
  reverts the fault before kopf removes the finalizer.
* Stopping the operator (SIGTERM) does the same: nothing is left injected
  behind an operator that is not there to follow it.
* A crashed operator (SIGKILL, OOM) leaves the worker running, since it runs in
  its own session: the next operator re-attaches to it and follows it to the
  end. If the worker died too, the next operator reverts what it left (its
  namespace, cluster-scoped objects and node-level changes) and starts the run
  again.

This file is a kopf entry file beside ``redisfailover.py``; both are passed to
the same ``kopf run`` by ``kfs operator install``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
import prometheus_client
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import KfsError
from failure_stories.gameday.resource import (
    GAMEDAY_LABEL,
    GAMEDAY_PROVIDERS,
    GROUP,
    IN_CLUSTER,
    PLURAL,
    VERSION,
    EventTail,
    GameDaySpec,
    Metrics,
    Notice,
    Worker,
    cluster_of_operator,
    fold,
    next_run,
    now_iso,
    operator_provider_name,
    provider_for,
)
from failure_stories.operator.runtime import load_client_config
from failure_stories.run.cleanup import revert_run
from failure_stories.run.events import EventKind

RESOURCE = (GROUP, VERSION, PLURAL)
STATE_DIR = Path(os.environ.get("KFS_GAMEDAY_STATE", "/var/lib/kfs/gamedays"))
# Workers drive the embedded cluster from its host, or a cluster by kubeconfig or
# from inside it through the node agent (resource.cluster_of_operator); "none"
# says GameDays are not run by this installation.
PROVIDER = operator_provider_name()
FOLLOW_INTERVAL = 0.5
METRICS = Metrics()
ACTIVE = ("Running", "Holding")


class Api:
    custom: client.CustomObjectsApi


@kopf.on.startup()
def start_gamedays(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Events are posted on purpose (Notice), not derived from every log line.
    settings.posting.level = logging.CRITICAL
    # Each GameDay's daemon holds a worker thread for its whole life.
    settings.execution.max_workers = max(settings.execution.max_workers or 0, 32)
    where = load_client_config()
    Api.custom = client.CustomObjectsApi()
    port = os.environ.get("KFS_METRICS_PORT")
    if port:
        addr = os.environ.get("KFS_METRICS_ADDR", "127.0.0.1")
        prometheus_client.start_http_server(int(port), addr=addr, registry=METRICS.registry)
        logger.info(f"GameDay metrics on http://{addr}:{port}/metrics")
    logger.info(f"GameDay controller ready ({where}); runs under {STATE_DIR}")


class GameDay:
    """One GameDay object, as its daemon sees it."""

    def __init__(self, body: kopf.Body, logger: logging.Logger) -> None:
        self.body = body
        self.logger = logger
        self.name = str(body["metadata"]["name"])
        self.namespace = str(body["metadata"]["namespace"])
        self.uid = str(body["metadata"]["uid"])
        self.status: dict[str, Any] = dict(body.get("status") or {})

    def patch(self, status: Mapping[str, Any]) -> None:
        self.status.update(status)
        try:
            Api.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": dict(status)}
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nobody is left to read it
                raise

    def say(self, notice: Notice) -> None:
        log = self.logger.warning if notice.warning else self.logger.info
        log(f"{notice.reason}: {notice.message}")
        kopf.event(
            self.body,
            type="Warning" if notice.warning else "Normal",
            reason=notice.reason,
            message=notice.message[:1000],
        )

    def run_namespaces(self) -> list[str]:
        """Namespaces this GameDay's runs created (label), plus the one in status."""
        core = client.CoreV1Api()
        found = {
            ns.metadata.name
            for ns in core.list_namespace(label_selector=f"{GAMEDAY_LABEL}={self.uid}").items
        }
        if self.status.get("namespace"):
            found.add(self.status["namespace"])
        return sorted(found)


@kopf.daemon(*RESOURCE)
def run_gameday(
    stopped: kopf.DaemonStopped, body: kopf.Body, logger: logging.Logger, **_: Any
) -> None:
    gd = GameDay(body, logger)
    try:
        spec = GameDaySpec.parse(body.get("spec") or {})
    except KfsError as exc:
        gd.patch({"state": "Invalid", "message": str(exc)})
        gd.say(Notice("InvalidSpec", str(exc), warning=True))
        return
    if PROVIDER not in (*GAMEDAY_PROVIDERS, IN_CLUSTER):
        message = (
            f"this operator runs no GameDays (KFS_GAMEDAY_PROVIDER={PROVIDER}): run the "
            "operator with `kfs operator install --gamedays` (or KFS_GAMEDAY_PROVIDER=existing "
            "and a kubeconfig for this cluster), "
            "or run `kfs gameday` from a workstation"
        )
        gd.patch({"state": "Unsupported", "message": message})
        gd.say(Notice("Unsupported", message, warning=True))
        return
    attempt = int(gd.status.get("attempt") or 0)
    if gd.status.get("state") in ACTIVE and attempt:
        worker = Worker(STATE_DIR, gd.uid, attempt)
        if worker.alive():
            gd.say(
                Notice(
                    "Resumed", f"following run {attempt} again (its worker outlived the operator)"
                )
            )
            if not _follow(gd, spec, worker, stopped) or not spec.schedule:
                return
        else:
            _revert_dead(gd, spec, worker, "its worker died with the operator")
    elif gd.status.get("state") == "Finished" and not spec.schedule:
        return  # ran once, as asked; a new GameDay runs again
    while not stopped:
        if spec.schedule:
            at = next_run(spec.schedule, dt.datetime.now(dt.UTC))
            gd.patch({"nextRunAt": at.isoformat(timespec="seconds")})
            if gd.status.get("state") not in ("Finished", "Reverted", "Failed"):
                gd.patch({"state": "Scheduled", "message": f"next run at {at:%Y-%m-%d %H:%M} UTC"})
            if stopped.wait((at - dt.datetime.now(dt.UTC)).total_seconds()):
                return
        attempt += 1
        worker = Worker(STATE_DIR, gd.uid, attempt)
        gd.patch(
            {
                "state": "Running",
                "attempt": attempt,
                "startedAt": now_iso(),
                "finishedAt": None,
                "phase": "",
                "verdict": None,
                "namespace": None,
                "phases": None,
                "measurements": None,
                "heldSeconds": None,
                "eventsMirrored": 0,
                "message": "starting the run",
            }
        )
        worker.start(gd.namespace, gd.name, spec)
        METRICS.runs.labels(spec.scenario, spec.mode).inc()
        if not _follow(gd, spec, worker, stopped) or not spec.schedule:
            return


def _follow(gd: GameDay, spec: GameDaySpec, worker: Worker, stopped: kopf.DaemonStopped) -> bool:
    """Mirror the worker's events until it ends; False if the daemon was stopped."""
    tail = EventTail(worker.events_path)
    # After a restart the log is read again from the top: what an earlier
    # operator already announced and counted is folded into status quietly.
    tail.quiet = int(gd.status.get("eventsMirrored") or 0)
    gauge = METRICS.in_progress.labels(spec.scenario)
    gauge.inc()
    try:
        while True:
            alive = worker.alive()  # before reading: a worker's last words are on disk
            if _mirror(gd, spec, tail):
                worker.forget()
                gd.patch({"runs": int(gd.status.get("runs") or 0) + 1})
                return True
            if not alive:
                _revert_dead(gd, spec, worker, f"its worker exited early: {worker.log_tail()}")
                gd.patch({"state": "Failed", "runs": int(gd.status.get("runs") or 0) + 1})
                return True
            if stopped:
                why = (
                    "the GameDay was deleted"
                    if stopped.reason
                    and (stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)
                    else "the operator is stopping"
                )
                # The revert comes first and nothing may prevent it: when the
                # operator exits, kopf leaves this thread running but its event
                # loop (which posts Events) may already be gone.
                with contextlib.suppress(Exception):
                    gd.say(Notice("Reverting", f"{why}: reverting run {worker.attempt}"))
                worker.stop()
                with contextlib.suppress(Exception):
                    _mirror(gd, spec, tail)
                    gd.patch({"state": "Reverted", "message": f"{why}; the run was reverted"})
                return False
            stopped.wait(FOLLOW_INTERVAL)
    finally:
        gauge.dec()


def _mirror(gd: GameDay, spec: GameDaySpec, tail: EventTail) -> bool:
    """Apply the worker's new events to status; True once it reported its end."""
    done = False
    for position, event in tail:
        folded = fold(event, gd.status)
        gd.patch({**folded.status, "eventsMirrored": position})
        if position > tail.quiet:
            for notice in folded.notices:
                gd.say(notice)
            METRICS.observe(spec.scenario, folded)
        done = done or event.get("kind") == EventKind.DONE
    return done


def _revert_dead(gd: GameDay, spec: GameDaySpec, worker: Worker, why: str) -> None:
    """A run whose worker is gone: undo what it left, say so."""
    node_level = scenarios.get(spec.scenario).meta.node.changes
    provider = provider_for(*cluster_of_operator(STATE_DIR))
    done = revert_run(provider, gd.run_namespaces(), node_level=node_level)
    worker.forget()
    message = f"run {worker.attempt}: {why}; reverted: {'; '.join(done) or 'nothing was left'}"
    gd.patch({"state": "Reverted", "message": message[:1000], "finishedAt": now_iso()})
    gd.say(Notice("Reverted", message, warning=True))
