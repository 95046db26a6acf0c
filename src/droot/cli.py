"""Command-line entry point: parse the arguments, then import only the stage that runs.

`droot run` starts on every restart of every app, so this module imports argparse only
when a command line needs it, and builds the options of the one command asked for.
Each stage keeps its commands in a light `cli` module of its own: for a command
NAME it defines `NAME_arguments(parser)` (the flags) and `NAME(args)` (which
imports the implementation and returns the exit status).
"""

import os
import sys

from droot import __version__
from droot.core.errors import (CommandNotExecutable, CommandNotFound, DrootError,
                               NotRecovered, RolledBack, Terminated, TransientError,
                               UsageError)

# command -> (stage module, one-line summary)
COMMANDS = {
    "export": ("droot.image.cli", "write an image's flattened root filesystem as a tar stream"),
    "push": ("droot.ship.cli", "export, compress and upload an image to a store in one stream"),
    "pull": ("droot.ship.cli", "download, verify and deploy an archive in one stream"),
    "gc": ("droot.ship.cli", "remove from a delta store what its newest releases do not need"),
    "deploy": ("droot.deploy.cli", "make the archive on stdin the new release at --root"),
    "rollback": ("droot.deploy.cli", "switch --root back to the previous release"),
    "releases": ("droot.deploy.cli", "list the releases of --root, the current one marked"),
    "rm": ("droot.deploy.cli", "remove --root and all its releases"),
    "run": ("droot.run.cli", "run a command (or the image's own) inside --root"),
    "umount": ("droot.run.cli", "undo mounts that an older run left under --root"),
    "exec": ("droot.ops.cli", "run a command inside a running app's environment"),
    "ps": ("droot.ops.cli", "list the apps running from droot roots on this host"),
    "unit": ("droot.ops.cli", "print a systemd service unit that runs an app"),
}


def parser_type():
    """argparse, imported only when a command line needs it: `droot run` reads its plain
    command lines without it (see droot.run.cli), as argparse would cost more than the run."""
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse that reports a usage error as one `droot: …` line, not a usage dump."""

        command = None  # on the top-level parser: the command it was built for

        def error(self, message):
            # The top-level parser reports unknown options of its command too: name it.
            command = self.command or self.prog.removeprefix("droot").strip()
            where = f"{command}: " if command else ""
            help_of = f"droot {command}" if command else self.prog
            raise UsageError(f"{where}{message} (see '{help_of} --help')")

    return Parser


def build_parser(command: str | None):
    """The top-level parser: with `command`, that command alone, with its options (each
    subparser costs about 2 ms to build); without, every command, for the help."""
    import argparse
    parser = parser_type()(
        prog="droot",
        description="Chroot-based application containers: build with Docker, export, "
        "ship through object storage, deploy atomically, run with chroot.")
    parser.command = command
    parser.add_argument("--version", action="version", version=f"droot {__version__}")
    parser.add_argument("-D", "--debug", action="store_true",
                        help="show a traceback on errors (also DROOT_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if command is None else (command,):
        module_name, summary = COMMANDS[name]
        sub = subparsers.add_parser(name, help=summary, description=summary)
        # SUPPRESS keeps a `--debug` given before the command from being reset here.
        sub.add_argument("-D", "--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show a traceback on errors (also DROOT_DEBUG=1)")
        if command:
            stage = __import__(module_name, fromlist=["_"])
            getattr(stage, f"{name}_arguments")(sub)
            sub.set_defaults(handler=getattr(stage, name))
    return parser


def requested_command(argv: list[str]) -> str | None:
    """The first argument that names a command (flags may come before it)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def exit_status(error: DrootError, command: str | None) -> int:
    """The exit status for `error` in `command`, the one place it is decided:

    - `run` and `exec` (docker run's convention): the command's own status once it runs;
      126 when it cannot be executed, 127 when it is not found, 125 for anything else
      droot refused or failed at, bad usage included.
    - every other command: 2 for bad usage (a flag, a value), 75 (sysexits' EX_TEMPFAIL)
      when the network or the store failed (pull: on every attempt), worth trying again
      later; 1 for any other failure.
    - `deploy` and `pull` with --restart or --check, once the new release was switched to:
      3 when it failed and the previous release runs again (rolled back), 4 when the
      previous one could not be brought back either.
    - any command: 130 after Ctrl-C (SIGINT), 143 after SIGTERM, 141 when the reader of
      its output went away (main() decides those three).
    """
    if command in ("run", "exec"):
        return error.exit_status if isinstance(
            error, (CommandNotExecutable, CommandNotFound)) else 125
    if isinstance(error, (RolledBack, NotRecovered)):
        return error.exit_status
    if isinstance(error, UsageError):
        return 2
    return 75 if isinstance(error, TransientError) else 1


def raise_terminated(signum, frame):
    raise Terminated


_REDELIVERY_DELAY = 0.001  # seconds: the hook has long returned by then


def redeliver_interrupts(unraisable) -> None:
    """A Ctrl-C or SIGTERM that lands while a finalizer runs (a weak reference's callback
    during an import, say) is printed as "Exception ignored in ..." and dropped, and droot
    would carry on as if never interrupted. Raise it again instead, in the code that runs
    next: a timer's signal, as raising it from here would only land in this hook."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    import signal
    interrupt = type(unraisable.exc_value)

    def raise_again(signum, frame):
        while frame is not None:
            if frame.f_code is redeliver_interrupts.__code__:  # still in the hook
                signal.setitimer(signal.ITIMER_REAL, _REDELIVERY_DELAY)
                return
            frame = frame.f_back
        raise interrupt

    signal.signal(signal.SIGALRM, raise_again)
    signal.setitimer(signal.ITIMER_REAL, _REDELIVERY_DELAY)


def main(argv: list[str] | None = None) -> int:
    command, debug = None, False
    try:  # from the start: a Ctrl-C while droot starts is one line too
        argv = sys.argv[1:] if argv is None else argv
        command = requested_command(argv)
        debug = os.environ.get("DROOT_DEBUG", "") not in ("", "0")
        if command not in ("run", "exec"):  # those two become the app, or forward to it
            import signal
            signal.signal(signal.SIGTERM, raise_terminated)
            sys.unraisablehook = redeliver_interrupts
        args = None
        if command == "run":
            from droot.run.cli import parse_run_quickly
            args = parse_run_quickly(argv)
        if args is None:
            args = build_parser(command).parse_args(argv)
        debug = debug or args.debug
        if debug:
            import traceback  # noqa: F401  (now: `run` and `exec` import nothing after chroot)
        status = args.handler(args) or 0
        if command not in ("run", "exec"):
            # Done and reported: a Ctrl-C or SIGTERM from now on (Python restores the
            # default handlers while it exits) must not make a finished deploy "killed".
            import signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return status
    except DrootError as error:
        if debug:
            print_traceback(error)
        print(f"droot: {error}", file=sys.stderr)
        return exit_status(error, command)
    except KeyboardInterrupt as error:
        terminated = isinstance(error, Terminated)
        print(f"droot: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # The reader went away (`droot export IMAGE | head`): not droot's failure to report.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as error:  # a bug: still one line, the traceback on request
        if debug:
            print_traceback(error)
        print(f"droot: internal error: {type(error).__name__}: {error} "
              "(rerun with --debug for a traceback, and please report it)", file=sys.stderr)
        return 125 if command in ("run", "exec") else 1


def print_traceback(error: BaseException) -> None:
    """The traceback of `error` on stderr. After chroot (`run`, `exec`) without the source
    lines: the files at those paths are the image's, not droot's."""
    import traceback

    from droot.core.importseal import sealed  # loaded already if sealed: no search runs
    if sealed():
        print("Traceback (most recent call last, source lines omitted after chroot):",
              file=sys.stderr)
        for frame, line in traceback.walk_tb(error.__traceback__):
            print(f'  File "{frame.f_code.co_filename}", line {line}, in '
                  f"{frame.f_code.co_name}", file=sys.stderr)
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
    else:
        traceback.print_exception(error)
