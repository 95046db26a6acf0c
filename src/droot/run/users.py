"""Users and groups of the container, read from its own /etc/passwd and /etc/group.

These files are parsed here, never looked up through the C library: after chroot,
getpwnam(3) would load NSS modules from the image (the CVE-2019-14271 class). A user
or group that the image lacks but the host has is added to the image's files, with
the host's entry (never its password), under the shadow tools' lock file. The image's
files are opened inside the root only (droot.run.rootfs).
"""

import os

from droot.core.errors import RunError
from droot.run import rootfs

PASSWD = "/etc/passwd"
GROUP = "/etc/group"
LOCK = "/etc/.pwd.lock"  # the lock file that lckpwdf(3) and the shadow tools use


class User:
    """Who the app runs as: ids, supplementary groups (primary first), home, name."""

    def __init__(self, uid: int, gid: int, groups: list[int], home: str, name: str | None):
        self.uid, self.gid, self.groups, self.home, self.name = uid, gid, groups, home, name


def read_entries(path: str) -> list[list[str]]:
    """The colon-separated records of the host's passwd/group file (missing file: none)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return parse_entries(file.read())
    except FileNotFoundError:
        return []


def image_entries(path: str) -> list[list[str]]:
    """The records of the image's passwd/group file (the process is chrooted)."""
    try:
        return parse_entries(rootfs.read_text(path) or "")
    except OSError as error:
        raise RunError(f"cannot read the image's {path}: {error.strerror}") from None


def parse_entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines()
            if line and not line.startswith(("#", "+", "-"))]


MAX_ID = (1 << 32) - 2  # (uid_t) -1 tells the kernel "leave it as it is"


def is_id(text: str) -> bool:
    """Whether `text` is a user or group number the kernel takes: ASCII digits
    (str.isdigit takes "²", which int() refuses), at most MAX_ID (an image's passwd file
    may say anything)."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_ID


def find_entry(entries: list[list[str]], wanted: str, fields: int) -> list[str] | None:
    """The first record whose name (or, for a number, whose id) is `wanted`."""
    records = [entry for entry in entries if len(entry) >= fields and is_id(entry[2])
               and (fields == 4 or is_id(entry[3]))]
    for entry in records:
        if entry[0] == wanted:
            return entry
    if is_id(wanted):
        for entry in records:
            if entry[2] == wanted:
                return entry
    return None


def append_entry(path: str, entry: list[str]) -> None:
    """Add one record to the image's passwd/group file, keeping its mode and owner."""
    try:
        with os.fdopen(rootfs.open_in_root(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            old = rootfs.read_regular(file, path)
            status = os.fstat(file.fileno())
        mode, owner, group = status.st_mode & 0o7777, status.st_uid, status.st_gid
    except FileNotFoundError:
        old, mode, owner, group = b"", 0o644, 0, 0
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = ":".join(entry).encode("utf-8", "surrogateescape") + b"\n"
    rootfs.write_atomically(path, old + line, mode, owner, group)


def resolve(user_spec: str, group_spec: str, host_passwd: list[list[str]],
            host_group: list[list[str]]) -> User:
    """The ids, groups and home of `user_spec` (`NAME`, `UID`, `NAME:GROUP`) and
    `group_spec`, in the container's files (the process is already chrooted).
    An entry only the host has is copied into the image; an unknown name is an error,
    an unknown number runs with that number (and the same group number)."""
    user_part, _, group_from_user = user_spec.partition(":")
    group_spec = group_spec or group_from_user
    user_part = user_part or "0"
    passwd = find_entry(image_entries(PASSWD), user_part, 7)
    if passwd is None:
        passwd = copy_host_entry(PASSWD, host_passwd, user_part, 7)
        if passwd is not None:
            # Its primary group too, when the image lacks it.
            if find_entry(image_entries(GROUP), passwd[3], 4) is None:
                copy_host_entry(GROUP, host_group, passwd[3], 4)
    if passwd is None:
        if not is_id(user_part):
            raise RunError(f"unknown user {user_part!r}: neither the image's /etc/passwd nor "
                           "the host's has it (give a number, or add the user to the image)")
        uid = gid = int(user_part)
        name, home = None, "/root" if uid == 0 else "/"
    else:
        uid, gid, name, home = int(passwd[2]), int(passwd[3]), passwd[0], passwd[5] or "/"
    groups = image_entries(GROUP)
    if group_spec:
        entry = find_entry(groups, group_spec, 4)
        if entry is None:
            entry = copy_host_entry(GROUP, host_group, group_spec, 4)
        if entry is not None:
            gid = int(entry[2])
        elif is_id(group_spec):
            gid = int(group_spec)
        else:
            raise RunError(f"unknown group {group_spec!r}: neither the image's /etc/group nor "
                           "the host's has it")
    supplementary = [gid]
    if name is not None:
        for entry in groups:
            if len(entry) >= 4 and name in entry[3].split(",") and is_id(entry[2]):
                if int(entry[2]) not in supplementary:
                    supplementary.append(int(entry[2]))
    return User(uid=uid, gid=gid, groups=supplementary, home=home, name=name)


def copy_host_entry(path: str, host_entries: list[list[str]], wanted: str,
                    fields: int) -> list[str] | None:
    """Copy the host's record for `wanted` into the image's file; None if the host has
    none either. Serialised with other writers by the shadow tools' lock."""
    entry = find_entry(host_entries, wanted, fields)
    if entry is None:
        return None
    if fields == 7:
        entry = [entry[0], "x", *entry[2:]]  # never copy a password hash
    else:
        entry = [entry[0], "x", entry[2], ""]  # the host's members mean nothing here
    try:
        lock = rootfs.open_in_root(LOCK, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o600)
        try:
            rootfs.require_regular(lock, LOCK)
            os.lockf(lock, os.F_LOCK, 0)
            # Another run may have added it while this one waited for the lock.
            existing = find_entry(image_entries(path), wanted, fields)
            if existing is None:
                append_entry(path, entry)
                existing = entry
        finally:
            os.close(lock)
    except OSError as error:
        raise RunError(f"cannot add {wanted!r} to the image's {path}: {error.strerror}") \
            from None
    return existing
