"""Flant's numbers: key arithmetic, and who was promoted with what, read from the
watcher's samples of each Redis instance's INFO."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("flant-redis-data-loss").steps()
_spec = importlib.util.spec_from_file_location(
    "redis_watch", Path(__file__).parent / "workloads" / "redis_watch.py"
)
assert _spec is not None and _spec.loader is not None
redis_watch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redis_watch)

OLD, NEW = "10.244.0.10", "10.244.0.11"


def _row(t: float, sentinel: str, **pods: dict[str, object]) -> dict[str, object]:
    return {"t": t, "sentinel": sentinel, "pods": pods}


def test_an_empty_promoted_master_lost_everything() -> None:
    assert steps.lost_ratio(0, 300000) == 1.0
    assert steps.lost_ratio(3, 300000) == 1.0  # rounded to four places
    assert steps.lost_ratio(150000, 300000) == 0.5


def test_more_keys_than_written_is_no_loss() -> None:
    assert steps.lost_ratio(300010, 300000) == 0.0


def test_instances_holding_every_key() -> None:
    per_pod = {"rfr-0": 300000, "rfr-1": 300004, "rfr-2": 12, "rfr-3": 0}
    assert steps.holding_all(per_pod, 300000) == 2


def test_the_promoted_replica_brings_what_it_held_just_before() -> None:
    # As seen in a symptom run: the new replica still pointed at itself, empty,
    # when the operator made it master.
    samples = [
        _row(
            1.0,
            OLD,
            **{
                "rfr-cache-0": {
                    "ip": OLD,
                    "role": "master",
                    "keys": 300000,
                    "master_repl_offset": "0",
                }
            },
        ),
        _row(
            2.0,
            OLD,
            **{
                "rfr-cache-0": {
                    "ip": OLD,
                    "role": "master",
                    "keys": 300000,
                    "master_repl_offset": "0",
                },
                "rfr-cache-1": {"ip": NEW, "role": "slave", "keys": 0, "slave_repl_offset": "1"},
            },
        ),
        _row(
            40.0,
            OLD,
            **{"rfr-cache-1": {"ip": NEW, "role": "slave", "keys": 0, "slave_repl_offset": "1"}},
        ),
        _row(
            64.0,
            NEW,
            **{"rfr-cache-1": {"ip": NEW, "role": "master", "keys": 0, "master_repl_offset": "0"}},
        ),
    ]
    promo = steps.promotion(samples, OLD)
    assert promo == {
        "pod": "rfr-cache-1",
        "ip": NEW,
        "keys": 0,
        "offset": 1,
        "old_master_offset": 0,
        "t": 64.0,
    }
    assert steps.sentinel_switch(samples, OLD) == NEW


def test_a_synced_replica_promoted_holds_the_dataset_and_the_offset() -> None:
    samples = [
        _row(
            1.0,
            OLD,
            **{
                "rfr-cache-0": {
                    "ip": OLD,
                    "role": "master",
                    "keys": 300000,
                    "master_repl_offset": "62355",
                },
                "rfr-cache-1": {
                    "ip": NEW,
                    "role": "slave",
                    "keys": 300000,
                    "slave_repl_offset": "61898",
                },
            },
        ),
        _row(2.0, "Timeout", **{"rfr-cache-1": {"ip": NEW, "err": "TimeoutError"}}),
        _row(
            3.0,
            NEW,
            **{
                "rfr-cache-1": {
                    "ip": NEW,
                    "role": "master",
                    "keys": 300000,
                    "master_repl_offset": "61898",
                }
            },
        ),
    ]
    promo = steps.promotion(samples, OLD)
    assert (promo["keys"], promo["offset"], promo["old_master_offset"]) == (300000, 61898, 62355)


def test_the_old_master_coming_back_as_master_is_no_promotion() -> None:
    samples = [_row(1.0, OLD, **{"rfr-cache-0": {"ip": OLD, "role": "master", "keys": 5}})]
    assert steps.promotion(samples, OLD) == {}
    assert steps.sentinel_switch(samples, OLD) == ""
    # A Sentinel that does not answer names nobody.
    assert steps.sentinel_switch([_row(1.0, "ConnectionRefusedError")], OLD) == ""


def test_the_watcher_reads_role_offsets_and_keys_from_info() -> None:
    info = (
        "# Replication\r\nrole:slave\r\nmaster_host:10.244.0.10\r\n"
        "master_link_status:down\r\nmaster_sync_in_progress:1\r\nslave_repl_offset:1\r\n"
        "# Keyspace\r\ndb0:keys=300000,expires=0,avg_ttl=0\r\ndb1:keys=12,expires=0\r\n"
    )
    state = redis_watch.parse_info(info)
    assert state == {
        "role": "slave",
        "master_host": "10.244.0.10",
        "master_link_status": "down",
        "master_sync_in_progress": "1",
        "slave_repl_offset": "1",
        "keys": 300000,
    }
    assert redis_watch.parse_info("# Keyspace\r\n")["keys"] == 0
