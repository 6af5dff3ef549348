"""`make setup` builds the images while Kubernetes compiles, not after it."""

from __future__ import annotations

import threading
import time

import pytest

from failure_stories.tools import prepare


def test_image_builds_run_beside_the_go_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    spans: dict[str, tuple[float, float, str]] = {}

    def step(name: str, seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)
        spans[name] = (start, time.monotonic(), threading.current_thread().name)

    monkeypatch.setattr(prepare.binaries, "ensure", lambda: step("binaries", 0.6))
    monkeypatch.setattr(prepare.images, "build_images", lambda: step("images", 0.4))

    start = time.monotonic()
    binaries_seconds, images_seconds = prepare.build_binaries_and_images()
    wall = time.monotonic() - start

    b_start, b_end, b_thread = spans["binaries"]
    i_start, i_end, i_thread = spans["images"]
    assert b_thread != i_thread
    assert i_start < b_end and b_start < i_end, "the two builds did not overlap"
    assert wall < 0.6 + 0.4 - 0.2, f"side by side took {wall:.2f}s, as long as one after the other"
    assert binaries_seconds == pytest.approx(0.6, abs=0.15)
    assert images_seconds == pytest.approx(0.4, abs=0.15)


def test_an_image_build_failure_is_not_lost_behind_the_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise prepare.KfsError("debootstrap failed with exit code 1: E: no mirror")

    monkeypatch.setattr(prepare.binaries, "ensure", lambda: time.sleep(0.1))
    monkeypatch.setattr(prepare.images, "build_images", broken)
    with pytest.raises(prepare.KfsError, match="debootstrap failed"):
        prepare.build_binaries_and_images()
