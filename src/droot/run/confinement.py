"""Landlock: the app's file access, signals and abstract sockets end at its root.

One Landlock domain, made by droot just before the exec and inherited by everything the
app starts:

- Files: the app may read, run, create, change or remove files only beneath its root
  (which holds its bind mounts, /dev and /proc), and reopen its own stdin, stdout and
  stderr. (A device node beneath the root would reach further: the root is mounted
  nodev, droot.run.mounts.forbid_image_devices.) A file outside reached by any route (a /proc magic link, a file handle, a
  descriptor passed in) stays closed to it. This is the CVE-2019-5736 class, where a
  command whose interpreter is `/proc/self/exe` runs the host's Python and then reopens
  it for writing: root owns that file, so no capability check stops it; Landlock does.
- A read-only root (`--read-only`, or a read-only release): beneath the root the app
  may only read and run files, except beneath the places droot makes writable (/dev,
  /proc, the --bind and --tmpfs mounts). The read-only mount stops writes already; this
  is the second layer, should a mount ever be writable that droot believed was not.
- Processes: a Landlock-confined process can ptrace, and see in a /proc mounted with
  `hidepid=ptraceable`, only processes of its own domain (Linux 5.13+, ABI 1).
- Signals and abstract unix sockets (ABI 6, Linux 6.12+): the app may signal only its
  own processes and connect only to abstract sockets made inside the domain, whatever
  its uid (a root app could otherwise become any uid and kill that uid's processes).
  `--share signals` and `--share abstract-sockets` lift these.

Skipped with `--no-dropcaps` (a privileged app is meant to reach the host). On an older
kernel droot applies what it has and says once on stderr what is missing.
"""

import os
import stat
import sys

from droot.core.kernel import Structure, byref, c_int32, c_uint64, check, sizeof, syscall

# linux/landlock.h; the system call numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_EXECUTE, _WRITE_FILE, READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1 = (1 << 13) - 1  # execute, write_file, read_file, read_dir, remove_*, make_*
_REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(Structure):
    _fields_ = [("handled_access_fs", c_uint64), ("handled_access_net", c_uint64),
                ("scoped", c_uint64)]


class _PathBeneathAttr(Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", c_uint64), ("parent_fd", c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock."""
    return max(syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION), 0)


def handled_access(abi: int) -> int:
    """The file rights droot's domain handles on a kernel of Landlock ABI `abi`: those of
    ABIs 1 to 3 that it has."""
    return _ABI1 | (_REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)


def confine_to_root(scopes: int, writable: list[str | int] | None = None) -> int:
    """Confine this process and its future children to `/` (the chroot) as the module
    says, with the `scopes` (SCOPE_* bits) the kernel has. With `writable` (paths, or
    descriptors of mounts), the root is read-only but beneath those. Returns the ABI
    version used."""
    abi = abi_version()
    if abi < 1:
        _warn("this kernel has no Landlock (Linux < 5.13, or not enabled): the app's file "
              "access is not confined beyond the chroot, and CVE-2019-5736 is not stopped")
        return 0
    if abi < 6 and scopes:
        _warn(f"this kernel's Landlock is ABI {abi} (< 6, Linux < 6.12): the app may "
              "signal host processes of its uid and reach host abstract sockets")
    handled = handled_access(abi)
    attr = _RulesetAttr(handled, 0, scopes if abi >= 6 else 0)
    size = sizeof(attr) if abi >= 6 else 8
    ruleset = check(syscall(_CREATE_RULESET, byref(attr), size, 0), "Landlock")
    try:
        if writable is None:
            _allow(ruleset, "/", handled)
        else:
            _allow(ruleset, "/", handled & (_EXECUTE | READ_FILE | _READ_DIR))
            for path in writable:
                _allow(ruleset, path, handled)
        for descriptor in (0, 1, 2):
            access = _stdio_access(descriptor)
            if access:
                _allow(ruleset, f"/proc/self/fd/{descriptor}", handled & access)
        check(syscall(_RESTRICT_SELF, ruleset, 0), "Landlock")
    finally:
        os.close(ruleset)
    return abi


def _stdio_access(descriptor: int) -> int:
    """What reopening stdio `descriptor` (a file or terminal outside the root) may do: as
    much as the descriptor itself was opened for, no more (a log file given for append
    stays unreadable, a file given as input unwritable)."""
    try:
        mode = os.fstat(descriptor).st_mode
        with open(f"/proc/self/fdinfo/{descriptor}", "rb") as info:  # fcntl costs an import
            flags = int(info.read().split(b"flags:", 1)[1].split()[0], 8)
    except OSError:
        return 0
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        return 0  # pipes and sockets are not reopened through a path Landlock checks
    access_mode = flags & os.O_ACCMODE
    return ((READ_FILE if access_mode in (os.O_RDONLY, os.O_RDWR) else 0)
            | (_WRITE_FILE | TRUNCATE if access_mode in (os.O_WRONLY, os.O_RDWR) else 0))


def _allow(ruleset: int, path: str | int, access: int) -> None:
    """Allow `access` beneath `path` (or the open descriptor `path`, left open)."""
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC) if isinstance(path, str) else path
    try:
        if not stat.S_ISDIR(os.fstat(descriptor).st_mode):  # a file takes file rights only
            access &= _EXECUTE | _WRITE_FILE | READ_FILE | TRUNCATE
        rule = _PathBeneathAttr(access, descriptor)
        check(syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, byref(rule), 0), "Landlock")
    finally:
        if isinstance(path, str):
            os.close(descriptor)


def _warn(message: str) -> None:
    print(f"droot: warning: {message}", file=sys.stderr)
