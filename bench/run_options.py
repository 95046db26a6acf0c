#!/usr/bin/env python3
"""What each opt-in isolation or limit option adds to the start of `droot run`, and what
each default protection costs (the opt-out that lifts it runs that much faster).

Times `droot run --root R [OPTION] -- /bin/true` for each option next to the default run,
in interleaved rounds (each round runs every variant once, in a shuffled order, so a noisy
neighbour hits all of them alike), and prints medians in milliseconds and the ratio to the
default run. Each run is timed until droot's process (which became the app) exits, as a
supervisor sees it; with limits, the cgroup keeper's clean-up after the app is not timed,
but the next run waits for it.

    sudo .venv/bin/python bench/run_options.py [--rounds 30]
"""

import argparse
import compileall
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DROOT = REPO / ".venv" / "bin" / "droot"
sys.path.insert(0, str(REPO / "src"))
from droot.run.cgroups import escape_path, hierarchies  # noqa: E402

MOUNTS = set()  # the cgroup hierarchies, where a run's cgroups show up

VARIANTS = {
    "default": [],
    "--pid": ["--pid"],
    "--net none": ["--net", "none"],
    "--hostname": ["--hostname", "bench"],
    "--userns": ["--userns", "231072:65536"],
    "--memory": ["--memory", "256M"],
    "--cpus": ["--cpus", "1"],
    "--pids-limit": ["--pids-limit", "100"],
    "all of them": ["--pid", "--net", "none", "--hostname", "bench", "--userns",
                    "231072:65536", "--memory", "256M", "--cpus", "1", "--pids-limit", "100"],
    # The defaults' opt-outs: each saves what its protection costs.
    "--share ipc": ["--share", "ipc"],
    "--share proc": ["--share", "proc"],
    "--share signals,abstract": ["--share", "signals", "--share", "abstract-sockets"],
    "--allow-syscall ALL": ["--allow-syscall", "ALL"],
    "every opt-out": ["--share", "ipc", "--share", "proc", "--share", "signals", "--share",
                      "abstract-sockets", "--allow-syscall", "ALL"],
}


def time_once(argv: list[str], root: Path) -> float:
    start = time.perf_counter()
    status = subprocess.call(argv, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{' '.join(argv)} failed ({status})")
    while any(next(Path(m, "droot").glob(f"{escape_path(str(root))}.*"), None) for m in MOUNTS):
        time.sleep(0.001)  # the keeper of a run with limits is still cleaning up
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # the repository, for its tests package
    from tests.conftest import make_busybox_root
    global MOUNTS
    unified, v1 = hierarchies()
    MOUNTS = {unified, *v1.values()} - {None}
    compileall.compile_dir(str(REPO / "src"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="droot-bench-options-") as work:
        root = make_busybox_root(Path(work) / "root")
        argvs = {name: [str(DROOT), "run", "--root", str(root), *options, "--", "/bin/true"]
                 for name, options in VARIANTS.items()}
        for argv in argvs.values():  # warm the page cache, check each works
            time_once(argv, root)
        times = {name: [] for name in argvs}
        for _ in range(args.rounds):
            order = list(argvs)
            random.shuffle(order)
            for name in order:
                times[name].append(time_once(argvs[name], root))
    base = statistics.median(times["default"])
    print(f"droot run -- /bin/true, {args.rounds} interleaved rounds, medians")
    print(f"{'option':<26} {'ms':>7} {'ratio':>6} {'added ms':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<26} {median * 1000:7.1f} {median / base:6.2f} "
              f"{(median - base) * 1000:9.1f}")


if __name__ == "__main__":
    main()
