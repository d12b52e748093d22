"""The code style the developers' guide asks for: `ruff check` and `ruff format` clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
FOLDERS = ["code", "tests", "bench"]


def ruff(*arguments):
    executable = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if executable is None:
        pytest.fail("ruff is not installed: it is in requirements-test.txt")
    return subprocess.run(
        [executable, *arguments, *FOLDERS], cwd=PROJECT_DIR, capture_output=True, text=True
    )


def test_ruff_finds_no_problem():
    result = ruff("check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted_as_ruff_formats_it():
    result = ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_file_holds_a_merge_conflict_marker():
    tracked = subprocess.run(
        ["git", "grep", "-n", "-I", "-E", r"^(<{7}|>{7})( |$)"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    assert tracked.stdout == "", tracked.stdout
