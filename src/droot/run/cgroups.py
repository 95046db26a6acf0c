"""Resource limits for `droot run --memory/--cpus/--pids-limit`, on cgroup v2 and v1/hybrid.

The app is placed in a cgroup named after its root and its PID, `droot/<escaped root>.<pid>`,
in every hierarchy that carries a requested controller: the unified (v2) hierarchy when the
controller is enabled there, else the controller's own v1 hierarchy (hybrid hosts bind most
controllers to v1). The root is escaped as systemd escapes paths (`/srv/app` → `srv-app`),
so `droot ps` reads the root back from the name. The PID keeps two apps of one root apart.

droot execs the app in place, so nobody is left to remove the cgroup when the app exits and
v2 has no release agent (v1's is one global file we must not take over). A *keeper* does it:
a small process forked before the cgroup is made, detached from the app's process tree
(double fork, own session), that waits for the app's PID to exit and the cgroup to empty,
then reports any limit the kernel enforced (OOM kills, forks refused at the pids limit, CPU
throttling) as one `droot: …` line on stderr and removes the cgroup. Cgroups a killed keeper
left behind are removed by the next run that sets limits (`sweep_stale`).

Standard library only: this module is imported by `droot run` when a limit is given.
"""

import os
import sys

from droot.core import mountinfo
from droot.core.errors import RunError, UsageError

PREFIX = "droot"
CPU_PERIOD_US = 100_000
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


# --- parsing the flags --------------------------------------------------------------------

def parse_memory(text: str) -> int:
    """`64M`, `1.5g`, `512k`, `1048576`, `2GiB` → bytes (binary units, as docker and systemd)."""
    spec = text.strip().lower()
    number = spec.rstrip("bkmgti")
    unit = spec[len(number):].removesuffix("ib").removesuffix("b")
    try:
        value = float(number) if number.replace(".", "", 1).isdigit() else None
    except ValueError:
        value = None
    if value is None or unit not in _SIZE_UNITS or spec[len(number):] in ("i", "ib"):
        raise UsageError(f"--memory {text!r}: not a size (use a number with an optional unit "
                         "K, M, G or T, e.g. 64M)")
    size = int(value * _SIZE_UNITS[unit])
    if size < 1 << 20:
        raise UsageError(f"--memory {text!r}: too small, the app could not even start "
                         "(at least 1M)")
    return size


def parse_cpus(text: str) -> float:
    """`0.5`, `2` → a CPU quota in CPUs."""
    try:
        cpus = float(text)
    except ValueError:
        cpus = 0.0
    if not 0.01 <= cpus <= 100_000 or cpus != cpus:
        raise UsageError(f"--cpus {text!r}: not a number of CPUs (e.g. 0.5 or 2)")
    return cpus


def parse_pids(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--pids-limit {text!r}: not a positive number of processes")
    return int(text)


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _SIZE_UNITS[unit.lower()] and size % _SIZE_UNITS[unit.lower()] == 0:
            return f"{size // _SIZE_UNITS[unit.lower()]}{unit}"
    return f"{size}B"


class Limits:
    """The requested limits; None where no limit was asked for."""

    def __init__(self, memory: int | None = None, cpus: float | None = None,
                 pids: int | None = None):
        self.memory, self.cpus, self.pids = memory, cpus, pids

    def controllers(self) -> list[str]:
        wanted = [("memory", self.memory), ("cpu", self.cpus), ("pids", self.pids)]
        return [name for name, value in wanted if value is not None]

    def describe(self) -> str:
        parts = []
        if self.memory is not None:
            parts.append(f"memory {format_size(self.memory)}")
        if self.cpus is not None:
            parts.append(f"cpus {self.cpus:g}")
        if self.pids is not None:
            parts.append(f"pids {self.pids}")
        return ", ".join(parts)


# --- names --------------------------------------------------------------------------------

def escape_path(path: str) -> str:
    """systemd-escape --path: strip slashes, `/` → `-`, anything but [A-Za-z0-9:_.] → \\xNN."""
    path = os.path.normpath(path).strip("/") or "-"
    if path == "-":
        return "-"
    out = []
    for index, char in enumerate(path):
        if char == "/":
            out.append("-")
        elif (char.isascii() and (char.isalnum() or char in ":_.")) and not (
                index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def unescape_path(name: str) -> str:
    if name == "-":
        return "/"
    raw, index = bytearray(), 0
    while index < len(name):
        char = name[index]
        if char == "\\" and name[index + 1:index + 2] == "x" and index + 4 <= len(name):
            raw.append(int(name[index + 2:index + 4], 16))
            index += 4
            continue
        raw += b"/" if char == "-" else char.encode()
        index += 1
    return "/" + raw.decode("utf-8", "replace")


def cgroup_name(root: str, pid: int) -> str:
    return f"{escape_path(root)}.{pid}"


def parse_cgroup_name(name: str) -> tuple[str, int] | None:
    """(root, pid) of a droot cgroup's name, or None for a name droot did not make."""
    escaped, dot, pid = name.rpartition(".")
    if not dot or not escaped or not pid.isdigit():
        return None
    return unescape_path(escaped), int(pid)


# --- the hierarchies of this host -----------------------------------------------------------

def hierarchies() -> tuple[str | None, dict[str, str]]:
    """(mount point of the unified v2 hierarchy or None, {v1 controller: mount point}),
    from /proc/self/mountinfo."""
    unified, v1 = None, {}
    for mount in mountinfo.read():
        if mount.fstype == "cgroup2" and unified is None:
            unified = mount.point
        elif mount.fstype == "cgroup":
            for option in mount.super_options.split(","):
                if option in ("memory", "cpu", "pids", "cpuacct"):
                    v1.setdefault(option, mount.point)
    return unified, v1


def unified_controllers(unified: str | None) -> set[str]:
    if unified is None:
        return set()
    try:
        with open(os.path.join(unified, "cgroup.controllers")) as file:
            return set(file.read().split())
    except OSError:
        return set()


def plan(controllers: list[str]) -> dict[str, tuple[str, int]]:
    """{controller: (hierarchy mount point, cgroup version)} for each requested controller;
    a clear error naming the first one this host does not offer."""
    unified, v1 = hierarchies()
    on_unified = unified_controllers(unified)
    placement = {}
    for controller in controllers:
        if controller in on_unified:
            placement[controller] = (unified, 2)
        elif controller in v1:
            placement[controller] = (v1[controller], 1)
        else:
            flag = {"memory": "--memory", "cpu": "--cpus", "pids": "--pids-limit"}[controller]
            raise RunError(f"{flag}: the {controller} cgroup controller is not available on "
                           "this host (neither enabled in cgroup v2 nor mounted as v1)")
    return placement


# --- one app's cgroups ----------------------------------------------------------------------

class AppCgroups:
    """The directories of one app's cgroup, one per hierarchy used."""

    def __init__(self, root: str, pid: int, limits: Limits):
        self.root, self.pid, self.limits = root, pid, limits
        self.name = cgroup_name(root, pid)
        self.placement = plan(limits.controllers())
        # hierarchy mount point -> (version, cgroup directory)
        self.dirs: dict[str, tuple[int, str]] = {}
        for mount_point, version in self.placement.values():
            self.dirs[mount_point] = (version, os.path.join(mount_point, PREFIX, self.name))

    def create(self):
        """Make the cgroups and write the limits; on any failure remove what was made."""
        try:
            for mount_point, (version, directory) in self.dirs.items():
                parent = os.path.dirname(directory)
                os.makedirs(parent, exist_ok=True)
                if version == 2:
                    _enable_v2_controllers(mount_point, parent, self._controllers_in(mount_point))
                os.mkdir(directory)
            self._write_limits()
        except OSError as error:
            self.remove()
            raise RunError(f"cannot set up the cgroup {PREFIX}/{self.name}: "
                           f"{error.strerror or error}") from None

    def _controllers_in(self, mount_point: str) -> list[str]:
        return [c for c, (m, _) in self.placement.items() if m == mount_point]

    def _dir(self, controller: str) -> tuple[int, str]:
        return self.dirs[self.placement[controller][0]]

    def _write_limits(self):
        limits = self.limits
        if limits.memory is not None:
            version, directory = self._dir("memory")
            if version == 2:
                _write(directory, "memory.max", limits.memory)
                _write_if_present(directory, "memory.swap.max", 0)
            else:
                _write(directory, "memory.limit_in_bytes", limits.memory)
                # memory+swap at the same figure: the limit means RAM, swap does not extend it.
                _write_if_present(directory, "memory.memsw.limit_in_bytes", limits.memory)
        if limits.cpus is not None:
            version, directory = self._dir("cpu")
            quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
            if version == 2:
                _write(directory, "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(directory, "cpu.cfs_period_us", CPU_PERIOD_US)
                _write(directory, "cpu.cfs_quota_us", quota)
        if limits.pids is not None:
            _write(self._dir("pids")[1], "pids.max", limits.pids)

    def join(self, pid: int = 0):
        """Move `pid` (0: this process) into every cgroup of the app."""
        try:
            for _, directory in self.dirs.values():
                _write(directory, "cgroup.procs", pid)
        except OSError as error:
            raise RunError(f"cannot enter the cgroup {PREFIX}/{self.name}: "
                           f"{error.strerror or error}") from None

    def populated(self) -> bool:
        for version, directory in self.dirs.values():
            try:
                with open(os.path.join(directory, "cgroup.procs")) as file:
                    if file.read().strip():
                        return True
            except FileNotFoundError:
                continue
        return False

    def remove(self):
        """Remove the app's cgroups (those that exist and are empty)."""
        for _, directory in self.dirs.values():
            try:
                os.rmdir(directory)
            except (FileNotFoundError, OSError):
                pass

    def wait_empty(self):
        """Until no process is left in the cgroups: children the app left running keep them
        (wait for those ever more patiently), and dying ones take a moment to leave."""
        import time
        delay = 0.002
        while self.populated():
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def finish(self, stderr_fd: int = 2):
        """Once the app is gone: report the limits the kernel enforced, remove the cgroups."""
        hits = self.limit_hits()
        if hits:
            try:
                os.write(stderr_fd, f"droot: {self.root}: {'; '.join(hits)}\n".encode())
            except OSError:
                pass
        self.remove()

    def limit_hits(self) -> list[str]:
        """What the kernel enforced, in words (empty when no limit was reached)."""
        hits = []
        limits = self.limits
        if limits.memory is not None:
            version, directory = self._dir("memory")
            if version == 2:
                kills = _keyed(directory, "memory.events").get("oom_kill", 0)
            else:
                kills = _keyed(directory, "memory.oom_control").get("oom_kill", 0)
            if kills:
                hits.append(f"{kills} process{'es' if kills > 1 else ''} OOM-killed at the "
                            f"memory limit ({format_size(limits.memory)})")
        if limits.pids is not None:
            refused = _keyed(self._dir("pids")[1], "pids.events").get("max", 0)
            if refused:
                hits.append(f"{refused} fork{'s' if refused > 1 else ''} refused at the pids "
                            f"limit ({limits.pids})")
        if limits.cpus is not None:
            stat = _keyed(self._dir("cpu")[1], "cpu.stat")
            throttled = stat.get("nr_throttled", 0)
            if throttled:
                hits.append(f"throttled in {throttled} of {stat.get('nr_periods', 0)} "
                            f"periods at the CPU limit ({limits.cpus:g})")
        return hits


def _enable_v2_controllers(mount_point: str, parent: str, controllers: list[str]):
    """A v2 cgroup gets a controller only if its parent delegates it: enable each one in
    the hierarchy's root (if a pure-v2 host has not already) and in `droot/`."""
    for directory in (mount_point, parent):
        with open(os.path.join(directory, "cgroup.subtree_control")) as file:
            enabled = set(file.read().split())
        missing = [c for c in controllers if c not in enabled]
        if missing:
            _write(directory, "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def _write(directory: str, name: str, value):
    with open(os.path.join(directory, name), "w") as file:
        file.write(str(value))


def _write_if_present(directory: str, name: str, value):
    if os.path.exists(os.path.join(directory, name)):
        _write(directory, name, value)


def _keyed(directory: str, name: str) -> dict[str, int]:
    """A cgroup `key value` file as a dict (missing file: empty)."""
    values = {}
    try:
        with open(os.path.join(directory, name)) as file:
            for line in file:
                key, _, value = line.partition(" ")
                if value.strip().lstrip("-").isdigit():
                    values[key] = int(value)
    except OSError:
        pass
    return values


# --- clean-up of what a killed keeper left -----------------------------------------------

def sweep_stale():
    """Remove empty droot cgroups whose app PID is gone (their keeper was killed)."""
    unified, v1 = hierarchies()
    for mount_point in {unified, *v1.values()} - {None}:
        base = os.path.join(mount_point, PREFIX)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            parsed = parse_cgroup_name(name)
            if parsed is None or os.path.exists(f"/proc/{parsed[1]}"):
                continue
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass  # still populated (a daemonised child): its keeper or a later sweep


# --- the keeper ---------------------------------------------------------------------------

def start_keeper(cgroups: AppCgroups, app_pid: int) -> int:
    """Fork the detached keeper of `cgroups`, which outlives the app (see the module doc).

    Called before the cgroups are even made, so the keeper stays outside them and removes
    them however droot ends. Returns the PID of the short-lived intermediate child, which
    the caller must reap before the exec (so the app never inherits a child it did not
    make); reaping it later rather than here lets its fork overlap droot's own work.
    """
    stderr_fd = sys.stderr.fileno()
    child = os.fork()
    if child:
        return child
    try:
        os.setsid()  # out of the terminal's process group: Ctrl-C goes to the app only
        if os.fork():
            os._exit(0)  # quickly: droot waits for this one
        import _signal as signal  # the C module: `signal` would import enum & co. (~10 ms)
        for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(number, signal.SIG_IGN)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        _keep(cgroups, app_pid, stderr_fd)
    finally:
        os._exit(0)


def _keep(cgroups: AppCgroups, app_pid: int, stderr_fd: int):
    import select
    try:
        pidfd = os.pidfd_open(app_pid)
    except OSError:
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
        os.close(pidfd)
    else:
        import time
        while os.path.exists(f"/proc/{app_pid}"):
            time.sleep(0.1)
    cgroups.wait_empty()
    cgroups.finish(stderr_fd)
