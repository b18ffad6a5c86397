"""`make act` / `make pr-local` on a user's machine (issue 19, item 7; issue 18, item 4): it checks
everything it needs before it changes anything, runs as a normal user without root or sudo,
removes its temporary folders (unless KEEP=1), keeps the jobs off the host's Docker engine unless
asked, and leaves make no file dated in the future (no clock-skew warnings)."""

from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from actlib import IN_CI, act, git, remove, require_act, workspace
from conftest import ENV, ROOT, run

VENV = Path(sys.prefix)
NOBODY = 65534


def cli(repo: Path, *args: str, env: dict, user: int | None = None, python: str | None = None):
    """`python -m mlproject.ops.act ARGS` in `repo`, as make act runs it (optionally as `user`)."""
    command = [python or sys.executable, "-m", "mlproject.ops.act", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)


def leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def runner_exists() -> bool:
    try:
        pwd.getpwnam("runner")
    except KeyError:
        return False
    return True


def modes_on_the_way(executable: Path) -> dict[Path, int]:
    """The mode of each folder on the way to `executable` (root would open some up for runner)."""
    return {p: p.stat().st_mode for p in executable.resolve().parents}


# ------------------------------------------------------------ check first, change nothing


def test_a_missing_requirement_is_one_line_and_nothing_is_changed(tmp_path):
    """As root the jobs run as user runner through sudo: without sudo (or, for a normal user,
    without make) the run stops before creating a user, a folder or a permission."""
    tools = tmp_path / "bin"  # git (and, as root, make): sudo and useradd are not there
    tools.mkdir()
    for tool in ("git", "make") if os.geteuid() == 0 else ("git",):
        (tools / tool).symlink_to(shutil.which(tool))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**ENV, "PATH": f"{VENV / 'bin'}:{tools}", "TMPDIR": str(scratch)}
    before = modes_on_the_way(VENV / "bin" / "python")
    had_runner = runner_exists()
    out = cli(ROOT, "pr.yml", "pull_request", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()  # one line
    assert line.startswith("error: cannot run the workflow here, missing: ")
    assert ("sudo" if os.geteuid() == 0 else "make") in line and "Nothing was changed" in line
    assert modes_on_the_way(VENV / "bin" / "python") == before
    assert runner_exists() is had_runner
    assert leftovers(scratch) == []


def test_what_a_root_run_changes_is_said_before_and_a_normal_users_run_changes_nothing():
    changes = act.planned_changes(VENV)
    if os.geteuid() != 0:
        assert changes == []
        return
    if not act.runner_exists():
        assert any(c.startswith("create user runner (uid 1001") for c in changes), changes
    if act.untraversable(VENV / "bin" / "python"):
        assert any(c.startswith("add o+x (traverse, not read) to ") for c in changes), changes


def test_a_venv_in_a_folder_only_its_owner_may_enter_is_opened_for_act_and_its_python():
    """A checkout under /root, or in `mktemp -d` (mode 700): user runner must reach the venv's
    act and its python (a link, whose own folder counts, not only its target's)."""
    top = Path(tempfile.mkdtemp(prefix="act-private-"))  # mode 700, in /tmp
    try:
        bin_dir = top / "proj/.venv/bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "act").write_text("#!/bin/sh\n")
        (bin_dir / "python").symlink_to(sys.executable)
        assert act.untraversable(bin_dir / "act") == [top]
        assert top in act.untraversable(bin_dir / "python")
        act.grant_traverse([bin_dir / "act"])
        assert act.untraversable(bin_dir / "act") == []
        assert top not in act.untraversable(bin_dir / "python")
    finally:
        shutil.rmtree(top)


# ----------------------------------------------------------- a normal user, no sudo, cleanup


def _as_a_normal_user():
    """(user or None for this one, python, env, a checkout that user can read)."""
    home = Path(tempfile.mkdtemp(prefix="act-user-"))
    scratch = home / "tmp"
    scratch.mkdir()
    env = {
        **{k: v for k, v in ENV.items() if k.startswith(("GIT_", "LANG"))},
        "HOME": str(home),
        "TMPDIR": str(scratch),
        # No sudo: the driver must not need it (the jobs' own PATH is act's).
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
    }
    if os.geteuid() != 0:
        return None, sys.executable, env, workspace(ROOT), home
    # As root: user nobody, with the system's Python (the driver needs only the standard
    # library and src/; this venv's Python may sit under /root, which nobody may not enter).
    python = shutil.which("python3", path="/usr/bin:/bin")
    ok = (
        python
        and subprocess.run(
            [python, "-c", "import sys; sys.exit(sys.version_info < (3, 10))"]
        ).returncode
        == 0
    )
    if not ok:
        message = "needs a Python 3.10+ in /usr/bin for user nobody"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    checkout = workspace(ROOT)
    os.chmod(home, 0o755)
    for path in (home, *home.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    env["PYTHONPATH"] = str(checkout / "src")
    return NOBODY, python, env, checkout, home


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_a_normal_user_runs_a_workflow_without_root_or_sudo_and_nothing_is_left(tmp_path):
    require_act()
    had_runner = runner_exists()
    user, python, env, checkout, home = _as_a_normal_user()
    scratch = Path(env["TMPDIR"])
    try:
        out = cli(
            checkout, "ci.yml", "push", "--job", "lint", "--plan", env=env, user=user, python=python
        )
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-3000:]
        assert "'lint': 'success'" in text, text[-3000:]
        assert "as root" not in text and "sudo" not in text
        assert leftovers(scratch) == []  # the copy, act's job copies, the recordings
        assert not (home / ".cache" / "act").exists()  # act's cache went to the temp folder
        assert runner_exists() is had_runner  # no user created
        # KEEP=1 (--keep) keeps the folder, for debugging, and says where it is.
        kept = cli(
            checkout,
            "ci.yml",
            "push",
            "--job",
            "lint",
            "--plan",
            "--keep",
            env=env,
            user=user,
            python=python,
        )
        assert kept.returncode == 0, kept.stdout[-2000:]
        (folder,) = leftovers(scratch)
        assert f"act: kept {scratch / folder}" in kept.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)
        remove(checkout)


# ------------------------------------------------------------------------------ clock skew


def test_the_jobs_make_install_finds_the_venv_installed_without_clock_skew(tmp_path):
    """act copies the tree with fresh dates, so the lock looks newer than the venv: the job's
    `make install` must neither reinstall nor see a stamp dated in the future."""
    view_env = act.install_env(VENV, tmp_path / "view")
    stamp = tmp_path / "view" / "bin" / ".installed"
    assert stamp.stat().st_mtime <= time.time()
    project = tmp_path / "copy"  # the files `make install` reads, dated now (as act's copy)
    project.mkdir()
    for rel in ("Makefile", "pyproject.toml", "requirements"):
        source = ROOT / rel
        if source.is_dir():
            shutil.copytree(source, project / rel, copy_function=shutil.copy)
        else:
            shutil.copy(source, project / rel)
    out = subprocess.run(
        ["make", "install"],
        cwd=project,
        env={**ENV, **view_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "skew" not in text and "in the future" not in text, text
    assert "installing" not in text, text


# ---------------------------------------------------------------------- the host's Docker


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _FakeEngine(http.server.BaseHTTPRequestHandler):
    """Enough of Docker's API for `docker version`; every request is recorded."""

    requests: list

    def _answer(self, body: bytes = b"OK", kind: str = "text/plain") -> None:
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Api-Version", "1.47")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self._answer()

    def do_GET(self):
        if self.path.endswith("/version"):
            version = {
                "Version": "99.0-fake-engine",
                "ApiVersion": "1.47",
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64",
            }
            self._answer(json.dumps(version).encode(), "application/json")
        else:
            self._answer()

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


PROBE = """on: push
jobs:
  engine:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    steps:
      - name: Which Docker engine
        run: docker version --format 'server {{.Server.Version}}'
"""


@pytest.fixture
def fake_engine():
    """A Docker engine on a socket of its own (the host's, as far as the test is concerned)."""
    folder = Path(tempfile.mkdtemp(prefix="act-docker-"))
    folder.chmod(0o777)  # a job may run as user runner
    sock = folder / "docker.sock"
    requests: list = []
    server = _UnixHTTPServer(str(sock), type("E", (_FakeEngine,), {"requests": requests}))
    sock.chmod(0o777)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"unix://{sock}", requests
    server.shutdown()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


def test_jobs_under_act_reach_no_docker_engine_unless_asked(tmp_path, fake_engine):
    """GitHub's runners have an engine `runner` may use: a job under act that found the host's
    would build and push for real. By default it finds none; `docker=True` (make act DOCKER=1)
    hands it the host's."""
    require_act()
    host, requests = fake_engine
    source = tmp_path / "source"
    (source / ".github/workflows").mkdir(parents=True)
    (source / ".github/workflows/probe.yml").write_text(PROBE)
    run(["git", "init", "-q", "-b", "main", str(source)], tmp_path)
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", "probe")
    repo = workspace(source)
    try:
        hidden = act.run_workflow(
            "probe.yml", "push", repo, env={"DOCKER_HOST": host}, venv=VENV, echo=False
        )
        assert hidden.jobs == {"engine": "failure"}, hidden.output[-2000:]
        assert "no Docker engine for jobs under make act" in hidden.output
        assert requests == []
        if not shutil.which("docker"):
            return  # no docker CLI here to show the other half with
        given = act.run_workflow(
            "probe.yml", "push", repo, env={"DOCKER_HOST": host}, docker=True, echo=False
        )
        assert given.jobs == {"engine": "success"}, given.output[-2000:]
        assert "server 99.0-fake-engine" in given.output
        assert requests
    finally:
        remove(repo)


@pytest.mark.slow  # a workflow under act: seconds each, minutes together
def test_a_stopped_run_stops_act_and_leaves_no_folder():
    """SIGTERM (a CI timeout, `kill`) or Ctrl-C mid-run: act (in a session of its own) is stopped
    too, and the temporary folder is removed."""
    require_act()
    scratch = Path(tempfile.mkdtemp(prefix="act-stop-"))  # reachable by user runner, as /tmp is
    scratch.chmod(0o755)
    env = {**ENV, "TMPDIR": str(scratch)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlproject.ops.act", "ci.yml", "push", "--job", "lint"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in scratch.glob("act-*/act-state/act.log")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.5)
        (log,) = scratch.glob("act-*/act-state/act.log")
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        found = leftovers(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    assert proc.returncode != 0, out
    assert found == [], out
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(log.parent) not in ps  # no act (nor its jobs) left running for that folder
