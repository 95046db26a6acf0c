"""systemd's notification socket ($NOTIFY_SOCKET), passed into the root, so readiness
(Type=notify), the watchdog, status text and the file-descriptor store work for the app.

A socket path is bound by itself, read-only, at IN_ROOT inside the root, and the variable
names it there: the app reaches that one socket, nothing else of the directory it lives
in (/run/systemd on a host). An abstract address ("@name") needs no mount, but the
sandbox keeps the app away from the host's abstract sockets (Landlock's scope; `--net
none`'s own namespace has none of them): droot refuses it then, with what to change,
rather than let the start time out waiting for a READY=1 that cannot arrive.
"""

import os
import stat

from droot.core.errors import RunError
from droot.run.mounts import BindMount

VARIABLE = "NOTIFY_SOCKET"
IN_ROOT = "/run/droot-notify/notify"


def passed_socket(net: str | None, sandboxed: bool) -> tuple[str | None, BindMount | None]:
    """The app's NOTIFY_SOCKET and the bind it needs; (None, None) when the host has none.
    `sandboxed`: the abstract-socket scope applies (not lifted by --share or
    --no-dropcaps)."""
    address = os.environ.get(VARIABLE, "")
    if not address:
        return None, None
    if address.startswith("@"):
        if net == "none":
            raise RunError(f"{VARIABLE}={address} is an abstract socket, which --net none's "
                           "namespace does not have: give the supervisor a socket path")
        if sandboxed:
            raise RunError(f"{VARIABLE}={address} is an abstract socket, which the sandbox "
                           "keeps the app from: give the supervisor a socket path, or "
                           "--share abstract-sockets")
        return address, None
    if not address.startswith("/"):
        raise RunError(f"{VARIABLE}={address!r} is neither a socket path nor an abstract "
                       "address (@NAME): droot can pass only those; unset it")
    try:
        is_socket = stat.S_ISSOCK(os.stat(address).st_mode)
    except OSError as error:
        raise RunError(f"{VARIABLE}={address}: {error.strerror}") from None
    bind = BindMount(address, IN_ROOT, True, VARIABLE) if is_socket else None
    if not bind or not stat.S_ISSOCK(os.fstat(bind.pinned).st_mode):  # what is bound too
        raise RunError(f"{VARIABLE}={address} is not a socket")
    return IN_ROOT, bind
