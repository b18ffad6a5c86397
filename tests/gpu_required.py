"""pytest plugin for GPU runners (`make ci-test-gpu` loads it with `-p gpu_required`): with
REQUIRE_GPU=1 the gpu tests must run. No CUDA, no test marked gpu collected, or a gpu test
skipped fails the run, instead of a green step that tested nothing."""

from __future__ import annotations

import os

import pytest

REQUIRED = os.environ.get("REQUIRE_GPU") == "1"
_skipped: list[str] = []


def _cuda() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    try:
        import torch
    except ImportError as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} finds no CUDA device (torch.cuda.is_available() is False)"
        )
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    if not REQUIRED:
        return
    gpu = [item for item in session.items if "gpu" in item.keywords]
    if not gpu:
        raise pytest.UsageError("REQUIRE_GPU=1: no test marked gpu was collected")
    why = _cuda()
    if why:
        raise pytest.UsageError(f"REQUIRE_GPU=1 but CUDA does not work here: {why}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if REQUIRED and report.skipped:
        _skipped.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRED and _skipped and exitstatus == 0:
        print(f"\nREQUIRE_GPU=1: {len(_skipped)} gpu test(s) skipped: {', '.join(_skipped)}")
        session.exitstatus = 1
