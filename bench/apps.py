#!/usr/bin/env python3
"""Real apps under droot, Docker and on the host: req/s and p99 latency with wrk.

Apps built from Debian packages by bench/make-app-images.sh: nginx serving a 1 KiB static
page (nginx-filecache: the same with nginx's open_file_cache, so no open(2) per request),
and gunicorn serving a tiny WSGI app. Each runs four ways, from the same bits
(droot deploys what it exports from the engine's image):

    host              no container: plain chroot(8) into the same release, with the host's
                      /dev and a /proc mounted in a private mount namespace (the app needs
                      them; the namespace only keeps the mounts off the host's table)
    droot run         `droot run --root R` with its defaults (the image's own command)
    docker run -p     the port published on 127.0.0.1 (the engine's default proxy)
    docker --net host the host's network stack, no port mapping

wrk (one thread, --connections, --duration seconds, loopback only) measures each in
interleaved rounds: every round starts, warms up, measures and stops each way of each app
once, an app's ways back to back in a shuffled order (the apps shuffled too), so that a
way and its host are seconds apart and a noisy neighbour hits them alike. Medians of the
rounds, and ratios to the host, and the median of each round's ratio to the host of that
round (a paired figure). The servers run one
worker (nginx: worker_processes 1; gunicorn: one gthread worker, 4 threads) and wrk one
thread; with --pin, the server side is held to CPU 1 (taskset, docker --cpuset-cpus, and
the engine's userland proxy, which relays every connection of `docker run -p`) and wrk to
CPU 0, so they do not trade places between rounds.

With --side-by-side, each way instead runs at the same time as the host, both servers on
the same CPU and a wrk for each on the other, for --rounds rounds: the two share whatever
the machine gives that CPU at that moment, so a neighbour's load slows both alike, and the
ratio of their req/s is the ratio of what a request costs each (it moves by ~2% from round
to round here, where interleaved rounds move by 15% and more). The host way then listens on
ALT_PORT: its copy of a file of the release that names APP_PORT is mounted over it in the
host way's own mount namespace, and an argument naming it is changed (the release itself
is never changed). `docker run -p` has the engine's proxy on that CPU too, two processes
against the host's one: its share, and its ratio, come out too high.

    sudo .venv/bin/python bench/apps.py [--rounds 5] [--duration 5] [--connections 16]
                                        [--only nginx,nginx-filecache,gunicorn] [--ways host,...] [--pin]
                                        (a way 'droot run OPTION...', e.g. 'droot run
                                        --no-dropcaps', shows what a protection costs)
                                        [--side-by-side] [--json FILE]
"""

import argparse
import json
import os
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DROOT = REPO / ".venv" / "bin" / "droot"
CACHE = Path(os.environ.get("DROOT_BENCH_CACHE", "/var/tmp/droot-bench"))
APP_PORT = 8080      # inside: what each image listens on
MAPPED_PORT = 18080  # docker run -p 127.0.0.1:MAPPED_PORT:APP_PORT
ALT_PORT = 8081      # --side-by-side: the host way's, while the other way has APP_PORT
# Files of an app's release that name APP_PORT (and what else two servers of one release
# must not share), rewritten for the host way's copy under --side-by-side.
PORT_FILES = {"etc/nginx/nginx.conf": ((f"listen {APP_PORT}", f"listen {ALT_PORT}"),
                                       ("/tmp/nginx.pid", "/tmp/nginx-beside.pid"))}
CONTAINER = "droot-bench-app"
WAYS = ("host", "droot run", "docker run -p", "docker --net host")


def build_images() -> dict[str, str]:
    """app name → image tag, built (once) by make-app-images.sh."""
    tags = subprocess.run([REPO / "bench" / "make-app-images.sh"], check=True,
                          capture_output=True, text=True).stdout.split()
    return {tag.split("/app-")[1].split(":")[0]: tag for tag in tags}


def deploy(tag: str, root: Path):
    """The image, exported by droot, as the release at `root` (replacing an older one)."""
    export = subprocess.Popen([DROOT, "export", tag, "--compress", "none"],
                              stdout=subprocess.PIPE)
    subprocess.run([DROOT, "deploy", "--root", root, "--keep", "1"], stdin=export.stdout,
                   check=True, stderr=subprocess.DEVNULL)
    export.stdout.close()
    if export.wait():
        raise SystemExit(f"droot export {tag} failed")


def image_command(tag: str) -> tuple[list[str], str]:
    config = json.loads(subprocess.run(["docker", "image", "inspect", tag], check=True,
                                       capture_output=True, text=True).stdout)[0]["Config"]
    return (config.get("Entrypoint") or []) + (config.get("Cmd") or []), config.get("WorkingDir") or "/"


SERVER_CPU, WRK_CPU = "1", "0"  # with --pin


def start(way: str, tag: str, root: Path, pin: bool = False,
          beside: Path | None = None) -> tuple[subprocess.Popen | None, int]:
    """Start the app one way; returns (its process, or None for a container) and its port.
    With `beside` (a directory for its rewritten files), the host way listens on ALT_PORT."""
    if way.startswith("docker"):
        network = (["-p", f"127.0.0.1:{MAPPED_PORT}:{APP_PORT}"] if way == "docker run -p"
                   else ["--network", "host"])
        cpus = ["--cpuset-cpus", SERVER_CPU] if pin else []
        subprocess.run(["docker", "run", "-d", "--rm", "--name", CONTAINER, *network, *cpus,
                        tag], check=True, stdout=subprocess.DEVNULL)
        if pin and way == "docker run -p":
            pin_port_proxy()
        return None, MAPPED_PORT if way == "docker run -p" else APP_PORT
    if way.startswith("droot run"):  # "droot run OPTION...": what a protection costs
        argv = [str(DROOT), "run", "--root", str(root), *way.split()[2:]]
    else:
        command, workdir = image_command(tag)
        overrides = ""
        if beside is not None:
            command = [arg.replace(f":{APP_PORT}", f":{ALT_PORT}") for arg in command]
            for path, copy in rewrite_port_files(root, beside):
                overrides += f'mount --bind {shlex.quote(str(copy))} "$1/{path}" && '
        script = ('mount --make-rprivate / && mount --rbind /dev "$1/dev" && '
                  f'mount -t proc proc "$1/proc" && {overrides}'
                  'exec chroot "$1" /usr/bin/env -C "$2" "${@:3}"')
        argv = ["unshare", "-m", "bash", "-c", script, "host", str(root.resolve()), workdir,
                *command]
    if pin:
        argv = ["taskset", "-c", SERVER_CPU, *argv]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    return process, APP_PORT if beside is None else ALT_PORT


def rewrite_port_files(root: Path, directory: Path) -> list[tuple[str, Path]]:
    """The release's PORT_FILES, rewritten into `directory`: (path in the release, its
    rewritten copy) each."""
    rewritten = []
    for path, replacements in PORT_FILES.items():
        original = root / path
        if not original.is_file():
            continue
        text = original.read_text()
        for old, new in replacements:
            text = text.replace(old, new)
        copy = directory / path.replace("/", "_")
        copy.write_text(text)
        rewritten.append((path, copy))
    return rewritten


def pin_port_proxy():
    """Hold the engine's userland proxy of the published port to the server's CPU: it
    copies every byte of every connection to 127.0.0.1, so it serves as much as the app
    does (unpinned, it would borrow wrk's CPU and the server side would have two)."""
    proxies = subprocess.run(["pgrep", "-f", f"docker-proxy .*-host-port {MAPPED_PORT} "],
                             capture_output=True, text=True).stdout.split()
    if not proxies:
        raise SystemExit(f"no docker-proxy for port {MAPPED_PORT} to pin (is the engine's "
                         "userland proxy off?)")
    for pid in proxies:
        subprocess.run(["taskset", "-a", "-p", "-c", SERVER_CPU, pid], check=True,
                       stdout=subprocess.DEVNULL)


def stop(process: subprocess.Popen | None):
    if process is None:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_until_serving(port: int, process, timeout: float = 60):
    deadline = time.monotonic() + timeout
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the app exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                connection.sendall(request)
                if connection.recv(16).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing served 200 on 127.0.0.1:{port} in {timeout} s")


def wait_until_free(port: int, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.1)
    raise SystemExit(f"127.0.0.1:{port} still answers after the app was stopped")


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port: int, duration: int, connections: int, pin: bool = False) -> dict:
    """One wrk run: req/s, p99 latency (ms) and failed requests (non-2xx, socket errors)."""
    return wrk_at_once([port], duration, connections, pin)[0]


def wrk_at_once(ports: list[int], duration: int, connections: int, pin: bool) -> list[dict]:
    """A wrk run on each port, all at the same time: wrk's result for each."""
    runs = [subprocess.Popen([*(["taskset", "-c", WRK_CPU] if pin else []), "wrk", "-t1",
                              f"-c{connections}", f"-d{duration}s", "--latency",
                              f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
            for port in ports]
    results = []
    for run in runs:
        output = run.communicate(timeout=duration + 60)[0]
        if run.returncode:
            raise SystemExit(f"wrk exited with status {run.returncode}")
        results.append(wrk_result(output))
    return results


def wrk_result(output: str) -> dict:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    return {"rps": rate, "p99_ms": float(p99[1]) * _UNIT[p99[2]],
            "failed": failed_requests(output)}


def failed_requests(output: str) -> int:
    """The requests wrk's report counts as failed: non-2xx answers and socket errors."""
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    return (int(non_2xx[1]) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors
                                                  else 0)


def measure(way, tag, root, options) -> dict:
    process, port = start(way, tag, root, options.pin)
    try:
        wait_until_serving(port, process)
        wrk(port, 1, options.connections, options.pin)  # warm-up: caches, accept queues
        return wrk(port, options.duration, options.connections, options.pin)
    finally:
        stop(process)
        wait_until_free(port)


def measure_side_by_side(way, tag, root, options) -> list[tuple[dict, dict]]:
    """--rounds of (the way's result, the host's), each run at the same time as the other
    (see the module)."""
    with tempfile.TemporaryDirectory(prefix="droot-apps-") as beside:
        host, host_port = start("host", tag, root, options.pin, beside=Path(beside))
        try:
            other, port = start(way, tag, root, options.pin)
            try:
                wait_until_serving(host_port, host)
                wait_until_serving(port, other)
                wrk_at_once([port, host_port], 1, options.connections, options.pin)  # warm-up
                return [tuple(wrk_at_once([port, host_port], options.duration,
                                          options.connections, options.pin))
                        for _ in range(options.rounds)]
            finally:
                stop(other)
                wait_until_free(port)
        finally:
            stop(host)
            wait_until_free(host_port)


def side_by_side(tags, roots, ways, options) -> dict:
    """{(app, way): [(its result, the host's beside it), ...]} for each way but the host."""
    pairs = {}
    for name in tags:
        for way in ways[1:]:
            pairs[name, way] = measure_side_by_side(way, tags[name], roots[name], options)
            for number, (result, host) in enumerate(pairs[name, way]):
                print(f"round {number + 1}: {name:8} {way:17} {result['rps']:9.0f} req/s beside "
                      f"the host's {host['rps']:9.0f} ({result['rps'] / host['rps']:.3f})",
                      file=sys.stderr)
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", help="comma-separated apps (nginx, nginx-filecache, gunicorn)")
    parser.add_argument("--ways", default=",".join(WAYS),
                        help=f"comma-separated ways, host first (default: {','.join(WAYS)})")
    parser.add_argument("--json", type=Path, help="also write the medians to FILE (for plot.py)")
    parser.add_argument("--pin", action="store_true",
                        help=f"server on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU}")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each way at the same time as the host, on the same CPU "
                             "(implies --pin)")
    options = parser.parse_args()
    options.pin = options.pin or options.side_by_side
    if os.geteuid() != 0:
        raise SystemExit("apps.py needs root (droot deploy and run, chroot, docker)")
    stop(None)  # a container a killed run left
    tags = build_images()
    if options.only:
        tags = {name: tag for name, tag in tags.items() if name in options.only.split(",")}
    roots = {}
    for name, tag in tags.items():
        roots[name] = CACHE / "apps" / name
        deploy(tag, roots[name])
    ways = options.ways.split(",")
    if ways[0] != "host" or not all(way in WAYS or way.startswith("droot run ")
                                    for way in ways):
        raise SystemExit(f"--ways: host first, then any of {', '.join(WAYS[1:])} or "
                         "'droot run OPTION...'")
    # each way's results, and the host's each is paired with (the same round's, or beside it)
    samples, hosts = {}, {}
    if options.side_by_side:
        for (name, way), pairs in side_by_side(tags, roots, ways, options).items():
            samples[name, way] = [result for result, _ in pairs]
            hosts[name, way] = [host for _, host in pairs]
            samples.setdefault((name, "host"), []).extend(hosts[name, way])
            hosts[name, "host"] = samples[name, "host"]
        kind = "rounds of each way beside the host"
    else:
        samples = {(name, way): [] for name in tags for way in ways}
        hosts = {(name, way): samples[name, "host"] for name in tags for way in ways}
        for number in range(options.rounds):
            order = []
            for name in random.sample(list(tags), len(tags)):
                order += [(name, way) for way in random.sample(ways, len(ways))]
            for name, way in order:
                result = measure(way, tags[name], roots[name], options)
                samples[name, way].append(result)
                print(f"round {number + 1}: {name:8} {way:17} {result['rps']:9.0f} req/s  p99 "
                      f"{result['p99_ms']:6.2f} ms  failed {result['failed']}", file=sys.stderr)
        kind = "interleaved rounds"
    medians = {}
    for (name, way), results in sorted(samples.items(), key=lambda item: item[0][1] != "host"):
        medians.setdefault(name, {})[way] = {
            key: statistics.median(result[key] for result in results)
            for key in ("rps", "p99_ms", "failed")}
        medians[name][way]["paired_ratio"] = statistics.median(
            result["rps"] / host["rps"] for result, host in zip(results, hosts[name, way]))
        medians[name][way]["host_rps"] = statistics.median(host["rps"]
                                                           for host in hosts[name, way])
    print(f"\nwrk -t1 -c{options.connections} -d{options.duration}s on 127.0.0.1, "
          f"{options.rounds} {kind}{', pinned' if options.pin else ''}, medians "
          "(ratio to the host), and the median of the rounds' req/s ratios to the host\n")
    if options.side_by_side:  # each way has its own host: only its ratios compare
        print("| app | way | req/s | the host's beside it | ratio (paired) | p99 ms | failed |")
        print("|---|---|---:|---:|---:|---:|---:|")
    else:
        print("| app | way | req/s | paired | p99 ms | failed |")
        print("|---|---|---:|---:|---:|---:|")
    for name, ways in medians.items():
        host = ways["host"]
        for way, median in ways.items():
            if options.side_by_side and way == "host":
                continue
            rate = (f"{median['rps']:.0f} | {median['host_rps']:.0f}" if options.side_by_side
                    else f"{median['rps']:.0f} ({median['rps'] / host['rps']:.2f})")
            print(f"| {name} | {way} | {rate} | {median['paired_ratio']:.2f} "
                  f"| {median['p99_ms']:.2f} ({median['p99_ms'] / host['p99_ms']:.2f}) "
                  f"| {median['failed']:.0f} |")
    if options.json:
        options.json.write_text(json.dumps(
            {"rounds": options.rounds, "duration": options.duration,
             "side_by_side": options.side_by_side,
             "connections": options.connections, "pinned": options.pin, "medians": medians,
             "samples": {f"{name} / {way}": results
                         for (name, way), results in samples.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
