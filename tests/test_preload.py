"""The preload server (mlproject.pipeline.preload): a stage runs in a fork of a process that has
imported torch already, and says, exits with and writes what it would have in its own process.
(Same bytes with and without it: tests/test_pipeline.py's pinned-training test.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlproject.pipeline.preload import IdleCores

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


def _loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow  # starts two servers (a torch import each)
@pytest.mark.skipif(sys.platform != "linux", reason="the preload server is Linux only")
def test_the_later_stages_modules_are_imported_ahead_only_while_a_core_is_idle(repo):
    """On a busy machine (here: one that never has 1000 idle cores) the server imports what
    every stage needs and nothing ahead; with a core idle it imports the export stage's modules
    (onnxruntime's library in its memory map) before any stage asks."""
    assert stage(repo, "prepare", MLPROJECT_PRELOAD_AHEAD="1000").returncode == 0
    (busy,) = servers(repo)
    time.sleep(3)  # it looks for an idle core every 0.25 s
    assert _loaded(busy, "libtorch_cpu") and not _loaded(busy, "onnxruntime")
    os.kill(busy, signal.SIGTERM)

    assert stage(repo, "prepare", MLPROJECT_PRELOAD_AHEAD="0").returncode == 0
    (idle,) = [pid for pid in servers(repo) if pid != busy]
    deadline = time.monotonic() + 120
    while not _loaded(idle, "onnxruntime") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _loaded(idle, "onnxruntime")


def test_idle_cores_are_read_from_the_machines_cpu_ticks(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: 1000 ticks, then 1000 more of which 600
    # idle and 100 waiting on I/O, on a 2-CPU machine: 0.7 of the ticks idle = 1.4 cores.
    stat.write_text("cpu  300 0 100 500 100 0 0 0 0 0\ncpu0 ...\n")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    idle = IdleCores(str(stat))
    stat.write_text("cpu  500 0 200 1100 200 0 0 0 0 0\n")
    assert idle.cores() == pytest.approx(1.4)
    assert idle.cores() == 2  # no ticks since: nothing to go by, counted idle
    assert IdleCores(str(tmp_path / "missing")).cores() == 2
