"""`droot exec`: run a command inside a running app's environment, for debugging.

The command joins the app's droot cgroups, its mount namespace and every other namespace
the app has of its own (PID, network, UTS, IPC, user), chroots into the app's root, starts
in the app's working directory with the app's environment, as the app's user (or -u USER,
looked up in the app's /etc/passwd), with no capability the app could not have: the app's
bounding set; for root the app's effective set (or `droot run`'s default set when the app
is not root); none for another user; and no_new_privs when the app has it. The run's
kernel sandboxes apply too, in their default form: a new session keyring, Landlock (files,
signals and abstract sockets confined to the root, in a domain of the command's own, so
the app's processes are hidden from it in /proc unless the app shares /proc), and the
seccomp filter; in a read-only release, Landlock's read-only rules too (writable_mounts).
Nothing is imported after chroot (droot.core.importseal). `-w DIR` is entered
last, as the user and confined, as `droot run` does. On a terminal the command gets a
pseudo-terminal of its own, which droot relays from the host (droot.ops.terminal).
Without a PID namespace it execs in place; with one it must fork (joining a PID namespace
takes effect for children only) and waits, forwarding signals.
"""

import os
import signal

from droot.core import kernel, readonly
from droot.core.errors import CommandNotExecutable, CommandNotFound, RunError
from droot.ops import terminal
from droot.ops.apps import App, app_of, find_apps, inside_id

# Joined in this order: the user namespace last, since after it droot is no longer
# privileged over the namespaces the host's user namespace owns.
NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "user")


def find_target(root: str | None, pid: int | None) -> App:
    if pid is not None:
        app = app_of(pid)
        if app is None:
            state = "is not running" if not os.path.exists(f"/proc/{pid}") else \
                "is not a droot app (not chrooted in a mount namespace of its own)"
            raise RunError(f"exec: PID {pid} {state}; 'droot ps' lists the apps")
        return app
    wanted = {root, os.path.realpath(root)}
    apps = [app for app in find_apps() if app.root in wanted or app.release in wanted]
    if not apps:
        raise RunError(f"exec: no droot app is running from {root}; 'droot ps' lists the apps")
    if len(apps) > 1:
        pids = ", ".join(str(app.pid) for app in apps)
        raise RunError(f"exec: several apps run from {root} (PIDs {pids}): choose one with --pid")
    return apps[0]


def status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as file:
        return dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)


def environment(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as file:
        items = file.read().split(b"\0")
    env = {}
    for item in items:
        name, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep and name:
            env[name] = value
    return env


def join_cgroups(pid: int):
    """Put this process in the app's droot cgroups, so its limits count the command too."""
    from droot.run.cgroups import PREFIX, hierarchies
    unified, v1 = hierarchies()
    with open(f"/proc/{pid}/cgroup") as file:
        for line in file.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if not path.startswith(f"/{PREFIX}/"):
                continue
            mount_point = unified if controllers == "" else next(
                (v1[c] for c in controllers.split(",") if c in v1), None)
            if mount_point:
                with open(os.path.join(mount_point, path.lstrip("/"), "cgroup.procs"), "w") as f:
                    f.write("0")


def writable_mounts(mounts) -> list[int]:
    """In a read-only release's app, descriptors of the mounts droot run made writable
    (/dev, /proc, --bind, --tmpfs), for the same Landlock rules as the app's: every
    writable mount but the root's, each opened without following a symlink (one the app
    made in a tmpfs could otherwise aim a rule at the root); one that cannot be is left
    out, which only takes a write away."""
    descriptors = []
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for mount in mounts:
            if mount.read_only or mount.point == "/":
                continue
            try:
                descriptors.append(kernel.openat2(root, mount.point, os.O_PATH, 0,
                                                  kernel.RESOLVE_IN_ROOT
                                                  | kernel.RESOLVE_NO_SYMLINKS))
            except OSError:
                continue
    finally:
        os.close(root)
    return descriptors


def resolve_user(spec: str) -> tuple[int, int, list[int], str | None]:
    """(uid, gid, groups, home) of `spec` in the (already entered) root's own files."""
    from droot.run import users  # imported before chroot by `run`
    name, _, group = spec.partition(":")
    entry = users.find_entry(users.image_entries(users.PASSWD), name, 7)
    if entry is None:
        if not users.is_id(name):
            raise RunError(f"exec: unknown user {name!r} in the app's /etc/passwd")
        uid = gid = int(name)
        home, login = None, None
    else:
        uid, gid, home, login = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    groups_file = users.image_entries(users.GROUP)
    if group:
        found = users.find_entry(groups_file, group, 4)
        if found is None and not users.is_id(group):
            raise RunError(f"exec: unknown group {group!r} in the app's /etc/group")
        gid = int(found[2]) if found else int(group)
    groups = [gid] + [int(e[2]) for e in groups_file if login and len(e) >= 4
                      and login in e[3].split(",") and users.is_id(e[2]) and int(e[2]) != gid]
    return uid, gid, groups, home


def run(root: str | None, pid: int | None, user: str | None, env_overrides: list[str],
        workdir: str | None, command: list[str]) -> int:
    app = find_target(root, pid)
    target = app.main.pid
    own = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}
    own_bounding = int(status_fields(os.getpid())["CapBnd"], 16)
    try:
        status = status_fields(target)
        # The app's ids as its user namespace numbers them (read while /proc is the host's).
        app_gid = inside_id(target, int(status["Gid"].split()[0]), "gid")
        app_ids = (inside_id(target, int(status["Uid"].split()[0]), "uid"), app_gid,
                   [inside_id(target, int(g), "gid") for g in status["Groups"].split()]
                   or [app_gid])
        env = environment(target)
        namespaces = [(kind, os.open(f"/proc/{target}/ns/{kind}", os.O_RDONLY))
                      for kind in NAMESPACES
                      if os.readlink(f"/proc/{target}/ns/{kind}") != own[kind]]
        root_fd = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY)
        read_only = readonly.split_at_release(os.readlink(f"/proc/{target}/root")) is not None
        cwd_fd = os.open(f"/proc/{target}/cwd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise RunError(f"exec: cannot inspect the app (PID {target}): {error.strerror}; "
                       "has it exited?") from None
    for item in env_overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise RunError(f"exec: --env {item!r}: use NAME=VALUE")
        env[name] = value

    # The command gets a terminal of its own, never the operator's (droot.ops.terminal).
    ttys = terminal.terminals()
    if ttys:
        terminal.on_new_terminal(ttys, [fd for _, fd in namespaces] + [root_fd, cwd_fd])

    # Everything below runs in the app's world: import what it needs now, from the host,
    # and nothing after.
    import resource  # noqa: F401  (pidinit.end_like)
    from droot.core import importseal
    from droot.core import mountinfo
    from droot.run import capabilities, cgroups, confinement, pidinit, seccomp  # noqa: F401
    from droot.run import users  # noqa: F401
    from droot.core.kernel import setns
    importseal.seal()
    try:
        join_cgroups(target)
        for kind, fd in namespaces:
            setns(fd)
            os.close(fd)
        os.fchdir(root_fd)
        os.chroot(".")
        os.fchdir(cwd_fd)
    except OSError as error:
        raise RunError(f"exec: cannot enter the app (PID {target}): {error.strerror}") from None
    finally:
        os.close(root_fd)
        os.close(cwd_fd)
    if any(kind == "pid" for kind, _ in namespaces):
        child = os.fork()
        if child:
            signal.pthread_sigmask(signal.SIG_BLOCK, pidinit.FORWARDED + [signal.SIGCHLD])
            pidinit.end_like(pidinit.wait_forwarding(child, reap_all=False))

    if user is None:
        uid, gid, groups = app_ids
        home = None
    else:
        uid, gid, groups, home = resolve_user(user)
        if home:
            env["HOME"] = home
    bounding = int(status["CapBnd"], 16)
    # --no-dropcaps: the app kept every capability droot has (--cap-add ALL is as good as
    # that). An app given only some, CAP_SYS_ADMIN among them, is still under Landlock,
    # which refuses it every mount: so is the command.
    privileged = own_bounding & ~bounding == 0
    # Root gets the app's capabilities, or a run's default ones if the app is not root;
    # never one outside the app's bounding set. Another user gets none.
    keep = set()
    if uid == 0:
        keep = {n for n in range(64) if int(status["CapEff"], 16) >> n & 1} if \
            app_ids[0] == 0 else capabilities.kept_capabilities(True, [], [])
        keep = {n for n in keep if bounding >> n & 1}
    # The run's kernel sandboxes too; no TIOCSTI matters all the more for an interactive
    # session on the operator's terminal.
    try:
        kernel.join_new_session_keyring()
        if not privileged:
            confinement.confine_to_root(confinement.SCOPE_SIGNAL
                                        | confinement.SCOPE_ABSTRACT_UNIX_SOCKET,
                                        writable_mounts(mountinfo.read()) if read_only else None)
        seccomp.install(None if privileged else {capabilities.NAMES[n] for n in keep
                                                  if n < len(capabilities.NAMES)}, set())
    except OSError as error:
        raise RunError(f"exec: cannot confine the command: {error.strerror}") from None
    try:
        capabilities.trim_bounding_set({n for n in range(64) if bounding >> n & 1})
        os.setgroups(groups)
        kernel.prctl(kernel.PR_SET_KEEPCAPS, 1)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        capabilities.limit_process_to(keep)
        if status.get("NoNewPrivs", "0").strip() == "1":
            kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    except OSError as error:
        raise RunError(f"exec: cannot take on the app's user and capabilities: "
                       f"{error.strerror}") from None
    # Entered as the user, confined (as `droot run` does): a /proc magic link on the way
    # (/proc/PID/cwd of a host process) is the kernel's to refuse, as it does the app.
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as error:
            raise RunError(f"exec: cannot enter the working directory {workdir}: "
                           f"{error.strerror}") from None
    os.closerange(3, 1 << 20)  # as `droot run`: not only below the soft limit
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise CommandNotFound(f"exec: {command[0]}: command not found in the app") from None
    except PermissionError:
        raise CommandNotExecutable(f"exec: {command[0]}: permission denied") from None
    except OSError as error:
        raise CommandNotExecutable(f"exec: {command[0]}: {error.strerror}") from None
