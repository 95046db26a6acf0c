"""`droot run --userns USER|FIRST:COUNT`: root inside is an unprivileged uid on the host.

Uids and gids 0…COUNT-1 inside map to FIRST…FIRST+COUNT-1 on the host, taken from the
user's first range in /etc/subuid and /etc/subgid (shadow-utils' format, `NAME:FIRST:COUNT`)
or given directly. A process that breaks out of the chroot is then a nobody on the host.

droot joins the user namespace late, after it has made every mount as real root, so the
mounts belong to the host's user namespace: the app cannot unmount, remount or add any, even
as root inside. The kernel refuses to *create* a user namespace for a chrooted process, and a
process cannot usefully write its own maps; so before chroot a short-lived helper creates
the namespace, droot (root on the host) writes the helper's maps and keeps a descriptor of
it, and after the mounts droot joins it with setns(2), keeping its PID. Files keep their on-disk owners: what root inside creates
belongs to FIRST on the host, and host-owned files (uid 0 on disk) show as `nobody` inside,
readable and executable as their modes allow but not writable by root inside.

Standard library only, imported by `droot run` only with --userns.
"""

import os

from droot.core.errors import RunError, UsageError
from droot.core.kernel import setns
from droot.run.isolation import CLONE_NEWUSER, unshare

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"


class IdRange:
    def __init__(self, first: int, count: int):
        self.first, self.count = first, count

    def __repr__(self):
        return f"{self.first}:{self.count}"

    def map_line(self) -> str:
        return f"0 {self.first} {self.count}\n"


def subordinate_range(path: str, user: str) -> IdRange | None:
    """The first range of `user` (a name, or its uid as a number) in a subuid/subgid file."""
    import pwd
    names = {user}
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        names |= {entry.pw_name, str(entry.pw_uid)}
    except KeyError:
        pass
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and \
                fields[2].isdigit() and int(fields[2]) > 0:
            return IdRange(int(fields[1]), int(fields[2]))
    return None


def parse(value: str, subuid: str = SUBUID, subgid: str = SUBGID) -> tuple[IdRange, IdRange]:
    """(uid range, gid range) for the value of --userns."""
    first, colon, count = value.partition(":")
    if colon:
        if not (first.isdigit() and count.isdigit() and int(count) > 0):
            raise UsageError(f"--userns {value!r}: use a user with ranges in {subuid} and "
                             f"{subgid}, or FIRST:COUNT (e.g. 100000:65536)")
        uids = gids = IdRange(int(first), int(count))
    else:
        uids, gids = subordinate_range(subuid, value), subordinate_range(subgid, value)
        for ids, path in ((uids, subuid), (gids, subgid)):
            if ids is None:
                raise RunError(f"--userns {value}: no subordinate range for {value!r} in "
                               f"{path} (add one, e.g. '{value}:100000:65536', or give "
                               "FIRST:COUNT)")
    for ids in (uids, gids):
        if ids.first == 0:
            raise UsageError(f"--userns {value}: the range starts at host id 0, which would "
                             "make root inside root on the host")
        if ids.first + ids.count > 2**32 - 1:
            raise UsageError(f"--userns {value}: the range ends past the largest id")
    return uids, gids


def check_covers(uids: IdRange, gids: IdRange, uid: int, gid: int, groups=()):
    """The app's user and groups must exist inside the namespace."""
    for kind, ids, values in (("uid", uids, [uid]), ("gid", gids, [gid, *groups])):
        for value in values:
            if not 0 <= value < ids.count:
                raise RunError(f"--userns: {kind} {value} is outside the mapped range "
                               f"(0-{ids.count - 1} inside)")


def create(uids: IdRange, gids: IdRange) -> int:
    """A new user namespace with the maps written; returns a descriptor of it, for `enter`.

    Call it before chroot(2): the kernel refuses to create a user namespace for a chrooted
    process, but lets one join an existing namespace (setns) later. A short-lived helper
    unshares the namespace and holds it while this process, root on the host, writes the
    helper's maps and opens the namespace; the helper then exits."""
    unshared_read, unshared_write = os.pipe()
    release_read, release_write = os.pipe()
    helper = os.fork()
    if helper == 0:
        status = 1
        try:
            os.close(unshared_read)
            os.close(release_write)
            unshare(CLONE_NEWUSER, "--userns")
            os.write(unshared_write, b"u")
            os.read(release_read, 1)  # until the parent holds the namespace
            status = 0
        except Exception as error:  # the parent reports it
            os.write(unshared_write, str(error).encode()[:200])
        finally:
            os._exit(status)
    os.close(unshared_write)
    os.close(release_read)
    try:
        answer = os.read(unshared_read, 256)
        if answer != b"u":
            raise RunError(answer.decode(errors="replace") or "--userns: the helper failed")
        proc_dir = os.open(f"/proc/{helper}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _write_at(proc_dir, "uid_map", uids.map_line())
            _write_at(proc_dir, "gid_map", gids.map_line())
            return os.open("ns/user", os.O_RDONLY, dir_fd=proc_dir)
        except OSError as error:
            raise RunError(f"--userns: cannot write the uid/gid maps: {error.strerror}") \
                from None
        finally:
            os.close(proc_dir)
    finally:
        os.close(unshared_read)
        os.close(release_write)
        os.waitpid(helper, 0)


def enter(namespace: int):
    """Join the user namespace `create` made (chrooted or not) and become root inside it:
    all capabilities there, none over the host's objects. The PID stays the same."""
    try:
        setns(namespace, CLONE_NEWUSER)
    except OSError as error:
        raise RunError(f"--userns: cannot enter the user namespace: {error.strerror}") from None
    finally:
        os.close(namespace)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _write_at(directory: int, name: str, text: str):
    fd = os.open(name, os.O_WRONLY, dir_fd=directory)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
