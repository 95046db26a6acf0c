"""Error types. Each is reported as one line on stderr (`droot: …`); the exit status is
decided in one place, droot.cli.exit_status (the table is in the README)."""


class DrootError(Exception):
    """A failure to report to the operator: the message says what was wrong and what to do."""

    exit_status = 1

    def __init__(self, message: str, exit_status: int | None = None):
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stop, kill), raised where droot is: everything Ctrl-C cleans up
    (a half-extracted release, a multipart upload, the engine's container) is cleaned up
    the same way."""


class UsageError(DrootError):
    """The command line itself is wrong (a malformed flag value, a missing argument)."""

    exit_status = 2


class RunError(DrootError):
    """`droot run` failed before it could exec the command (docker run's convention)."""

    exit_status = 125


class CommandNotExecutable(RunError):
    exit_status = 126


class CommandNotFound(RunError):
    exit_status = 127


class RolledBack(DrootError):
    """`deploy|pull --restart/--check`: the new release failed its restart or check, and
    the previous one is current again, restarted (and checked) again: it is what runs."""

    exit_status = 3


class NotRecovered(DrootError):
    """`deploy|pull --restart/--check`: the new release failed, and the previous one could
    not be brought back (none, or its restart or check failed too): look at the app."""

    exit_status = 4
