"""The long first build says what it is compiling, for how long, and where its log is."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.core.errors import ProviderError
from failure_stories.providers.local import binaries


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KFS_CACHE", str(tmp_path))
    return tmp_path


def test_current_step_is_the_last_binary_announced():
    log = (
        "building Kubernetes v1.34.4\nbuilding etcd (1/7)\n"
        "go: downloading x\nbuilding kubelet (4/7)\n"
    )
    assert binaries.current_step(log, "k8s") == "kubelet (4/7)"
    assert binaries.current_step("go: downloading x\n", "k8s") == "k8s"


def test_progress_names_each_binary_with_elapsed_time_and_log(cache: Path):
    said: list[str] = []
    script = "echo 'building etcd (1/2)'; sleep 0.7; echo 'building kubectl (2/2)'; sleep 0.7"
    binaries._run(["sh", "-c", script], "build it", "demo", say=said.append, every=0.25)
    log = cache / "logs" / "build-demo.log"
    assert log.read_text().splitlines() == ["building etcd (1/2)", "building kubectl (2/2)"]
    assert any("etcd (1/2)" in m for m in said) and any("kubectl (2/2)" in m for m in said)
    assert all(m.startswith("prepare: build it: ") and f"(log: {log})" in m for m in said)
    assert said[-1].split(", ")[1].endswith("s so far (log: " + str(log) + ")")


def test_a_failed_build_names_its_last_line_and_log(cache: Path):
    with pytest.raises(ProviderError) as err:
        binaries._run(
            ["sh", "-c", "echo compiling; echo 'undefined: foo' >&2; exit 3"],
            "build it",
            "bad",
            say=lambda m: None,
            every=5,
        )
    msg = str(err.value)
    assert msg.startswith("build it failed with exit code 3: undefined: foo (log: ")
    assert str(cache / "logs" / "build-bad.log") in msg
