"""The package layout is a checked rule: the stages sit on one lower layer (droot.core)
in pipeline order, and no stage imports another of its layer (pyproject.toml's
[tool.importlinter] contract, checked by import-linter on the source as it is)."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.prefix) / "bin" / "lint-imports")


def lint_imports(source: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT_IMPORTS, "--config", str(config), "--no-cache"],
                          cwd=source, env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    result = lint_imports(REPO / "src", REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The control: the same check on a copy where the lower layer imports a stage."""
    shutil.copytree(REPO / "src" / "droot", tmp_path / "droot")
    errors = tmp_path / "droot" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom droot.deploy import deploy  # noqa\n")
    result = lint_imports(tmp_path, REPO / "pyproject.toml")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "droot.core.errors -> droot.deploy" in result.stdout
