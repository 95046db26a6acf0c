"""After the switch: restart the app, check it, and roll back when the new release fails.

`--restart` says how the app picks up the new release:

    UNIT                   `systemctl restart UNIT` (it returns once systemd has started
                           the unit again, Type=notify readiness included)
    pidfile:PATH[:SIGNAL]  send SIGNAL (default HUP) to the pid written in PATH: for
                           supervisors without systemd, e.g. Server::Starter's
                           `start_server --pid-file PATH` (HUP: a new worker from the new
                           release, the old one stopped once the new one runs), or runit's
                           `supervise/pid` with TERM (runsv starts the app again)

`--check CMD` is a host command (`sh -c CMD`) run again and again until it exits 0 or
`--check-timeout` passes: a readiness probe, since a signalled supervisor starts the new
release in the background. It sees DROOT_ROOT, DROOT_RELEASE (the release it checks) and
DROOT_RELEASE_DIR, so it can ask the app which release answers.

When the restart or the check fails, the root is switched back to the release that was
current before, restarted and checked again. All of it runs under the deploy lock that the
switch holds, so no other deploy or rollback of the root comes in between. The outcome is
one line, and the error type (droot.core.errors) gives the exit status: 0 the new release
runs, 3 rolled back (the previous release runs), 4 neither could be brought up.
"""

import os
import signal
import stat
import subprocess
import time

from droot.core import kernel
from droot.core.errors import DrootError, NotRecovered, RolledBack, UsageError

DEFAULT_CHECK_TIMEOUT = 30.0
CHECK_PAUSE = 0.5  # between two attempts of a failing check
SHORTEST_ATTEMPT = 1.0  # a check started just before the deadline still gets this long
REASON_CHARACTERS = 200
KILLED_CHECK_GRACE = 5.0  # for a killed check's output: a descendant may hold the pipe


class Failed(Exception):
    """A restart or a check that did not succeed; the message is the reason, `step` which
    of the two failed."""

    def __init__(self, reason: str, step: str = "restart"):
        super().__init__(reason)
        self.step = step


class SystemdUnit:
    def __init__(self, unit: str):
        self.unit = unit
        self.shown = unit

    def preflight(self, layout):
        """One line before anything is deployed when systemd cannot restart the unit."""
        import shutil
        if not shutil.which("systemctl"):
            raise DrootError(f"--restart {self.unit}: systemctl not found (is systemd running "
                             "here?); for another supervisor use --restart pidfile:PATH[:SIGNAL]")
        try:
            shown = subprocess.run(["systemctl", "show", "--property=LoadState", "--value",
                                    "--", self.unit], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise DrootError(f"--restart {self.unit}: systemctl did not answer in 30 s") from None
        state = shown.stdout.strip()
        if shown.returncode != 0:
            raise DrootError(f"--restart {self.unit}: systemctl cannot reach systemd: "
                             f"{_last_line(shown.stderr) or f'status {shown.returncode}'}")
        if state != "loaded":
            raise DrootError(f"--restart {self.unit}: systemd has no such unit (LoadState "
                             f"{state or 'empty'}); check its name with systemctl list-units")

    def restart(self, timeout: float):
        try:
            done = subprocess.run(["systemctl", "restart", "--", self.unit],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"systemctl restart {self.unit} did not return in {timeout:g} s") from None
        except OSError as error:
            raise Failed(f"systemctl restart {self.unit}: {error.strerror}") from None
        if done.returncode != 0:
            raise Failed(f"systemctl restart {self.unit} failed: "
                         f"{_last_line(done.stderr) or f'status {done.returncode}'}")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"


_LOCATE = os.O_PATH | os.O_CLOEXEC  # a name resolved, nothing opened


class PidfileSignal:
    def __init__(self, path: str, signal_number: int):
        self.path = path
        self.signal = signal_number
        self.shown = f"{path} ({signal_name(signal_number)})"
        self.app_dirs: tuple[str, ...] = ()  # set by preflight: where the app can write

    def pid(self) -> int:
        """The pid in the file, if the file can be trusted with choosing which process
        droot (root) signals: outside the app's root and releases (where the app, which
        runs as root, or an archive could put a file or a link), reached without a
        symlink once its directory is resolved, a regular file (opening anything else can
        act) that only its owner can write, and that owner root or the process's own."""
        try:
            located = kernel.openat2(kernel.AT_FDCWD, self._resolved(), _LOCATE, 0,
                                     kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS)
            try:
                status = os.fstat(located)
                if not stat.S_ISREG(status.st_mode):
                    raise Failed(f"the pid file {self.path} is not a regular file")
                # The inode just checked, not the name again (no FIFO or device swapped in).
                with open(f"/proc/self/fd/{located}", "rb") as pidfile:
                    text = pidfile.read(64).decode("ascii", "replace").strip()
            finally:
                os.close(located)
        except OSError as error:
            raise Failed(f"cannot read the pid file {self.path}: {error.strerror}") from None
        if status.st_mode & 0o022:
            raise Failed(f"the pid file {self.path} is writable by group or others, who "
                         "could choose which process droot signals")
        if not text.isdigit() or int(text) <= 1:
            raise Failed(f"the pid file {self.path} holds {text[:20]!r}, not a process id")
        pid = int(text)
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            raise Failed(f"no process {pid} (from {self.path}): is the supervisor "
                         "running?") from None
        if status.st_uid not in (0, owner):
            raise Failed(f"the pid file {self.path} belongs to uid {status.st_uid}, which "
                         f"does not own process {pid}: refusing to signal it")
        return pid

    def _resolved(self) -> str:
        """The pid file's path with its directory's symlinks resolved; Failed if any part
        of the way (the file's own directory, or one before it) is the app's."""
        parts = self.path.split("/")
        for end in range(2, len(parts) + 1):
            prefix = os.path.realpath("/".join(parts[:end]))
            if any(prefix == app or prefix.startswith(app + "/") for app in self.app_dirs):
                raise Failed(f"the pid file {self.path} is reached through the app's root "
                             f"or releases ({prefix}), where the app or an archive could "
                             "choose which process droot signals")
        directory, name = os.path.split(self.path)
        return os.path.join(os.path.realpath(directory), name)

    def preflight(self, layout):
        self.app_dirs = tuple(os.path.realpath(path)
                              for path in (layout.root, layout.releases_dir))
        try:
            self.pid()
        except Failed as error:
            raise DrootError(f"--restart pidfile:{self.path}: {error}") from None

    def restart(self, timeout: float):
        pid = self.pid()
        try:
            os.kill(pid, self.signal)
        except ProcessLookupError:
            raise Failed(f"process {pid} (from {self.path}) is gone") from None
        except OSError as error:
            raise Failed(f"cannot signal process {pid} (from {self.path}): "
                         f"{error.strerror}") from None


def parse_restart(spec: str):
    """`--restart` as given: a systemd unit, or pidfile:PATH[:SIGNAL]."""
    if not spec.strip():
        raise UsageError("--restart is empty: give a systemd unit or pidfile:PATH[:SIGNAL]")
    if not spec.startswith("pidfile:"):
        if spec.startswith("-") or "/" in spec:
            raise UsageError(f"--restart {spec!r}: not a systemd unit name (for a supervisor's "
                             "pid file: --restart pidfile:PATH[:SIGNAL])")
        return SystemdUnit(spec)
    path, _, name = spec.removeprefix("pidfile:").partition(":")
    if not path.startswith("/"):
        raise UsageError(f"--restart {spec!r}: give the pid file's absolute path")
    return PidfileSignal(path, parse_signal(name or "HUP", spec))


def parse_signal(name: str, spec: str) -> int:
    if name.isdigit() and 0 < int(name) < signal.SIGRTMAX:
        return int(name)
    name = name.upper()
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise UsageError(f"--restart {spec!r}: unknown signal {name!r} (e.g. HUP, TERM, "
                         "USR2)") from None


class RestartCheck:
    """What runs after the switch: the restart (or None), the check (or None), and the
    bound on each of them."""

    def __init__(self, restart, check: str | None, timeout: float = DEFAULT_CHECK_TIMEOUT):
        self.restarter = restart
        self.check = check
        self.timeout = timeout

    def preflight(self, layout):
        if self.restarter:
            self.restarter.preflight(layout)

    def after_switch(self, layout, lock, previous: str | None, new: str) -> str:
        """Bring up `new` (just switched to); on failure switch back to `previous` and
        bring it up. Returns what was done, for the deploy's line; raises RolledBack or
        NotRecovered with the whole outcome otherwise."""
        try:
            self._bring_up(layout, new)
        except Failed as failure:
            what = f"{failure.step} failed on {new}: {failure}"
        else:
            return self._done()
        if previous is None:
            raise NotRecovered(f"{what}; no previous release to roll back to, {new} stays "
                               "current")
        try:
            layout.switch(lock, previous)
        except DrootError as error:
            raise NotRecovered(f"{what}; rolling back to {previous} failed: {error}") from None
        try:
            self._bring_up(layout, previous)
        except Failed as failure:
            raise NotRecovered(f"{what}; rolled back to {previous}, but its "
                               f"{failure.step} failed too: {failure}") from None
        raise RolledBack(f"{what}; rolled back to {previous}, {self._done()}")

    def _bring_up(self, layout, release: str):
        if self.restarter:
            self.restarter.restart(self.timeout)
        if self.check:
            self._run_check(layout, release)

    def _done(self) -> str:
        done = []
        if self.restarter:
            done.append(f"restarted {self.restarter.shown}")
        if self.check:
            done.append("check passed")
        return ", ".join(done)

    def _run_check(self, layout, release: str):
        """The check, until it passes or the timeout; Failed with the last reason."""
        environment = dict(os.environ, DROOT_ROOT=str(layout.root), DROOT_RELEASE=release,
                           DROOT_RELEASE_DIR=str(layout.releases_dir / release))
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            attempts += 1
            reason = _check_once(self.check, environment, deadline - time.monotonic())
            if reason is None:
                return
            left = deadline - time.monotonic()
            if left <= CHECK_PAUSE:
                raise Failed(f"{reason} ({attempts} attempt{'s' * (attempts > 1)} in "
                             f"{self.timeout:g} s)", "check")
            time.sleep(CHECK_PAUSE)


def _check_once(command: str, environment: dict, seconds: float) -> str | None:
    """Run the check once, for at most `seconds` (SHORTEST_ATTEMPT at least): None when it
    exits 0, else why not."""
    seconds = max(seconds, SHORTEST_ATTEMPT)
    process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the children go too
        try:
            process.communicate(timeout=KILLED_CHECK_GRACE)
        except subprocess.TimeoutExpired:  # a descendant left the session, and holds the pipe
            process.stdout.close()
            process.wait()
        return f"the check did not finish in {seconds:.1f} s"
    if process.returncode == 0:
        return None
    said = _last_line(output.decode(errors="replace"))
    status = (f"killed by {signal_name(-process.returncode)}"
              if process.returncode < 0 else f"exit status {process.returncode}")
    return f"the check ended with {status}" + (f": {said}" if said else "")


def _last_line(text: str) -> str:
    """The last non-empty line of a command's output, printable and bounded."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return line[:REASON_CHARACTERS]
