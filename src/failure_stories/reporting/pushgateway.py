"""Results as Prometheus metrics, pushed to a Pushgateway (`kfs run --pushgateway URL`).

A run ends, so nothing would be there to scrape: each story's results are pushed
once, in a group of their own (job ``kfs``, labels ``scenario`` and ``run``:
``story`` or the negative control's name), which the next run of the same story
(or control) replaces. Metrics:

- ``kfs_verdict{scenario,provider,verdict}``: 1 for the run's verdict, 0 for the
  other three, so ``kfs_verdict{verdict="passed"} == 0`` is an alert rule;
- ``kfs_run_seconds{scenario,provider}``;
- ``kfs_measurement{scenario,provider,phase,measurement}``: every measurement;
- ``kfs_measurement_ok`` and ``kfs_measurement_margin``, for judged ones: whether
  it held, and its room to the threshold (see reporting.compare.margin).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from failure_stories.core.errors import DefinitionError, PermanentError
from failure_stories.reporting.compare import margin
from failure_stories.reporting.model import VERDICTS, ScenarioReport

JOB = "kfs"
_TIMEOUT = 10.0


def gateway_url(text: str) -> str:
    """The Pushgateway address, checked before anything runs: http(s)://HOST[:PORT][/path],
    or HOST:PORT (http)."""
    url = text if "://" in text else f"http://{text}"
    parts = urllib.parse.urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise DefinitionError(
            f"--pushgateway {text!r} is not an address: give http://HOST:PORT "
            "(a Pushgateway listens on 9091 by default)"
        )
    return url.rstrip("/")


def registry_for(report: ScenarioReport) -> CollectorRegistry:
    """One story's results as the metrics above, in a registry of their own."""
    reg = CollectorRegistry()
    base = ("scenario", "provider")
    ids = (report.scenario, report.provider)
    verdict = Gauge(
        "kfs_verdict", "1 for the run's verdict, 0 for the others", [*base, "verdict"], registry=reg
    )
    for v in VERDICTS:
        verdict.labels(*ids, v).set(1 if report.verdict == v else 0)
    Gauge("kfs_run_seconds", "Wall time of the run", base, registry=reg).labels(*ids).set(
        report.seconds
    )
    labels = [*base, "phase", "measurement"]
    value = Gauge("kfs_measurement", "A measurement a phase reported", labels, registry=reg)
    ok = Gauge(
        "kfs_measurement_ok", "1 if a judged measurement held its threshold", labels, registry=reg
    )
    room = Gauge(
        "kfs_measurement_margin",
        "Room left to the threshold (negative: past it)",
        labels,
        registry=reg,
    )
    for phase in report.phases:
        for name, m in phase.measurements.items():
            key = (*ids, phase.name, name)
            value.labels(*key).set(m.value)
            if m.ok is not None:
                ok.labels(*key).set(1 if m.ok else 0)
            left = margin(m.value, m.threshold)
            if left is not None:
                room.labels(*key).set(left)
    return reg


def _run(report: ScenarioReport) -> str:
    """``story``, or the negative control the run was (the controls branch)."""
    return str(getattr(report, "control", None) or "story")


def push(reports: Iterable[ScenarioReport], url: str) -> int:
    """Push each report's group; returns how many were pushed."""
    n = 0
    for report in reports:
        try:
            push_to_gateway(
                url,
                job=JOB,
                registry=registry_for(report),
                grouping_key={"scenario": report.scenario, "run": _run(report)},
                timeout=_TIMEOUT,
            )
        except urllib.error.HTTPError as exc:
            raise PermanentError(
                f"the Pushgateway at {url} refused {report.scenario}'s results "
                f"({exc.code} {exc.reason}): check that URL is a Pushgateway"
            ) from None
        except OSError as exc:  # URLError, refused, timed out
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise PermanentError(
                f"cannot push results to the Pushgateway at {url} ({reason}): "
                "check that it runs there; the JSON reports are written all the same"
            ) from None
        n += 1
    return n
