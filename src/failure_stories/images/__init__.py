"""Build the suite's container images offline and hand them to containerd or Docker.

There is no registry to pull from, so both images are made here from inputs in
the repository:

* the toolbox (``TOOLBOX_IMAGE``): a debootstrapped Debian rootfs (layer 1) plus
  the shared ``images/workloads/`` and each story's ``scenarios/<id>/workloads/``
  copied to ``/opt/kfs/workloads`` (layer 2);
* the pause image (``PAUSE_IMAGE``): our own static ``images/pause/pause.c``;
* the OpenTelemetry Collector (``OTELCOL_IMAGE``), a story's log shipper, compiled
  from the pinned wrapper module ``build/otelcol`` (see otelcol). It is built on
  demand (``build_on_demand``), by prepare and by the story that loads it, not
  with the two images every node imports.

Archives are written with tarfile/hashlib/json in the layout ``docker save``
has produced since Docker 25: an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``) that also carries a Docker
``manifest.json``. ``ctr images import`` reads the OCI index (so the image
digest containerd reports is the manifest digest we computed, which makes
"already imported?" a string comparison) and ``docker load`` reads
``manifest.json``.

Every output lives in a cache keyed by a sha256 of its inputs. The base layer
has its own key so that editing a workload script rebuilds only the small
second layer and re-packs the archive, not the one-minute debootstrap.

The modules, from the bottom: oci (archives), cache, rootfs (the base layer),
build (the two images), otelcol (the collector), load (into containerd or Docker)."""

from __future__ import annotations

from failure_stories.images.build import (
    IMAGES_DIR,
    PATH_ENV,
    PAUSE_IMAGE,
    TOOLBOX_IMAGE,
    build_images,
    pause_key,
    toolbox_key,
    workload_sources,
    write_workloads_layer,
)
from failure_stories.images.cache import RECIPE_VERSION, default_cache_dir, locked, prune
from failure_stories.images.load import (
    docker_build_context,
    import_images,
    load_into_docker,
    parse_ctr_images_ls,
    wait_for_containerd,
)
from failure_stories.images.oci import (
    FIXED_MTIME,
    Blob,
    archive_manifest_digest,
    image_config,
    root_owned,
    write_image_archive,
    write_layer,
)
from failure_stories.images.otelcol import OTELCOL_IMAGE, build_on_demand
from failure_stories.images.rootfs import (
    TOOLBOX_PACKAGES,
    base_key,
    build_base_layer,
    debian_mirror,
)

__all__ = [
    "FIXED_MTIME",
    "IMAGES_DIR",
    "OTELCOL_IMAGE",
    "PATH_ENV",
    "PAUSE_IMAGE",
    "RECIPE_VERSION",
    "TOOLBOX_IMAGE",
    "TOOLBOX_PACKAGES",
    "Blob",
    "archive_manifest_digest",
    "base_key",
    "build_base_layer",
    "build_images",
    "build_on_demand",
    "debian_mirror",
    "default_cache_dir",
    "docker_build_context",
    "image_config",
    "import_images",
    "load_into_docker",
    "locked",
    "parse_ctr_images_ls",
    "pause_key",
    "prune",
    "root_owned",
    "toolbox_key",
    "wait_for_containerd",
    "workload_sources",
    "write_image_archive",
    "write_layer",
    "write_workloads_layer",
]
