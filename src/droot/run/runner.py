"""`droot run`: one sequence of steps from the command line to the app's exec.

    validate (host side; the root and each bind's source opened once and checked
    through that descriptor, the binds cloned from theirs) → unshare(CLONE_NEWNS |
    CLONE_NEWIPC), all mounts private → the root reopened by its path and compared, and
    made nodev → seal imports, chroot into it → the image's files (config,
    users, --cp, bind and tmpfs targets, mount points), before /proc exists → the root
    read-only if asked → /proc, /dev, /sys, bind and tmpfs mounts → a new session keyring
    → Landlock and seccomp → capabilities, user, no_new_privs → working dir → close
    descriptors → exec (same PID)

Everything that can be wrong with the input is checked before the first mount. Every
mount is made in droot's own mount namespace, so none is visible to the host and all of
them vanish when the app exits, however it exits; a failure after unshare needs no
clean-up either. Every path the image controls is opened inside the root only
(droot.run.rootfs), and nothing is imported after chroot (droot.core.importseal).
"""

import errno
import os

from droot.core import importseal
from droot.core.errors import RunError
from droot.core import kernel, mountinfo, readonly
from droot.run import capabilities, confinement, launch, mounts, notify, rootfs, seccomp, users

# `--cp/--copy-files`: the host files the original droot copied into the root.
COPIED_FILES = ("/etc/passwd", "/etc/group", "/etc/resolv.conf", "/etc/hosts")
# `--share`: what the app shares with the host only when asked.
SHARABLE = ("ipc", "proc", "signals", "abstract-sockets")


def run_container(options) -> None:
    """Run `options.app_argv` (or the image's own command) in `options.root`; returns
    only by raising (the process becomes the app)."""
    # 1. Validate and read everything needed from the host, before any mount.
    if os.geteuid() != 0:
        raise RunError("droot run needs root (it mounts, chroots and drops capabilities); "
                       "run it as root, the app itself can run as any user with -u")
    # The descriptors the app gets, looked at before droot opens any of its own.
    passed_fds = launch.listen_fds()
    preserved_fds = launch.preserved_fds(options.preserve_fds)
    passed = launch.supervisor_variables() if preserved_fds else {}
    pinned_root, release = opened_root(options.root)
    share = checked_sharing(options)
    allowed_calls = seccomp.checked_allowances(options.allow_syscall)
    if not options.no_dropcaps:
        capabilities.kept_capabilities(False, options.cap_add, options.cap_drop)  # names valid?
    settings = []
    for path in options.env_file:
        settings += launch.read_env_file(path)
    settings += [launch.parse_env_option(item) for item in options.env]
    binds = [mounts.BindMount.of_option(spec, False) for spec in options.bind]
    binds += [mounts.BindMount.of_option(spec, True) for spec in options.robind]
    # droot's mounts, for the checks made before unshare: read once the root and every
    # bind source are open, so the mounts they are on are listed (mountinfo.is_listed)
    table = mountinfo.read()
    root = checked_root(options.root, pinned_root, release, table)
    mounts.refuse_sources_off_namespace(binds, table)
    # A read-only release stays unchanged (its files may be another release's too, hard
    # links: droot.deploy.reuse), as the root or through a bind (mounts.BindMount).
    if release:
        refuse_privileges_over_shared_files(options, release, binds, table)
    mounts.bind_releases_read_only(binds, table)
    read_only = options.read_only or release is not None
    tmpfs = [mounts.TmpfsMount(target) for target in options.tmpfs]
    host_files = read_host_files(COPIED_FILES) if options.copy_files else {}
    if not options.app_argv:
        import json  # noqa: F401  (the image's /.droot.json is parsed after chroot)
    host_passwd = host_group = []
    if options.user or options.group or not options.app_argv:
        host_passwd = users.read_entries(users.PASSWD)
        host_group = users.read_entries(users.GROUP)
    notify_socket, notify_bind = notify.passed_socket(
        options.net, not options.no_dropcaps and "abstract-sockets" not in share)
    if notify_socket:
        passed[notify.VARIABLE] = notify_socket
    if notify_bind:
        binds.append(notify_bind)
    for bind in binds:  # from the descriptors checked, in the host's mount namespace
        bind.clone()
    isolation = None
    if options.pid or options.net or options.hostname or options.userns or \
            options.memory or options.cpus or options.pids_limit:
        from droot.run.isolation import Isolation
        isolation = Isolation(options, root)  # validates; creates nothing yet
        isolation.prepare_host()

    # 2. A private mount namespace of droot's own process (its PID stays the same), and
    #    unless shared a private IPC namespace: no host SysV memory, semaphores, queues.
    namespaces = kernel.CLONE_NEWNS | (0 if "ipc" in share else kernel.CLONE_NEWIPC)
    try:
        kernel.unshare(namespaces)
    except OSError as error:
        raise RunError(f"cannot create a mount and IPC namespace: {error.strerror}") from None
    mounts.make_all_private()
    if isolation:
        isolation.enter_namespaces()
    root_descriptor = reopened_root(root, pinned_root)
    root_mounts = mounts.forbid_image_devices(root, root_descriptor)

    # 3. chroot; from here on every path is inside the root, the standard library too:
    #    whatever is imported later must be imported before this, and nothing can be.
    importseal.seal()
    os.fchdir(root_descriptor)  # the directory checked, not what its path names now
    os.close(root_descriptor)
    os.chroot(".")
    os.chdir("/")

    # 4. The image's own files, while the root has no /proc and so no magic link.
    for path, (data, mode) in host_files.items():
        image_step(f"write {path}", rootfs.write_atomically, path, data, mode)
    argv, workdir, user_spec = options.app_argv, options.workdir, options.user
    if not argv:
        config = launch.read_release_config()
        argv = config.get("entrypoint", []) + config.get("cmd", [])
        if not argv:
            raise RunError(f"no command given, and the image has no entrypoint or cmd in "
                           f"{launch.IMAGE_CONFIG}: give one after '--'")
        workdir = workdir or config["working_dir"]
        user_spec = user_spec or config["user"]
    user = users.resolve(user_spec or "", options.group or "", host_passwd, host_group)
    env = launch.app_environment(user.home, settings, passed_fds, passed)
    image_step("make /proc, /dev and /sys", mounts.make_mount_points)
    for bind in binds:
        bind.open_target()
    for each in tmpfs:
        each.open_target()
    if read_only:  # droot's own writes to the image are done
        mounts.make_read_only(root_mounts)

    # 5. The mounts.
    saved_umask = os.umask(0)
    mounts.mount_proc(hide_other_processes="proc" not in share)
    mounts.mount_dev()
    mounts.mask_proc()
    mounts.mount_sys()
    for bind in binds:
        bind.mount()
    for each in tmpfs:
        each.mount()
    os.umask(saved_umask)

    try:  # the operator's session keyring stays behind (the filter denies keyctl too)
        kernel.join_new_session_keyring()
    except OSError as error:
        raise RunError(f"cannot give the app a session keyring of its own: "
                       f"{error.strerror}") from None
    if isolation:
        isolation.enter_user_namespace(user)

    # 6. The kernel sandboxes: files, signals and abstract sockets confined to the root,
    #    the risky system calls denied; then capabilities in every set, the user,
    #    no_new_privs.
    keep = None
    if not options.no_dropcaps:
        keep = capabilities.kept_capabilities(user.uid == 0, options.cap_add, options.cap_drop)
    if keep is not None:  # a privileged app may mount, ptrace, write anywhere
        writable = None
        if read_only:
            writable = ["/dev", "/proc"] + [bind.tree for bind in binds if not bind.read_only]
            writable += [each.tree for each in tmpfs]
        confinement.confine_to_root(
            (0 if "signals" in share else confinement.SCOPE_SIGNAL)
            | (0 if "abstract-sockets" in share else confinement.SCOPE_ABSTRACT_UNIX_SOCKET),
            writable)
    seccomp.install(None if keep is None else {capabilities.NAMES[n] for n in keep},
                    allowed_calls)
    if keep is not None:
        capabilities.trim_bounding_set(keep)
        if keep and user.uid != 0:
            kernel.prctl(kernel.PR_SET_KEEPCAPS, 1)
    os.setgroups(user.groups)
    os.setgid(user.gid)
    os.setuid(user.uid)
    if keep is not None:
        capabilities.limit_process_to(keep)
    if not options.allow_new_privs:
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)

    # 7. The working directory, entered as the user.
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as error:
            raise RunError(f"cannot enter the working directory {workdir} inside the root: "
                           f"{error.strerror}") from None

    if isolation:
        isolation.before_exec()

    # 8. Only stdin, stdout, stderr, systemd's sockets and those of --preserve-fds reach
    #    the app.
    os.closerange(3 + max(passed_fds, preserved_fds), 1 << 20)

    # 9. Become the app.
    launch.execute(argv, env)


# What would let an app change a read-only release despite its read-only mount: remount
# it (SYS_ADMIN), open its files by handle through a writable mount of the same
# filesystem (DAC_READ_SEARCH), write the disk under it (MKNOD, SYS_RAWIO), or the kernel
# (SYS_MODULE), or leave the chroot for the host's writable mount of it (SYS_CHROOT:
# Landlock would be the only layer left).
RELEASE_BREAKING = ("SYS_ADMIN", "DAC_READ_SEARCH", "MKNOD", "SYS_RAWIO", "SYS_MODULE",
                    "SYS_CHROOT")


def refuse_privileges_over_shared_files(options, release: str, binds, table: list) -> None:
    """A read-only release's files may be other releases' too (hard links), a rollback
    target's among them: no option may give the app (whose root is `release` or a
    directory of it) a way to change them, nor droot write into it."""
    why = (f"{release} is a read-only release, whose files other releases share: %s would "
           "let the app change them; run without it, or deploy the release without "
           "--read-only")
    if options.no_dropcaps:
        raise RunError(why % "--no-dropcaps")
    if options.copy_files:
        raise RunError(f"{release} is a read-only release: --cp would write the host's files "
                       "into it; bind them read-only instead (--robind /etc/resolv.conf), "
                       "or deploy the release without --read-only")
    for bind in binds:  # a source found inside a release is bound read-only (BindMount)
        if not bind.read_only and _shows(table, bind.pinned_path, release):
            raise RunError(why % f"{bind.flag} {bind.source} (which holds the release, "
                           "writable)")
    kept = capabilities.kept_capabilities(True, options.cap_add, options.cap_drop)
    for name in RELEASE_BREAKING:
        if capabilities.NAMES.index(name) in kept:
            raise RunError(why % f"--cap-add {name}")


def _shows(table: list, source: str, directory: str) -> bool:
    """Whether a bind of `source`, with the mounts below it (open_tree clones them),
    shows the real `directory` or a directory of it. Compared as paths in the filesystem
    each mount shows, not on the host: another mount of the same directory (`mount
    --bind /srv /mnt/srv`) is found too."""
    home = mountinfo.containing(directory, table)
    release = home.in_filesystem(directory)
    return any(mount.device == home.device
               and (mountinfo.within(path, release) or mountinfo.within(release, path))
               for mount, path in mountinfo.shown_by(source, table))


def checked_sharing(options) -> set[str]:
    share = set(options.share)
    unknown = share - set(SHARABLE)
    if unknown:
        raise RunError(f"--share {sorted(unknown)[0]!r}: choose from {', '.join(SHARABLE)}")
    if options.ipc and "ipc" in share:
        raise RunError("--ipc (a private IPC namespace, the default) contradicts --share ipc")
    return share


def image_step(what: str, function, *args):
    """`function(*args)` on a file of the image, its failure one line naming `what`."""
    try:
        return function(*args)
    except OSError as error:
        raise RunError(f"cannot {what} inside the root: {error.strerror}") from None


def opened_root(path: str) -> tuple[int, str | None]:
    """An O_PATH descriptor of the root, opened once (every check, and the chroot through
    reopened_root, look at it, never at the path again), and the real path of the
    read-only release it lies in by its path (None if none)."""
    if not path:
        raise RunError("--root is empty: give the directory to run in")
    try:
        release = readonly.split_at_release(os.path.abspath(path))
    except OSError as error:  # a symlink loop, a directory droot may not search
        raise RunError(f"root {path}: {error.strerror}") from None
    if release:  # below it, the image's symlinks lead only inside it (rootfs)
        try:
            return rootfs.open_in_root(release[1], os.O_PATH | os.O_DIRECTORY,
                                       root=release[0]), release[0]
        except OSError as error:
            raise RunError(f"root {path}: cannot open {release[1]} inside the read-only "
                           f"release {release[0]}: {error.strerror}") from None
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), None
    except FileNotFoundError:
        raise RunError(f"root {path} does not exist") from None
    except NotADirectoryError:
        raise RunError(f"root {path} is not a directory") from None
    except OSError as error:
        raise RunError(f"root {path}: {error.strerror}") from None


def checked_root(path: str, descriptor: int, release: str | None, table: list) -> str:
    """The real path of the root open as `descriptor` (opened_root, by `path`, in
    `release` if not None), checked through the descriptor; `table`: droot's mounts,
    read while it was open (mountinfo)."""
    if not mountinfo.is_listed(descriptor, table):
        raise RunError(f"root {path} is on a mount outside droot's mount namespace (a "
                       "detached mount tree?): give a path of the host")
    if release is None:
        try:
            inside = readonly.release_holding(descriptor)
        except OSError as error:
            raise RunError(f"root {path}: {error.strerror}") from None
        if inside:  # its path led elsewhere when split_at_release looked: it was changed
            raise RunError(f"root {path} changed while droot looked at it: it now leads "
                           f"into the read-only release {inside}; run it again")
        behind = readonly.release_behind_mounts(f"/proc/self/fd/{descriptor}", table)
        if behind:  # made writable here, it would let the app change the release's files
            raise RunError(f"root {path} shows the read-only release {behind} through "
                           "another mount: run it as --root under the release's own path, "
                           "which droot runs read-only")
    return os.readlink(f"/proc/self/fd/{descriptor}")  # no symbolic link left


def reopened_root(real: str, checked: int) -> int:
    """The root, opened by its real path in droot's own mount namespace (a descriptor
    from the host's cannot be entered there: mounts made beneath it would be the host's),
    and compared with the directory `checked` (then closed): a host user who swapped a
    name on that path since the checks gets one line, not a root droot did not check.
    `real` has no symbolic link (it is the kernel's path of `checked`), so none is
    followed: a magic link (/proc/PID/root/...) would reach the same directory on a mount
    of another namespace, with that namespace's mounts below it."""
    try:
        try:
            descriptor = kernel.openat2(kernel.AT_FDCWD, real, os.O_PATH | os.O_DIRECTORY,
                                        0, kernel.RESOLVE_NO_SYMLINKS)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise RunError(f"root {real}: {error.strerror}") from None
            descriptor = -1  # a symbolic link on the path now: swapped
        same = descriptor >= 0 and os.path.samestat(os.fstat(descriptor), os.fstat(checked))
    finally:
        os.close(checked)
    if not same:
        if descriptor >= 0:
            os.close(descriptor)
        raise RunError(f"root {real} changed while droot was starting (another directory "
                       "is at that path now): run it again")
    return descriptor


def read_host_files(paths) -> dict[str, tuple[bytes, int]]:
    """The contents and modes of those of `paths` the host has."""
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as file:
                found[path] = (file.read(), os.fstat(file.fileno()).st_mode & 0o777)
        except FileNotFoundError:
            pass
    return found
