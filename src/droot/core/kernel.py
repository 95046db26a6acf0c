"""The system calls Python 3.11's `os` module lacks, called through the C library: the
one module of droot that uses ctypes.

unshare, setns, mount, umount2, prctl, capset, keyctl, openat2, open_tree, move_mount,
mount_setattr, fsopen/fsconfig/fsmount, syncfs, sethostname, and an ioctl on a socket;
and mallopt, for the delta pipeline's memory.
Each raises OSError with the errno, like the `os` functions do (and releases the GIL
while it runs).

This module is on the start-up path of every `droot run`, so it uses ctypes' C core,
`_ctypes`, directly: the `ctypes` package defines some forty types when imported (2.8 ms
more than `_ctypes` alone here, a ninth of droot's whole 26 ms start), and droot needs
the few below. `_ctypes` is CPython's own, unchanged in these parts since 3.x began;
tests/test_kernel_ffi.py checks each type against its public twin and that `ctypes` stays
unloaded, so a Python that changes either fails the suite, not a host.
"""

import errno
import os

import _ctypes

byref, sizeof, addressof, get_errno = (_ctypes.byref, _ctypes.sizeof, _ctypes.addressof,
                                       _ctypes.get_errno)
Structure, POINTER = _ctypes.Structure, _ctypes.POINTER


def _c_type(code: str) -> type:
    """The ctypes type of a `struct` format code ("i" int, "L" unsigned long, ...)."""
    return type(f"c_{code}", (_ctypes._SimpleCData,), {"_type_": code})


c_int, c_long, c_ulong, c_uint8, c_uint16, c_uint32, c_uint64 = map(_c_type, "ilLBHIQ")
c_int32 = c_int


def _function_type(result: type) -> type:
    """C functions returning `result`, with errno saved for get_errno()."""
    return type("CFunction", (_ctypes.CFuncPtr,),
                {"_flags_": _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO,
                 "_restype_": result})


class _CLibrary:
    """The C library already loaded in this process, as ctypes.CDLL(None) would be."""
    _handle = _ctypes.dlopen(None, os.RTLD_NOW)


_libc = _CLibrary()
_unshare, _setns, _mount, _umount2, _prctl, _syncfs, _sethostname, _socket, _ioctl = (
    _function_type(c_int)((name, _libc)) for name in
    ("unshare", "setns", "mount", "umount2", "prctl", "syncfs", "sethostname", "socket",
     "ioctl"))
syscall = _function_type(c_long)(("syscall", _libc))
M_MMAP_THRESHOLD = -3

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

MNT_DETACH = 2

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86_64 and aarch64 system call numbers of what glibc 2.36 has no wrapper for (the calls
# added since Linux 5.0 have one number on every architecture).
_SYSCALL_NUMBERS = {
    "x86_64": {"capset": 126, "keyctl": 250},
    "aarch64": {"capset": 91, "keyctl": 219},
}.get(os.uname().machine, {})
_OPEN_TREE, _MOVE_MOUNT, _OPENAT2, _MOUNT_SETATTR = 428, 429, 437, 442
_FSOPEN, _FSCONFIG, _FSMOUNT = 430, 431, 432


def _number(name: str) -> int:
    if name not in _SYSCALL_NUMBERS:
        raise OSError(38, f"droot knows no {name}(2) number for {os.uname().machine} "
                      "(x86_64 and aarch64 are supported)")
    return _SYSCALL_NUMBERS[name]


AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
KEYCTL_JOIN_SESSION_KEYRING = 1

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def check(result: int, *what: str) -> int:
    """`result` of a C call, or OSError with its errno when it is negative."""
    if result < 0:
        errno = get_errno()
        raise OSError(errno, os.strerror(errno), *what)
    return result


def unshare(flags: int) -> None:
    check(_unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    check(_setns(fd, nstype))


def syncfs(fd: int) -> None:
    check(_syncfs(fd))


def sethostname(name: str) -> None:
    encoded = name.encode()
    check(_sethostname(encoded, c_ulong(len(encoded))))


def socket_ioctl(domain: int, kind: int, request: int, argument: bytes) -> bytes:
    """ioctl(2) `request` on a new socket of `domain` and `kind`, with `argument` (a
    struct, e.g. an ifreq) that the kernel may change: what it left there."""
    sock = check(_socket(domain, kind, 0))
    try:
        buffer = (c_uint8 * len(argument)).from_buffer_copy(argument)
        check(_ioctl(sock, c_ulong(request), buffer))
        return bytes(buffer)
    finally:
        os.close(sock)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None):
    check(_mount(source.encode(), target.encode(), fstype and fstype.encode(), c_ulong(flags),
                 data and data.encode()), target)


def umount2(target: str, flags: int = 0) -> None:
    check(_umount2(target.encode(), flags), target)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return check(_prctl(option, c_ulong(arg2), c_ulong(arg3), c_ulong(0), c_ulong(0)))


class _CapHeader(Structure):
    _fields_ = [("version", c_uint32), ("pid", c_int)]


class _CapData(Structure):
    _fields_ = [("effective", c_uint32), ("permitted", c_uint32), ("inheritable", c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index, shift in ((0, 0), (1, 32)):
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    check(syscall(_number("capset"), byref(header), data))


class _MountAttr(Structure):
    _fields_ = [("attr_set", c_uint64), ("attr_clr", c_uint64), ("propagation", c_uint64),
                ("userns_fd", c_uint64)]


def set_mount_attributes(mount: int, attributes: int, recursive: bool = True) -> None:
    """Set MOUNT_ATTR_* `attributes` on the mount `mount` (a descriptor of its root) and,
    when `recursive`, every mount below it (Linux 5.12+)."""
    attr = _MountAttr(attributes, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    check(syscall(_MOUNT_SETATTR, mount, b"", flags, byref(attr), sizeof(attr)))


def open_tree(path: str, flags: int) -> int:
    """A descriptor of the mount at `path`; with OPEN_TREE_CLONE | AT_RECURSIVE, a
    detached copy of it and every mount below it (Linux 5.2+)."""
    return check(syscall(_OPEN_TREE, AT_FDCWD, path.encode(), flags | os.O_CLOEXEC), path)


def new_mount(fstype: str, options: dict[str, str], attributes: int) -> int:
    """A detached mount of a new `fstype` filesystem with these string `options` and
    MOUNT_ATTR_* `attributes`, for move_mount_to (Linux 5.2+)."""
    context = check(syscall(_FSOPEN, fstype.encode(), 1), fstype)  # FSOPEN_CLOEXEC
    try:
        for key, value in options.items():
            check(syscall(_FSCONFIG, context, _FSCONFIG_SET_STRING, key.encode(),
                          value.encode(), 0), fstype)
        check(syscall(_FSCONFIG, context, _FSCONFIG_CMD_CREATE, None, None, 0), fstype)
        return check(syscall(_FSMOUNT, context, 1, attributes), fstype)  # FSMOUNT_CLOEXEC
    finally:
        os.close(context)


def move_mount_to(tree: int, target: int) -> None:
    """Attach the detached mount `tree` on the directory or file open as `target`:
    nothing is resolved by path, so nothing can be redirected."""
    check(syscall(_MOVE_MOUNT, tree, b"", target, b"",
                  MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


class _OpenHow(Structure):
    _fields_ = [("flags", c_uint64), ("mode", c_uint64), ("resolve", c_uint64)]


def openat2(directory: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """openat2(2) (Linux 5.6+): `path` opened from `directory` under the `resolve` rules."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    return check(syscall(_OPENAT2, directory, path.encode("utf-8", "surrogateescape"),
                         byref(how), sizeof(how)), path)


def keyctl(operation: int, *args: int) -> int:
    return check(syscall(_number("keyctl"), operation, *(c_long(arg) for arg in args)))


def join_new_session_keyring() -> None:
    """A new, empty session keyring for this process and what it execs, possessed by it
    whatever its uid; nothing on a kernel without keyrings (none to leak)."""
    try:
        keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0)
    except OSError as error:
        if error.errno != errno.ENOSYS:
            raise


def map_large_allocations(threshold: int = 2 << 20):
    """Have malloc give each block of `threshold` bytes or more a mapping of its own, which
    goes back to the kernel when freed (mallopt M_MMAP_THRESHOLD). Left to itself, glibc
    raises that threshold to the size of each large block freed (up to 32 MiB), and from
    then on blocks of megabytes come from the heap and stay there, fragmented: a delta
    push of 100,000 files peaked 11 MB higher for its 5 MiB upload parts. Nothing is done
    under a C library without mallopt."""
    try:
        mallopt = _function_type(c_int)(("mallopt", _libc))
    except AttributeError:
        return
    mallopt(M_MMAP_THRESHOLD, threshold)
