"""Image building without debootstrap: cache keys, layers and archive layout.

A tiny fake rootfs stands in for the debootstrap result; the real build is
covered by tests/e2e/test_images_containerd.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from failure_stories import images
from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.images import rootfs

IS_ROOT = os.geteuid() == 0


def _workloads(tmp_path: Path) -> Path:
    wl = tmp_path / "workloads"
    wl.mkdir()
    (wl / "httpbin.py").write_text("print('hi')\n")
    (wl / "lib").mkdir()
    (wl / "lib" / "util.py").write_text("X = 1\n")
    return wl


def _fake_rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "dev").mkdir()
    (root / "var" / "lib" / "redis").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (root / "usr" / "bin" / "tool").chmod(0o4755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool-alias")
    (root / "bin").symlink_to("usr/bin")
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.mkfifo(root / "dev" / "fifo")
    (root / "dev" / "null-ish").write_text("should be skipped with skip_contents_of\n")
    if IS_ROOT:
        os.chown(root / "var" / "lib" / "redis", 100, 101)
    return root


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_archive(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for m in tar.getmembers():
            if m.isfile():
                fh = tar.extractfile(m)
                assert fh is not None
                out[m.name] = fh.read()
        return out


# ---------------------------------------------------------------- cache keys


def test_toolbox_key_changes_only_when_workloads_change(tmp_path):
    wl = _workloads(tmp_path)
    key = images.toolbox_key(wl)
    assert images.toolbox_key(wl) == key

    # Noise that never reaches the image must not force a rebuild.
    (wl / "__pycache__").mkdir()
    (wl / "__pycache__" / "httpbin.cpython-311.pyc").write_bytes(b"\0junk")
    (wl / ".httpbin.py.swp").write_text("editor")
    os.utime(wl / "httpbin.py", (1, 1))
    (wl / "httpbin.py").chmod(0o664)
    assert images.toolbox_key(wl) == key

    (wl / "httpbin.py").write_text("print('changed')\n")
    changed = images.toolbox_key(wl)
    assert changed != key

    (wl / "httpbin.py").chmod(0o775)
    assert images.toolbox_key(wl) != changed

    (wl / "httpbin.py").chmod(0o664)
    (wl / "new.py").write_text("")
    assert images.toolbox_key(wl) != changed


def test_toolbox_key_follows_the_recipe(tmp_path, monkeypatch):
    wl = _workloads(tmp_path)
    key = images.toolbox_key(wl)
    monkeypatch.setattr(rootfs, "TOOLBOX_PACKAGES", (*images.TOOLBOX_PACKAGES, "jq"))
    assert images.toolbox_key(wl) != key
    monkeypatch.undo()
    monkeypatch.setattr(rootfs, "RECIPE_VERSION", "999")  # as the base layer's key reads it
    assert images.toolbox_key(wl) != key


def test_base_key_ignores_workloads(tmp_path):
    before = images.base_key()
    _workloads(tmp_path)
    assert images.base_key() == before


def test_pause_key_follows_the_source(tmp_path):
    src = tmp_path / "pause.c"
    src.write_text("int main(void) { return 0; }\n")
    key = images.pause_key(src)
    os.utime(src, (1, 1))
    assert images.pause_key(src) == key
    src.write_text("int main(void) { return 1; }\n")
    assert images.pause_key(src) != key


# ---------------------------------------------------------------- layers


def test_layer_is_deterministic_and_keeps_links_and_owners(tmp_path):
    root = _fake_rootfs(tmp_path)
    first = images.write_layer(root, tmp_path / "a.tar", skip_contents_of=("dev",))
    # A later mtime on every file must not change the digest.
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink() and not p.is_fifo():
            os.utime(p, (2_000_000_000, 2_000_000_000))
    second = images.write_layer(root, tmp_path / "b.tar", skip_contents_of=("dev",))
    assert first.digest == second.digest
    assert first.digest == _sha((tmp_path / "a.tar").read_bytes())

    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    by_name = {m.name: m for m in members}
    assert "dev" in by_name
    assert not any(n.startswith("dev/") for n in names), "device dir contents are dropped"
    assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
    tool, alias = by_name["usr/bin/tool"], by_name["usr/bin/tool-alias"]
    assert tool.isreg() and tool.mode == 0o4755
    assert alias.islnk() and alias.linkname == "usr/bin/tool"
    assert all(m.mtime == images.FIXED_MTIME for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)
    if IS_ROOT:
        redis = by_name["var/lib/redis"]
        assert (redis.uid, redis.gid) == (100, 101)


def test_fifos_are_dropped(tmp_path):
    root = _fake_rootfs(tmp_path)
    images.write_layer(root, tmp_path / "l.tar")
    with tarfile.open(tmp_path / "l.tar") as tar:
        names = tar.getnames()
    assert "dev/fifo" not in names
    assert "dev/null-ish" in names


def test_files_older_than_the_build_keep_their_mtime(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "old").write_text("from a .deb")
    (root / "new").write_text("made by the build")
    os.utime(root / "old", (1_600_000_000, 1_600_000_000))
    os.utime(root / "new", (1_900_000_000, 1_900_000_000))
    images.write_layer(root, tmp_path / "l.tar", built_since=1_800_000_000)
    with tarfile.open(tmp_path / "l.tar") as tar:
        assert tar.getmember("old").mtime == 1_600_000_000
        assert tar.getmember("new").mtime == images.FIXED_MTIME


def test_workloads_layer_is_rooted_and_normalised(tmp_path):
    wl = _workloads(tmp_path)
    (wl / "__pycache__").mkdir()
    (wl / "__pycache__" / "x.pyc").write_bytes(b"")
    (wl / "httpbin.py").chmod(0o775)
    (wl / "lib" / "util.py").chmod(0o600)
    images.write_workloads_layer(wl, tmp_path / "wl.tar")
    with tarfile.open(tmp_path / "wl.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == [
        "opt",
        "opt/kfs",
        "opt/kfs/workloads",
        "opt/kfs/workloads/httpbin.py",
        "opt/kfs/workloads/lib",
        "opt/kfs/workloads/lib/util.py",
    ]
    assert all((m.uid, m.gid) == (0, 0) for m in members.values())
    assert members["opt/kfs/workloads/httpbin.py"].mode == 0o755
    assert members["opt/kfs/workloads/lib/util.py"].mode == 0o644
    assert members["opt/kfs/workloads/lib"].mode == 0o755


# ---------------------------------------------------------------- archives


def test_archive_layout_is_valid_for_ctr_and_docker(tmp_path):
    root = _fake_rootfs(tmp_path)
    layer = images.write_layer(root, tmp_path / "layer.tar")
    config = images.image_config([layer], env=["PATH=/usr/bin"], cmd=["sleep", "infinity"])
    archive = tmp_path / "img.tar"
    digest = images.write_image_archive(archive, "localhost/kfs/test:v1", [layer], config)

    files = _read_archive(archive)
    with tarfile.open(archive) as tar:
        order = tar.getnames()
    assert order[:3] == ["oci-layout", "index.json", "manifest.json"]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

    # Every blob is named by its own digest.
    blobs = {n: b for n, b in files.items() if n.startswith("blobs/sha256/")}
    for name, data in blobs.items():
        assert _sha(data) == "sha256:" + name.rsplit("/", 1)[1]

    index = json.loads(files["index.json"])
    (desc,) = index["manifests"]
    assert desc["digest"] == digest
    assert desc["annotations"] == {
        "io.containerd.image.name": "localhost/kfs/test:v1",
        "org.opencontainers.image.ref.name": "v1",
    }
    assert desc["platform"]["os"] == "linux"
    manifest_bytes = blobs["blobs/sha256/" + digest.removeprefix("sha256:")]
    assert desc["size"] == len(manifest_bytes)
    manifest = json.loads(manifest_bytes)

    cfg_desc = manifest["config"]
    cfg_bytes = blobs["blobs/sha256/" + cfg_desc["digest"].removeprefix("sha256:")]
    assert cfg_desc["size"] == len(cfg_bytes)
    cfg = json.loads(cfg_bytes)
    assert cfg["rootfs"]["diff_ids"] == [layer.digest]
    assert cfg["config"]["Cmd"] == ["sleep", "infinity"]
    assert cfg["architecture"] and cfg["os"] == "linux"
    (layer_desc,) = manifest["layers"]
    assert layer_desc["digest"] == layer.digest and layer_desc["size"] == layer.size

    (docker,) = json.loads(files["manifest.json"])
    assert docker["RepoTags"] == ["localhost/kfs/test:v1"]
    assert docker["Config"] == "blobs/sha256/" + cfg_desc["digest"].removeprefix("sha256:")
    assert docker["Layers"] == ["blobs/sha256/" + layer.digest.removeprefix("sha256:")]

    assert images.archive_manifest_digest(archive) == digest

    again = tmp_path / "again.tar"
    assert images.write_image_archive(again, "localhost/kfs/test:v1", [layer], config) == digest
    assert again.read_bytes() == archive.read_bytes()


def test_archive_manifest_digest_rejects_other_tarballs(tmp_path):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="x.py")
    with pytest.raises(ProviderError, match=r"no index\.json"):
        images.archive_manifest_digest(plain)


# ---------------------------------------------------------------- build flow


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc needed for the pause image")
def test_build_images_rebuilds_only_what_is_stale(tmp_path):
    """Seed the cache with a fake base layer so no debootstrap runs."""
    src = tmp_path / "images"
    shutil.copytree(images.IMAGES_DIR / "pause", src / "pause")
    wl = _workloads(src)
    cache = tmp_path / "cache"
    cache.mkdir()
    key = images.base_key()[:16]
    base = images.write_layer(_fake_rootfs(tmp_path), cache / f"base-{key}.layer.tar")
    (cache / f"base-{key}.layer.json").write_text(
        json.dumps({"digest": base.digest, "size": base.size})
    )

    logs: list[str] = []
    first = images.build_images(cache, logs.append, images_dir=src)
    assert set(first) == {images.TOOLBOX_IMAGE, images.PAUSE_IMAGE}
    assert not any("cached" in line for line in logs if "base" not in line)

    logs.clear()
    assert images.build_images(cache, logs.append, images_dir=src) == first
    assert all("cached" in line for line in logs)

    (wl / "httpbin.py").write_text("print('v2')\n")
    logs.clear()
    second = images.build_images(cache, logs.append, images_dir=src)
    assert second[images.PAUSE_IMAGE] == first[images.PAUSE_IMAGE]
    assert second[images.TOOLBOX_IMAGE] != first[images.TOOLBOX_IMAGE]
    assert not first[images.TOOLBOX_IMAGE].exists(), "the stale archive is pruned"
    assert any(line.startswith("toolbox base: cached") for line in logs)

    files = _read_archive(second[images.TOOLBOX_IMAGE])
    (docker,) = json.loads(files["manifest.json"])
    assert docker["Layers"][0] == "blobs/sha256/" + base.digest.removeprefix("sha256:")
    with tarfile.open(fileobj=io.BytesIO(files[docker["Layers"][1]])) as tar:
        fh = tar.extractfile("opt/kfs/workloads/httpbin.py")
        assert fh is not None and fh.read() == b"print('v2')\n"

    pause = _read_archive(second[images.PAUSE_IMAGE])
    (pdocker,) = json.loads(pause["manifest.json"])
    pcfg = json.loads(pause[pdocker["Config"]])
    assert pcfg["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(pause[pdocker["Layers"][0]])) as tar:
        (member,) = tar.getmembers()
        assert member.name == "pause" and member.mode == 0o755 and member.uid == 0


def test_docker_build_context_holds_the_base_tarball(tmp_path):
    src = tmp_path / "images"
    (src / "toolbox").mkdir(parents=True)
    shutil.copy(images.IMAGES_DIR / "toolbox" / "Dockerfile", src / "toolbox" / "Dockerfile")
    _workloads(src)
    cache = tmp_path / "cache"
    cache.mkdir()
    key = images.base_key()[:16]
    base = images.write_layer(_fake_rootfs(tmp_path), cache / f"base-{key}.layer.tar")
    (cache / f"base-{key}.layer.json").write_text(
        json.dumps({"digest": base.digest, "size": base.size})
    )
    ctx = images.docker_build_context(cache, images_dir=src)
    assert (ctx / "rootfs.tar").read_bytes() == base.path.read_bytes()
    assert (ctx / "workloads" / "lib" / "util.py").is_file()
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "FROM scratch" in dockerfile and "ADD rootfs.tar /" in dockerfile


# ---------------------------------------------------------------- host config


def test_debian_mirror_comes_from_apt_config(tmp_path, monkeypatch):
    monkeypatch.delenv("KFS_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://security.example.invalid/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.example.invalid/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    uri, keyring = images.debian_mirror(apt_dir=tmp_path)
    assert uri == "http://mirror.example.invalid/debian"
    assert keyring == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_debian_mirror_from_one_line_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("KFS_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text(
        "deb http://security.example.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example.invalid/debian bookworm main\n"
    )
    assert images.debian_mirror(apt_dir=tmp_path) == ("http://mirror.example.invalid/debian", None)
    with pytest.raises(ProviderError, match="KFS_DEBIAN_MIRROR"):
        images.debian_mirror("trixie", apt_dir=tmp_path)


def test_parse_ctr_images_ls():
    out = (
        "REF                       TYPE                                       DIGEST   "
        "        SIZE      PLATFORMS   LABELS\n"
        "localhost/kfs/pause:v1    application/vnd.oci.image.manifest.v1+json sha256:aa "
        "670.8 KiB linux/amd64 io.cri-containerd.image=managed\n"
        "localhost/kfs/toolbox:v1  application/vnd.oci.image.manifest.v1+json sha256:bb "
        "135.1 MiB linux/amd64 -\n"
    )
    assert images.parse_ctr_images_ls(out) == {
        "localhost/kfs/pause:v1": "sha256:aa",
        "localhost/kfs/toolbox:v1": "sha256:bb",
    }


def test_missing_ctr_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(rootfs, "_SBIN_DIRS", ())
    with pytest.raises(MissingToolError, match="apt-get install containerd"):
        images.import_images({}, "/nonexistent.sock")
