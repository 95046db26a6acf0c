"""`droot run`: one sequence of steps from the command line to the app's exec.

    validate (host side) → unshare(CLONE_NEWNS), all mounts private → chroot
    → /proc, /dev, /sys, bind mounts → files, user, environment → Landlock and
    seccomp → capabilities, user, no_new_privs → working dir → close descriptors
    → exec (same PID)

Everything that can be wrong with the input is checked before the first mount. Every
mount is made in droot's own mount namespace, so none is visible to the host and all of
them vanish when the app exits, however it exits; a failure after unshare needs no
clean-up either.
"""

import os

from droot.errors import RunError
from droot.run import capabilities, command, confinement, kernel, mounts, users
from droot.run.files import write_atomically

# `--cp/--copy-files`: the host files the original droot copied into the root.
COPIED_FILES = ("/etc/passwd", "/etc/group", "/etc/resolv.conf", "/etc/hosts")


def run_container(options) -> None:
    """Run `options.app_argv` (or the image's own command) in `options.root`; returns
    only by raising (the process becomes the app)."""
    # 1. Validate and read everything needed from the host, before any mount.
    if os.geteuid() != 0:
        raise RunError("droot run needs root (it mounts, chroots and drops capabilities); "
                       "run it as root, the app itself can run as any user with -u")
    root = checked_root(options.root)
    if not options.no_dropcaps:
        capabilities.kept_capabilities(False, options.cap_add, options.cap_drop)  # names valid?
    settings = []
    for path in options.env_file:
        settings += command.read_env_file(path)
    settings += [command.parse_env_option(item) for item in options.env]
    binds = [mounts.BindMount(spec, False) for spec in options.bind]
    binds += [mounts.BindMount(spec, True) for spec in options.robind]
    host_files = read_host_files(COPIED_FILES) if options.copy_files else {}
    if not options.app_argv:
        import json  # noqa: F401  (the image's /.droot.json is parsed after chroot)
    host_passwd = host_group = []
    if options.user or options.group or not options.app_argv:
        host_passwd = users.read_entries(users.PASSWD)
        host_group = users.read_entries(users.GROUP)
    passed_fds = command.listen_fds()
    isolation = None
    if options.pid or options.net or options.hostname or options.ipc or options.userns or \
            options.memory or options.cpus or options.pids_limit:
        from droot.run.isolation import Isolation
        isolation = Isolation(options, root)  # validates; creates nothing yet
        isolation.prepare_host()

    # 2. A private mount namespace of droot's own process (its PID stays the same).
    try:
        kernel.unshare(kernel.CLONE_NEWNS)
    except OSError as error:
        raise RunError(f"cannot create a mount namespace: {error.strerror}") from None
    mounts.make_all_private()
    if isolation:
        isolation.enter_namespaces()
    for bind in binds:
        bind.open()

    # 3. chroot; from here on every path is inside the root, the standard library too:
    #    whatever is imported later must be imported before this.
    os.chroot(root)
    os.chdir("/")

    # 4. The mounts.
    saved_umask = os.umask(0)
    mounts.mount_proc()
    mounts.mount_dev()
    mounts.mask_proc()
    mounts.mount_sys()
    for bind in binds:
        bind.mount()
    os.umask(saved_umask)

    # 5. Files, the image's own command, the user, the environment.
    for path, (data, mode) in host_files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, data, mode)
    argv, workdir, user_spec = options.app_argv, options.workdir, options.user
    if not argv:
        config = command.image_config()
        argv = config.get("entrypoint", []) + config.get("cmd", [])
        if not argv:
            raise RunError(f"no command given, and the image has no entrypoint or cmd in "
                           f"{command.IMAGE_CONFIG}: give one after '--'")
        workdir = workdir or config["working_dir"]
        user_spec = user_spec or config["user"]
    user = users.resolve(user_spec or "", options.group or "", host_passwd, host_group)
    env = command.app_environment(user.home, settings, passed_fds)

    if isolation:
        isolation.enter_user_namespace(user)

    # 6. Writes confined to the root, no terminal injection; then capabilities in every
    #    set, the user, no_new_privs.
    if not options.no_dropcaps:  # a privileged app may mount, ptrace, write anywhere
        confinement.confine_writes_to_root()
    confinement.block_terminal_injection()
    keep = None
    if not options.no_dropcaps:
        keep = capabilities.kept_capabilities(user.uid == 0, options.cap_add, options.cap_drop)
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

    # 8. Only stdin, stdout, stderr and systemd's sockets reach the app.
    os.closerange(3 + passed_fds, 1 << 20)

    # 9. Become the app.
    command.execute(argv, env)


def checked_root(path: str) -> str:
    if not path:
        raise RunError("--root is empty: give the directory to run in")
    if not os.path.exists(path):
        raise RunError(f"root {path} does not exist")
    if not os.path.isdir(path):
        raise RunError(f"root {path} is not a directory")
    return os.path.realpath(path)


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
