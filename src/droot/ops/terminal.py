"""`droot exec` on the operator's terminal: the command gets a new pseudo-terminal.

The command is the app's program, and the app's programs may leave a process behind: had
the command the operator's own terminal, that process would keep it (a descriptor, or
/dev/tty in its session) and read what the operator types after droot returns, at the
host's shell prompt. So, as `docker exec -t`, `lxc-attach` and `sudo`'s use_pty do, the
command runs in a session of its own on a new pseudo-terminal, and droot, left on the host
outside every namespace and cgroup of the app, copies bytes between the two until the
command ends; then it closes the pseudo-terminal's controlling side, and whatever the app
left on it reads end-of-file. Signals droot gets go to the command; the window size
follows the operator's.
"""

import fcntl
import os
import select
import signal
import termios

from droot.core.errors import RunError
from droot.run import pidinit

_RELAYED = 65536
# Left as they are: the command's job control is its own terminal's business.
_JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT}


def terminals() -> list[int]:
    """Which of stdin, stdout and stderr are terminals."""
    return [fd for fd in (0, 1, 2) if os.isatty(fd)]


def on_new_terminal(ttys: list[int], held: list[int]) -> None:
    """Fork; in the child (which returns) the descriptors `ttys` are a new pseudo-terminal,
    its controlling terminal in a session of its own. The parent closes `held`, relays
    between the operator's terminal and the new one, and ends as the child does."""
    try:
        controller, terminal = os.openpty()
    except OSError as error:
        raise RunError(f"exec: cannot open a pseudo-terminal for the command: "
                       f"{error.strerror}") from None
    operator = ttys[0]
    try:
        termios.tcsetattr(terminal, termios.TCSANOW, termios.tcgetattr(operator))
    except termios.error:
        pass
    copy_window_size(operator, controller)
    waited = [number for number in pidinit.FORWARDED if number not in _JOB_CONTROL]
    waited.append(signal.SIGCHLD)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(controller)
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        for fd in ttys:
            os.dup2(terminal, fd)
        os.close(terminal)
        return
    os.close(terminal)
    for fd in held:
        os.close(fd)
    pidinit.end_like(relay(child, controller, ttys, waited))


def copy_window_size(source: int, target: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, bytes(8))
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def relay(child: int, controller: int, ttys: list[int], waited: list[int]) -> int:
    """Copy the operator's input to `controller` and its output to the operator's terminal
    until `child` exits; its wait status."""
    typing = 0 if 0 in ttys else None
    output = next(fd for fd in (1, 2, 0) if fd in ttys)
    saved = None
    if typing is not None:
        try:
            saved = termios.tcgetattr(typing)
            raw = termios.tcgetattr(typing)
            raw[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP
                        | termios.IXON)
            raw[1] &= ~termios.OPOST
            raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
            raw[6][termios.VMIN], raw[6][termios.VTIME] = 1, 0
            termios.tcsetattr(typing, termios.TCSAFLUSH, raw)
        except termios.error:
            saved = None
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    for number in waited:
        signal.signal(number, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
    status = None
    try:
        while status is None:
            sources = [controller, wake_read] + ([typing] if typing is not None else [])
            ready = select.select(sources, [], [])[0]
            if wake_read in ready:
                for number in os.read(wake_read, 256):
                    if number == signal.SIGCHLD:
                        pid, wait_status = os.waitpid(child, os.WNOHANG)
                        if pid == child:
                            status = wait_status
                    elif number == signal.SIGWINCH and typing is not None:
                        copy_window_size(output, controller)
                    elif number != signal.SIGWINCH:
                        try:
                            os.kill(child, number)
                        except ProcessLookupError:
                            pass
            if controller in ready and not copy(controller, output) and status is None:
                # Nothing holds the command's terminal any more: wait for the command.
                status = os.waitpid(child, 0)[1]
            if typing is not None and typing in ready:
                data = os.read(typing, _RELAYED)
                if data:
                    os.write(controller, data)
                else:
                    typing = None
        os.set_blocking(controller, False)
        while copy(controller, output):
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        os.close(controller)  # what the app left on the terminal reads end-of-file
        if saved is not None:
            termios.tcsetattr(0, termios.TCSAFLUSH, saved)
    return status


def copy(source: int, target: int) -> bool:
    """Copy what `source` has to `target`; False at its end (EIO: no process holds the
    terminal's other side) or when it has nothing now."""
    try:
        data = os.read(source, _RELAYED)
    except (BlockingIOError, OSError):
        return False
    if not data:
        return False
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(target, view):]
        except OSError:
            return True  # the operator's terminal is gone: drop the output, keep going
    return True
