"""The runtime wrapper's decision: which capabilities a container may ask for."""

from __future__ import annotations

import json
from pathlib import Path

from failure_stories.host import runc_caps

THIS_HOST = 0x000001FFFEFFFFFF  # CapBnd here: every capability but CAP_SYS_RESOURCE (24)
NORMAL_HOST = (1 << 41) - 1  # 0..40, all of them


def test_bounding_mask_is_read_from_proc_status() -> None:
    status = "Name:\tx\nCapEff:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"
    assert runc_caps.bounding_mask(status) == THIS_HOST


def test_only_capabilities_outside_the_bounding_set_are_dropped() -> None:
    caps = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN", "CAP_NEW_IN_SOME_KERNEL"]
    assert runc_caps.grantable(caps, THIS_HOST) == [
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
        "CAP_NEW_IN_SOME_KERNEL",
    ]


def test_a_normal_host_changes_nothing() -> None:
    everything = sorted(runc_caps.CAP_NUMBERS)
    process = {"capabilities": {s: list(everything) for s in runc_caps.CAP_SETS}}
    assert runc_caps.trim_process(process, NORMAL_HOST) is False
    assert process["capabilities"]["bounding"] == everything


def test_a_privileged_spec_loses_sys_resource_in_every_set() -> None:
    process = {"capabilities": {s: ["CAP_KILL", "CAP_SYS_RESOURCE"] for s in runc_caps.CAP_SETS}}
    assert runc_caps.trim_process(process, THIS_HOST) is True
    assert all(v == ["CAP_KILL"] for v in process["capabilities"].values())


def test_which_file_is_edited_for_each_runc_command(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    argv = ["runc", "--root", "/r", "--log", "/l", "create", "--bundle", str(bundle), "id"]
    assert runc_caps.spec_file(argv) == (bundle / "config.json", True)
    assert runc_caps.spec_file(["runc", "run", f"--bundle={bundle}", "id"]) == (
        bundle / "config.json",
        True,
    )
    assert runc_caps.spec_file(["runc", "exec", "--process", "/p.json", "id"]) == (
        Path("/p.json"),
        False,
    )
    for passthrough in (["runc", "state", "id"], ["runc", "delete", "id"], ["runc", "kill", "id"]):
        assert runc_caps.spec_file(passthrough) is None


def test_main_rewrites_the_bundle_then_execs_runc(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"process": {"capabilities": {"bounding": ["CAP_SYS_RESOURCE", "CAP_KILL"]}}})
    )
    status = tmp_path / "status"
    status.write_text("CapBnd:\t000001fffeffffff\n")
    real_read = Path.read_text

    def read(self: Path, *a: object, **kw: object) -> str:
        return real_read(status if str(self) == "/proc/self/status" else self, *a, **kw)

    execs: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(Path, "read_text", read)
    monkeypatch.setattr(runc_caps.os, "execv", lambda path, args: execs.append((path, args)))
    runc_caps.main(["runc-kfs", "create", "--bundle", str(tmp_path), "c1"])
    doc = json.loads(real_read(tmp_path / "config.json"))
    assert doc["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    assert execs == [(runc_caps.RUNC, [runc_caps.RUNC, "create", "--bundle", str(tmp_path), "c1"])]
