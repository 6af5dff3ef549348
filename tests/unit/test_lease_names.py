"""Lock Leases: their names are valid Kubernetes names and stay distinct, expiry is
judged from renewTime + duration, and each provider picks its lock backend."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from failure_stories.host.locks import FileLocks
from failure_stories.providers.base import ClusterStatus, Provider
from failure_stories.providers.leases import (
    LeaseLocks,
    _now,
    dns_name,
    expired,
    lease_name,
    shared_lease_name,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RUN_LOCK = "run-" + ("kfs-" + "a" * 60)[:55] + "-x1y2z3"  # as long as a run's namespace gets


@pytest.mark.parametrize("name", ["node", "node-outside-network", "run-kfs-story-abc123"])
def test_names_that_are_valid_already_stay_as_they_are(name: str) -> None:
    assert dns_name(name) == name
    assert lease_name(name) == f"kfs-{name}"


@pytest.mark.parametrize(
    "name", ["Node", "node_a", "node.a", "-node-", "ünïcode", "a--b", "", "x" * 300, RUN_LOCK]
)
def test_other_names_become_valid_dns_names_and_label_values(name: str) -> None:
    for limit in (63, 253):
        made = dns_name(name, limit)
        assert DNS_LABEL.match(made) and len(made) <= limit
    assert len(lease_name(name)) <= 253 and DNS_LABEL.match(lease_name(name))
    shared = shared_lease_name(name, "0a1b2c3d")
    assert len(shared) <= 253 and shared.endswith("-shared-0a1b2c3d")


def test_names_that_had_to_change_never_collide() -> None:
    names = ["node_a", "node-a", "node.a", "Node-A", "x" * 70, "x" * 71]
    assert len({dns_name(n) for n in names}) == len(names)


def test_a_run_lock_fits_a_label_value() -> None:
    assert len(RUN_LOCK) > 63
    assert len(dns_name(RUN_LOCK)) <= 63
    assert lease_name(RUN_LOCK) == f"kfs-{RUN_LOCK}"  # names may be longer: kept readable


def _lease(renewed: dt.datetime | None, seconds: int = 15) -> Any:
    return SimpleNamespace(
        spec=SimpleNamespace(renew_time=renewed, acquire_time=None, lease_duration_seconds=seconds)
    )


def test_a_lease_expires_once_its_duration_passed_without_renewal() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert not expired(_lease(now - dt.timedelta(seconds=14)), now)
    assert expired(_lease(now - dt.timedelta(seconds=16)), now)
    assert expired(_lease(None), now)


def test_times_written_always_carry_microseconds() -> None:
    # The API server refuses a MicroTime without its six fraction digits.
    assert _now().microsecond != 0
    assert re.search(r"\.\d{6}\+00:00$", _now().isoformat())


class _ClusterProvider(Provider):
    name = "cluster"

    def up(self) -> None: ...

    def down(self) -> None: ...

    def status(self) -> ClusterStatus:
        return ClusterStatus("cluster", True, None)

    def kube(self) -> Any:
        return SimpleNamespace(api=client.ApiClient())


def test_providers_keep_locks_on_the_cluster_unless_it_is_local() -> None:
    from failure_stories.providers.local import LocalProvider

    assert isinstance(_ClusterProvider().locks(), LeaseLocks)
    assert isinstance(LocalProvider().locks(), FileLocks)
