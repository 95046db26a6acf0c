"""`droot run --pid`: the app in its own PID namespace, under a minimal init written here.

This is the one mode that puts processes between the supervisor and the app:

    supervisor ─▶ droot (same PID as started: the *relay*) ─▶ init (PID 1 inside) ─▶ app (PID 2)

- The relay is the process the supervisor started. It unshares CLONE_NEWPID (which affects
  only its children), forks the init, forwards every catchable signal it receives to the
  init, and when the init is gone ends the way the app ended: the app's exit code, or the
  app's fatal signal raised on itself (so a supervisor sees "killed by SIGTERM" exactly as
  without --pid; core dumps are switched off for that last act, the app's core is the one
  that matters). It is the only droot process outside the namespace.
- The init is PID 1 of the namespace. It continues `droot run` (mounts, a fresh /proc that
  shows only the namespace, chroot, user, capabilities), then forks the app, forwards every
  signal to it, reaps every orphan the namespace hands it, and when the app exits sends the
  app's wait status to the relay and exits: the kernel then kills what is left inside.

Standard library only, imported by `droot run` only with --pid.
"""

import os
import select
import struct

# The C module under `signal`: the same calls and numbers without the enum wrappers, whose
# import (enum, functools, collections) would cost --pid about 10 ms of start-up.
import _signal as signal

from droot.core import kernel

# Signals that are not forwarded: uncatchable ones, SIGCHLD (the waiter's own business), and
# the synchronous fault signals, which are about the process itself.
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV,
                  signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP}
FORWARDED = sorted(set(signal.valid_signals()) - _NOT_FORWARDED)
_WAITED = FORWARDED + [signal.SIGCHLD]
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent, e.g. Ctrl-C to the terminal's group

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_status_fd: int | None = None  # the init's end of the pipe to the relay
_relay_pidfd: int | None = None  # in the init: the relay, to notice if it was killed


def enter_pid_namespace(cgroups=None):
    """Unshare the PID namespace and fork its init. In the relay this never returns (it
    exits as the app did); in the init (PID 1 of the namespace) it returns.

    With limits, the init joins the app's `cgroups` (droot.run.cgroups.AppCgroups); the
    relay stays outside them, and their keeper reports and removes them once all is over.

    Both keep every forwarded signal blocked and take them with sigwaitinfo(2): none is
    lost while `droot run` is still setting up, and a blocked signal reaches even a PID 1
    that has no handler (the kernel drops an unhandled one)."""
    global _status_fd, _relay_pidfd
    from droot.run.isolation import CLONE_NEWPID, unshare  # imported already by the caller
    unshare(CLONE_NEWPID, "--pid")
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    relay_pidfd = os.pidfd_open(os.getpid())
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    init = os.fork()
    if init == 0:
        os.close(read_end)
        _status_fd, _relay_pidfd = write_end, relay_pidfd
        if cgroups is not None:
            cgroups.join()
        return
    os.close(write_end)
    os.close(relay_pidfd)
    status = wait_forwarding(init, reap_all=False)
    reported = os.read(read_end, 4)
    # No report: the init itself died (killed from outside, OOM-killed): end as it did.
    end_like(struct.unpack("i", reported)[0] if len(reported) == 4 else status)


def fork_app():
    """In the init, once `droot run` has set up everything but the final exec: fork the
    app, which returns (to exec); the init forwards signals and reaps, and never returns."""
    # If the relay is killed (SIGKILL leaves it no time to forward), the namespace must not
    # live on unsupervised: the init dies with it, and the kernel kills the rest. Set here,
    # after the switch to the app's user, which clears it; the pidfd closes the race.
    kernel.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([_relay_pidfd], [], [], 0)[0]:
        os._exit(1)
    os.close(_relay_pidfd)
    # The app must not take the init over (ptrace, pidfd_getfd of the pipe to the relay:
    # a forged status). Same uid, capabilities and Landlock domain would let it; an init
    # that is not dumpable needs CAP_SYS_PTRACE, which the app does not have. Set before
    # the fork, or the app could attach before the init gets to it; the app inherits the
    # flag, and its exec sets it back (as for any program that is not setuid).
    kernel.prctl(_PR_SET_DUMPABLE, 0)
    app = os.fork()
    if app == 0:
        os.close(_status_fd)
        # The defaults a freshly exec'd program expects (Python ignores SIGPIPE, for one).
        for number in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        return
    # The init holds nothing the app owns: no inherited descriptor beyond stdio and the pipe.
    os.closerange(3, _status_fd)
    os.closerange(_status_fd + 1, os.sysconf("SC_OPEN_MAX"))
    status = wait_forwarding(app, reap_all=True)
    os.write(_status_fd, struct.pack("i", status))
    os._exit(0)


def wait_forwarding(child: int, reap_all: bool) -> int:
    """Forward signals to `child` until it exits; its wait status. With `reap_all`, also
    reap every other child (the orphans a PID 1 inherits)."""
    while True:
        info = signal.sigwaitinfo(_WAITED)
        if info.si_signo != signal.SIGCHLD:
            # A signal the kernel sent to the whole process group (Ctrl-C, terminal
            # hang-up) has reached the child too: forwarding it would deliver it twice.
            if info.si_code != _SI_KERNEL:
                try:
                    os.kill(child, info.si_signo)
                except ProcessLookupError:
                    pass
            continue
        while True:
            try:
                pid, status = os.waitpid(-1 if reap_all else child, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                return status


def end_like(status: int):
    """Exit with the same code, or die of the same signal, as a process whose wait status
    was `status`."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os._exit(128 + number)  # a signal whose default is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))
