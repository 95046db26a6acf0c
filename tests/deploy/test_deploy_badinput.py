"""Bad input to deploy and pull found by an operator's-eye review: each is one line and
a non-zero status, never an internal error."""

import os
import subprocess

from conftest import DROOT, droot


def one_line_error(result, status, words):
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("droot: ") and result.stderr.count("\n") == 1
    assert words in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_closed_stdin(tmp_path):
    result = subprocess.run([DROOT, "deploy", "--root", str(tmp_path / "app")],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(0))
    one_line_error(result, 1, "stdin, which is closed")


def test_an_empty_root_is_refused(tmp_path):
    one_line_error(droot("deploy", "--root", "", input=""), 2, "--root is empty")
    one_line_error(droot("releases", "--root", ""), 2, "--root is empty")


def test_malformed_and_unsupported_sources(tmp_path):
    one_line_error(droot("pull", "http://[::1", "--root", tmp_path / "a"), 2, "malformed URL")
    one_line_error(droot("pull", "http:///x", "--root", tmp_path / "a"), 2, "malformed URL")
    one_line_error(droot("pull", "ftp://host/x", "--root", tmp_path / "a"), 2,
                   "unsupported store")
    assert not (tmp_path / "a").exists()
