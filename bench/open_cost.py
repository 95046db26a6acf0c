#!/usr/bin/env python3
"""What droot's sandbox adds to one open(2): the cost behind nginx's ratio in apps.py.

A static file server opens the file of each request (nginx without open_file_cache), and
Landlock checks every open: it walks from the file up to the directory of the rule that
allows it. This times that alone, in a compiled loop (bench/open_cost.c: open, fstat and
close of /srv/www/index.html, as apps.py's nginx serves it, fastest of 7 passes) run
chrooted in a small root on the disk, with:

  none               nothing applied (the host's app)
  seccomp            droot's filter, for an app that keeps no capability (seccomp.install)
  landlock           droot's domain (confinement.confine_to_root): one rule, at the root
  droot run          both, as `droot run` applies them
  rule at the file   a Landlock rule of the same rights on /srv/www itself (a walk of one
                     level instead of three)
  no read/truncate   the rule at the root, without handling the read and truncate rights
                     (what the app's reads would cost unchecked)

in interleaved rounds; prints each one's median nanoseconds per open, and what it adds to
the host's. The machine is shared and noisy: compare the differences of one run.

Usage: sudo .venv/bin/python bench/open_cost.py [--rounds 9] [--opens 100000]
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from droot.run import confinement, seccomp

HERE = Path(__file__).resolve().parent
PAGE = "/srv/www/index.html"
SCOPES = confinement.SCOPE_SIGNAL | confinement.SCOPE_ABSTRACT_UNIX_SOCKET


def make_root(directory: Path) -> None:
    """The loop, linked statically, and the page, in `directory`."""
    subprocess.run(["cc", "-O2", "-static", "-o", directory / "open_cost", HERE / "open_cost.c"],
                   check=True)
    (directory / "srv" / "www").mkdir(parents=True)
    (directory / PAGE.lstrip("/")).write_bytes(b"x" * 1024)


def variants(abi: int) -> dict:
    """name -> (what the child applies before the exec, the loop's own rule arguments)."""
    handled = confinement.handled_access(abi)
    unread = handled & ~(confinement.READ_FILE | confinement.TRUNCATE)
    return {
        "none": (lambda: None, []),
        "seccomp": (lambda: seccomp.install(set(), set()), []),
        "landlock": (lambda: confinement.confine_to_root(SCOPES), []),
        "droot run": (lambda: (confinement.confine_to_root(SCOPES),
                               seccomp.install(set(), set())), []),
        "rule at the file": (lambda: None, ["/srv/www", f"{handled:x}"]),
        "no read/truncate": (lambda: None, ["/", f"{unread:x}"]),
    }


def time_opens(root: Path, apply, rule: list[str], opens: int) -> int:
    """Nanoseconds per open of the loop, chrooted in `root`, after `apply()`."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.dup2(write_end, 1)
            os.chroot(root)
            os.chdir("/")
            apply()
            os.execv("/open_cost", ["open_cost", PAGE, str(opens), *rule])
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as output:
        result = output.read()
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise SystemExit(f"the open loop failed (status {status})")
    return int(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--opens", type=int, default=100_000)
    options = parser.parse_args()
    abi = confinement.abi_version()
    if abi < 3:
        raise SystemExit(f"this kernel's Landlock is ABI {abi}: the comparison needs 3+")
    chosen = variants(abi)
    samples = {name: [] for name in chosen}
    with tempfile.TemporaryDirectory(prefix="droot-open-cost-", dir="/var/tmp") as directory:
        make_root(Path(directory))
        for number in range(options.rounds):
            for name in random.sample(list(chosen), len(chosen)):
                samples[name].append(time_opens(Path(directory), *chosen[name], options.opens))
            print(f"round {number + 1}: " + ", ".join(
                f"{name} {values[-1]}" for name, values in samples.items()), file=sys.stderr)
    base = statistics.median(samples["none"])
    print(f"\nopen+fstat+close of {PAGE}, chrooted, Landlock ABI {abi}, {options.rounds} "
          f"interleaved rounds of {options.opens} (fastest of 7 passes each), medians\n")
    print("| applied | ns per open | added |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {median - base:+.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
