#!/usr/bin/env python3
"""What each opt-in isolation or limit option adds to the start of `droot run`.

Times `droot run --root R [OPTION] -- /bin/true` for each option next to the default run,
in interleaved rounds (each round runs every variant once, in a shuffled order, so a noisy
neighbour hits all of them alike), and prints medians in milliseconds and the ratio to the
default run. A run with limits returns when droot's own process (the app) exits; its
cgroup keeper finishes in the background and is not timed, but a run is only counted
once the keeper has closed the pipe it holds.

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

VARIANTS = {
    "default": [],
    "--pid": ["--pid"],
    "--net none": ["--net", "none"],
    "--hostname": ["--hostname", "bench"],
    "--ipc": ["--ipc"],
    "--userns": ["--userns", "231072:65536"],
    "--memory": ["--memory", "256M"],
    "--cpus": ["--cpus", "1"],
    "--pids-limit": ["--pids-limit", "100"],
    "all of them": ["--pid", "--net", "none", "--hostname", "bench", "--ipc", "--userns",
                    "231072:65536", "--memory", "256M", "--cpus", "1", "--pids-limit", "100"],
}


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_busybox_root
    compileall.compile_dir(str(REPO / "src"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="droot-bench-options-") as work:
        root = make_busybox_root(Path(work) / "root")
        argvs = {name: [str(DROOT), "run", "--root", str(root), *options, "--", "/bin/true"]
                 for name, options in VARIANTS.items()}
        for argv in argvs.values():  # warm the page cache, check each works
            time_once(argv)
        times = {name: [] for name in argvs}
        for _ in range(args.rounds):
            order = list(argvs)
            random.shuffle(order)
            for name in order:
                times[name].append(time_once(argvs[name]))
    base = statistics.median(times["default"])
    print(f"droot run -- /bin/true, {args.rounds} interleaved rounds, medians")
    print(f"{'option':<14} {'ms':>7} {'ratio':>6} {'added ms':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<14} {median * 1000:7.1f} {median / base:6.2f} "
              f"{(median - base) * 1000:9.1f}")


if __name__ == "__main__":
    main()
