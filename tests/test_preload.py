"""The preload server (mlproject.pipeline.preload): a stage runs in a fork of a process that has
imported torch already, and says, exits with and writes what it would have in its own process.
(Same bytes with and without it: tests/test_pipeline.py's pinned-training test.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, make_project


def servers(repo: Path) -> list[int]:
    """Pids of the preload servers working in `repo`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if b"mlproject.pipeline.preload" in args and (entry / "cwd").resolve() == repo:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def stage(repo: Path, name: str, **env: str) -> subprocess.CompletedProcess:
    # The project's own src/ first: the edit below must reach the stage through the server.
    extra = {"PYTHONPATH": str(repo / "src"), "MLPROJECT_PRELOAD_IDLE": "600", **env}
    return subprocess.run(
        [sys.executable, "-m", "mlproject.pipeline", name],
        cwd=repo,
        env={**ENV, **extra},
        capture_output=True,
        text=True,
        timeout=300,  # a server holding the stage's pipes would hang here (it idles 600 s)
    )


@pytest.fixture
def repo(tmp_path):
    repo = make_project(tmp_path / "repo").resolve()
    yield repo
    for pid in servers(repo):
        os.kill(pid, signal.SIGTERM)


@pytest.mark.slow  # runs stages (three torch imports)
@pytest.mark.skipif(sys.platform != "linux", reason="the preload server is Linux only")
def test_a_stage_in_the_server_says_and_exits_as_in_its_own_process_and_runs_edited_code(repo):
    alone = stage(repo, "evaluate", MLPROJECT_PRELOAD="0")  # no model yet: it fails
    assert servers(repo) == []
    assert alone.returncode == 1
    assert alone.stderr.strip().splitlines()[-1].endswith("'outputs/model.pt'")

    assert stage(repo, "prepare").returncode == 0  # starts the server, in the background
    served = stage(repo, "evaluate")
    (server,) = servers(repo)
    assert (served.returncode, served.stdout) == (alone.returncode, alone.stdout)
    assert served.stderr.strip().splitlines()[-1] == alone.stderr.strip().splitlines()[-1]

    # The project's modules are imported by each stage afresh, not kept by the server.
    source = repo / "src/mlproject/pipeline/evaluate.py"
    source.write_text(source.read_text() + "\nprint('evaluate.py as edited')\n")
    edited = stage(repo, "evaluate")
    assert "evaluate.py as edited" in edited.stdout
    assert servers(repo) == [server]
