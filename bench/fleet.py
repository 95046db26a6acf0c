#!/usr/bin/env python3
"""Does a rollout to 16 hosts take much longer than to one? The fleet of tests/fleet
(hosts as network namespaces linked by veth to a bridge in a moto S3 server's namespace,
tests/fleet/netfleet.py) pulls one release: all 16 hosts at once, against one host alone,
in interleaved rounds (which goes first alternates). Each pull goes to a new root.

Reports the medians of the wall times (from the start of the first pull to the end of the
last), their ratio (goal: 16 hosts <= 2x one host), the CPU seconds per pull alone and in
the fleet (their sum over this machine's cores is the floor of the fleet's time here: 16
simulated hosts share this machine's CPUs, where 16 real ones would not), and the S3
requests per host, counted by moto's request recorder in one more, untimed, rollout (each
host's boto3 names itself in its User-Agent).

Release: a busybox root with --blob-mib MiB of random data (default 3; about 4 MB gzip'd).
The hosts' roots are on one tmpfs by default: 16 real hosts have 16 disks, and here each
deploy's syncfs would wait for the one disk all of them (and the machine's other work)
share; --disk puts them in a temporary directory on the disk instead.
--link-rate RATE (tc's units: 100mbit, 1gbit) limits what each host's link carries from the
S3 side, as a real host's network interface or its share of the store's throughput does:
here the 16 hosts share this machine's 2 CPUs, so without a limit the fleet measures the
CPUs (its floor is printed); with one, each host waits on its own link, as 16 real hosts
would, and the ratio shows whether the store and droot let them all go at once.
--host-cpu FRACTION gives each host its own CPU, as 16 real hosts have: each host's
processes (the pull and its children, or the download) run in a cgroup of their own with a
CPU quota of FRACTION of one CPU, alone as in the fleet; the S3 server's are not capped (it
is the shared thing whose scaling is measured). With 16 x FRACTION CPUs leaving the server
some of this machine's (0.1 for 16 hosts on 2 CPUs), one host's capped time is the fleet's
floor, and the ratio shows whether anything shared (the S3 server, the store, droot's
locking) slows the hosts down when all go at once.
The machine is shared and noisy: compare the ratios of one run, not absolute times.

Usage: sudo .venv/bin/python bench/fleet.py [--rounds 5] [--hosts 16] [--blob-mib 3] [--disk]
                                            [--link-rate RATE] [--host-cpu FRACTION]
"""

import argparse
import collections
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository, for its tests package

from tests.fleet.netfleet import DROOT, Fleet, make_release  # noqa: E402

SRC = "s3://fleet/app-2.tar.gz"
CGROUP = Path("/sys/fs/cgroup")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds a running process has used (the S3 server's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The download alone, as cheaply as a client can: the archive read to its end through a
# presigned URL, by an interpreter that imports nothing but urllib.
DOWNLOAD = ("import sys, urllib.request\nwith urllib.request.urlopen(sys.argv[1]) as r:\n"
            "    while r.read(1 << 20): pass")


def cpu_hierarchy() -> Path:
    """The cgroup hierarchy with the cpu controller: v1's own, or a v2 one (the whole tree,
    or the 'unified' one beside v1's) that gives it to the root's children."""
    if (CGROUP / "cpu" / "cpu.cfs_quota_us").exists():
        return CGROUP / "cpu"
    for top in (CGROUP, CGROUP / "unified"):
        control = top / "cgroup.subtree_control"
        if control.exists() and "cpu" in control.read_text().split():
            return top
    raise SystemExit("bench: --host-cpu needs the cgroup cpu controller: in no hierarchy")


@contextlib.contextmanager
def host_cgroups(hosts: int, fraction: float):
    """Yields a cgroup per host, with a CPU quota of `fraction` of one CPU, under one named
    for this run; removes them at the end, once their processes have exited."""
    top = cpu_hierarchy()
    v1 = not (top / "cgroup.subtree_control").exists()
    run = top / f"droot-bench-fleet-{os.getpid()}"
    run.mkdir()
    cgroups = []
    try:
        # As much weight as the hosts' processes would have without it: else the fleet
        # competes with the machine's other work as one process, not 16.
        weight = run / ("cpu.shares" if v1 else "cpu.weight")
        weight.write_text(str(hosts * int(weight.read_text())))
        if not v1:
            (run / "cgroup.subtree_control").write_text("+cpu")
        for host in range(hosts):
            cgroup = run / f"host{host}"
            cgroup.mkdir()
            cgroups.append(cgroup)
            if v1:
                period = int((cgroup / "cpu.cfs_period_us").read_text())
                (cgroup / "cpu.cfs_quota_us").write_text(str(round(fraction * period)))
            else:
                period = int((cgroup / "cpu.max").read_text().split()[1])
                (cgroup / "cpu.max").write_text(f"{round(fraction * period)} {period}")
        yield cgroups
    finally:
        for cgroup in [*cgroups, run]:
            remove_cgroup(cgroup)


def remove_cgroup(cgroup: Path):
    """Removes `cgroup` once the processes in it have exited: killed if still there after
    10 s (an interrupted run's pull whose children outlive it)."""
    deadline = time.monotonic() + 10
    while pids := (cgroup / "cgroup.procs").read_text().split():
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    cgroup.rmdir()


def in_cgroup(cgroup: Path | None, command: list[str]) -> list[str]:
    """`command`, run in `cgroup` if one is given: its shell moves itself in before it
    execs the command, so that the command and all its children run there from the start."""
    if cgroup is None:
        return command
    return ["sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh",
            str(cgroup / "cgroup.procs"), *command]


def rollout(fleet: Fleet, hosts: list[int], directory: Path | None,
            cgroups: list[Path] | None, url: str | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds per host, the S3 server's CPU seconds) of `hosts`
    pulling at once into new roots under `directory`; or, with `url` instead, downloading
    it and nothing else. Each host runs in its own cgroup of `cgroups`, if given."""
    cpu, server = children_cpu(), process_cpu(fleet.s3_process.pid)
    start = time.perf_counter()
    pulls = []
    for host in hosts:
        command = ([sys.executable, "-I", "-S", "-c", DOWNLOAD, url] if url else
                   [DROOT, "pull", SRC, "--root", str(directory / f"host{host}" / "app")])
        pulls.append(fleet.start(host, in_cgroup(cgroups[host] if cgroups else None, command)))
    for host, pull in zip(hosts, pulls):
        if pull.wait() != 0:
            raise SystemExit(f"bench: host {host} failed: {pull.lines}")
    return (time.perf_counter() - start, (children_cpu() - cpu) / len(hosts),
            process_cpu(fleet.s3_process.pid) - server)


def presigned_url() -> str:
    """A presigned GET of the release at the fleet's S3 address (signed here: no request)."""
    import boto3
    from tests.fleet.netfleet import AWS, S3_ADDRESS, S3_PORT
    client = boto3.client("s3", endpoint_url=f"http://{S3_ADDRESS}:{S3_PORT}",
                          aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
                          region_name=AWS["AWS_DEFAULT_REGION"])
    bucket, key = SRC[len("s3://"):].split("/", 1)
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                         ExpiresIn=3600)


def requests_per_host(fleet: Fleet, hosts: list[int], directory: Path,
                      cgroups: list[Path] | None) -> dict:
    """host -> Counter of (method, what) of the requests moto received from it."""
    fleet.s3_api("recorder/reset-recording")
    fleet.s3_api("recorder/start-recording")
    rollout(fleet, hosts, directory, cgroups)
    fleet.s3_api("recorder/stop-recording")
    counts = collections.defaultdict(collections.Counter)
    for line in fleet.s3_api("recorder/download-recording", "GET").decode().splitlines():
        entry = json.loads(line)
        agent = entry["headers"].get("User-Agent", "")
        host = next((word[len("app/host"):] for word in agent.split()
                     if word.startswith("app/host")), "?")
        what = "Range" if "Range" in entry["headers"] else entry["url"].rsplit(".", 1)[-1]
        counts[host][f"{entry['method']} {what}"] += 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--blob-mib", type=int, default=3)
    parser.add_argument("--link-rate", help="each host's link from the S3 side, e.g. 100mbit")
    parser.add_argument("--disk", action="store_true",
                        help="the hosts' roots on the disk (default: one tmpfs)")
    parser.add_argument("--host-cpu", type=float, metavar="FRACTION",
                        help="each host's CPU quota, in CPUs, e.g. 0.1 (default: none)")
    args = parser.parse_args()
    if args.host_cpu is not None and args.host_cpu <= 0:
        parser.error("--host-cpu: a fraction of one CPU above 0")
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="droot-bench-fleet-") as temporary:
        work = Path(temporary)
        if not args.disk:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "droot-bench-fleet",
                            work], check=True)
        try:
            measure(args, work)
        finally:
            if not args.disk:
                subprocess.run(["umount", "-l", work], check=True)


def measure(args, work: Path):
    make_release(work, 2, args.blob_mib << 20)
    size = (work / "store" / "fleet" / "app-2.tar.gz").stat().st_size
    # Entered first, left last: the fleet's processes are gone before its cgroups go.
    with (host_cgroups(args.hosts, args.host_cpu) if args.host_cpu
          else contextlib.nullcontext()) as cgroups, Fleet(work, args.hosts) as fleet:
        fleet.start_s3(work / "store", recording=work / "requests.jsonl")
        everyone = list(range(args.hosts))
        for host in everyone if args.link_rate else []:
            fleet.throttle(host, args.link_rate)
        url = presigned_url()
        cases = {"one host": [0], f"{args.hosts} hosts": everyone}
        times, cpu, server = ({(kind, name): [] for kind in ("pull", "download")
                               for name in cases} for _ in range(3))
        rollout(fleet, [0], work / "warm-up", cgroups)
        for number in range(args.rounds):
            order = list(cases) if number % 2 == 0 else list(cases)[::-1]
            for kind in ("pull", "download"):
                for name in order:
                    hosts = cases[name]
                    directory = work / f"round{number}-{len(hosts)}"
                    wall, per_host, served = rollout(
                        fleet, hosts, directory, cgroups, url if kind == "download" else None)
                    times[kind, name].append(wall)
                    cpu[kind, name].append(per_host)
                    server[kind, name].append(served)
        counts = requests_per_host(fleet, everyone, work / "recorded", cgroups)
    cores = os.cpu_count()
    print(f"release {size / 1e6:.1f} MB gzip'd, {args.rounds} interleaved rounds, "
          f"{cores} CPUs, roots on {'the disk' if args.disk else 'tmpfs'}, links "
          f"{args.link_rate or 'unlimited'}, host CPU "
          f"{f'{args.host_cpu:g} CPU each' if args.host_cpu else 'uncapped'}; medians "
          "(shared, noisy machine: compare ratios of one run)")
    for kind, what in (("pull", "droot pull (download, verify, deploy)"),
                       ("download", "the download alone (presigned URL, urllib)")):
        one, many = (statistics.median(times[kind, name]) for name in cases)
        cpu_one, cpu_many = (statistics.median(cpu[kind, name]) for name in cases)
        server_one, server_many = (statistics.median(server[kind, name]) for name in cases)
        print(f"  {what}:")
        print(f"    one host alone     {one:6.2f} s   CPU {cpu_one:.2f} s per host, "
              f"S3 server {server_one:.2f} s")
        print(f"    {args.hosts} hosts at once  {many:6.2f} s   CPU {cpu_many:.2f} s per host, "
              f"S3 server {server_many:.2f} s")
        # The CPUs' floor; with caps, no host can be faster than one alone under its cap.
        machine = (args.hosts * cpu_one + server_many) / cores
        if args.host_cpu and one > machine:
            floor, why = one, f"one host's capped time; this machine's CPUs': {machine:.2f} s"
        else:
            floor, why = machine, f"this machine's: hosts' and server's CPU over {cores} CPUs"
        print(f"    ratio {many / one:.2f} (goal <= 2); floor ({why}) {floor:.2f} s, ratio "
              f"{floor / one:.2f}: the fleet took {many / floor:.2f}x its floor")
    per_host = [sum(counter.values()) for host, counter in counts.items() if host != "?"]
    kinds = collections.Counter()
    for counter in counts.values():
        kinds.update(counter)
    print(f"  S3 requests per host: {statistics.median(per_host):.0f} (median of "
          f"{len(per_host)}; min {min(per_host)}, max {max(per_host)}); all hosts: "
          + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))

if __name__ == "__main__":
    main()
