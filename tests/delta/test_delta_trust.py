"""Delta releases with the ship stage's trust features: push --delta --sign (the manifest's
checksum line is signed, as an archive's is), pull --trusted-keys (checked before anything
beyond the manifest's HEAD and sidecar is read), pull --if-changed (one small request when
the store's manifest is the one deployed) and the `.deployed` record. Real ssh-keygen,
real S3 server (moto over HTTP) and a path store."""

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.conftest import DROOT, droot, s3_requests
from tests.delta.conftest import push, summary


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A trusted signing key, an attacker's key, and the trusted-keys file."""
    directory = tmp_path_factory.mktemp("delta-keys")
    made = {}
    for name in ("good", "attacker"):
        made[name] = directory / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        made[name]], check=True)
    made["trusted"] = directory / "trusted_keys"
    made["trusted"].write_text(made["good"].with_suffix(".pub").read_text())
    made["fingerprint"] = subprocess.run(["ssh-keygen", "-l", "-f", made["good"]],
                                         capture_output=True, text=True,
                                         check=True).stdout.split()[1]
    return made


def read(store: str, name: str) -> bytes:
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        return boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
    return (Path(store) / name).read_bytes()


def write(store: str, name: str, data: bytes):
    """What an attacker with write access to the store (no trusted key) can do."""
    if store.startswith("s3://"):
        bucket, _, prefix = store[5:].partition("/")
        boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    else:
        (Path(store) / name).write_bytes(data)


def record(root: Path) -> dict:
    return json.loads(Path(f"{root}.releases/.deployed").read_text())


def state(root: Path):
    """The root's symlink, the releases directory's entries and its record."""
    return os.readlink(root), sorted(os.listdir(f"{root}.releases")), record(root)


def test_a_signed_delta_release_is_pulled_and_recorded(versions, store, keys, tmp_path):
    v1, v2, _, _ = versions
    pushed = push(v1, f"{store}/app", "--sign", keys["good"])
    assert f"signed by ED25519 {keys['fingerprint']}" in pushed, pushed
    root = tmp_path / "app"
    for version, source in (("v1", v1), ("v2", v2)):
        if version == "v2":
            push(source, f"{store}/app", "--sign", keys["good"])
        result = droot("pull", f"{store}/app", "--root", root, "--trusted-keys",
                       keys["trusted"])
        assert result.returncode == 0, result.stderr
        assert f"signed by ED25519 {keys['fingerprint']}" in result.stderr, result.stderr
        # The record names the manifest's digest (the sidecar's), not the rebuilt stream's:
        # what --if-changed compares with the store.
        sidecar = read(store, "app.sha256").decode().split()[0]
        deployed = record(root)
        assert deployed["sha256"] == sidecar, (deployed, sidecar)
        assert deployed["release"] == os.readlink(root).rpartition("/")[2]
        assert sidecar[:12] in deployed["release"]
        assert deployed["signer"].endswith(keys["fingerprint"])
        assert deployed["source"] == f"{store}/app"
    assert summary(result.stderr)[0] > 0  # v2 still reused v1's files


def _downloads(requests: list, bucket: str) -> list:
    """The GETs of the manifest's body and of anything under .droot-delta/ (packs)."""
    return [(method, path) for method, path in requests if method == "GET" and (
        path == f"/{bucket}/apps/app" or "/.droot-delta/" in path)]


def test_a_delta_release_not_signed_by_a_trusted_key_is_refused_before_download(
        versions, store, keys, tmp_path, request):
    v1, v2, _, _ = versions
    root = tmp_path / "app"
    push(v1, f"{store}/app", "--sign", keys["good"])
    assert droot("pull", f"{store}/app", "--root", root,
                 "--trusted-keys", keys["trusted"]).returncode == 0
    genuine = {name: read(store, name) for name in ("app", "app.sha256", "app.sha256.sig")}
    before = state(root)
    pull = ["pull", f"{store}/app", "--root", root, "--trusted-keys", keys["trusted"]]

    def refused(expected: str, manifest_read: bool = False):
        if store.startswith("s3://"):
            with s3_requests(request.getfixturevalue("s3_server")) as requests:
                result = droot(*pull)
            bucket = store[5:].partition("/")[0]
            allowed = [("GET", f"/{bucket}/apps/app")] if manifest_read else []
            assert _downloads(requests, bucket) == allowed, requests
        else:
            result = droot(*pull)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert state(root) == before

    push(v2, f"{store}/app")                             # unsigned
    refused("the release is not signed")
    push(v2, f"{store}/app", "--sign", keys["attacker"])  # signed, by an untrusted key
    refused("which is not a trusted key")
    # v2's manifest and sidecar under v1's genuine signature
    write(store, "app.sha256.sig", genuine["app.sha256.sig"])
    refused("does not sign")
    # v2's manifest under v1's genuine sidecar and signature: the signature passes, the
    # manifest's digest does not, and no pack is read
    write(store, "app.sha256", genuine["app.sha256"])
    refused("checksum mismatch", manifest_read=True)
    # and v1 itself still pulls (nothing above was left behind)
    write(store, "app", genuine["app"])
    result = droot(*pull)
    assert result.returncode == 0 and "signed by" in result.stderr, result.stderr


def test_a_signed_manifest_binds_its_packs(versions, keys, tmp_path):
    """The signature covers the manifest only; a pack swapped under it is caught by the
    digests the signed manifest holds, before the switch."""
    v1, _, _, _ = versions
    store = tmp_path / "store"
    store.mkdir()
    push(v1, f"{store}/app", "--sign", keys["good"])
    for pack in (store / ".droot-delta" / "packs").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    result = droot("pull", f"{store}/app", "--root", tmp_path / "app",
                   "--trusted-keys", keys["trusted"])
    assert result.returncode == 1, result.stderr
    assert "does not hold the content" in result.stderr or "corrupt" in result.stderr, \
        result.stderr
    assert not (tmp_path / "app").exists()


def test_if_changed_of_a_delta_release_reads_only_the_sidecar_on_s3(versions, s3_server,
                                                                     s3_bucket, keys, tmp_path):
    v1, v2, _, _ = versions
    src = f"s3://{s3_bucket}/apps/app"
    push(v1, src, "--sign", keys["good"])
    root = tmp_path / "app"
    poll = ["pull", src, "--root", root, "--if-changed", "--trusted-keys", keys["trusted"]]
    result = droot(*poll)
    assert result.returncode == 0 and "deployed" in result.stderr, result.stderr
    release = os.readlink(root)
    with s3_requests(s3_server) as requests:
        result = droot(*poll)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert requests == [("GET", f"/{s3_bucket}/apps/app.sha256")]
    assert os.readlink(root) == release
    push(v2, src, "--sign", keys["good"])
    result = droot(*poll)
    assert result.returncode == 0 and "deployed" in result.stderr, result.stderr
    assert os.readlink(root) != release and summary(result.stderr)[0] > 0


def test_if_changed_of_a_delta_release_opens_only_the_sidecar_of_a_path_store(versions,
                                                                              tmp_path):
    v1, v2, _, _ = versions
    store = tmp_path / "store"
    store.mkdir()
    push(v1, f"{store}/app")
    root = tmp_path / "app"
    poll = [DROOT, "pull", f"{store}/app", "--root", root, "--if-changed"]
    assert subprocess.run(poll, capture_output=True).returncode == 0
    release = os.readlink(root)
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", log, *poll],
                   check=True, capture_output=True, timeout=300)
    opened = sorted({line.split('"')[1] for line in log.read_text().splitlines()
                     if f'"{store}/' in line and "ENOENT" not in line})
    assert opened == [f"{store}/app.sha256"]
    assert os.readlink(root) == release
    push(v2, f"{store}/app")
    result = subprocess.run(poll, capture_output=True, text=True)
    assert result.returncode == 0 and os.readlink(root) != release, result.stderr
