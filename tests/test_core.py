"""core/: the entry-point wrapper (error line, exit codes, timing line), running a command, the
.dvc reader and the file hashes that every part uses."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from mlproject.core.cli import entry_point, subcommands
from mlproject.core.errors import ProjectError, SettingsError, UsageError
from mlproject.core.lineage import dvc_outs, dvc_tracked_info, file_sha256
from mlproject.core.proc import CommandError, git, run

from conftest import ROOT


def test_a_stage_prints_its_timing_line_after_success_only(capsys):
    @entry_point(stage="prepare")
    def done() -> int:
        return 0

    @entry_point(stage="prepare")
    def failed() -> int:
        raise ProjectError("data/: no images")

    assert done() == 0
    assert capsys.readouterr().out.startswith("prepare: done in ")
    assert failed() == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "error: data/: no images\n"


@pytest.mark.parametrize(
    ("raised", "error_code", "expected"),
    [
        (ProjectError("x"), None, 1),
        (SettingsError("x"), None, 1),
        (UsageError("x"), None, 2),
        (ProjectError("x"), 2, 2),  # a tool whose exit 1 means "the check failed"
        (UsageError("x"), 1, 2),  # usage stays 2 everywhere
        (CommandError(["git", "x"], 128, "fatal"), None, 1),
    ],
)
def test_exit_codes(raised, error_code, expected, capsys):
    @entry_point(error_code=error_code)
    def main() -> int:
        raise raised

    assert main() == expected
    assert capsys.readouterr().err.startswith("error: ")


def test_a_bug_keeps_its_traceback():
    @entry_point
    def main() -> int:
        raise KeyError("not a project error")

    with pytest.raises(KeyError):
        main()


def test_subcommands_parse_and_a_missing_one_is_a_usage_error(capsys):
    parser, add = subcommands("prog", "prog: one line\n\n    prog run   runs")
    add("run", "runs").add_argument("--fast", action="store_true")
    assert parser.parse_args(["run", "--fast"]).fast
    with pytest.raises(SystemExit) as usage:
        parser.parse_args([])
    assert usage.value.code == 2
    assert "required: command" in capsys.readouterr().err


def test_a_failed_command_names_itself_and_its_stderr(tmp_path):
    with pytest.raises(CommandError) as failed:
        git("rev-parse", "--verify", "no-such-rev", cwd=tmp_path)
    error = failed.value
    assert error.command[:2] == ["git", "rev-parse"] and error.returncode != 0
    assert "not a git repository" in error.stderr
    assert str(error).startswith("`git rev-parse --verify no-such-rev` exited ")
    assert isinstance(error, ProjectError)


def test_run_without_check_returns_the_status_and_a_missing_program_is_127(tmp_path):
    assert run([sys.executable, "-c", "raise SystemExit(3)"], check=False).returncode == 3
    assert run([str(tmp_path / "nope")], check=False).returncode == 127
    with pytest.raises(CommandError, match="exited 127"):
        run([str(tmp_path / "nope")])
    with pytest.raises(subprocess.TimeoutExpired):
        run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_run_text_bytes_and_tee(capfd):
    assert run([sys.executable, "-c", "print('hi')"]).stdout == "hi\n"
    assert run([sys.executable, "-c", "print('hi')"], text=False).stdout == b"hi\n"
    run([sys.executable, "-c", "print('teed')"], tee=True, echo=True)
    out = capfd.readouterr().out
    assert out.startswith("+ ") and out.endswith("teed\n")


def test_the_dvc_file_reader():
    info = dvc_tracked_info(ROOT / "data.dvc")
    assert info["path"] == "data" and str(info["md5"]).endswith(".dir")
    out, deps = dvc_outs("outs:\n- md5: abc\n  path: data\ndeps:\n- path: x\n  repo: {url: u}\n")
    assert out["md5"] == "abc" and deps[0]["repo"] == {"url": "u"}
    assert dvc_outs(None) == ({}, []) and dvc_outs(": not yaml: [") == ({}, [])
    assert dvc_tracked_info(ROOT / "missing.dvc")["md5"] is None


def test_file_sha256(tmp_path):
    blob = tmp_path / "model.onnx"
    blob.write_bytes(b"x" * (3 << 20))  # more than one read block
    assert file_sha256(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_atomic_writes_get_the_permissions_a_plain_write_would(tmp_path):
    """Not the 0600/0700 of a temporary name: another user (a runner account, a serving
    container) must be able to read the outputs, as `make pr-local` as a normal user does."""
    import os

    from mlproject.core.io import atomic_dir, atomic_write_text, write_json

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "a")
        write_json(tmp_path / "b.json", {})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
        (tmp_path / "plain.txt").write_text("p")
        plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
        assert plain == 0o644
        for name in ("a.txt", "b.json", "d/x"):
            assert (tmp_path / name).stat().st_mode & 0o777 == plain, name
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
