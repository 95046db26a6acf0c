"""Fixtures and helpers shared by every stage's tests: the droot console script, busybox
roots, the attack program, a pseudo-terminal, and the real services (Docker engine, an
S3-compatible server, a registry). Each stage's own are in its directory's conftest.py;
test modules import the plain helpers by name (`from tests.conftest import droot`).

Every service a fixture starts is a separate process on loopback, stopped when the
session ends; nothing here touches the host outside temporary directories.
"""

import collections
import contextlib
import ctypes
import fcntl
import os
import pty
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import termios
import time
from pathlib import Path

import pytest
from hypothesis import Phase, settings

BUSYBOX = "/bin/busybox"

# `--hypothesis-profile=mutation`, which mutmut's runs use (pyproject.toml): each mutant
# runs the property tests on fewer examples, the same ones every time, without shrinking.
settings.register_profile("mutation", max_examples=20, derandomize=True, database=None,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate),
                          deadline=None)
VENV_BIN = Path(sys.prefix) / "bin"
DROOT = str(VENV_BIN / "droot")

# A suite started in the background of a script (`pytest &`) inherits SIGINT ignored, as
# POSIX shells do for background commands, and so would every droot it starts: the
# Ctrl-C tests need it delivered, whoever started the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def droot(*args, check=False, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed `droot` console script, as users do; output captured as text."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run([DROOT, *map(str, args)], check=check, **kwargs)


# Measured from a small intermediate process: a child spawned straight from the (large)
# test process would count the parent's memory in its peak RSS (vfork shares it).
_MEASURE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], "
            "stdout=subprocess.DEVNULL); "
            "_, status, usage = os.wait4(p.pid, 0); "
            "print(usage.ru_maxrss if os.waitstatus_to_exitcode(status) == 0 else -1)")


def droot_peak_rss_mb(*args, stdin=None) -> float:
    """The peak RSS, in MB, of a `droot` command that must succeed (its extraction child's
    too: the measure is the largest of the processes it waited for)."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, DROOT, *map(str, args)],
                            stdin=stdin, capture_output=True, text=True, check=True,
                            timeout=600)
    assert int(result.stdout) > 0, result.stderr
    return int(result.stdout) / 1024


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str):
    """A tmpfs of `size` (mount's units: 64k, 1m) of the test's own at `mountpoint`, made
    here and unmounted afterwards: a filesystem the test can fill."""
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "droot-test-small",
                    mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", mountpoint], check=True)


def make_busybox_root(path: Path) -> Path:
    """A minimal root filesystem: static busybox with its applets, passwd and group files."""
    (path / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = path / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for directory in ("etc", "tmp", "root", "proc", "sys", "dev"):
        (path / directory).mkdir(exist_ok=True)
    (path / "tmp").chmod(0o1777)
    (path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app user:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (path / "etc" / "group").write_text(
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
    (path / "home" / "app").mkdir(parents=True, exist_ok=True)
    os.chown(path / "home" / "app", 1000, 1000)
    return path


@pytest.fixture
def busybox_root(tmp_path) -> Path:
    return make_busybox_root(tmp_path / "root")


def compile_static(name: str, tmp_path_factory) -> Path:
    """tests/run/NAME.c compiled static (it runs in roots without a C library)."""
    output = tmp_path_factory.mktemp(f"run-{name}") / name
    if not shutil.which("gcc"):
        pytest.fail("the run tests need gcc and libc6-dev (a static C library): apt-get install "
                    "gcc libc6-dev")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(output),
                    str(Path(__file__).parent / "run" / f"{name}.c")], check=True)
    return output


@pytest.fixture(scope="session")
def attack_binary(tmp_path_factory) -> Path:
    """tests/run/attack.c: attacks on the sandbox, one per subcommand."""
    return compile_static("attack", tmp_path_factory)


@pytest.fixture
def run_root(tmp_path, attack_binary) -> Path:
    """A busybox root with /attack in it."""
    root = make_busybox_root(tmp_path / "run-root")
    shutil.copy2(attack_binary, root / "attack")
    return root


# --- archives crafted header by header (the codec's tests: in process, and through deploy) ---

def member_bytes(name: str, data: bytes = b"", *, format=tarfile.GNU_FORMAT, **fields) -> bytes:
    """One member (header blocks, data, padding) as tarfile writes it; `fields` are
    TarInfo attributes (type, mode, mtime, uid, linkname, pax_headers, ...)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    header = info.tobuf(format, "utf-8", "surrogateescape")
    return header + data + bytes(-len(data) % 512)


def with_field(block: bytes, start: int, value: bytes, *, fix_checksum: bool = True) -> bytes:
    """A header block with bytes at `start` replaced (and its checksum made right, unless
    not `fix_checksum`); what follows the block is kept."""
    header = bytearray(block[:512])
    header[start:start + len(value)] = value
    if fix_checksum:
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + block[512:]


def base256(value: int, width: int) -> bytes:
    """A GNU base-256 number field (negative: two's complement over the whole field)."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def extended_header(kind: bytes, payload: bytes, size: int | None = None) -> bytes:
    """An extended header of type `kind` (x, g, L, K) holding `payload`; `size` overrides
    the size its header states."""
    header = member_bytes("././@Extended", b"")[:512]
    header = with_field(header, 156, kind)
    header = with_field(header, 124, b"%011o\0" % len(payload) if size is None
                        else base256(size, 12))
    return header + payload + bytes(-len(payload) % 512)


END = bytes(1024)


# --- the tar codec ----------------------------------------------------------------------

def read_all(archive: bytes) -> list:
    """(header, data) of every member, as droot's tar codec reads them."""
    import io

    from droot.core.tarformat import HeaderReader, padded
    stream = io.BytesIO(archive)
    reader = HeaderReader(stream.read)
    members = []
    while (header := reader.next()) is not None:
        members.append((header, stream.read(padded(header.data_size))[:header.data_size]))
    return members


# --- a pseudo-terminal ---------------------------------------------------------------------

class PseudoTerminal:
    """A new pseudo-terminal: a child gets `terminal` as its stdin, stdout or stderr, the
    test types into and reads from `controller`. Both ends are closed when the `with`
    block ends."""

    def __init__(self):
        self.controller, self.terminal = pty.openpty()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close_terminal()
        if self.controller >= 0:
            os.close(self.controller)
            self.controller = -1

    def close_terminal(self):
        if self.terminal >= 0:
            os.close(self.terminal)
            self.terminal = -1

    @staticmethod
    def take_as_controlling():
        """A preexec_fn: the child, in a session of its own, makes its stdin (the
        terminal) its controlling terminal, as a login shell has it."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def drawn(self) -> bytes:
        """Everything written to the terminal until the last child holding it closes it
        (call once the children are started: the test's own end is closed here)."""
        self.close_terminal()
        output = b""
        while True:
            try:
                data = os.read(self.controller, 65536)
            except OSError:  # EIO: no process holds the terminal any more
                break
            if not data:
                break
            output += data
        return output


def run_with_controlling_terminal(argv) -> subprocess.CompletedProcess:
    """`argv` with a new pseudo-terminal as its controlling terminal and stdin (stdout and
    stderr captured)."""
    with PseudoTerminal() as tty:
        return subprocess.run(argv, stdin=tty.terminal, capture_output=True, text=True,
                              preexec_fn=PseudoTerminal.take_as_controlling, timeout=60)


def droot_on_terminal(*args) -> str:
    """`droot ARGS` (which must succeed) with its stderr on a pseudo-terminal: what it drew
    there."""
    with PseudoTerminal() as tty:
        process = subprocess.Popen([DROOT, *map(str, args)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=tty.terminal)
        output = tty.drawn()
        assert process.wait(timeout=120) == 0, output
    return output.decode(errors="replace")


# --- loopback services ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_runsv(runsv: subprocess.Popen, service: Path):
    """Stop runit's runsv of `service` and its app (TERM, then KILL), then runsv itself."""
    subprocess.run(["sv", "-w", "10", "force-shutdown", str(service)], capture_output=True,
                   timeout=60)
    subprocess.run(["sv", "exit", str(service)], capture_output=True, timeout=60)
    try:
        runsv.wait(timeout=15)
    except subprocess.TimeoutExpired:
        runsv.kill()
        runsv.wait()


# --- the Docker engine -------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client of a running engine; starts dockerd if none answers."""
    import docker
    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        subprocess.run([str(Path(__file__).parent.parent / "scripts" / "start-dockerd.sh")],
                       check=True)
        client = docker.from_env()
        client.ping()
    yield client
    client.close()


def docker_build(client, context: Path, tag: str) -> str:
    """Build the Dockerfile in `context` as `tag`; returns the image ID."""
    image, _ = client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    return image.id


def docker_archive(client, context: Path, tag: str, archive: Path) -> str:
    """The Dockerfile in `context` built as `tag`, saved to the file `archive` and removed
    from the engine; returns the source `docker-archive:ARCHIVE` (the same bytes at every
    export)."""
    docker_build(client, context, tag)
    with open(archive, "wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    client.images.remove(tag, force=True)
    return f"docker-archive:{archive}"


@contextlib.contextmanager
def busybox_image_with_blob(client, context: Path, name: str, blob_mib: int,
                            zeros: bool = False):
    """A FROM-scratch busybox image with `blob_mib` MiB of random data in /blob (which no
    compression shrinks; with `zeros`, zero bytes, which compression shrinks ~30,000
    times), tagged per run so that two test runs do not collide; removed on exit. Yields
    its tag."""
    make_busybox_root(context / "rootfs")
    with open(context / "rootfs" / "blob", "wb") as blob:
        for _ in range(blob_mib):
            blob.write(bytes(1 << 20) if zeros else os.urandom(1 << 20))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    tag = f"droot-test-ship/{name}:{os.getpid()}"
    docker_build(client, context, tag)
    try:
        yield tag
    finally:
        client.images.remove(tag, force=True)


@pytest.fixture(scope="session")
def busybox_image(docker_client, tmp_path_factory) -> str:
    """`droot-test/busybox:PID`: FROM scratch with busybox, an ENV, a USER-less CMD. Tagged
    per test session: another session on the same engine removes its own at its end."""
    context = tmp_path_factory.mktemp("busybox-image")
    make_busybox_root(context / "rootfs")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        'ENV PATH=/bin GREETING="hello from droot"\n'
        "WORKDIR /\n"
        'CMD ["/bin/sh", "-c", "echo $GREETING"]\n')
    tag = f"droot-test/busybox:{os.getpid()}"
    docker_build(docker_client, context, tag)
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except Exception:
        pass


# --- an S3-compatible server -------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server in its own process on loopback. Yields its endpoint URL, and sets
    the standard AWS environment (endpoint, dummy credentials, region) for the session."""
    port = free_port()
    directory = tmp_path_factory.mktemp("moto")
    log = open(directory / "moto.log", "w")
    # Its request recorder (off until a test starts it, see s3_requests) writes here.
    environment = {**os.environ, "MOTO_RECORDER_FILEPATH": str(directory / "requests.jsonl")}
    process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        wait_for_port(port, process, "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        saved = {k: os.environ.get(k) for k in (*AWS_ENV, "AWS_ENDPOINT_URL")}
        os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
        try:
            yield endpoint
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        stop(process)
        log.close()


@contextlib.contextmanager
def s3_requests(endpoint: str):
    """Record the requests the S3 server receives in the block, with moto's own request
    recorder (server side: what reached it over HTTP). Yields a list that holds
    (method, path) pairs once the block ends."""
    import json
    import urllib.parse
    import urllib.request

    def call(action: str) -> bytes:
        method = "GET" if action == "download" else "POST"
        request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}-recording",
                                         method=method, data=None if method == "GET" else b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    requests = []
    call("reset")
    call("start")
    try:
        yield requests
    finally:
        call("stop")
    for line in call("download").decode().splitlines():
        entry = json.loads(line)
        requests.append((entry["method"], urllib.parse.urlsplit(entry["url"]).path))


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket on the S3 server (named after the test)."""
    import uuid

    import boto3
    name = f"droot-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


# --- a registry ---------------------------------------------------------------------------

def start_registry(directory: Path, htpasswd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Debian's docker-registry on a free loopback port, storing under `directory`.
    With `htpasswd`, it asks for basic auth. Returns the process and `127.0.0.1:PORT`."""
    port = free_port()
    auth = ""
    if htpasswd:
        auth = f"auth:\n  htpasswd:\n    realm: droot-test\n    path: {htpasswd}\n"
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth)
    log = open(directory / "registry.log", "w")
    process = subprocess.Popen(["docker-registry", "serve", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for_port(port, process, "docker-registry")
    except Exception:
        stop(process)
        raise
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """An open registry on loopback; yields `127.0.0.1:PORT` (Docker pushes to loopback
    registries over plain HTTP without configuration)."""
    process, address = start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    stop(process)


# --- the host as it was ---------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def remove_new_droot_parent_cgroups():
    """The limit tests make droot create its parent cgroups (`droot/` under each
    hierarchy); those the session found absent are removed at its end."""
    import glob
    parents = "/sys/fs/cgroup/*/droot"
    before = set(glob.glob(parents))
    yield
    for parent in set(glob.glob(parents)) - before:
        try:
            os.rmdir(parent)
        except OSError:  # a droot app still runs there: not the tests' to remove
            pass


class OpenWatch:
    """inotify(7) IN_OPEN on some paths: which of them anyone opened (an O_PATH descriptor,
    which opens nothing, does not count), and how often (closes are watched too: inotify
    merges an event into an unread identical one, so two opens in a row would count once)."""

    IN_OPEN, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE = 0x20, 0x08, 0x10

    def __init__(self, paths):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self._paths = {}
        mask = self.IN_OPEN | self.IN_CLOSE_WRITE | self.IN_CLOSE_NOWRITE
        for path in paths:
            watch = self._libc.inotify_add_watch(self._fd, str(path).encode(), mask)
            assert watch >= 0, os.strerror(ctypes.get_errno())
            self._paths[watch] = path

    def opened(self) -> set:
        return set(self.opens())

    def opens(self) -> collections.Counter:
        """How often each watched path was opened since the last call."""
        found = collections.Counter()
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                watch, mask, _, length = struct.unpack_from("iIII", data, offset)
                if mask & self.IN_OPEN:
                    found[self._paths[watch]] += 1
                offset += 16 + length

    def close(self):
        os.close(self._fd)
