"""Bad input to `droot export`: one clear line, a non-zero status, no traceback, no partial
-o file (an existing one untouched), and no container left in the engine."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import warnings

import pytest
from tests.conftest import (DROOT, PseudoTerminal, docker_build, droot, droot_on_terminal,
                            start_registry, stop)
from tests.image.conftest import PREFIX, layer, write_docker_archive, write_oci_layout

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt  # the stdlib's bcrypt (libxcrypt), for an htpasswd line (Python < 3.13)
    except ImportError:
        crypt = None


@pytest.fixture(scope="module")
def small_image(docker_client, tmp_path_factory):
    """An image of its own, so the containers made from it are this module's alone
    (tagged per test session: another session on the same engine removes its own)."""
    context = tmp_path_factory.mktemp("export-errors")
    (context / "app").write_bytes(open("/bin/busybox", "rb").read())
    (context / "Dockerfile").write_text('FROM scratch\nCOPY app /app\nVOLUME /data\nCMD ["/app"]\n')
    tag = f"{PREFIX}/errors:{os.getpid()}"
    image_id = docker_build(docker_client, context, tag)
    yield tag, image_id
    docker_client.images.remove(tag, force=True)


def containers_of(image_id: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image_id}"],
                          capture_output=True, text=True, check=True).stdout.split()


def assert_clean_failure(result, *words):
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("droot: ") and "Traceback" not in result.stderr
    assert "internal error" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def export_to_file(tmp_path, source, **kwargs):
    """Export into a directory holding a precious file at the -o path."""
    out = tmp_path / "out" / "image.tar"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"precious")
    result = droot("export", source, "-o", out, **kwargs)
    if result.returncode != 0:
        assert out.read_bytes() == b"precious"
        assert os.listdir(out.parent) == ["image.tar"]  # no partial file left beside it
    return result


def test_unknown_image(tmp_path, small_image):
    result = export_to_file(tmp_path, f"{PREFIX}/no-such-image:latest")
    assert_clean_failure(result, "no image", "no-such-image")


def test_engine_not_reachable(tmp_path):
    result = export_to_file(tmp_path, "anything", env={**os.environ,
                                                       "DOCKER_HOST": "unix:///nonexistent"})
    assert_clean_failure(result, "cannot reach the Docker engine", "unix:///nonexistent")


def test_not_an_image(tmp_path):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as archive:
        archive.add(__file__, "some-file.py")
    assert_clean_failure(export_to_file(tmp_path, f"docker-archive:{plain}"), "no manifest.json")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    assert_clean_failure(export_to_file(tmp_path, f"docker-archive:{junk}"), "not a tar archive")
    assert_clean_failure(export_to_file(tmp_path, f"docker-archive:{tmp_path / 'missing.tar'}"),
                         "cannot read")
    assert_clean_failure(export_to_file(tmp_path, f"oci:{tmp_path}"), "no index.json")


def test_truncated_and_corrupt_layers(tmp_path):
    layers = [layer(("app", "file", os.urandom(200_000)), ("etc", "dir"))]
    archive = write_docker_archive(tmp_path / "image.tar", layers)
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:len(data) // 2])
    assert_clean_failure(export_to_file(tmp_path, f"docker-archive:{cut}"))
    # a byte flipped inside a file's content: only the layer digest can tell
    layout = write_oci_layout(tmp_path / "oci", layers)
    blob = max((tmp_path / "oci" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    content = bytearray(blob.read_bytes())
    content[100_000] ^= 0xFF
    blob.write_bytes(bytes(content))
    assert_clean_failure(export_to_file(tmp_path, f"oci:{layout}"), "digest mismatch")
    # a gzip layer cut short
    gz = write_oci_layout(tmp_path / "gz", layers, compression=["gzip"])
    blob = max((tmp_path / "gz" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.write_bytes(blob.read_bytes()[:-5000])
    assert_clean_failure(export_to_file(tmp_path, f"oci:{gz}"))


def test_registry_not_found_and_tampered_blob(tmp_path, small_image):
    process, address = start_registry(tmp_path)
    try:
        assert_clean_failure(export_to_file(tmp_path, f"docker://{address}/{PREFIX}/nothing:latest"),
                             "not found", "404")
        remote = f"{address}/{PREFIX}/errors:latest"
        subprocess.run(["docker", "tag", small_image[0], remote], check=True)
        try:
            subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True)
        finally:
            subprocess.run(["docker", "rmi", remote], check=True, capture_output=True)
        assert export_to_file(tmp_path, f"docker://{remote}").returncode == 0
        # change the stored layer blob (the largest) behind the registry's back
        blobs = list((tmp_path / "data").rglob("blobs/sha256/*/*/data"))
        blob = max(blobs, key=lambda p: p.stat().st_size)
        content = bytearray(blob.read_bytes())
        content[-100] ^= 0xFF
        blob.write_bytes(bytes(content))
        result = export_to_file(tmp_path, f"docker://{remote}")
        assert_clean_failure(result, f"docker://{remote}")
        assert "digest mismatch" in result.stderr or "corrupt" in result.stderr
    finally:
        stop(process)


def bcrypt_hash(password: str) -> str:
    if crypt is not None:
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if shutil.which("htpasswd"):
        return subprocess.run(["htpasswd", "-nbB", "x", password], capture_output=True, text=True,
                              check=True).stdout.strip().split(":", 1)[1]
    pytest.skip("no bcrypt for an htpasswd file: Python's crypt module or apache2-utils")


def test_registry_basic_auth(tmp_path, small_image):
    password_hash = bcrypt_hash("s3cret")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"droot:{password_hash}\n")
    process, address = start_registry(tmp_path, htpasswd=htpasswd)
    docker_config = tmp_path / "docker-config"  # docker login writes here, not to ~/.docker
    docker_config.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    try:
        remote = f"{address}/{PREFIX}/auth:latest"
        subprocess.run(["docker", "login", "-u", "droot", "--password-stdin", address],
                       input="s3cret", text=True, env=env, check=True, capture_output=True)
        subprocess.run(["docker", "tag", small_image[0], remote], check=True)
        try:
            subprocess.run(["docker", "push", "-q", remote], env=env, check=True, capture_output=True)
        finally:
            subprocess.run(["docker", "rmi", remote], check=True, capture_output=True)
        anonymous = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "empty")}
        assert_clean_failure(export_to_file(tmp_path, f"docker://{remote}", env=anonymous),
                             "access denied", "401")
        wrong = {**anonymous, "DROOT_REGISTRY_USER": "droot", "DROOT_REGISTRY_PASSWORD": "wrong"}
        assert_clean_failure(export_to_file(tmp_path, f"docker://{remote}", env=wrong),
                             "credentials were refused")
        # the credentials of `docker login`, from Docker's config.json
        assert json.loads((docker_config / "config.json").read_text())["auths"][address]["auth"] == \
            base64.b64encode(b"droot:s3cret").decode()
        result = export_to_file(tmp_path, f"docker://{remote}", env=env)
        assert result.returncode == 0, result.stderr
        right = {**anonymous, "DROOT_REGISTRY_USER": "droot", "DROOT_REGISTRY_PASSWORD": "s3cret"}
        assert export_to_file(tmp_path, f"docker://{remote}", env=right).returncode == 0
    finally:
        stop(process)


def test_refuses_to_write_to_a_terminal(small_image):
    with PseudoTerminal() as tty:
        result = subprocess.run([DROOT, "export", small_image[0]], stdout=tty.terminal,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert_clean_failure(result, "terminal")
    assert containers_of(small_image[1]) == []


def test_progress_on_a_terminal_only(small_image, tmp_path):
    shown = droot_on_terminal("export", small_image[0], "-o", tmp_path / "out.tar")
    assert "export: " in shown and "MB" in shown and "/s" in shown
    archive = write_docker_archive(tmp_path / "two.tar", [layer(("a", "file", b"a")),
                                                          layer(("b", "file", b"b"))])
    assert "layer 2/2" in droot_on_terminal("export", f"docker-archive:{archive}",
                                            "-o", tmp_path / "out.tar")
    quiet = droot("export", small_image[0], "-o", tmp_path / "out2.tar")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_no_container_left_after_a_closed_pipe(small_image):
    reader = subprocess.Popen([DROOT, "export", small_image[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.read(1024)
    reader.stdout.close()  # the reader goes away mid-stream (`droot export IMAGE | head`)
    assert reader.wait(60) != 0
    assert b"Traceback" not in reader.stderr.read()
    assert containers_of(small_image[1]) == []


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_no_container_left_when_interrupted(small_image, how):
    process = subprocess.Popen([DROOT, "export", small_image[0]], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        # nobody reads the pipe: the export blocks with its container created
        for _ in range(600):
            if containers_of(small_image[1]):
                break
            time.sleep(0.05)
        containers = containers_of(small_image[1])
        assert containers, "the export never created its container"
        volumes = subprocess.run(["docker", "inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}",
                                  containers[0]], capture_output=True, text=True).stdout.split()
        assert len(volumes) == 1  # the image's VOLUME: an anonymous volume of the container
        process.send_signal(how)
        status = process.wait(60)
        assert status == (143 if how == signal.SIGTERM else 130)
        stderr = process.stderr.read().decode()
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert containers_of(small_image[1]) == []
    gone = subprocess.run(["docker", "volume", "inspect", volumes[0]], capture_output=True)
    assert gone.returncode != 0  # removed with the container


@pytest.fixture
def engine_over_tcp():
    """The local engine's socket forwarded to a loopback TCP port, so that droot takes its
    docker SDK path (any DOCKER_HOST other than a unix socket)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def pump(source, target):
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect("/var/run/docker.sock")
            for source, target in ((client, engine), (engine, client)):
                threading.Thread(target=pump, args=(source, target), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    stopping.set()
    listener.close()


def test_engine_through_the_docker_sdk(small_image, engine_over_tcp, tmp_path):
    env = {**os.environ, "DOCKER_HOST": engine_over_tcp}
    out = tmp_path / "out.tar"
    result = droot("export", small_image[0], "-o", out, env=env)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as archive:
        assert {"app", ".drootenv", ".droot.json"} <= set(archive.getnames())
        assert ".dockerenv" not in archive.getnames()
    assert containers_of(small_image[1]) == []
    assert_clean_failure(droot("export", f"{PREFIX}/no-such-image", env=env), "no image")
    unreachable = {**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:1"}
    assert_clean_failure(droot("export", small_image[0], env=unreachable),
                         "cannot reach the Docker engine at tcp://127.0.0.1:1")
