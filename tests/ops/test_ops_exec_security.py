"""A `droot exec` session is sandboxed like the app it enters: an image's program run in
an interactive session cannot push input into the operator's terminal (TIOCSTI)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "run"))
from opshelp import DROOT, start_app, stop_app, wait_until  # noqa: E402
from runhelp import attack_binary, run_root  # noqa: E402,F401 - fixtures
from test_run_security import run_on_terminal as on_terminal  # noqa: E402


def test_exec_session_cannot_inject_into_the_terminal(run_root):
    # The same program injects when run by plain chroot (this kernel allows TIOCSTI on
    # one's own terminal), so the refusal below is droot's doing.
    plain = on_terminal(["chroot", str(run_root), "/attack", "tiocsti"])
    assert plain.stdout.strip() == "INJECTED"
    app = start_app(run_root, ["--no-dropcaps"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        result = on_terminal([DROOT, "exec", "--pid", str(app.pid), "--", "/attack", "tiocsti"])
        assert result.returncode == 1
        assert "TIOCSTI: Operation not permitted" in result.stdout
    finally:
        stop_app(app)
