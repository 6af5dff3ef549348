"""The Docker engine kfs starts: what it removes afterwards, and when."""

from __future__ import annotations

from pathlib import Path

from failure_stories.host import docker_engine


def test_docker_rules_found_by_chain_and_by_docker_links(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KFS_STATE_DOCKER", str(tmp_path))
    before = {
        "filter": ["-P FORWARD ACCEPT", "-A FORWARD -i kfs0 -j ACCEPT"],
        "nat": ["-P POSTROUTING ACCEPT"],
    }
    (tmp_path / "host-changes.json").write_text(docker_engine.json.dumps({"rules_before": before}))
    now = {
        "filter": [
            *before["filter"],
            "-N DOCKER",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -o br-0123456789ab -j DOCKER",
            "-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT",
            "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
        ],
        "nat": [
            *before["nat"],
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            "-A POSTROUTING -s 10.244.0.0/16 -j KFS-MASQ-AGENT",
        ],
    }
    deleted: list[list[str]] = []

    def run(argv: list[str], check: bool = True, **kw: object) -> str:
        table = argv[argv.index("-t") + 1]
        if "-S" in argv:
            return "\n".join(now[table])
        if "-D" in argv:
            deleted.append(argv[argv.index("-D") + 1 :])
        return ""

    monkeypatch.setattr(docker_engine.commands, "run", run)
    monkeypatch.setattr(docker_engine.iptables, "sweep", lambda pattern, run: [])
    docker_engine.remove_docker_rules()
    assert deleted == [
        ["FORWARD", "-o", "br-0123456789ab", "-j", "DOCKER"],
        ["FORWARD", "-i", "br-0123456789ab", "!", "-o", "br-0123456789ab", "-j", "ACCEPT"],
        ["FORWARD", "-i", "docker0", "-o", "docker0", "-j", "ACCEPT"],
        ["POSTROUTING", "-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"],
    ]


def test_daemon_config_uses_the_wrapper_and_this_hosts_drivers(tmp_path: Path) -> None:
    cfg = docker_engine.daemon_config(tmp_path)
    assert cfg["default-runtime"] == docker_engine.RUNTIME
    assert cfg["runtimes"] == {docker_engine.RUNTIME: {"path": str(tmp_path / "runc-kfs")}}
    assert cfg["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert cfg["storage-driver"] == "overlay2"


def test_cleanup_keeps_an_engine_with_containers(monkeypatch) -> None:
    stopped: list[bool] = []
    monkeypatch.setattr(docker_engine, "started_by_kfs", lambda: True)
    monkeypatch.setattr(docker_engine, "docker", lambda: "docker")
    monkeypatch.setattr(docker_engine, "stop_engine_if_ours", lambda: stopped.append(True) or ["x"])
    monkeypatch.setattr(docker_engine.commands, "run", lambda argv, **kw: "c1\nc2\n")
    assert docker_engine.cleanup_if_idle() == ["kept dockerd: 2 containers are still in it"]
    assert stopped == []
    monkeypatch.setattr(docker_engine.commands, "run", lambda argv, **kw: "")
    assert docker_engine.cleanup_if_idle() == ["x"]


def test_nothing_to_undo_without_a_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KFS_STATE_DOCKER", str(tmp_path))
    assert docker_engine.stop_engine_if_ours() == []
