#!/usr/bin/env python3
"""How long `droot run --root R -- /bin/true` takes to start, next to its peers.

Every tool runs /bin/true in the same busybox root, in interleaved rounds (each round
runs every tool once, in a shuffled order, so a noisy neighbour hits all of them alike).
Prints medians in milliseconds and ratios to crun, the goal being droot ≤ 1.0.

    sudo .venv/bin/python bench/run_startup.py [--rounds 30] [--only droot,crun,...]
                                               [--json FILE]

droot is timed as users run it: the console script of the virtual environment, with its
modules byte-compiled (as `pip install` leaves them). crun 1.8 refuses hybrid cgroups, so
it runs behind `unshare -m` with the unified hierarchy unmounted in that namespace only;
that wrapper is timed on its own too. Needs root, dockerd for `docker run`.
"""

import argparse
import compileall
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DROOT = REPO / ".venv" / "bin" / "droot"
DOCKER_TAG = "droot-bench/run-startup:latest"
CRUN_WRAPPER = "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\""


def make_root(path: Path) -> Path:
    """A busybox root like the tests' (and an empty /usr, which systemd-nspawn wants)."""
    sys.path.insert(0, str(REPO))  # the repository, for its tests package
    from tests.conftest import make_busybox_root
    make_busybox_root(path)
    (path / "usr").mkdir(exist_ok=True)
    return path


def oci_bundle(runtime: str, directory: Path, root: Path) -> Path:
    """An OCI bundle running /bin/true in `root`, from the runtime's own default spec."""
    import json
    directory.mkdir()
    subprocess.run([runtime, "spec"], cwd=directory, check=True)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["root"] = {"path": str(root), "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config_path.write_text(json.dumps(config))
    return directory


def commands(root: Path, work: Path, docker: bool) -> dict[str, callable]:
    """tool name → a function of the round number giving the argv to time."""
    tools = {
        "droot run": lambda n: [str(DROOT), "run", "--root", str(root), "--", "/bin/true"],
        # droot's floor: the same interpreter starting and doing nothing
        "venv python -c pass": lambda n: [str(DROOT.parent / "python"), "-c", "pass"],
        "chroot": lambda n: ["chroot", str(root), "/bin/true"],
        "unshare -m chroot": lambda n: ["unshare", "-m", "chroot", str(root), "/bin/true"],
        "bwrap": lambda n: ["bwrap", "--bind", str(root), "/", "--proc", "/proc",
                            "--dev", "/dev", "--ro-bind", "/sys", "/sys", "/bin/true"],
        "crun wrapper alone": lambda n: ["unshare", "-m", "sh", "-c", CRUN_WRAPPER, "sh",
                                         "/bin/true"],
    }
    if shutil.which("runc"):
        runc = oci_bundle("runc", work / "runc", root)
        tools["runc run"] = lambda n: ["runc", "run", "-b", str(runc), f"droot-bench-runc-{n}"]
    if shutil.which("crun"):
        crun = oci_bundle("crun", work / "crun", root)
        tools["crun run"] = lambda n: ["unshare", "-m", "sh", "-c", CRUN_WRAPPER, "sh", "crun",
                                       "run", "-b", str(crun), f"droot-bench-crun-{n}"]
    if shutil.which("systemd-nspawn"):
        tools["systemd-nspawn"] = lambda n: ["systemd-nspawn", "-q", "--register=no",
                                             "--keep-unit", "-D", str(root), "/bin/true"]
    if docker:
        tools["docker run"] = lambda n: ["docker", "run", "--rm", DOCKER_TAG, "/bin/true"]
    return tools


def build_docker_image(root: Path, work: Path) -> bool:
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode:
        print("docker: no engine answers, skipped", file=sys.stderr)
        return False
    context = work / "docker"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    shutil.copytree(root, context / "rootfs", symlinks=True)
    subprocess.run(["docker", "build", "-q", "-t", DOCKER_TAG, str(context)], check=True,
                   stdout=subprocess.DEVNULL)
    return True


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode()[-500:]}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--only", help="comma-separated tool names (default: all found)")
    parser.add_argument("--json", type=Path, help="also write the medians to FILE (for plot.py)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run_startup.py needs root (every tool here mounts or chroots)")
    compileall.compile_dir(REPO / "src" / "droot", quiet=1)
    with tempfile.TemporaryDirectory(prefix="droot-bench-run-") as work_dir:
        work = Path(work_dir)
        root = make_root(work / "root")
        wanted = set(options.only.split(",")) if options.only else None
        docker = (wanted is None or "docker run" in wanted) and build_docker_image(root, work)
        try:
            tools = commands(root, work, docker)
            if wanted:
                tools = {name: argv for name, argv in tools.items() if name in wanted}
            for name, argv in tools.items():  # warm up (page cache, first-run costs)
                time_once(argv(-1))
            samples = {name: [] for name in tools}
            for number in range(options.rounds):
                order = list(tools)
                random.shuffle(order)
                for name in order:
                    samples[name].append(time_once(tools[name](number)))
        finally:
            if docker:
                subprocess.run(["docker", "rmi", "-f", DOCKER_TAG], capture_output=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    reference = medians.get("crun run")
    print(f"`/bin/true` in a busybox root, {options.rounds} interleaved rounds, median ms"
          f" (ratio to crun run)\n")
    print("| tool | median ms | ratio to crun |")
    print("|---|---:|---:|")
    for name, median in sorted(medians.items(), key=lambda item: item[1]):
        ratio = f"{median / reference:.2f}" if reference else "-"
        print(f"| {name} | {median:.1f} | {ratio} |")
    if options.json:
        import json
        options.json.write_text(json.dumps({"rounds": options.rounds, "medians_ms": medians},
                                           indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
