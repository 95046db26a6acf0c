"""push and pull keep memory bounded whatever the image size: the issue's goal is a peak
RSS under 100 MB, here with an archive twice that size, through the S3 server."""

import boto3
import pytest

from tests.conftest import busybox_image_with_blob, droot_peak_rss_mb

BLOB_MIB = 200  # random: the archive is as big
LIMIT_MB = 100


@pytest.fixture(scope="module")
def large_image(docker_client, tmp_path_factory):
    with busybox_image_with_blob(docker_client, tmp_path_factory.mktemp("ship-large-image"),
                                 "large", BLOB_MIB) as tag:
        yield tag


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_push_and_pull_memory_stays_under_100_mb(large_image, s3_bucket, tmp_path,
                                                 compression):
    dest = f"s3://{s3_bucket}/large.{compression}"
    push_mb = droot_peak_rss_mb("push", large_image, dest, "--compress", compression)
    size = boto3.client("s3").head_object(Bucket=s3_bucket, Key=f"large.{compression}")[
        "ContentLength"]
    assert size > BLOB_MIB << 20  # the archive is far bigger than the limit
    pull_mb = droot_peak_rss_mb("pull", dest, "--root", tmp_path / "app")
    assert (tmp_path / "app" / "blob").stat().st_size == BLOB_MIB << 20
    assert push_mb < LIMIT_MB, f"push peaked at {push_mb:.0f} MB"
    assert pull_mb < LIMIT_MB, f"pull peaked at {pull_mb:.0f} MB"


def test_delta_push_and_pull_memory_stays_under_100_mb(large_image, s3_bucket, tmp_path):
    """A delta release's file larger than memory should be: push compresses it from its
    temporary file a chunk at a time (it once read it whole), pull streams its frame."""
    dest = f"s3://{s3_bucket}/apps/large"
    push_mb = droot_peak_rss_mb("push", "--delta", large_image, dest)
    pull_mb = droot_peak_rss_mb("pull", dest, "--root", tmp_path / "app")
    assert (tmp_path / "app" / "blob").stat().st_size == BLOB_MIB << 20
    assert push_mb < LIMIT_MB, f"push --delta peaked at {push_mb:.0f} MB"
    assert push_mb < LIMIT_MB, f"push --delta peaked at {push_mb:.0f} MB"
    assert pull_mb < LIMIT_MB, f"delta pull peaked at {pull_mb:.0f} MB"


def test_a_delta_file_that_compresses_well_is_pulled_in_bounded_memory(
        docker_client, s3_bucket, tmp_path_factory, tmp_path):
    """300 MiB of zeros is one ~10 KB zstd frame in a pack: the pull once decompressed a
    frame in one call, as much memory as the file (and a hostile store could send a frame
    of terabytes). Its output is taken a chunk at a time."""
    with busybox_image_with_blob(docker_client, tmp_path_factory.mktemp("zeros-image"),
                                 "zeros", 3 * BLOB_MIB // 2, zeros=True) as tag:
        dest = f"s3://{s3_bucket}/apps/zeros"
        push_mb = droot_peak_rss_mb("push", "--delta", tag, dest)
    pull_mb = droot_peak_rss_mb("pull", dest, "--root", tmp_path / "app")
    blob = tmp_path / "app" / "blob"
    assert blob.stat().st_size == 3 * BLOB_MIB // 2 << 20
    with open(blob, "rb") as data:
        assert not any(data.read(1 << 20).strip(b"\0") for _ in range(3 * BLOB_MIB // 2))
    assert push_mb < LIMIT_MB, f"push --delta peaked at {push_mb:.0f} MB"
    assert pull_mb < LIMIT_MB, f"delta pull peaked at {pull_mb:.0f} MB"
