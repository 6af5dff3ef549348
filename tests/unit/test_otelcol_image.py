"""The collector image's recipe without compiling it: its key follows every file
of the wrapper module, a compiled binary is packed alone into a one-layer image
with the collector as entrypoint, and an image without a recipe is refused."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from failure_stories import images
from failure_stories.core.errors import DefinitionError, MissingToolError
from failure_stories.images import otelcol


def _module(tmp_path: Path) -> Path:
    module = tmp_path / "otelcol"
    module.mkdir()
    for name in ("manifest.yaml", "go.mod", "go.sum", "main.go", "components.go"):
        shutil.copy2(otelcol.OTELCOL_DIR / name, module / name)
    return module


def test_the_key_follows_every_file_of_the_module(tmp_path: Path) -> None:
    module = _module(tmp_path)
    first = otelcol.collector_key(module)
    assert otelcol.collector_key(module) == first
    (module / "go.sum").write_text((module / "go.sum").read_text() + "\n")
    assert otelcol.collector_key(module) != first
    (module / ".hidden").write_text("editor state")
    changed = otelcol.collector_key(module)
    (module / ".hidden").unlink()
    assert otelcol.collector_key(module) == changed


def test_the_committed_module_pins_one_collector_release() -> None:
    gomod = (otelcol.OTELCOL_DIR / "go.mod").read_text()
    assert "filelogreceiver v0.165.1" in gomod
    assert "extension/storage/filestorage v0.165.1" in gomod
    assert "exporter/otlphttpexporter v0.165.0" in gomod
    assert "elasticsearchexporter" not in gomod


def test_a_compiled_collector_is_packed_alone_as_the_entrypoint(tmp_path: Path) -> None:
    module = _module(tmp_path)
    cache = tmp_path / "cache"
    binary = otelcol.binary_path(cache, module)
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF not really")
    binary.chmod(0o755)
    logs: list[str] = []
    archive = otelcol.build_image(cache, logs.append, module)
    assert otelcol.build_image(cache, logs.append, module) == archive
    assert "cached" in logs[-1]
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        ref = index["manifests"][0]["annotations"]["io.containerd.image.name"]
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        config = json.loads(tar.extractfile(manifest["Config"]).read())  # type: ignore[union-attr]
        [layer_name] = manifest["Layers"]
        with tarfile.open(fileobj=tar.extractfile(layer_name)) as layer:
            members = {m.name: m for m in layer.getmembers()}
    assert ref == otelcol.OTELCOL_IMAGE
    assert config["config"]["Entrypoint"] == ["/otelcol-kfs"]
    assert config["config"]["Cmd"] == ["--config", "/etc/otelcol/config.yaml"]
    assert set(members) == {"etc", "etc/otelcol", "otelcol-kfs"}
    assert members["otelcol-kfs"].mode == 0o755 and members["otelcol-kfs"].uid == 0


def test_without_go_the_error_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(otelcol.shutil, "which", lambda _name: None)
    with pytest.raises(MissingToolError, match=r"Go 1\.26"):
        otelcol.build_collector(tmp_path / "cache", lambda _m: None, _module(tmp_path))


def test_an_image_without_a_recipe_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"no recipe for image localhost/kfs/nope:v1"):
        images.build_on_demand("localhost/kfs/nope:v1", tmp_path)
