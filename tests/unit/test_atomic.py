"""Files read by other processes while written (pid records, the sysctl record,
reports) are replaced whole: a reader never sees an empty or partial file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from failure_stories.core import atomic


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    atomic.write_text(path, json.dumps({"n": -1}))
    done = threading.Event()
    bad: list[str] = []

    def write() -> None:
        for n in range(400):
            atomic.write_text(path, json.dumps({"n": n, "pad": "x" * 20_000}))
        done.set()

    def read() -> None:
        while not done.is_set():
            text = path.read_text()
            try:
                json.loads(text)
            except ValueError:
                bad.append(text[:40])

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not bad, f"{len(bad)} partial reads, e.g. {bad[0]!r}"
    assert json.loads(path.read_text())["n"] == 399
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, as before
