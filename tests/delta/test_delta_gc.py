"""`droot gc STORE`: what the kept releases need stays (a pull after gc works), the rest
goes (objects counted), and nothing a push in flight references is removed: its new packs
and the older packs it re-marked are younger than the grace period. Path store and the
real S3 server (moto over HTTP)."""

import os
import time
from pathlib import Path

import boto3
import pytest

from tests.conftest import docker_build, droot, make_busybox_root
from tests.delta.conftest import MIB, push, random_file
from droot.ship import deltastore, stores

HOUR = 3600


@pytest.fixture(scope="module")
def third(docker_client, tmp_path_factory):
    """v3: busybox (the same bytes as v1's) and a new file, as a docker-archive."""
    base = tmp_path_factory.mktemp("delta-gc-v3")
    rootfs = make_busybox_root(base / "rootfs")
    random_file(rootfs / "srv" / "v3.bin", MIB)
    (base / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    tag = f"droot-test-delta/gc-v3:{os.getpid()}"
    docker_build(docker_client, base, tag)
    try:
        with open(base / "v3.tar", "wb") as out:
            for chunk in docker_client.images.get(tag).save(named=True):
                out.write(chunk)
    finally:
        docker_client.images.remove(tag, force=True)
    return f"docker-archive:{base / 'v3.tar'}"


def objects(store: str) -> set[str]:
    """Every object of the store, by its name under the store."""
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        return {item["Key"][len(prefix) + 1:] for item in listed.get("Contents", [])}
    return {str(path.relative_to(store)) for path in Path(store).rglob("*") if path.is_file()}


def packs(store: str) -> set[str]:
    return {name for name in objects(store) if name.endswith(".pack")}


def open_store(store: str):
    """The store as droot's own code sees it (what push uses to write and re-mark)."""
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        location = stores.Location("s3", store, bucket=bucket, key=prefix)
    else:
        location = stores.Location("path", store, path=store)
    return deltastore.open_store(location, whole=True)


def push_three(store: str, versions, third) -> dict:
    """v1, v2, v3 pushed in order; the packs each push added."""
    added, before = {}, set()
    for name, source in (("v1", versions[0]), ("v2", versions[1]), ("v3", third)):
        push(source, f"{store}/{name}")
        added[name] = packs(store) - before
        before = packs(store)
    return added


def gc(store: str, *options) -> str:
    result = droot("gc", store, *options)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_gc_keeps_what_the_kept_release_needs_and_removes_the_rest(versions, third, store,
                                                                   tmp_path):
    added = push_three(store, versions, third)
    assert all(len(new) == 1 for new in added.values()), added
    everything = objects(store)
    # All of it is younger than an hour: a gc with that grace removes nothing.
    gc(store, "--keep", "1", "--grace", str(HOUR))
    assert objects(store) == everything
    time.sleep(1.5)  # S3 dates objects to the second
    said = gc(store, "--keep", "1", "--grace", "0")
    # v3 reuses v1's busybox (its pack) and has its own; v2's pack only v2 needed.
    (v1_pack,), (v3_pack,) = added["v1"], added["v3"]
    marker = f"{deltastore.RELEASES}/{_sidecar_digest(store, 'v3')}"
    assert objects(store) == {"v3", "v3.sha256", marker,
                              v1_pack, v1_pack + ".sha256", v3_pack, v3_pack + ".sha256"}
    # v1's and v2's manifests, sidecars and markers, v2's pack and its sidecar
    assert len(everything) - len(objects(store)) == 8, said
    assert "removed 2 older release(s)" in said and "1 unreferenced pack" in said, said
    result = droot("pull", f"{store}/v3", "--root", tmp_path / "app")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app" / "srv" / "v3.bin").stat().st_size == MIB
    assert (tmp_path / "app" / "bin" / "busybox").is_file()
    gone = droot("pull", f"{store}/v2", "--root", tmp_path / "other")
    assert gone.returncode == 1 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr


def _sidecar_digest(store: str, name: str) -> str:
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        data = boto3.client("s3").get_object(Bucket=bucket,
                                             Key=f"{prefix}/{name}.sha256")["Body"].read()
    else:
        data = (Path(store) / f"{name}.sha256").read_bytes()
    return data.decode().split()[0]


def _age_everything(directory: Path, seconds: int):
    """Date every object of a path store `seconds` back (S3 objects cannot be)."""
    for path in directory.rglob("*"):
        if path.is_file():
            info = path.stat()
            os.utime(path, (info.st_atime - seconds, info.st_mtime - seconds))


def _push_in_flight(store: str, old_pack: str) -> str:
    """What a push in flight has done before it writes its manifest: re-marked an older
    pack it references, and uploaded a new pack. Returns the new pack's name."""
    opened = open_store(store)
    opened.touch(old_pack)
    new = f"{deltastore.PACKS}/{deltastore.new_pack_name()}"
    upload = opened.upload(new)
    upload.write(os.urandom(4096))
    upload.commit("0" * 64)
    return new


def test_gc_spares_the_packs_of_a_push_in_flight_on_a_path_store(versions, third, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    added = push_three(str(store), versions, third)
    _age_everything(store, 2 * HOUR)
    (v2_pack,) = added["v2"]  # referenced by no kept release after --keep 1
    new = _push_in_flight(str(store), v2_pack)
    said = gc(str(store), "--keep", "1", "--grace", str(HOUR))
    left = objects(str(store))
    assert {v2_pack, new} <= left, said             # young: spared
    assert not {"v1", "v2"} & left, said              # old and dropped: gone
    assert "spared 2 object(s)" in said, said         # the two packs
    # Once the push is over and has aged past the grace, its orphans go too.
    _age_everything(store, 2 * HOUR)
    gc(str(store), "--keep", "1", "--grace", str(HOUR))
    assert not {v2_pack, new} & objects(str(store))


def test_gc_spares_the_packs_of_a_push_in_flight_on_s3(versions, third, s3_bucket):
    store = f"s3://{s3_bucket}/apps"
    added = push_three(store, versions, third)
    (v2_pack,) = added["v2"]
    time.sleep(12)  # the releases age past --grace 8; the push in flight is younger
    new = _push_in_flight(store, v2_pack)
    said = gc(store, "--keep", "1", "--grace", "8")
    left = objects(store)
    assert {v2_pack, new} <= left, said
    assert not {"v1", "v2"} & left, said


def test_gc_keeps_the_last_pushed_of_releases_dated_in_one_second(versions, third, tmp_path):
    """S3 dates objects to the second: three pushes in one second have equal times there.
    Here the markers are dated in one second too, the last push's earliest in it; the
    push time each marker holds still says which release is the newest."""
    store = tmp_path / "store"
    store.mkdir()
    push_three(str(store), versions, third)
    second = int(time.time()) - 2 * HOUR
    for name, fraction in (("v1", 0.9), ("v2", 0.5), ("v3", 0.1)):
        marker = store / deltastore.RELEASES / _sidecar_digest(str(store), name)
        os.utime(marker, (second + fraction, second + fraction))
        os.utime(store / name, (second, second))
    said = gc(str(store), "--keep", "1", "--grace", "0")
    assert {"v1", "v2"}.isdisjoint(objects(str(store))) and "v3" in objects(str(store)), said


def test_gc_refuses_bad_input_in_one_line(tmp_path):
    for arguments, status, words in (
            (["--keep", "0"], 2, "--keep"),
            (["--grace", "-1"], 2, "--grace"),
            ([], 1, "no delta releases")):
        result = droot("gc", tmp_path / "empty", *arguments)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == status and len(lines) == 1 and words in lines[0], \
            result.stderr


def test_a_push_whose_reused_pack_was_collected_uploads_that_content_again(versions, store,
                                                                          tmp_path):
    v1, v2, _, kept = versions
    push(v1, f"{store}/v1")
    (v1_pack,) = packs(store)
    open_store(store).delete(v1_pack)  # a gc between this push's reading and re-marking
    pushed = push(v2, f"{store}/v2")
    result = droot("pull", f"{store}/v2", "--root", tmp_path / "app")
    assert result.returncode == 0, (pushed, result.stderr)
    assert (tmp_path / "app" / "srv" / "keep.bin").read_bytes() == kept["srv/keep.bin"]
