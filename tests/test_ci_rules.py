"""In CI (`CI=true`) a test whose tool is missing fails; here it is skipped, saying what is missing.
Each case runs a tiny test file in its own pytest process with this suite's conftest."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ENV, ROOT

CASES = """
import pytest
from conftest import require_tool

def test_through_the_helper():
    require_tool("no-such-tool-mlproject", "apt-get install no-such-tool")

def test_a_plain_skip_naming_a_missing_tool():
    pytest.skip("wrk is not installed")

def test_a_capability_skip():
    pytest.skip("needs a CUDA device (none found)")

def test_present_tool_is_found():
    assert require_tool("git", "apt-get install git").endswith("git")
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_tool_fails_in_ci_and_skips_elsewhere(tmp_path, ci):
    (tmp_path / "test_cases.py").write_text(CASES)
    env = {**ENV, "CI": ci, "PYTHONPATH": str(ROOT / "tests")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-rA",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_cases.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    if ci:
        assert out.returncode == 1, text
        assert "2 failed, 1 passed, 1 skipped" in text, text
        assert "FAILED test_cases.py::test_through_the_helper" in text
        assert "FAILED test_cases.py::test_a_plain_skip_naming_a_missing_tool" in text
        assert "CI=true" in text
    else:
        assert out.returncode == 0, text
        assert "1 passed, 3 skipped" in text, text
        assert "no-such-tool-mlproject is not installed (apt-get install no-such-tool)" in text
