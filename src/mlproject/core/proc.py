"""Running another program: one helper, one error type (standard library only).

    run(["git", "status"])                    -> CompletedProcess (stdout/stderr captured, text)
    run(args, echo=True, capture=False)       -> prints `+ <command>` first, output goes through
    git("rev-parse", "HEAD", cwd=repo)        -> stdout, stripped
    tool("dvc")                               -> this environment's dvc, else the one on PATH

A failing command (with check=True, the default) raises CommandError, which carries the command,
its exit status and its stderr, and prints as "`<command>` exited <n>: <last stderr line>".
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ProjectError


class CommandError(ProjectError, RuntimeError):
    """A command exited non-zero: `.command`, `.returncode`, `.stderr` say which and why."""

    def __init__(self, command: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.command = [str(a) for a in command]
        self.returncode = returncode
        self.stderr = stderr or ""
        lines = self.stderr.strip().splitlines()
        super().__init__(
            f"`{shlex.join(self.command)}` exited {returncode}"
            + (f": {lines[-1]}" if lines else "")
        )


def tool(name: str) -> str:
    """A program from this Python's environment (the venv), else the one on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run(
    args: Sequence[str | Path],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    echo: bool = False,
    tee: bool = False,
    input: str | None = None,
    text: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run `args` and wait. capture: keep stdout/stderr (text) on the result; echo: print
    `+ <command>` first (CI logs); tee: also write the captured output through to ours;
    text=False: bytes instead of text."""
    command = [str(a) for a in args]
    if echo:
        print("+ " + shlex.join(command), flush=True)
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=None if env is None else dict(env),
            capture_output=capture,
            text=text,
            input=input,
            timeout=timeout,  # past it: subprocess.TimeoutExpired
        )
    except OSError as exc:  # the program is missing or not executable: exit 127, as a shell
        if check:
            raise CommandError(command, 127, str(exc)) from None
        return subprocess.CompletedProcess(command, 127, "", str(exc))
    if tee and capture and text:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
    if check and proc.returncode != 0:
        detail = proc.stderr or proc.stdout or ""
        detail = detail if text else detail.decode(errors="replace")
        raise CommandError(command, proc.returncode, detail)
    return proc


def git(*args: str, cwd: str | Path = ".", check: bool = True) -> str:
    """`git <args>` in cwd; its stdout, stripped."""
    return (run(["git", *args], cwd=cwd, check=check).stdout or "").strip()


def dvc_remote_configured(cwd: str | Path | None = None) -> bool:
    """Whether the DVC project in cwd has a remote (`dvc remote list` names one)."""
    proc = run([tool("dvc"), "remote", "list"], cwd=cwd, check=False)
    return proc.returncode == 0 and bool((proc.stdout or "").strip())
