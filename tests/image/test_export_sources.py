"""`droot export` from all four sources of one image built by Docker: the same root
filesystem (paths, types, modes, owners, link targets, contents) and the image config."""

import gzip
import hashlib
import json
import subprocess
import time

import pytest
import zstandard
from tests.conftest import docker_build, droot, make_busybox_root
from tests.image.conftest import PREFIX, listing, member, oci_layout_from_docker_archive

DOCKERFILE = r"""FROM scratch
COPY rootfs/ /
COPY data/ /data/
RUN echo x > /data/d/c && ln /data/d/a /data/link && ln /data/d/keep /data/keeplink \
 && rm /data/d/b && mkdir -p /data/opq/sub && echo 1 > /data/opq/one && echo 1 > /data/opq/sub/x \
 && mkdir /data/setgid && chmod 2775 /data/setgid && mknod /data/null c 1 3 \
 && ln -s /bin/busybox /data/abs && chown 1000:50 /data/d/keep
RUN rm -rf /data/opq && mkdir /data/opq && echo 2 > /data/opq/two && echo new > /data/d/a \
 && rm /data/d/c && rm /data/d/file2sym && ln -s ../link /data/d/file2sym \
 && rm -rf /data/dir2file && echo f > /data/dir2file && echo s > /data/suid && chmod 4755 /data/suid \
 && rm /data/abs
ENV A="x=y z" B='q"uote' C="it's \"both\"" EMPTY=
USER app:staff
WORKDIR /home/app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""


@pytest.fixture(scope="module")
def layered_image(docker_client, tmp_path_factory):
    context = tmp_path_factory.mktemp("export-layered")
    make_busybox_root(context / "rootfs")
    data = context / "data"
    (data / "d").mkdir(parents=True)
    (data / "dir2file").mkdir()
    for name, text in (("d/a", "hi\n"), ("d/b", "two\n"), ("d/keep", "keep\n"),
                       ("d/file2sym", "f2s\n"), ("dir2file/x", "x\n")):
        (data / name).write_text(text)
    (context / "Dockerfile").write_text(DOCKERFILE)
    tag = f"{PREFIX}/layered:latest"
    image_id = docker_build(docker_client, context, tag)
    yield tag, image_id
    docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def exports(layered_image, registry, tmp_path_factory):
    """The export of each source, as bytes."""
    tag, _ = layered_image
    work = tmp_path_factory.mktemp("export-sources")
    archive = work / "layered.tar"
    subprocess.run(["docker", "save", "-o", archive, tag], check=True)
    oci = oci_layout_from_docker_archive(archive, work / "oci", ["gzip", "zstd", "none"])
    remote = f"{registry}/{PREFIX}/layered:latest"
    subprocess.run(["docker", "tag", tag, remote], check=True)
    try:
        subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rmi", remote], check=True, capture_output=True)
    sources = {"daemon": tag, "docker-archive": f"docker-archive:{archive}",
               "oci": f"oci:{oci}:latest", "registry": f"docker://{remote}"}
    outputs = {}
    for name, source in sources.items():
        out = work / f"{name}.tar"
        result = droot("export", source, "-o", out)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # no progress in a pipe
        outputs[name] = (source, out.read_bytes())
    return outputs


def test_all_four_sources_give_the_same_root_filesystem(exports):
    reference = listing(exports["daemon"][1])
    assert len(reference) > 250
    for name in ("docker-archive", "oci", "registry"):
        assert listing(exports[name][1]) == reference, name


@pytest.mark.parametrize("source", ["daemon", "docker-archive", "oci", "registry"])
def test_layers_are_applied_as_docker_applies_them(exports, source):
    data = exports[source][1]
    files = listing(data)
    assert "data/d/b" not in files and "data/d/c" not in files      # deleted (whiteouts)
    assert "data/abs" not in files                                   # a deleted symlink
    assert "data/opq/one" not in files and "data/opq/sub" not in files  # dir replaced (opaque)
    assert member(data, "data/opq/two") == b"2\n"
    assert member(data, "data/d/a") == b"new\n"
    # the hardlink made before data/d/a changed keeps the old content
    assert member(data, "data/link") == b"hi\n"
    assert files["data/d/file2sym"][0] == b"2" and files["data/d/file2sym"][4] == "../link"
    assert files["data/dir2file"][0] in (b"0", b"\0") and "data/dir2file/x" not in files
    assert files["data/suid"][1] == "0o4755"
    assert files["data/setgid"][1] == "0o2775"
    assert files["data/null"][0] == b"3" and files["data/null"][6] == (1, 3)
    assert files["data/d/keep"][2:4] == (1000, 50)
    keeplink = files["data/keeplink"]
    assert keeplink[0] == b"1" and keeplink[4] == "data/d/keep"      # still a hardlink
    assert files["bin/sh"][4] == "busybox"


@pytest.mark.parametrize("source", ["daemon", "docker-archive", "oci", "registry"])
def test_the_image_config_travels_in_the_stream(exports, layered_image, source):
    name, data = exports[source]
    assert member(data, ".drootenv").decode().splitlines() == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "A=x=y z", 'B=q"uote', 'C=it\'s "both"', "EMPTY="]
    config = json.loads(member(data, ".droot.json"))
    assert config["entrypoint"] == ["/bin/sh", "-c"]
    assert config["cmd"] == ["echo hi"]
    assert config["working_dir"] == "/home/app"
    assert config["user"] == "app:staff"
    assert config["source"] == name
    assert config["digest"] == layered_image[1]  # the image ID, whatever the source


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_output_holds_the_same_stream(exports, layered_image, tmp_path, kind):
    out = tmp_path / "image.tar.z"
    result = droot("export", layered_image[0], "--compress", kind, "-o", out)
    assert result.returncode == 0, result.stderr
    packed = out.read_bytes()
    plain = (gzip.decompress(packed) if kind == "gzip"
             else zstandard.ZstdDecompressor().decompressobj().decompress(packed))
    assert listing(plain) == listing(exports["daemon"][1])


@pytest.mark.parametrize("source", ["daemon", "docker-archive", "oci", "registry"])
def test_exporting_twice_gives_the_same_bytes(exports, tmp_path, source):
    """Deterministic export: the same image gives the same stream, and the same gzip and
    zstd archives, every time (so content lines up across releases). The engine makes a
    new container, and with it a new init layer, for every export: each export here
    starts in a later second than the one before, so its times would show."""
    name, first = exports[source]
    digests = {}
    for kind in ("none", "gzip", "zstd"):
        found = set()
        for attempt in range(2):
            if source == "daemon":
                time.sleep(1.01 - time.time() % 1)
            out = tmp_path / f"{kind}-{attempt}"
            result = droot("export", name, "--compress", kind, "-o", out)
            assert result.returncode == 0, result.stderr
            found.add(hashlib.sha256(out.read_bytes()).hexdigest())
        assert len(found) == 1, kind
        digests[kind] = found.pop()
    assert digests["none"] == hashlib.sha256(first).hexdigest()
    assert len(set(digests.values())) == 3  # three different encodings of it


def test_an_image_without_a_shell(docker_client, tmp_path):
    """The original wrote /.drootenv by running /bin/sh in the image: droot needs none."""
    (tmp_path / "app").write_bytes(open("/bin/busybox", "rb").read())
    (tmp_path / "Dockerfile").write_text(
        'FROM scratch\nCOPY app /app\nENV GREETING="hello, \'world\' = \\"x\\""\n'
        'ENTRYPOINT ["/app", "echo"]\n')
    tag = f"{PREFIX}/noshell:latest"
    docker_build(docker_client, tmp_path, tag)
    try:
        archive = tmp_path / "noshell.tar"
        subprocess.run(["docker", "save", "-o", archive, tag], check=True)
        for source in (tag, f"docker-archive:{archive}"):
            out = tmp_path / "out.tar"
            result = droot("export", source, "-o", out)
            assert result.returncode == 0, result.stderr
            data = out.read_bytes()
            files = listing(data)
            assert "app" in files and "bin/sh" not in files
            assert member(data, ".drootenv").endswith(b'\nGREETING=hello, \'world\' = "x"\n')
            assert json.loads(member(data, ".droot.json"))["entrypoint"] == ["/app", "echo"]
    finally:
        docker_client.images.remove(tag, force=True)
