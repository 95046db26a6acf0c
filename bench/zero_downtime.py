#!/usr/bin/env python3
"""Failed requests across a deploy and restart, under wrk: droot with a socket-holding
supervisor against a naive restart.

The app is the restart tests' static C server (tests/deploy/app_server.c: it answers on
the socket Server::Starter passes, with the release's /body) in a busybox root. Both ways
run it under Server::Starter's start_server and `droot run --preserve-fds 1`, and deploy a
second release while wrk (one thread, --connections, --duration seconds, loopback) runs:

    droot + start_server  `droot deploy --restart pidfile:PID_FILE --check CMD`: start_server
                          keeps the listening socket and starts the new release's worker
                          before it stops the old one
    naive restart         the control: `droot deploy`, then the supervisor is stopped and
                          started again (kill and start: the socket closes meanwhile)

Failed = non-2xx answers + socket errors (connect, read, write, timeout), as wrk counts
them. Medians of interleaved rounds; each round also checks that the new release answers.

    sudo .venv/bin/python bench/zero_downtime.py [--rounds 3] [--duration 6] [--connections 8]
"""

import argparse
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DROOT = REPO / ".venv" / "bin" / "droot"
sys.path.insert(0, str(REPO))  # the repository, for its tests package
from tests.conftest import free_port, make_busybox_root  # noqa: E402  (the tests' busybox root)
from apps import failed_requests  # noqa: E402  (bench/ is this script's directory)

CHECK = f"{sys.executable} -I {REPO / 'tests' / 'deploy' / 'http_check.py'}"


def release_archive(work: Path, server: Path, body: str) -> Path:
    root = make_busybox_root(work / f"src-{body}")
    (root / "app").mkdir()
    shutil.copy2(server, root / "app" / "server")
    (root / "body").write_text(body)
    archive = work / f"{body}.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", root, "-cf", archive, "."], check=True)
    return archive


def deploy(root: Path, archive: Path, *options):
    with open(archive, "rb") as stdin:
        subprocess.run([DROOT, "deploy", "--root", root, *options], stdin=stdin, check=True,
                       stderr=subprocess.DEVNULL)


def answer(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return response.read().decode()


def start_server(root: Path, port: int, work: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["start_server", f"--port=127.0.0.1:{port}=3", f"--pid-file={work / 'pid'}",
         "--interval=1", f"--log-file={work / 'start_server.log'}", "--",
         DROOT, "run", "--root", root, "--preserve-fds", "1", "--", "/app/server"],
        stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            answer(port)
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("start_server's worker never answered: see "
                                 f"{work / 'start_server.log'}")
            time.sleep(0.1)


def stop(process: subprocess.Popen):
    process.send_signal(signal.SIGTERM)  # start_server stops its worker, then itself
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wrk_failed(output: str) -> tuple[int, int]:
    """(requests, failed) from wrk's report."""
    return int(re.search(r"(\d+) requests in", output)[1]), failed_requests(output)


def one_round(way: str, archives: dict, work: Path, options) -> tuple[int, int]:
    root = work / way.replace(" ", "-").replace("+", "") / "app"
    if root.parent.exists():
        subprocess.run([DROOT, "rm", "--root", root], check=True, stderr=subprocess.DEVNULL)
    deploy(root, archives["v1"])
    port = free_port()
    supervisor = start_server(root, port, root.parent)
    try:
        load = subprocess.Popen(["wrk", "-t1", f"-c{options.connections}",
                                 f"-d{options.duration}s", f"http://127.0.0.1:{port}/"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(options.duration / 3)  # the load runs before, during and after the deploy
        if way == "droot + start_server":
            deploy(root, archives["v2"], "--restart", f"pidfile:{root.parent / 'pid'}",
                   "--check", f"{CHECK} {port}")
        else:
            deploy(root, archives["v2"])
            stop(supervisor)
            supervisor = start_server(root, port, root.parent)
        output, _ = load.communicate(timeout=options.duration + 60)
        time.sleep(1.5)  # start_server's --interval: the old worker is gone
        if answer(port) != "v2":
            raise SystemExit(f"{way}: the new release does not answer")
        return wrk_failed(output)
    finally:
        stop(supervisor)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="droot-bench-zero-") as directory:
        work = Path(directory)
        server = work / "server"
        subprocess.run(["gcc", "-static", "-O1", "-o", server,
                        REPO / "tests" / "deploy" / "app_server.c"], check=True)
        archives = {body: release_archive(work, server, body) for body in ("v1", "v2")}
        ways = ["droot + start_server", "naive restart"]
        results = {way: [] for way in ways}
        for number in range(options.rounds):
            random.shuffle(ways)
            for way in ways:
                results[way].append(one_round(way, archives, work, options))
                requests, failed = results[way][-1]
                print(f"round {number + 1}: {way:21} {requests:7} requests, {failed} failed",
                      file=sys.stderr)
    print(f"\nwrk -t1 -c{options.connections} -d{options.duration}s across a deploy and "
          f"restart, {options.rounds} interleaved rounds, medians\n")
    print("| way | requests | failed requests |")
    print("|---|---:|---:|")
    for way, samples in results.items():
        print(f"| {way} | {statistics.median(r for r, _ in samples):.0f} "
              f"| {statistics.median(f for _, f in samples):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
