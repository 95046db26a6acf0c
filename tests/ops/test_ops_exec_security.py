"""A `droot exec` session is sandboxed like the app it enters: an image's program run in
an interactive session cannot push input into the operator's terminal (TIOCSTI)."""

import os

from tests.conftest import DROOT, run_with_controlling_terminal
from tests.ops.conftest import start_app, stop_app, wait_until


def test_exec_session_cannot_inject_into_the_terminal(run_root):
    # The same program injects when run by plain chroot (this kernel allows TIOCSTI on
    # one's own terminal), so the refusal below is droot's doing.
    plain = run_with_controlling_terminal(["chroot", str(run_root), "/attack", "tiocsti"])
    assert plain.stdout.strip() == "INJECTED"
    app = start_app(run_root, ["--no-dropcaps"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        result = run_with_controlling_terminal(
            [DROOT, "exec", "--pid", str(app.pid), "--", "/attack", "tiocsti"])
        assert result.returncode == 1
        assert "TIOCSTI: Operation not permitted" in result.stdout
    finally:
        stop_app(app)
