"""The droot apps running on this host, found from the kernel's view alone (no state file).

A process belongs to a droot app when it is chrooted (its /proc/PID/root is not `/`), lives
in a mount namespace other than the host's (droot unshares one for every run) and sees a
proc filesystem at `/proc` (droot mounts one inside the root, and the app can mount none);
a droot cgroup (`droot/<escaped root>.<pid>`, made for --memory/--cpus/--pids-limit) gives
the root's name. Processes of one mount namespace and root form one app; its main process
is the oldest one whose parent is not part of the app (later ones are `droot exec`
sessions, counted in). Under --pid the droot relay outside the namespace is reported as
the PID, since that is the process the supervisor started and signals.

Docker and other pivot_root(2) runtimes are not chrooted (their root is their namespace's
root) and are not listed; a hand-made `unshare -m chroot` with /proc mounted inside is
indistinguishable from droot and is.
"""

import os

from droot.core import mountinfo
from droot.run.cgroups import PREFIX, parse_cgroup_name


class Process:
    def __init__(self, pid: int):
        self.pid = pid
        self.root = os.readlink(f"/proc/{pid}/root")
        self.mount_ns = os.readlink(f"/proc/{pid}/ns/mnt")
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        # fields[0] is field 3 of proc(5): state; ppid is 4, utime 14, stime 15, start 22.
        self.ppid = int(fields[1])
        self.cpu_ticks = int(fields[11]) + int(fields[12])
        self.start_ticks = int(fields[19])
        self.rss_pages = int(fields[21])
        self.uid = self.gid = 0
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("Uid:"):
                    self.uid = int(line.split()[1])
                elif line.startswith("Gid:"):
                    self.gid = int(line.split()[1])
                    break
        self.cgroup_root = droot_cgroup_root(pid)


def inside_id(pid: int, host_id: int, kind: str = "uid") -> int:
    """`host_id` as process `pid` sees it (its user namespace's uid_map/gid_map)."""
    try:
        with open(f"/proc/{pid}/{kind}_map") as file:
            for line in file:
                inside, outside, count = map(int, line.split())
                if outside <= host_id < outside + count:
                    return inside + host_id - outside
    except (OSError, ValueError):
        pass
    return host_id


def droot_cgroup_root(pid: int) -> str | None:
    """The root a process's droot cgroup is named after, if it is in one."""
    try:
        with open(f"/proc/{pid}/cgroup") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[2]
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == PREFIX:
            parsed = parse_cgroup_name(parts[1])
            if parsed:
                return parsed[0]
    return None


def has_proc_inside(pid: int) -> bool:
    """Does the process see a proc filesystem mounted at /proc (relative to its root)?"""
    try:
        return any(mount.point == "/proc" and mount.fstype == "proc"
                   for mount in mountinfo.read(pid))
    except OSError:
        return False


class App:
    def __init__(self, main: Process, processes: list[Process], relay: Process | None):
        self.main, self.processes, self.relay = main, processes, relay
        self.pid = relay.pid if relay else main.pid
        self.release = main.root  # the directory the app is chrooted into
        self.root = main.cgroup_root or given_root(main.root)

    def describe(self) -> dict:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as file:
            uptime = float(file.read().split()[0])
        seconds = max(0.0, uptime - self.main.start_ticks / ticks)
        cpu_seconds = sum(p.cpu_ticks for p in self.processes) / ticks
        return {
            "pid": self.pid,
            "app_pid": self.main.pid,
            "root": self.root,
            "release": self.release,
            "user": user_name(self.release, inside_id(self.main.pid, self.main.uid)),
            "uid": inside_id(self.main.pid, self.main.uid),
            "host_uid": self.main.uid,
            "uptime_seconds": round(seconds, 2),
            "rss_bytes": sum(p.rss_pages for p in self.processes) * os.sysconf("SC_PAGE_SIZE"),
            "cpu_seconds": round(cpu_seconds, 2),
            "cpu_percent": round(100 * cpu_seconds / seconds, 1) if seconds else 0.0,
            "processes": len(self.processes),
            "pid_namespace": self.relay is not None,
            "mount_namespace": self.main.mount_ns,
        }


def given_root(release: str) -> str:
    """The path operators know the app by: a symbolic link next to (or one level above)
    the release directory that points at it, as a deploy's switch leaves; else the release."""
    parent = os.path.dirname(release)
    for directory in (parent, os.path.dirname(parent)):
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_symlink() and os.path.realpath(entry.path) == release:
                        return entry.path
                except OSError:  # changed meanwhile (a symlink no longer one): not it
                    continue
    return release


def user_name(root: str, uid: int) -> str:
    """The name of `uid` in the app's own /etc/passwd (parsed, never looked up via NSS;
    a file the app controls, so opened inside its root only, and only a regular one)."""
    from droot.run import rootfs
    try:
        text = rootfs.read_text("/etc/passwd", root=root) or ""
    except OSError:
        return str(uid)
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2] == str(uid):
            return fields[0].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return str(uid)


def host_mount_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def find_apps() -> list[App]:
    host_ns = host_mount_namespace()
    processes: dict[int, Process] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            process = Process(int(name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        processes[process.pid] = process
    members = {}
    for process in processes.values():
        # A process of an app that left its root (--cap-add SYS_CHROOT: Landlock still
        # confines it) for another directory stays in the app's cgroup: it is no app, and
        # `droot exec` must not make that directory a session's root and Landlock domain.
        # Only the root droot made has a /proc mounted in it; the app can mount none.
        chrooted = process.root != "/" and process.mount_ns != host_ns
        if chrooted and has_proc_inside(process.pid):
            members[process.pid] = process
    apps: dict[tuple[str, str], list[Process]] = {}
    for process in members.values():
        apps.setdefault((process.mount_ns, process.root), []).append(process)
    found = []
    for group in apps.values():
        # The app is the oldest process whose parent is not part of it; later ones of the
        # same mount namespace and root (`droot exec` sessions) are counted in with it.
        pids = {p.pid for p in group}
        main = min((p for p in group if p.ppid not in pids), key=lambda p: p.start_ticks)
        parent = processes.get(main.ppid)
        relay = parent if (parent and parent.root == "/" and
                           parent.mount_ns == main.mount_ns) else None
        found.append(App(main, group, relay))
    return sorted(found, key=lambda app: app.pid)


def app_of(pid: int) -> App | None:
    """The app that process `pid` belongs to (its main process, relay or any other)."""
    for app in find_apps():
        if pid == app.pid or any(p.pid == pid for p in app.processes):
            return app
    return None
