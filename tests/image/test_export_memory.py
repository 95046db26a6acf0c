"""Exporting keeps memory bounded: the peak RSS of `droot export` stays far below the
size of the image, for a layer read in place and for gzip-compressed layers."""

import os

import pytest
from tests.conftest import droot_peak_rss_mb
from tests.image.conftest import layer, write_docker_archive, write_oci_layout

BIG_FILE = 64 << 20  # bytes, in each of several files: the image is ~320 MB
LIMIT_MB = 80


@pytest.fixture
def big_layers():
    blob = os.urandom(1 << 20) * (BIG_FILE >> 20)  # incompressible enough per MiB, cheap to make
    return [layer(("data", "dir"), *((f"data/big{i}", "file", blob) for i in range(3))),
            layer(("data", "dir"), ("data/.wh.big0", "file"), ("data/big3", "file", blob)),
            layer(("data", "dir"), ("data/big4", "file", blob), ("data/link", "hardlink", "data/big4"))]


def test_peak_memory_stays_bounded(big_layers, tmp_path):
    archive = write_docker_archive(tmp_path / "big.tar", big_layers)
    layout = write_oci_layout(tmp_path / "oci", big_layers, compression=["gzip", "zstd", "gzip"])
    big_layers.clear()
    assert archive.stat().st_size > 4 * BIG_FILE
    assert droot_peak_rss_mb("export", f"docker-archive:{archive}") < LIMIT_MB
    assert droot_peak_rss_mb("export", f"oci:{layout}") < LIMIT_MB
