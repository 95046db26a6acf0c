"""Replay and downgrade: a signed release's push time is signed with it, and a pull with
--trusted-keys refuses one pushed before the newest it accepted at that root (recorded in
ROOT.releases/.newest-push) unless --allow-downgrade. Both release forms (an archive, a
delta manifest), both stores (the real S3 server, moto over HTTP, and a directory), real
ssh-keygen keys. The attacker can write the store, and holds no trusted key."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import docker_archive, droot, make_busybox_root


@pytest.fixture(scope="module")
def images(docker_client, tmp_path_factory):
    """Two busybox images as docker-archive files, told apart by /VERSION."""
    base = tmp_path_factory.mktemp("replay-images")
    rootfs = make_busybox_root(base / "context" / "rootfs")
    (base / "context" / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    sources = []
    for version in ("v1", "v2"):
        (rootfs / "VERSION").write_text(version)
        sources.append(docker_archive(docker_client, base / "context",
                                      f"droot-test-replay/{version}:{os.getpid()}",
                                      base / f"{version}.tar"))
    return sources


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("replay-keys")
    key = directory / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    trusted = directory / "trusted_keys"
    trusted.write_text(key.with_suffix(".pub").read_text())
    return key, trusted


RELEASE = ("", ".sha256", ".sha256.sig")  # the archive or manifest, its sidecar, signature


def pushed_of(sidecar: bytes) -> int:
    first, second = sidecar.decode().splitlines()
    assert second.startswith("# droot-pushed "), sidecar
    return int(second.split()[-1])


def newest_push(root: Path) -> dict:
    """ROOT.releases/.newest-push, checked to be a regular file only root can read."""
    path = root.parent / f"{root.name}.releases" / ".newest-push"
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and info.st_mode & 0o777 == 0o600
    return json.loads(path.read_text())


def snapshot(root: Path):
    """The root's symlink, the releases directory's entries, its records and its mtime
    (which any entry made and removed there would change)."""
    releases = root.parent / f"{root.name}.releases"
    return (os.readlink(root), sorted(os.listdir(releases)),
            (releases / ".deployed").read_text(), (releases / ".newest-push").read_text(),
            os.stat(releases).st_mtime_ns)


@pytest.mark.parametrize("form", ["archive", "delta"])
def test_an_old_signed_release_put_back_is_refused(images, keys, store, tmp_path, form):
    key, trusted = keys
    v1, v2 = images
    root = tmp_path / "app"
    pull = ["pull", store.src("app"), "--root", root, "--trusted-keys", trusted]

    def push(source):
        options = ["--delta"] if form == "delta" else []
        result = droot("push", source, store.src("app"), "--sign", key, *options)
        assert result.returncode == 0, result.stderr
        return {suffix: store.get(f"app{suffix}") for suffix in RELEASE}

    def put_back(files):
        for suffix, data in files.items():
            store.put(f"app{suffix}", data)

    def refused(message, *options):
        before = snapshot(root)
        result = droot(*pull, *options)
        assert result.returncode == 1, result.stderr
        line, = result.stderr.splitlines()
        assert message in line, line
        assert snapshot(root) == before  # not even a staging directory was made

    old = push(v1)
    result = droot(*pull)
    assert result.returncode == 0, result.stderr
    assert (root / "VERSION").read_text() == "v1"
    assert newest_push(root)["pushed"] == pushed_of(old[".sha256"])

    new = push(v2)  # newer: accepted, and the record moves on
    assert pushed_of(new[".sha256"]) > pushed_of(old[".sha256"])
    result = droot(*pull)
    assert result.returncode == 0, result.stderr
    assert (root / "VERSION").read_text() == "v2"
    record = newest_push(root)
    assert (record["pushed"], record["sha256"]) == (pushed_of(new[".sha256"]),
                                                    new[".sha256"].split()[0].decode())

    result = droot(*pull)  # the same push time: a re-pull of the same release
    assert result.returncode == 0 and "deployed" in result.stderr, result.stderr

    put_back(old)  # the bucket's writer puts the old, genuinely signed release back
    refused(f"before the release accepted here (sha256 {record['sha256'][:12]}")
    refused("an old release put back in the store?", "--if-changed")
    assert (root / "VERSION").read_text() == "v2"

    # Its time line rewritten to look new: the signature covers it.
    forged = old[".sha256"].replace(str(pushed_of(old[".sha256"])).encode(),
                                    str(pushed_of(new[".sha256"]) + 1).encode())
    store.put("app.sha256", forged)
    refused("does not sign sha256")
    store.put("app.sha256", old[".sha256"])

    # The operator going back on purpose.
    result = droot(*pull, "--allow-downgrade")
    assert result.returncode == 0, result.stderr
    assert (root / "VERSION").read_text() == "v1"
    assert newest_push(root) == record  # the newest accepted is still v2's
    refused("an old release put back in the store?")

    put_back(new)
    result = droot(*pull)
    assert result.returncode == 0 and (root / "VERSION").read_text() == "v2", result.stderr


def test_a_signature_without_push_time_is_refused_unless_allowed(images, keys, tmp_path):
    """A sidecar and signature as droot wrote them before push times (the first line
    alone, signed by a trusted key): of unknown age, so refused under --trusted-keys
    unless --allow-downgrade; and an unsigned pull neither checks nor moves the record."""
    key, trusted = keys
    archive = tmp_path / "app.tar.gz"
    assert droot("push", images[0], archive).returncode == 0
    first_line = (tmp_path / "app.tar.gz.sha256").read_bytes().splitlines(True)[0]
    (tmp_path / "app.tar.gz.sha256").write_bytes(first_line)
    (tmp_path / "app.tar.gz.sha256.sig").write_bytes(subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", "droot-release"],
        input=first_line, capture_output=True, check=True).stdout)
    assert subprocess.run(["sha256sum", "-c", "app.tar.gz.sha256"], cwd=tmp_path,
                          capture_output=True).returncode == 0
    root = tmp_path / "app"
    pull = ["pull", archive, "--root", root, "--trusted-keys", trusted]
    result = droot(*pull)
    assert result.returncode == 1, result.stderr
    line, = result.stderr.splitlines()
    assert "its signature covers no push time" in line, line
    assert not root.exists() and not (tmp_path / "app.releases").exists()
    result = droot(*pull, "--allow-downgrade")
    assert result.returncode == 0 and "signed by ED25519" in result.stderr, result.stderr
    assert not (tmp_path / "app.releases" / ".newest-push").exists()  # no time to record
    # --allow-downgrade and --pushed relax or feed --trusted-keys: alone, they are refused.
    for option in (["--allow-downgrade"], ["--pushed", "1"]):
        result = droot("pull", archive, "--root", root, *option)
        assert result.returncode == 2 and "goes with --trusted-keys" in result.stderr


def test_deploy_from_stdin_checks_the_push_time(images, keys, tmp_path):
    key, trusted = keys
    archive = tmp_path / "app.tar.gz"
    sidecar, signature = tmp_path / "app.tar.gz.sha256", tmp_path / "app.tar.gz.sha256.sig"
    root = tmp_path / "app"

    def deploy(*options):
        with open(archive, "rb") as stdin:
            return droot("deploy", "--root", root, "--trusted-keys", trusted, "--signature",
                         signature, "--name", "app.tar.gz", *options, stdin=stdin)

    assert droot("push", images[0], archive, "--sign", key).returncode == 0
    old = (sidecar.read_bytes(), signature.read_bytes(), archive.read_bytes())
    digest, pushed = old[0].split()[0].decode(), pushed_of(old[0])
    result = deploy("--sha256", digest)
    assert result.returncode == 2 and "needs the release's --pushed NS" in result.stderr
    result = deploy("--sha256", digest, "--pushed", str(pushed + 1))
    assert result.returncode == 1 and "does not sign" in result.stderr, result.stderr
    assert not root.exists()
    result = deploy("--sha256", digest, "--pushed", "soon")
    assert result.returncode == 2 and "--pushed 'soon'" in result.stderr
    result = deploy("--sha256", digest, "--pushed", str(pushed))
    assert result.returncode == 0, result.stderr

    assert droot("push", images[1], archive, "--sign", key).returncode == 0
    new_digest, new_pushed = sidecar.read_text().split()[0], pushed_of(sidecar.read_bytes())
    assert deploy("--sha256", new_digest, "--pushed", str(new_pushed)).returncode == 0
    assert (root / "VERSION").read_text() == "v2"
    sidecar.write_bytes(old[0])
    signature.write_bytes(old[1])
    archive.write_bytes(old[2])
    result = deploy("--sha256", digest, "--pushed", str(pushed))
    assert result.returncode == 1 and "before the release accepted here" in result.stderr
    assert (root / "VERSION").read_text() == "v2"
    result = deploy("--sha256", digest, "--pushed", str(pushed), "--allow-downgrade")
    assert result.returncode == 0 and (root / "VERSION").read_text() == "v1", result.stderr
