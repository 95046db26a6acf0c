"""A simulated fleet on one machine, with the real kernel: hosts as network namespaces,
each linked by a veth pair to a bridge in the S3 server's own namespace; traffic never
leaves the machine, and nothing is added to the host's own namespace (the namespaces'
names under /run/netns aside, removed at the end). Each host has its own deploy root in
a directory of the caller's.

    with Fleet(workdir, hosts=16) as fleet:
        fleet.start_s3(store_dir)                  # moto, see fleet_s3.py
        process = fleet.pull(3, "s3://bucket/app.tar.gz", "--retries", "5")

Used by tests/fleet and bench/fleet.py.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.prefix) / "bin"
DROOT = str(VENV_BIN / "droot")
SUBNET = "10.213.0"
S3_ADDRESS = f"{SUBNET}.1"
S3_PORT = 5000
AWS = {"AWS_ACCESS_KEY_ID": "fleet", "AWS_SECRET_ACCESS_KEY": "fleet",
       "AWS_DEFAULT_REGION": "us-east-1"}


def make_release(work: Path, number: int, blob: int, bucket: str = "fleet") -> Path:
    """Release `number`: a busybox root with /MARKER and `blob` bytes of random data, as a
    gzip'd tar with droot's sidecar in the store directory (STORE/BUCKET/app-N.tar.gz).
    Returns the source tree."""
    from tests.conftest import make_busybox_root
    source = make_busybox_root(work / f"release{number}")
    (source / "MARKER").write_text(f"release {number}\n")
    if blob:
        (source / "blob").write_bytes(os.urandom(blob))
    archive = subprocess.run(["tar", "--numeric-owner", "-C", source, "-czf", "-", "."],
                             check=True, capture_output=True).stdout
    directory = work / "store" / bucket
    directory.mkdir(parents=True, exist_ok=True)
    name = f"app-{number}.tar.gz"
    (directory / name).write_bytes(archive)
    (directory / f"{name}.sha256").write_text(f"{hashlib.sha256(archive).hexdigest()}  {name}\n")
    return source


def ip(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Fleet:
    def __init__(self, workdir: Path, hosts: int = 16):
        self.workdir = workdir
        self.count = hosts
        # Unique per run: two test sessions may build fleets at the same time.
        tag = f"drf{os.getpid()}"
        self.s3_ns = f"{tag}-s3"
        self.host_ns = [f"{tag}-h{n}" for n in range(hosts)]
        self.s3_process = None
        self.processes: list[subprocess.Popen] = []
        self.environment = {}

    # --- the network -------------------------------------------------------------------

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _build(self):
        ip("netns", "add", self.s3_ns)
        ip("-n", self.s3_ns, "link", "set", "lo", "up")
        ip("-n", self.s3_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.s3_ns, "addr", "add", f"{S3_ADDRESS}/24", "dev", "br0")
        ip("-n", self.s3_ns, "link", "set", "br0", "up")
        for number, namespace in enumerate(self.host_ns):
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
            # The host's end is its eth0; the S3 side's end, hN, is a port of the bridge.
            ip("-n", self.s3_ns, "link", "add", f"h{number}", "type", "veth", "peer", "name",
               "eth0", "netns", namespace)
            ip("-n", self.s3_ns, "link", "set", f"h{number}", "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{SUBNET}.{10 + number}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            self.root(number).parent.mkdir(parents=True, exist_ok=True)

    def close(self):
        """Stop every process started here, then remove the namespaces (their veths and
        the bridge go with them)."""
        for process in [*self.processes, self.s3_process]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        for namespace in [*self.host_ns, self.s3_ns]:
            ip("netns", "del", namespace, check=False)

    def link(self, host: int, up: bool):
        """The host's own network interface up or down (a cable cut, then mended)."""
        ip("-n", self.host_ns[host], "link", "set", "eth0", "up" if up else "down")

    def throttle(self, host: int, rate: str):
        """Limit what the S3 side sends to the host to `rate` (tc's token bucket), so that
        its download lasts long enough for a fault to land in the middle of it."""
        subprocess.run(["tc", "-n", self.s3_ns, "qdisc", "replace", "dev", f"h{host}", "root",
                        "tbf", "rate", rate, "burst", "32kb", "latency", "1s"], check=True)

    def received(self, host: int) -> int:
        """Bytes the host's interface has received so far."""
        shown = json.loads(ip("-n", self.host_ns[host], "-s", "-j", "link", "show",
                              "eth0").stdout)
        return shown[0]["stats64"]["rx"]["bytes"]

    # --- the S3 server -----------------------------------------------------------------

    def start_s3(self, store: Path, recording: Path | None = None):
        """moto in the S3 namespace with the objects of `store` (see fleet_s3.py); returns
        once it answers the hosts. Again after kill_s3: a restart, same address, same
        objects."""
        environment = {**os.environ, **AWS}
        if recording:
            environment["MOTO_RECORDER_FILEPATH"] = str(recording)
        log = open(self.workdir / "moto.log", "a")
        self.s3_process = subprocess.Popen(
            ["ip", "netns", "exec", self.s3_ns, sys.executable, str(HERE / "fleet_s3.py"),
             str(store), S3_ADDRESS, str(S3_PORT)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=environment)
        log.close()
        line = self.s3_process.stdout.readline()
        if line.strip() != "ready":
            self.s3_process.kill()
            raise RuntimeError(f"the fleet's S3 server did not start: see "
                               f"{self.workdir / 'moto.log'}")

    def kill_s3(self):
        """The S3 server dies at once (SIGKILL): its connections close mid-transfer."""
        self.s3_process.kill()
        self.s3_process.wait()

    def s3_api(self, path: str, method: str = "POST") -> bytes:
        """A request to moto's own API (the request recorder), from inside the S3
        namespace."""
        code = ("import sys, urllib.request; r = urllib.request.Request(sys.argv[1], "
                "method=sys.argv[2], data=None if sys.argv[2] == 'GET' else b''); "
                "sys.stdout.buffer.write(urllib.request.urlopen(r, timeout=60).read())")
        return subprocess.run(["ip", "netns", "exec", self.s3_ns, sys.executable, "-c", code,
                               f"http://{S3_ADDRESS}:{S3_PORT}/moto-api/{path}", method],
                              check=True, capture_output=True).stdout

    # --- the hosts ---------------------------------------------------------------------

    def root(self, host: int) -> Path:
        return self.workdir / f"host{host}" / "app"

    def pull(self, host: int, src: str, *args, root: Path | None = None) -> "Pull":
        """`droot pull SRC --root ROOT ARGS` started inside the host's namespace (ROOT: the
        host's own, unless `root` is given)."""
        return self.start(host, [DROOT, "pull", src, "--root", str(root or self.root(host)),
                                 *map(str, args)])

    def start(self, host: int, command: list[str]) -> "Pull":
        """`command` started inside the host's namespace, with the fleet's S3 endpoint in
        its environment. Each host's boto3 names itself in its User-Agent (app/hostN), so
        that moto's recorder tells the hosts apart."""
        environment = {**os.environ, **AWS, **self.environment,
                       "AWS_ENDPOINT_URL": f"http://{S3_ADDRESS}:{S3_PORT}",
                       "AWS_SDK_UA_APP_ID": f"host{host}"}
        # nsenter joins the network namespace only; `ip netns exec` would also make a mount
        # namespace and mount /sys in it for every command, which 16 at once wait on.
        process = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.host_ns[host]}",
                                    *command],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env=environment)
        self.processes.append(process)
        return Pull(process)

    def wait_until(self, condition, what: str, limit: float = 300):
        """Poll `condition` until it holds. `limit` only stops a hung test (with `what`
        in the message); it is no assertion on how long anything takes."""
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}")
            time.sleep(0.05)


class Pull:
    """A running `droot pull` (or other command): its stderr collected line by line as it
    comes."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> int:
        status = self.process.wait()
        self._reader.join()
        return status
