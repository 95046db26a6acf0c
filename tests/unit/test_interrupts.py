"""A Ctrl-C or SIGTERM that lands in a finalizer, where Python prints "Exception ignored"
and drops it, still stops droot (droot.cli.redeliver_interrupts). CI saw one land in the
import system's module-lock callback: the deploy went on and said "deployed"."""

import subprocess
import sys

import pytest

PROGRAM = """
import signal, sys, time
from droot.cli import raise_terminated, redeliver_interrupts
from droot.core.errors import Terminated
signal.signal(signal.SIGTERM, raise_terminated)
if sys.argv[1] == "hooked":  # as droot.cli.main() sets it up
    sys.unraisablehook = redeliver_interrupts
class Finalized:
    def __del__(self):
        raise EXCEPTION  # what the signal handler does if the signal lands here
try:
    Finalized()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # the code that runs next
        pass
    print("carried on")
except KeyboardInterrupt as error:
    print(type(error).__name__)
"""


def run(exception: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM.replace("EXCEPTION", exception), mode],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("exception", ["KeyboardInterrupt", "Terminated"])
def test_an_interrupt_in_a_finalizer_is_raised_again_in_the_code_that_runs_next(exception):
    hooked = run(exception, "hooked")
    assert hooked.stdout.strip() == exception and hooked.stderr == "", hooked
    unhooked = run(exception, "unhooked")  # the control: Python's own hook drops it
    assert unhooked.stdout.strip() == "carried on", unhooked
    assert "Exception ignored" in unhooked.stderr, unhooked


def test_other_exceptions_in_finalizers_are_still_reported():
    result = run("ValueError('odd')", "hooked")
    assert result.stdout.strip() == "carried on"
    assert "Exception ignored" in result.stderr and "ValueError: odd" in result.stderr
