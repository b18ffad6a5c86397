"""Run the server in a child process on a free loopback port and wait until it is ready.

Used by the tests and the benchmark, and usable as a deployment smoke test: `ServerProcess`
starts `python -m mlproject.serve`, polls /v2/health/ready, and stops it with SIGTERM (a clean
shutdown: in-flight requests finish, the prediction log is drained).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import request


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(model, card, env={...}) as server: server.url ...`"""

    def __init__(
        self,
        model: Path | None = None,
        card: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        cwd: Path | None = None,
        command: list[str] | None = None,
        ready_path: str = "/v2/health/ready",
        startup_timeout: float = 30.0,
    ):
        self.host, self.port = "127.0.0.1", free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.command = command or [sys.executable, "-m", "mlproject.serve"]
        if model is not None:
            self.command += ["--model", str(model)]
        if card is not None:
            self.command += ["--card", str(card)]
        self.command += ["--host", self.host, "--port", str(self.port), *(args or [])]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = float("nan")
        self.output = ""

    def start(self) -> ServerProcess:
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while time.perf_counter() - start < self.startup_timeout:
            if self.proc.poll() is not None:
                self.output = self.proc.stdout.read()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                status, _, _ = request(self.host, self.port, "GET", self.ready_path, timeout=0.5)
                if status == 200:
                    self.startup_seconds = time.perf_counter() - start
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server not ready within {self.startup_timeout} s:\n{self.output}")

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process, all threads, and of its live
        child processes (the prediction log's writer), from Linux /proc."""
        total, pids = 0, [self.proc.pid]
        while pids:
            pid = pids.pop()
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    # Fields after the ")" that closes the command name; utime, stime: 14, 15.
                    fields = fh.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as fh:
                        pids += [int(c) for c in fh.read().split()]
            except (FileNotFoundError, ProcessLookupError):  # a child that just exited
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a clean exit (SIGKILL after `timeout`); returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output += self.proc.stdout.read() if self.proc.stdout else ""
        if self.proc.stdout:
            self.proc.stdout.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
