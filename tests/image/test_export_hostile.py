"""A hostile image's layers must not become an export that a tar extracts outside its
directory: absolute names, names other tar readers read differently (GNU long name and
pax path, the ustar field, global pax headers across layers, GNU sparse names), members
written through a symlink, and malformed image JSON or OCI blobs that are no regular
files (one clear line each). Python's tarfile (extractall with no filter, the default up
to 3.13) stands for the naive tar."""

import gzip
import io
import json
import os
import subprocess
import tarfile

import pytest

from tests.conftest import droot
from tests.image.conftest import image_config, layer, sha256, write_docker_archive, write_oci_layout

END = bytes(1024)


def block(name: bytes, kind: bytes = b"0", size: int = 0, linkname: bytes = b"") -> bytes:
    """One ustar header block, written by hand (tarfile would not write these names)."""
    header = bytearray(512)
    header[:len(name)] = name
    header[100:108] = b"0000644\0"
    header[108:116] = header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"
    header[156:157] = kind
    header[157:157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def file(name: bytes, data: bytes) -> bytes:
    return block(name, size=len(data)) + padded(data)


def pax(records: dict, kind: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        record = b" " + key + b"=" + value + b"\n"
        length = len(record) + 1
        while len(str(length)) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    return block(b"PaxHeader", kind, len(body)) + padded(body)


def export(tmp_path, layers):
    archive = write_docker_archive(tmp_path / "image.tar", layers)
    return droot("export", f"docker-archive:{archive}", "-o", tmp_path / "out.tar")


def naive_extract(tmp_path) -> list[str]:
    """Extract the export as a naive tar does; the names it saw."""
    with tarfile.open(tmp_path / "out.tar", errorlevel=0) as archive:
        names = archive.getnames()
        for member in archive:
            try:
                archive.extract(member, tmp_path / "root", filter="fully_trusted")
            except KeyError:  # a hard link to a member it has not seen
                pass
    return names


def assert_clean_failure(result, *words):
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("droot: ") and result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_absolute_names_and_hardlink_targets_come_out_relative(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    result = export(tmp_path, [file(b"/abs/file", b"hello")
                               + block(b"x", b"1", linkname=str(victim).encode())
                               + file(b"x", b"PWNED") + END])
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "out.tar") as archive:
        members = archive.getmembers()
    assert [m.name for m in members[:3]] == ["abs/file", "x", "x"]
    assert members[1].linkname == str(victim).lstrip("/")
    naive_extract(tmp_path)
    assert victim.read_bytes() == b"original"


@pytest.mark.parametrize("headers", [
    # a GNU long name before a pax path: droot read the pax path, tarfile and Go the long name
    lambda escape: (block(b"././@LongLink", b"L", len(escape) + 1) + padded(escape + b"\0")
                    + pax({b"path": b"safe"})),
    # a GNU sparse name, which tarfile and GNU tar take for the member's name
    lambda escape: pax({b"path": b"safe", b"GNU.sparse.name": escape}),
])
def test_a_name_other_readers_read_differently(tmp_path, headers):
    escape = str(tmp_path / "escaped").encode()
    escape = b"../" * escape.count(b"/") + escape.lstrip(b"/")
    result = export(tmp_path, [headers(escape) + file(b"safe", b"data") + END])
    if result.returncode == 0:
        assert "safe" in naive_extract(tmp_path)
    else:
        assert_clean_failure(result, "not supported")
    assert not (tmp_path / "escaped").exists()


def test_a_global_pax_header_smuggles_no_member_past_droot(tmp_path):
    """The global header rides on a whiteout, which droot leaves out: the members after it
    in the layer would lose the size droot read them with, and their data (a member named
    `../escaped`) would become members of the export."""
    smuggled = padded(file(b"../escaped", b"smuggled"))
    result = export(tmp_path, [
        file(b"gone", b"x") + END,
        pax({b"size": str(len(smuggled)).encode()}, kind=b"g") + block(b".wh.gone")
        + bytes(len(smuggled)) + block(b"f") + smuggled + END])
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "out.tar") as archive:
        assert archive.getnames() == ["f", ".drootenv", ".droot.json"]
        assert archive.getmember("f").size == len(smuggled)


@pytest.mark.parametrize("kind", [b"2", b"3", b"6"])
def test_a_member_without_data_has_no_size(tmp_path, kind):
    """GNU tar skips the size of a symlink, a device or a FIFO, droot and tarfile do not:
    the data of the member after it (here, a member named `../escaped`) became one."""
    smuggled = padded(file(b"../escaped", b"smuggled"))
    result = export(tmp_path, [block(b"n", kind, size=512, linkname=b"t") + file(b"f", smuggled)
                               + END])
    assert result.returncode == 0, result.stderr
    listed = subprocess.run(["tar", "-tf", tmp_path / "out.tar"], capture_output=True, text=True)
    assert listed.stdout.split() == ["n", "f", ".drootenv", ".droot.json"], listed.stderr


@pytest.mark.parametrize("members, words", [
    # a member beneath a symlink of the same layer
    (lambda victim: block(b"esc", b"2", linkname=str(victim.parent).encode())
     + file(b"esc/" + victim.name.encode(), b"PWNED"), ["beneath the symlink esc"]),
    # the same name again after a symlink: a tar opens the file through it
    (lambda victim: block(b"x", b"2", linkname=str(victim).encode()) + file(b"x", b"PWNED"),
     ["x comes again after a symlink"]),
    # a hard link to a symlink: link(2) follows it, linking the host's file
    (lambda victim: block(b"s", b"2", linkname=str(victim).encode()) + block(b"l", b"1", linkname=b"s")
     + file(b"l", b"PWNED"), ["l comes again after a symlink"]),
])
def test_nothing_is_written_through_a_symlink(tmp_path, members, words):
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    result = export(tmp_path, [members(victim) + END])
    if result.returncode == 0:
        naive_extract(tmp_path)
    assert victim.read_bytes() == b"original"
    assert_clean_failure(result, *words)


def test_a_hard_link_to_a_symlink_becomes_a_symlink(tmp_path):
    result = export(tmp_path, [block(b"s", b"2", linkname=b"/etc/passwd") + block(b"l", b"1", linkname=b"s")
                               + END])
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "out.tar") as archive:
        link = archive.getmember("l")
    assert link.issym() and link.linkname == "/etc/passwd"


def test_overlong_names_are_refused_before_they_cost(tmp_path):
    """Pass 1 keeps every name of the upper layers, and checks each of their parents: a
    1 MiB pax path (a few KiB of gzip) cost a megabyte, or half a minute, per entry."""
    deep = b"a/" * 3000 + b"f"
    result = export(tmp_path, [file(b"x", b"1") + END,
                               pax({b"path": deep}) + block(b"f") + END])
    assert_clean_failure(result, "longer than 4095 bytes")


def test_a_corrupt_gzip_layer_is_one_clear_line(tmp_path):
    """ISA-L's errors (igzip_lib.IsalError) were an internal error."""
    data = layer(("app", "file", os.urandom(1000)))
    compressed = gzip.compress(data, mtime=0)
    compressed = compressed[:10] + bytes(50) + compressed[60:]
    archive = write_docker_archive(tmp_path / "image.tar", [compressed],
                                   config=image_config([sha256(data)]))
    result = droot("export", f"docker-archive:{archive}", "-o", tmp_path / "out.tar")
    assert_clean_failure(result, "corrupt or truncated")


def docker_archive_with(tmp_path, manifest: bytes | None = None, config: bytes | None = None):
    data = layer(("app", "file", b"x"))
    path = write_docker_archive(tmp_path / "image.tar", [data], config=config)
    if manifest is not None:
        with tarfile.open(path) as archive:
            members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
        with tarfile.open(path, "w") as archive:
            for member, content in members:
                if member.name == "manifest.json":
                    content = manifest
                    member.size = len(content)
                archive.addfile(member, io.BytesIO(content))
    return path


@pytest.mark.parametrize("manifest, config, words", [
    (b"{not json", None, ["manifest.json is not valid JSON"]),
    (b'["x"]', None, ["not a docker save manifest"]),
    (b'[{"Config": "../c.json", "Layers": []}]', None, ["'..' component"]),
    (None, image_config([5]), ["bad digest"]),
    (None, json.dumps({"config": {"Env": "PATH=/bin"}, "rootfs": {"diff_ids": [
        sha256(layer(("app", "file", b"x")))]}}).encode(), ["Env is not a list of strings"]),
])
def test_malformed_docker_archive_json_is_one_clear_line(tmp_path, manifest, config, words):
    path = docker_archive_with(tmp_path, manifest, config)
    assert_clean_failure(droot("export", f"docker-archive:{path}", "-o", tmp_path / "out.tar"),
                         *words)


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(layers=["x"]), ["not a JSON object"]),
    (lambda m: m.update(layers=[{"size": 1}]), ["bad digest"]),
    (lambda m: m["config"].update(digest=5), ["bad digest"]),
])
def test_malformed_oci_manifest_is_one_clear_line(tmp_path, change, words):
    layout = write_oci_layout(tmp_path / "oci", [layer(("app", "file", b"x"))])
    index = json.loads((layout / "index.json").read_text())
    old = layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(old.read_bytes())
    change(manifest)
    data = json.dumps(manifest).encode()
    (old.parent / sha256(data).split(":")[1]).write_bytes(data)
    index["manifests"][0].update(digest=sha256(data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))
    assert_clean_failure(droot("export", f"oci:{layout}", "-o", tmp_path / "out.tar"), *words)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_an_oci_blob_that_is_no_regular_file_is_refused(tmp_path, kind):
    """A layer blob linked to a file of this host put that file's bytes into the export
    before the digest check failed; a FIFO blocked the export forever."""
    data = layer(("app", "file", b"x"))
    layout = write_oci_layout(tmp_path / "oci", [data])
    blob = layout / "blobs" / "sha256" / sha256(data).split(":")[1]
    blob.unlink()
    secret = tmp_path / "secret.tar"
    secret.write_bytes(layer(("shadow", "file", b"root:SECRET-HASH:::")))
    if kind == "symlink":
        blob.symlink_to(secret)
    else:
        os.mkfifo(blob)
    result = droot("export", f"oci:{layout}", timeout=60)
    assert b"SECRET" not in result.stdout.encode(errors="surrogateescape")
    assert_clean_failure(result, "cannot read layer blob")
