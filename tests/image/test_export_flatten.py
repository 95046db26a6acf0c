"""Daemonless flattening of hand-made layers: the OCI whiteout rules and the corner cases
Docker builds rarely produce, checked against what the Docker engine itself makes of the
same layers (`docker load`, then droot's daemon export) and against explicit facts."""

import io
import json
import subprocess
import tarfile

import pytest
from tests.conftest import droot
from tests.image.conftest import (PREFIX, image_config, layer, listing, member, push_oci_layout,
                                  sha256, write_docker_archive, write_oci_layout)

LONG = "long/" + "n" * 150
XATTRS = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.capability":
          "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}

ITEMS = [
    (("etc", "dir"), ("etc/a", "file", b"a0"), ("etc/b", "file", b"b0"),
          ("etc/sym", "symlink", "/etc/a"), ("etc/abs", "symlink", "/etc/b"),
          ("opq", "dir"), ("opq/x", "file", b"x"), ("opq/sub", "dir"), ("opq/sub/y", "file", b"y"),
          ("gone", "dir"), ("gone/z", "file", b"z"),
          ("f2d", "file", b"file"), ("d2f", "dir"), ("d2f/inner", "file", b"inner"),
          ("setuid", "file", {"data": b"su", "mode": 0o4755}),
          ("setgid", "dir", {"mode": 0o2775}),
          ("owned", "file", {"data": b"o", "uid": 1000, "gid": 50, "uname": "", "gname": ""}),
          ("dev", "dir"), ("dev/null2", "chardev", (1, 3)), ("proc", "dir"), ("sys", "dir"),
          ("xattr", "file", {"data": b"xa", "pax_headers": XATTRS}),
          ("hl", "dir"), ("hl/target", "file", b"T0"), ("hl/link1", "hardlink", "hl/target"),
          ("hl/keep", "file", b"K"), ("hl/keeplink", "hardlink", "hl/keep"),
          ("long", "dir"), (LONG, "file", b"long name")),
    (("etc", "dir"), ("etc/.wh.sym", "file"), ("etc/.wh.missing", "file"),
          ("etc/b", "file", b"b1"),
          ("opq", "dir"), ("opq/.wh..wh..opq", "file"), ("opq/new", "file", b"new"),
          (".wh.gone", "file"),
          ("f2d", "dir"), ("f2d/child", "file", b"child"), ("d2f", "file", b"now a file"),
          ("hl", "dir"), ("hl/target", "file", b"T1"), ("hl/link2", "hardlink", "hl/keep")),
    (("gone", "dir"), ("gone/again", "file", b"again"),
          ("etc", "dir"), ("etc/alink", "hardlink", "etc/a"),
          ("hl", "dir"), ("hl/.wh.keep", "file")),
]
LAYERS = [layer(*items) for items in ITEMS]
# Docker applies each layer into a directory of its own, so it refuses a hardlink to a
# file of a lower layer (its builds copy the file up instead): the engine comparison
# leaves those two links out.
CROSS_LAYER_LINKS = ("hl/link2", "etc/alink")
ENGINE_LAYERS = [layer(*(item for item in items if item[0] not in CROSS_LAYER_LINKS))
                 for items in ITEMS]


@pytest.fixture(scope="module")
def flattened(tmp_path_factory, registry):
    """droot's export of the layers from a docker-archive, OCI layouts and a registry."""
    work = tmp_path_factory.mktemp("export-flatten")
    archive = write_docker_archive(work / "handmade.tar", LAYERS)
    results = {}
    sources = {"docker-archive": f"docker-archive:{archive}"}
    for kinds in (["gzip", "zstd", "none"], ["zstd", "none", "gzip"]):
        directory = write_oci_layout(work / "-".join(kinds), LAYERS, compression=kinds)
        sources["oci " + "-".join(kinds)] = f"oci:{directory}"
    push_oci_layout(registry, f"{PREFIX}/handmade", "latest", directory)
    sources["registry"] = f"docker://{registry}/{PREFIX}/handmade:latest"
    for name, source in sources.items():
        out = work / "out.tar"
        result = droot("export", source, "-o", out)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        results[name] = out.read_bytes()
    return archive, results


def test_whiteouts_opaque_dirs_and_type_changes(flattened):
    data = flattened[1]["docker-archive"]
    files = listing(data)
    assert "etc/sym" not in files                      # whiteout of a symlink
    assert "etc/missing" not in files                  # whiteout of nothing: harmless
    assert member(data, "etc/b") == b"b1" and member(data, "etc/a") == b"a0"
    assert files["etc/abs"][4] == "/etc/b"             # absolute symlinks stay as they are
    assert "opq/x" not in files and "opq/sub" not in files and "opq/sub/y" not in files
    assert member(data, "opq/new") == b"new" and files["opq"][0] == tarfile.DIRTYPE
    assert "gone/z" not in files                       # deleted, then the dir made again
    assert member(data, "gone/again") == b"again"
    assert files["f2d"][0] == tarfile.DIRTYPE and member(data, "f2d/child") == b"child"
    assert files["d2f"][0] == tarfile.REGTYPE and "d2f/inner" not in files
    assert not any(".wh." in path for path in files)
    assert len(files) == len(set(files))


def test_modes_owners_devices_xattrs_long_names(flattened):
    data = flattened[1]["docker-archive"]
    files = listing(data)
    assert files["setuid"][1] == "0o4755" and files["setgid"][1] == "0o2775"
    assert files["owned"][2:4] == (1000, 50)
    assert files["dev/null2"][0] == tarfile.CHRTYPE and files["dev/null2"][6] == (1, 3)
    assert files["xattr"][7] == XATTRS
    assert member(data, LONG) == b"long name"


def test_hardlinks_to_lower_layers(flattened):
    data = flattened[1]["docker-archive"]
    files = listing(data)
    # the target was replaced above: the link keeps the content it had
    assert member(data, "hl/target") == b"T1" and member(data, "hl/link1") == b"T0"
    # the target was deleted above: both links keep its content, as one file
    assert "hl/keep" not in files
    assert member(data, "hl/keeplink") == b"K" and member(data, "hl/link2") == b"K"
    assert {files["hl/keeplink"][0], files["hl/link2"][0]} == {tarfile.REGTYPE, tarfile.LNKTYPE}
    # a link to a lower file that stays: still a hardlink, and after its target
    assert files["etc/alink"][0] == tarfile.LNKTYPE and files["etc/alink"][4] == "etc/a"
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert names.index("etc/a") < names.index("etc/alink")
    # GNU tar extracts the whole stream (every link finds its target)
    subprocess.run(["tar", "-t", "-f", "-"], input=data, check=True, capture_output=True)


def test_gzip_zstd_and_plain_layers_flatten_alike(flattened):
    results = flattened[1]
    reference = listing(results["docker-archive"])
    for name, data in results.items():
        assert listing(data) == reference, name


def test_same_filesystem_as_the_docker_engine_makes_of_the_layers(docker_client, tmp_path):
    archive = write_docker_archive(tmp_path / "engine.tar", ENGINE_LAYERS)
    ours = tmp_path / "ours.tar"
    result = droot("export", f"docker-archive:{archive}", "-o", ours)
    assert result.returncode == 0, result.stderr
    loaded = subprocess.run(["docker", "load", "-q", "-i", archive], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    tag = f"{PREFIX}/handmade:latest"
    try:
        out = tmp_path / "daemon.tar"
        result = droot("export", tag, "-o", out)
        assert result.returncode == 0, result.stderr
    finally:
        docker_client.images.remove(tag, force=True)

    def comparable(data):
        # hardlinks resolved to contents (which names share an inode is the exporter's
        # choice); xattrs left out (docker export only carries security.capability)
        entries = listing(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as stream:
            for item in stream:
                if item.islnk():
                    path = item.name.rstrip("/")
                    entries[path] = (tarfile.REGTYPE, entries[path][1], *entries[path][2:4], "",
                                     sha256(stream.extractfile(item).read()), None)
        return {path: entry[:7] for path, entry in entries.items()}

    engine = comparable(out.read_bytes())
    assert engine == comparable(ours.read_bytes())
    assert "hl/link1" in engine and "gone/again" in engine and "opq/new" in engine


def test_links_to_links_and_links_to_nothing(tmp_path):
    layers = [layer(("c", "dir"), ("c/f", "file", {"data": b"F", "mode": 0o640, "uid": 7}),
                    ("c/l1", "hardlink", "c/f")),
              layer(("c", "dir"), ("c/l2", "hardlink", "c/l1"), ("c/orphan", "hardlink", "c/gone")),
              layer(("c", "dir"), ("c/.wh.f", "file"), ("c/.wh.l1", "file"), ("c/.wh.gone", "file"))]
    archive = write_docker_archive(tmp_path / "links.tar", layers)
    out = tmp_path / "out.tar"
    result = droot("export", f"docker-archive:{archive}", "-o", out)
    assert result.returncode == 0
    assert "c/orphan" in result.stderr and "left out" in result.stderr  # a warning, not a failure
    files = listing(out.read_bytes())
    assert set(files) == {"c"}.union({"c/l2"})
    assert member(out.read_bytes(), "c/l2") == b"F"  # through the link, to the deleted file
    assert files["c/l2"][0] == tarfile.REGTYPE and files["c/l2"][1:3] == ("0o640", 7)


def test_a_single_layer_streams_in_one_pass(tmp_path):
    """A one-layer image keeps even a member list with duplicate-looking forms intact."""
    data = layer(("./", "dir"), ("./app", "file", b"#!/bin/true\n"), ("./lib", "dir"))
    config = image_config([sha256(data)], env=["K=v=w x"], Entrypoint=["/app"])
    source = write_oci_layout(tmp_path / "oci", [data], config, ["zstd"])
    out = tmp_path / "out.tar"
    result = droot("export", f"oci:{source}:latest", "-o", out)
    assert result.returncode == 0, result.stderr
    exported = out.read_bytes()
    assert member(exported, "./app") == b"#!/bin/true\n"
    assert member(exported, ".drootenv") == b"K=v=w x\n"
    assert json.loads(member(exported, ".droot.json"))["digest"] == sha256(config)


def test_an_index_resolves_to_this_hosts_platform(tmp_path, registry):
    """An image index (a multi-platform image) in an OCI layout and in a registry."""
    import platform
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    other = "s390x" if machine != "s390x" else "amd64"
    directory = tmp_path / "oci"
    descriptors = {}
    for arch in (other, machine):
        write_oci_layout(directory, [layer((f"only-on-{arch}", "file", arch.encode()))])
        descriptor = json.loads((directory / "index.json").read_text())["manifests"][0]
        descriptor.pop("annotations")
        descriptors[arch] = {**descriptor, "platform": {"os": "linux", "architecture": arch}}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [descriptors[other], descriptors[machine]]}).encode()
    (directory / "blobs" / "sha256" / sha256(index).split(":")[1]).write_bytes(index)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(index),
        "size": len(index), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    out = tmp_path / "out.tar"
    result = droot("export", f"oci:{directory}:multi", "-o", out)
    assert result.returncode == 0, result.stderr
    assert set(listing(out.read_bytes())) == {f"only-on-{machine}"}
    push_oci_layout(registry, f"{PREFIX}/multi", "v1", directory)
    result = droot("export", f"docker://{registry}/{PREFIX}/multi:v1", "-o", out)
    assert result.returncode == 0, result.stderr
    assert set(listing(out.read_bytes())) == {f"only-on-{machine}"}
    missing = droot("export", f"oci:{directory}:nope", "-o", out)
    assert missing.returncode == 1 and "no image tagged 'nope'" in missing.stderr
    # an index with nothing for this host
    only_other = json.dumps({"schemaVersion": 2, "manifests": [descriptors[other]]}).encode()
    (directory / "blobs" / "sha256" / sha256(only_other).split(":")[1]).write_bytes(only_other)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(only_other),
        "size": len(only_other)}]}))
    result = droot("export", f"oci:{directory}", "-o", out)
    assert result.returncode == 1 and f"no image for linux/{machine}" in result.stderr
    assert f"linux/{other}" in result.stderr


def test_a_docker_archive_of_several_images(tmp_path):
    parts = [write_docker_archive(tmp_path / f"{name}.tar", [layer((name, "file", name.encode()))],
                                  tag=f"{PREFIX}/{name}:v1") for name in ("first", "second")]
    merged = tmp_path / "both.tar"
    manifests = []
    with tarfile.open(merged, "w") as out:
        for part in parts:
            with tarfile.open(part) as archive:
                for item in archive:
                    data = archive.extractfile(item).read()
                    if item.name == "manifest.json":
                        manifests += json.loads(data)
                    else:
                        out.addfile(item, io.BytesIO(data))
        info = tarfile.TarInfo("manifest.json")
        data = json.dumps(manifests).encode()
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    result = droot("export", f"docker-archive:{merged}", "-o", tmp_path / "out.tar")
    assert result.returncode == 1 and "holds 2 images" in result.stderr
    for name in ("first", "second"):
        for reference in (f"{PREFIX}/{name}:v1", f"{PREFIX}/{name}"):
            result = droot("export", f"docker-archive:{merged}:{reference}", "-o", tmp_path / "out.tar")
            assert result.returncode == 0, result.stderr
            assert set(listing((tmp_path / "out.tar").read_bytes())) == {name}


def test_gnu_format_layers(tmp_path):
    """GNU tar headers: long names and link targets in their own blocks, base-256 ids."""
    deep = "g/" + "d" * 120
    target = "/" + "t" * 150
    layers = [layer(("g", "dir"), (deep, "file", {"data": b"G", "uid": 3_000_000, "gid": 3_000_001}),
                    ("g/sym", "symlink", target), ("g/hl", "hardlink", deep),
                    ("g/" + "k" * 120, "file", b"K"), format=tarfile.GNU_FORMAT),
              layer(("g", "dir"), ("g/.wh." + "d" * 120, "file"), format=tarfile.GNU_FORMAT)]
    archive = write_docker_archive(tmp_path / "gnu.tar", layers)
    out = tmp_path / "out.tar"
    result = droot("export", f"docker-archive:{archive}", "-o", out)
    assert result.returncode == 0, result.stderr
    files = listing(out.read_bytes())
    assert deep not in files
    assert files["g/sym"][4] == target
    assert files["g/hl"][0] == tarfile.REGTYPE and files["g/hl"][2:4] == (3_000_000, 3_000_001)
    assert member(out.read_bytes(), "g/hl") == b"G"
    assert member(out.read_bytes(), "g/" + "k" * 120) == b"K"  # copied through as it was


def exported(tmp_path, name: str, layers: list[bytes]) -> bytes:
    """droot's export of `layers`, from an OCI layout."""
    out = tmp_path / f"{name}.tar"
    result = droot("export", f"oci:{write_oci_layout(tmp_path / name, layers)}", "-o", out)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def test_carried_links_keep_their_place_among_the_layers_entries(tmp_path):
    """Carried links are written where they came: before a later link to one, before
    the same path again, and a link beneath a symlink carried at its parent is refused
    (a tar that follows symlinks would write through it)."""
    cases = {
        "link-to-it": [layer(("T", "file", b"old")),
                       layer(("p", "hardlink", "T"), ("q", "hardlink", "p")),
                       layer(("T", "file", b"new"))],
        "again": [layer(("T", "file", b"old")),
                  layer(("p", "hardlink", "T"), ("p", "file", b"later")),
                  layer(("T", "file", b"new"))],
        "chain-to-it": [layer(("U", "file", b"U")),
                        layer(("T", "hardlink", "U"), ("p", "hardlink", "T"),
                              ("X", "hardlink", "p"), ("r", "hardlink", "X")),
                        layer((".wh.U", "file"), (".wh.T", "file"), (".wh.X", "file"))],
        "through": [layer(("S", "symlink", str(tmp_path / "outside")), ("T", "hardlink", "S"),
                          ("U", "file", b"payload")),
                    layer(("s", "hardlink", "T"), ("s/x", "hardlink", "U")),
                    layer((".wh.T", "file"), (".wh.U", "file"))],
    }
    results = {}
    for name, layers in cases.items():
        layout = write_oci_layout(tmp_path / name, layers)
        out = tmp_path / f"{name}.tar"
        result = droot("export", f"oci:{layout}", "-o", out)
        results[name] = (result, out)
    result, out = results["through"]
    assert result.returncode == 1 and "s/x lies beneath the symlink s" in result.stderr
    assert "Traceback" not in result.stderr
    for name in ("link-to-it", "again", "chain-to-it"):
        result, out = results[name]
        assert result.returncode == 0, result.stderr
    with tarfile.open(results["link-to-it"][1]) as archive:
        order = [m.name for m in archive if not m.name.startswith(".droot")]
    assert order.index("p") < order.index("q")  # a tar links q to p: p must be there
    assert member(results["again"][1].read_bytes(), "p") == b"later"  # the last one wins
    with tarfile.open(results["chain-to-it"][1]) as archive:
        order = [m.name for m in archive if not m.name.startswith(".droot")]
    assert order.index("p") < order.index("r")


def test_a_link_to_a_deleted_symlink_or_device_keeps_its_kind(tmp_path):
    """A hard link whose target, a symlink or a device node, is deleted above: a copy of
    the symlink, the device node (it was an empty regular file of the symlink's mode)."""
    layers = [layer(("s", "symlink", "/etc/os-release"), ("n", "chardev", (1, 3))),
              layer(("p", "hardlink", "s"), ("q", "hardlink", "n")),
              layer((".wh.s", "file"), (".wh.n", "file"))]
    data = exported(tmp_path, "kinds", layers)
    files = listing(data)
    assert files["p"][0] == tarfile.SYMTYPE and files["p"][4] == "/etc/os-release"
    assert files["q"][0] == tarfile.CHRTYPE and files["q"][6] == (1, 3)
    assert "s" not in files and "n" not in files


def test_links_to_one_name_replaced_between_them_keep_their_own_content(tmp_path):
    """`T` comes twice in a layer, a link to it after each: each link holds the T it
    followed, once a higher layer replaces T (both held the first T's content: a link
    was matched to the first by the target's name and layer)."""
    layers = [layer(("T", "file", b"first"), ("l1", "hardlink", "T"), ("m", "hardlink", "l1"),
                    ("T", "file", b"second"), ("l2", "hardlink", "T")),
              layer(("T", "file", b"new"))]
    data = exported(tmp_path, "twice", layers)
    assert (member(data, "l1"), member(data, "l2"), member(data, "T")) == (
        b"first", b"second", b"new")


def test_a_link_is_never_linked_to_what_took_its_carriers_name(tmp_path):
    """l1 carries T's old content; then a symlink to a host file takes the name l1. l2,
    a link to the same T, must hold that content itself: a hard link to l1 would be one
    to the symlink, which an extractor that follows it makes a link to the host file."""
    layers = [layer(("T", "file", b"old")),
              layer(("l1", "hardlink", "T"), ("l1", "symlink", "/etc/shadow"),
                    ("l2", "hardlink", "T")),
              layer(("T", "file", b"new"))]
    data = exported(tmp_path, "taken", layers)
    files = listing(data)
    assert files["l1"][0] == tarfile.SYMTYPE and files["l2"][0] == tarfile.REGTYPE
    assert member(data, "l2") == b"old"


def test_a_link_is_never_linked_through_a_symlink_at_its_carriers_parent(tmp_path):
    """d/p carries T's old content; then d becomes a symlink out of the root. q, a link
    to the same T, is a file of its own: a hard link to d/p would go through d."""
    layers = [layer(("T", "file", b"old")),
              layer(("d", "dir"), ("d/p", "hardlink", "T"), ("d", "symlink", "/outside"),
                    ("q", "hardlink", "T")),
              layer(("T", "file", b"new"))]
    data = exported(tmp_path, "parent", layers)
    files = listing(data)
    assert files["q"][0] == tarfile.REGTYPE and member(data, "q") == b"old"


def test_links_to_a_deleted_symlink_are_all_copies_of_it(tmp_path):
    """Every link to a deleted symlink (directly or through a link to it, in its layer or
    a later one) is a copy of the symlink, made from what the first copy kept (reading
    the layers again for each link took time quadratic in their number); a link to a
    deleted directory is an empty file, as no directory has a hard link to it."""
    layers = [layer(("S", "symlink", "/etc/os-release"), ("T", "hardlink", "S"), ("D", "dir")),
              layer(*[(f"l{i}", "hardlink", "S") for i in range(3)],
                    *[(f"m{i}", "hardlink", "T") for i in range(3)],
                    ("d1", "hardlink", "D"), ("d2", "hardlink", "D")),
              layer(("n", "hardlink", "l0")),
              layer((".wh.S", "file"), (".wh.T", "file"), (".wh.D", "file"))]
    files = listing(exported(tmp_path, "copies", layers))
    for name in ("l0", "l1", "l2", "m0", "m1", "m2", "n"):
        assert files[name][0] == tarfile.SYMTYPE and files[name][4] == "/etc/os-release", name
    assert files["d1"][0] == tarfile.REGTYPE
    assert files["d2"][0] in (tarfile.REGTYPE, tarfile.LNKTYPE)
