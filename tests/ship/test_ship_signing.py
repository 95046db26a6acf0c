"""Signed releases (push --sign, pull/deploy --trusted-keys) with the real ssh-keygen, and
pull --if-changed, against the real S3 server (moto, its own process over HTTP) and a
path store. The attacker can write the store (archive, sidecar and signature), but holds
no trusted key; every refusal must come before anything is written to the root."""

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.conftest import DROOT, PseudoTerminal, busybox_image_with_blob, droot, s3_requests


@pytest.fixture(scope="module")
def busybox_image(docker_client, tmp_path_factory):
    """A busybox image of this module's own (tagged per test run: another session's
    end cannot remove it midway)."""
    with busybox_image_with_blob(docker_client, tmp_path_factory.mktemp("signing-image"),
                                 "signing", 1) as tag:
        yield tag


def keygen(path: Path, kind: str) -> Path:
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"{kind} signer",
                    "-f", path], check=True)
    return path


def fingerprint(key: Path) -> str:
    fields = subprocess.run(["ssh-keygen", "-l", "-f", key], capture_output=True, text=True,
                            check=True).stdout.split()
    return fields[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    made = {kind: keygen(directory / kind, kind) for kind in ("ed25519", "rsa")}
    made["attacker"] = keygen(directory / "attacker", "ed25519")
    # authorized_keys form, as operators write it: comments, blank lines, options (some
    # quoted, with commas and blanks), key comments with blanks.
    trusted = directory / "trusted_keys"
    ed25519 = (made["ed25519"].with_suffix(".pub")).read_text().strip()
    rsa = (made["rsa"].with_suffix(".pub")).read_text().strip()
    trusted.write_text(f"# release signers\n\n   \n"
                       f'from="10.0.0.0/8,192.168.1.1",command="echo a, b",no-pty {ed25519}\n'
                       f"# the old key\n{rsa} with a comment\n")
    made["trusted"] = trusted
    return made


def push(image, store, name, *options):
    result = droot("push", image, store.src(name), *options)
    assert result.returncode == 0, result.stderr
    return result


def snapshot(root: Path):
    """The root's symlink, its releases and record, and the releases directory's mtime
    (which any entry made and removed there would change)."""
    releases = root.parent / f"{root.name}.releases"
    return (os.readlink(root), sorted(os.listdir(releases)),
            (releases / ".deployed").read_text(), os.stat(releases).st_mtime_ns)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_a_signed_release_is_deployed_and_verifies_by_hand(busybox_image, keys, store,
                                                           tmp_path, kind):
    result = push(busybox_image, store, "app.tar.gz", "--sign", keys[kind])
    assert fingerprint(keys[kind]) in result.stderr
    root = tmp_path / "app"
    result = droot("pull", store.src("app.tar.gz"), "--root", root,
                   "--trusted-keys", keys["trusted"])
    assert result.returncode == 0, result.stderr
    assert f"signed by {kind.upper()} {fingerprint(keys[kind])}" in result.stderr
    assert (root / "bin" / "busybox").is_file()
    record = json.loads((tmp_path / "app.releases" / ".deployed").read_text())
    assert record["signer"].endswith(fingerprint(keys[kind]))
    assert record["release"] == os.readlink(root).split("/")[-1]
    # The documented manual check: ssh-keygen itself, then sha256sum -c.
    sidecar, signature = tmp_path / "app.tar.gz.sha256", tmp_path / "app.tar.gz.sha256.sig"
    sidecar.write_bytes(store.get("app.tar.gz.sha256"))
    signature.write_bytes(store.get("app.tar.gz.sha256.sig"))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("droot " + keys[kind].with_suffix(".pub").read_text())
    with open(sidecar, "rb") as message:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "droot", "-n",
                        "droot-release", "-s", signature], stdin=message, check=True,
                       capture_output=True)


def ssh_sign(key: Path, message: bytes, namespace: str = "droot-release") -> bytes:
    return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", namespace],
                          input=message, capture_output=True, check=True).stdout


def test_attacks_on_the_store_are_refused_before_anything_is_written(busybox_image, keys,
                                                                     store, tmp_path):
    trusted, good = keys["trusted"], keys["ed25519"]
    # Two genuine signed releases: the one deployed, and another to replay from.
    push(busybox_image, store, "app.tar.gz", "--sign", good)
    push(busybox_image, store, "other.tar.gz", "--compress", "zstd", "--sign", good)
    root = tmp_path / "app"
    result = droot("pull", store.src("app.tar.gz"), "--root", root, "--trusted-keys", trusted)
    assert result.returncode == 0, result.stderr
    genuine = {name: store.get(f"app.tar.gz{name}") for name in ("", ".sha256", ".sha256.sig")}
    other = {name: store.get(f"other.tar.gz{name}") for name in ("", ".sha256", ".sha256.sig")}
    digest = genuine[".sha256"].split()[0].decode()
    other_digest = other[".sha256"].split()[0].decode()

    def attack(archive, sidecar, signature):
        store.put("app.tar.gz", archive)
        store.put("app.tar.gz.sha256", sidecar)
        if signature is not None:
            store.put("app.tar.gz.sha256.sig", signature)

    mine = f"{other_digest}  app.tar.gz\n".encode()
    cases = [
        # The bucket writer's own archive, checksum and a signature by their own key.
        ("own key", (other[""], mine, ssh_sign(keys["attacker"], mine)),
         "which is not a trusted key"),
        # Another release's archive, checksum and genuine signature, under this name.
        ("replayed name", (other[""], other[".sha256"], other[".sha256.sig"]),
         f"does not sign sha256 {other_digest} of app.tar.gz"),
        # Another release's genuine signature with this name's checksum line rewritten.
        ("replayed signature", (other[""], mine, other[".sha256.sig"]),
         "does not sign sha256"),
        # A trusted key's signature of the right line, but for another purpose.
        ("namespace", (other[""], mine, ssh_sign(good, mine, "file")),
         "not a valid release signature"),
        ("truncated", (genuine[""], genuine[".sha256"], genuine[".sha256.sig"][:120]),
         "not a valid release signature"),
        ("garbage", (genuine[""], genuine[".sha256"], os.urandom(300)),
         "is not an SSH signature"),
    ]
    before = snapshot(root)
    for what, files, message in cases:
        attack(*files)
        result = droot("pull", store.src("app.tar.gz"), "--root", root,
                       "--trusted-keys", trusted)
        assert result.returncode == 1, (what, result.stderr)
        assert message in result.stderr and len(result.stderr.splitlines()) == 1, \
            (what, result.stderr)
        assert snapshot(root) == before, what  # not even a staging directory was made
    # An unsigned push over the signed release removes its signature: "not signed".
    push(busybox_image, store, "app.tar.gz", "--compress", "zstd")
    assert store.get("app.tar.gz.sha256.sig") is None
    result = droot("pull", store.src("app.tar.gz"), "--root", root, "--trusted-keys", trusted)
    assert result.returncode == 1 and "the release is not signed" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and snapshot(root) == before
    # A swapped archive under the genuine checksum and signature: the signature holds,
    # the archive's hash does not; it is read into a staging directory that goes away.
    attack(other[""], genuine[".sha256"], genuine[".sha256.sig"])
    result = droot("pull", store.src("app.tar.gz"), "--root", root, "--trusted-keys", trusted)
    assert result.returncode == 1 and f"expected {digest}" in result.stderr, result.stderr
    assert snapshot(root)[:3] == before[:3]
    # Control: the genuine files put back are deployed again.
    attack(*genuine.values())
    result = droot("pull", store.src("app.tar.gz"), "--root", root, "--trusted-keys", trusted)
    assert result.returncode == 0, result.stderr


def test_trusted_keys_files_that_are_refused(busybox_image, keys, tmp_path):
    public = keys["ed25519"].with_suffix(".pub").read_text().strip()
    store = tmp_path / "app.tar.gz"
    assert droot("push", busybox_image, store, "--sign", keys["ed25519"]).returncode == 0
    cases = [
        ("# nothing\n\n", "no public keys in it"),
        (f"{public}\nnot a key at all\n", ":2: not a public key line"),
        (f"cert-authority {public}\n", ":1: cert-authority keys are not supported"),
        (f'frobnicate="1" {public}\n', ":1: unknown key option 'frobnicate'"),
        # A FIDO user-verification demand ssh-keygen's allowed signers cannot express:
        # refused, not dropped (which would accept what the operator meant to exclude).
        (f"no-touch-required,verify-required {public}\n", ":1: verify-required cannot be "
         "enforced on release signatures"),
    ]
    for text, message in cases:
        trusted = tmp_path / "keys"
        trusted.write_text(text)
        result = droot("pull", store, "--root", tmp_path / "app", "--trusted-keys", trusted)
        assert result.returncode == 2 and message in result.stderr, (text, result.stderr)
        assert not (tmp_path / "app.releases").exists()
    # expiry-time is honoured: an expired key signs no release any more.
    trusted.write_text(f'expiry-time="20200101" {public}\n')
    result = droot("pull", store, "--root", tmp_path / "app", "--trusted-keys", trusted)
    assert result.returncode == 1 and "key has expired" in result.stderr, result.stderr
    trusted.write_text(f'expiry-time="29990101" {public}\n')
    result = droot("pull", store, "--root", tmp_path / "app", "--trusted-keys", trusted)
    assert result.returncode == 0, result.stderr


def test_signing_failures_publish_nothing(busybox_image, keys, s3_bucket, tmp_path):
    encrypted = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", encrypted],
                   check=True)
    dest = f"s3://{s3_bucket}/app.tar.gz"
    result = droot("push", busybox_image, dest, "--sign", tmp_path / "missing")
    assert result.returncode == 2 and "no such key file" in result.stderr
    # No terminal to ask the passphrase on: the push fails, and nothing is visible.
    result = droot("push", busybox_image, dest, "--sign", encrypted, stdin=subprocess.DEVNULL,
                   start_new_session=True)
    assert result.returncode == 1 and "nothing was published" in result.stderr, result.stderr
    assert boto3.client("s3").list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not boto3.client("s3").list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    result = droot("push", busybox_image, "-", "--sign", keys["ed25519"],
                   capture_output=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert result.returncode == 2 and "--sign needs a store" in result.stderr


def test_deploy_from_stdin_checks_signature_checksum_and_name(busybox_image, keys, tmp_path):
    store = tmp_path / "app.tar.gz"
    assert droot("push", busybox_image, store, "--sign", keys["rsa"]).returncode == 0
    digest = (tmp_path / "app.tar.gz.sha256").read_text().split()[0]
    pushed = (tmp_path / "app.tar.gz.sha256").read_text().split()[-1]
    signature = tmp_path / "app.tar.gz.sha256.sig"
    root = tmp_path / "app"

    def deploy(*options):
        with open(store, "rb") as archive:
            return droot("deploy", "--root", root, "--trusted-keys", keys["trusted"],
                         "--pushed", pushed, *options, stdin=archive)

    result = deploy("--signature", signature, "--sha256", digest)
    assert result.returncode == 2 and "needs the release's --signature" in result.stderr
    result = deploy("--signature", signature, "--sha256", digest, "--name", "prod.tar.gz")
    assert result.returncode == 1 and "does not sign" in result.stderr
    assert not (tmp_path / "app.releases").exists()
    result = deploy("--signature", signature, "--sha256", digest, "--name", "app.tar.gz")
    assert result.returncode == 0 and "signed by RSA" in result.stderr, result.stderr
    result = droot("deploy", "--root", root, "--signature", signature, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "--signature goes with --trusted-keys" in result.stderr


def test_a_url_encoded_name_is_verified_as_pushed(busybox_image, keys, http_store, tmp_path):
    """A release pushed as `my app.tar.gz` is fetched as `my%20app.tar.gz`: its signature
    covers the name as pushed, which the pull decodes from the URL."""
    store, base = http_store
    result = droot("push", busybox_image, f"file://{store}/my%20app.tar.gz",
                   "--sign", keys["ed25519"])
    assert result.returncode == 0, result.stderr
    assert (store / "my app.tar.gz.sha256").read_text().split("\n")[0].endswith("  my app.tar.gz")
    result = droot("pull", f"{base}/my%20app.tar.gz", "--root", tmp_path / "app",
                   "--trusted-keys", keys["trusted"])
    assert result.returncode == 0 and "signed by ED25519" in result.stderr, result.stderr


# --- pull --if-changed ----------------------------------------------------------------------

def test_if_changed_costs_one_small_request_on_s3(busybox_image, keys, s3_server, s3_bucket,
                                                  tmp_path):
    src = f"s3://{s3_bucket}/apps/app.tar.gz"
    assert droot("push", busybox_image, src, "--sign", keys["ed25519"]).returncode == 0
    root = tmp_path / "app"
    poll = ["pull", src, "--root", root, "--if-changed", "--trusted-keys", keys["trusted"]]
    with s3_requests(s3_server) as first:
        result = droot(*poll)
    assert result.returncode == 0 and "deployed" in result.stderr, result.stderr
    assert len(first) >= 4  # the sidecar, the archive's HEAD and GETs, the signature
    release = os.readlink(root)
    with s3_requests(s3_server) as requests:
        result = droot(*poll)
    assert result.returncode == 0 and result.stderr == "", result.stderr  # quiet: no terminal
    assert requests == [("GET", f"/{s3_bucket}/apps/app.tar.gz.sha256")]
    assert os.readlink(root) == release
    # A new release is seen at the next poll, and deployed.
    assert droot("push", busybox_image, src, "--compress", "zstd",
                 "--sign", keys["ed25519"]).returncode == 0
    result = droot(*poll)
    assert result.returncode == 0 and "deployed" in result.stderr, result.stderr
    assert os.readlink(root) != release


def opened(command: list, store: Path) -> list[str]:
    """The files under `store` that `command` opens, as strace sees it."""
    log = store.parent / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", log, *command],
                   check=True, capture_output=True, timeout=300)
    return sorted({line.split('"')[1] for line in log.read_text().splitlines()
                   if f'"{store}/' in line and "ENOENT" not in line})


def test_if_changed_on_a_path_store_reads_only_the_sidecar(busybox_image, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    archive = store / "app.tar.gz"
    assert droot("push", busybox_image, archive).returncode == 0
    root = tmp_path / "app"
    poll = [DROOT, "pull", archive, "--root", root, "--if-changed"]
    assert opened(poll, store) == [str(archive), f"{archive}.sha256"]  # deployed
    release = os.readlink(root)
    assert opened(poll, store) == [f"{archive}.sha256"]                # unchanged
    assert os.readlink(root) == release
    # rsync mode records what it synced too.
    rsynced = tmp_path / "synced"
    assert droot("pull", archive, "--root", rsynced, "--mode", "rsync").returncode == 0
    assert opened([*poll[:4], rsynced, "--mode", "rsync", "--if-changed"], store) == [
        f"{archive}.sha256"]


def test_if_changed_after_a_rollback_or_an_unsigned_deploy_pulls_again(busybox_image, keys,
                                                                       tmp_path):
    archive = tmp_path / "app.tar.gz"
    root = tmp_path / "app"
    assert droot("push", busybox_image, archive, "--compress", "zstd").returncode == 0
    assert droot("pull", archive, "--root", root).returncode == 0
    assert droot("push", busybox_image, archive, "--sign", keys["ed25519"]).returncode == 0
    assert droot("pull", archive, "--root", root).returncode == 0  # deployed unsigned
    newest = os.readlink(root)
    # Now signatures are required: the running release was not checked, so pull again.
    result = droot("pull", archive, "--root", root, "--if-changed",
                   "--trusted-keys", keys["trusted"])
    assert "deployed" in result.stderr and os.readlink(root) != newest, result.stderr
    assert droot("rollback", "--root", root).returncode == 0
    # The store is the truth: the release rolled back from is deployed again.
    result = droot("pull", archive, "--root", root, "--if-changed")
    assert "deployed" in result.stderr, result.stderr
    # On a terminal, an unchanged poll says so.
    with PseudoTerminal() as tty:
        result = droot("pull", archive, "--root", root, "--if-changed", stderr=tty.terminal,
                       capture_output=False, stdout=subprocess.DEVNULL)
        said = tty.drawn().decode()
    assert result.returncode == 0 and said.startswith("droot: unchanged:"), said
