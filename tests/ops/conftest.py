"""Helpers of the tests of the opt-in isolation, limits and day-2 commands: apps started
with `droot run`, and their cgroups."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from droot.run import cgroups
from tests.conftest import DROOT, make_busybox_root


def run_command(root, options=(), command=("/bin/true",)) -> list[str]:
    """`droot run` (the installed console script) of `command` in `root` with `options`."""
    return [DROOT, "run", "--root", str(root), *map(str, options), "--", *command]


def run_app(root, options=(), command=("/bin/true",), **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run(run_command(root, options, command), **kwargs)


def start_app(root, options=(), command=("/bin/sleep", "60"), **kwargs):
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(run_command(root, options, command), **kwargs)


def stop_app(process: subprocess.Popen):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def wait_until(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def app_cgroup_dirs(root) -> list[Path]:
    """Every droot cgroup named after `root`, in any hierarchy."""
    unified, v1 = cgroups.hierarchies()
    prefix = cgroups.escape_path(str(root)) + "."
    found = []
    for mount_point in {unified, *v1.values()} - {None}:
        base = Path(mount_point) / cgroups.PREFIX
        if base.is_dir():
            found += [d for d in base.iterdir() if d.is_dir() and d.name.startswith(prefix)]
    return found


def remove_cgroups(root):
    """Clean up after a failed test: kill what is left in the root's cgroups, remove them."""
    for directory in app_cgroup_dirs(root):
        for pid in (directory / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not (directory / "cgroup.procs").read_text().strip(), "empty")
            directory.rmdir()
        except (AssertionError, OSError):
            pass


def fresh_root(tmp_path, name="root") -> Path:
    root = tmp_path / name
    if root.exists():
        shutil.rmtree(root)
    return make_busybox_root(root)
