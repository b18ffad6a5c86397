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


@pytest.mark.slow  # a nested pytest run: seconds
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


# ----------------------------------------------- the GPU job: its gpu tests must really run


def ci_test_gpu(pytest_args: str) -> subprocess.CompletedProcess:
    """`make ci-test-gpu` as the GPU job runs it, with CUDA hidden (CUDA_VISIBLE_DEVICES=""):
    a runner whose CUDA does not work."""
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "", "PYTEST_ARGS": pytest_args}
    return subprocess.run(
        ["make", "-s", "ci-test-gpu", f"PYTEST_ARGS={pytest_args} -p no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_the_gpu_job_fails_when_cuda_does_not_work_instead_of_skipping():
    out = ci_test_gpu("tests/test_gpu.py")
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "REQUIRE_GPU=1 but CUDA does not work here" in text, text


@pytest.mark.slow  # a nested pytest run: seconds
def test_the_gpu_job_fails_when_no_gpu_test_is_collected():
    out = ci_test_gpu("tests/test_ci_rules.py")  # no test marked gpu in it
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "REQUIRE_GPU=1: no test marked gpu was collected" in text, text
