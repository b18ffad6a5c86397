"""Shared fixtures. Pipeline tests run the real DVC pipeline in a temporary git + DVC repository
made from this checkout (committed and uncommitted files alike), never in the checkout itself.

`make test` runs the tests on several pytest-xdist workers, a test module per worker at a time
(`--dist loadfile`), so that a module-scoped fixture (a server, a trained copy, act runs) is
still made once. A session fixture that costs a pipeline run is built once per `make test`, by
the first worker that needs it (`built_once`), and each worker takes its own copy.
(`--dist loadgroup` would split modules finer, but pytest-xdist 3.8 cannot tag tests with their
group under pytest 9: its groups are silently ignored.)"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Subprocesses find the venv's python, dvc and tools first, and DVC sends no analytics.
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "DVC_NO_ANALYTICS": "1",
    # Bytecode under the venv (as the Makefile does): each subprocess loads torch, DVC, ... compiled.
    "PYTHONPYCACHEPREFIX": str(BIN.parent / "pycache"),
    "PYTHONDONTWRITEBYTECODE": "",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


IN_CI = os.environ.get("CI", "").lower() == "true"


def other_arch(arch: str) -> str:
    """A CPU architecture that is not `arch` (this machine's): a test that fakes another
    machine's outputs must not pick the one it runs on."""
    return "aarch64" if arch != "aarch64" else "x86_64"


def require_tool(name: str, install: str) -> str:
    """The path of tool `name` (this venv first, then PATH). When it is missing the test is
    skipped here, but fails in CI (`CI=true`): there a missing tool is a missing install step,
    and a green run must not hide it. `install` says how to get it."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({install})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so a missing tool fails the test", pytrace=False)
    pytest.skip(message)


def require_docker_engine() -> str:
    """The docker CLI, when a Docker engine answers. Without one the test is skipped, in CI too:
    this project's machines have no Docker engine (a capability, like CUDA, not an install step)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return docker
    pytest.skip("needs a Docker engine (none runs on this machine)")


def run(args, cwd, check=True, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a command (list or shell string), capturing output; fail with it shown."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        shell=isinstance(args, str),
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} exited {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}"
        )
    return result


def project_files() -> list[str]:
    """The files a clone of this checkout would have, plus uncommitted ones git does not ignore."""
    out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


# The demos the tests exercise, and the model each trains by default (conf/data/, conf/model/).
DEMOS = {"digits": "cnn", "cars": "mlp", "diabetes": "mlp"}
DEFAULT_LINE = re.compile(r"(?m)^(  - (data|model): )(\S+)$")


def _pinned(text: str, data: str, model: str | None) -> str:
    """conf/config.yaml's text with `- data:` and `- model:` in its defaults set to a demo's."""
    assert len(DEFAULT_LINE.findall(text)) == 2, "conf/config.yaml: no `- data:`/`- model:`"
    wanted = {"data": data, "model": model or DEMOS[data]}
    return DEFAULT_LINE.sub(lambda m: m[1] + wanted[m[2]], text)


def pin_demo(repo: Path, data: str = "digits", model: str | None = None) -> bool:
    """Select a demo in a project's `conf/config.yaml` defaults (`- data:`, `- model:`) and
    recompose params.yaml; True when that changed anything. The tests pin the demo they test, so
    that a fork whose own defaults name its data (a table, another model) runs them unchanged."""
    config = repo / "conf" / "config.yaml"
    text = config.read_text()
    pinned = _pinned(text, data, model)
    if pinned == text:
        return False
    config.write_text(pinned)
    run([sys.executable, "-m", "mlproject.pipeline.config"], repo)
    return True


def demo_conf(data: str = "digits") -> Path:
    """This checkout's conf/ with demo `data` selected: conf/ itself when it already is (the
    template), else a copy in a temporary folder (a fork that chose other data or a model)."""
    conf = ROOT / "conf"
    text = (conf / "config.yaml").read_text()
    pinned = _pinned(text, data, None)
    if pinned == text:
        return conf
    copy = Path(tempfile.mkdtemp(prefix=f"conf-{data}-")) / "conf"
    shutil.copytree(conf, copy)
    (copy / "config.yaml").write_text(pinned)
    return copy


# What the tests that compose a config read: the digits demo, whatever this project's default.
DEMO_CONF = demo_conf()


def write_demo_data(repo: Path) -> None:
    """data/ holds the demos (digits, cars, diabetes) and data.dvc tracks them: the template's
    data.dvc already does (`make data` writes them byte for byte); a fork's data.dvc tracks its
    own data, so there the demos are `dvc add`-ed and data.dvc committed, in this copy only."""
    from mlproject.pipeline.data import _status_clean, write_demo_dataset

    if (repo / "data").exists():
        shutil.rmtree(repo / "data")
    write_demo_dataset(repo / "data")
    if _status_clean(str(repo / "data.dvc")):
        run(["dvc", "commit", "--force", "-q", "data.dvc"], repo)  # the bytes into DVC's cache
    else:
        run(["dvc", "add", "-q", "data"], repo)
        run(["git", "add", "data.dvc"], repo)
        run(["git", "commit", "-q", "-m", "data: the demos (this fork tracks other data)"], repo)


def make_project(dest: Path, with_data: bool = True, data: str = "digits") -> Path:
    """A fresh git + DVC repository holding this project with demo `data` selected (and its
    default model), committed; data/ holds the demos if asked."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    pin_demo(dest, data)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "project"], dest)
    if with_data:
        write_demo_data(dest)
    return dest


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of a project (git, DVC cache and outputs), less DVC's inode-keyed state database
    (.dvc/tmp): a copy's new inodes could match stale entries."""
    shutil.copytree(
        source,
        dest,
        symlinks=True,
        ignore=lambda folder, _names: ["tmp"] if Path(folder).name == ".dvc" else [],
    )
    return dest


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per test session, whichever xdist worker asks first (the
    others wait for it), into a folder the workers share; each caller gets its own copy."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built = shared / f"built-{name}"
    with open(shared / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (built / "done").exists():
                shutil.rmtree(built, ignore_errors=True)
                build(built / "repo")
                (built / "done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return copy_repo(built / "repo", tmp_path_factory.mktemp(name) / "repo")


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A project in which `dvc repro` has run once on the demo data, with the default config
    (the accuracy target is its): this worker's copy (shared by its tests; do not modify)."""

    def build(repo: Path) -> None:
        make_project(repo)
        run(["dvc", "repro"], repo)

    return built_once(tmp_path_factory, "pipeline", build)


def use_table_demo(repo: Path, model: str = "mlp", data: str = "cars") -> Path:
    """Switch a project to a table demo (data=cars or diabetes, model=mlp) as a fork would: the
    defaults in conf/config.yaml, then `make params`' composition, committed."""
    assert pin_demo(repo, data, model)
    run(["git", "commit", "-qam", f"data: the table demo ({data})"], repo)
    return repo


@pytest.fixture(scope="session")
def table_repo(tmp_path_factory) -> Path:
    """A project switched to the table demo (data=cars, model=mlp) in which `dvc repro` has run
    once: this worker's copy (shared by its tests; do not modify)."""

    def build(repo: Path) -> None:
        use_table_demo(make_project(repo))
        run(["dvc", "repro"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "repro", "--allow-empty"], repo)

    return built_once(tmp_path_factory, "table", build)


@pytest.fixture(scope="session")
def regression_repo(tmp_path_factory) -> Path:
    """A project switched to the regression demo (data=diabetes, model=mlp) in which
    `dvc repro` has run once: this worker's copy (shared by its tests; do not modify)."""

    def build(repo: Path) -> None:
        use_table_demo(make_project(repo), data="diabetes")
        run(["dvc", "repro"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "repro", "--allow-empty"], repo)

    return built_once(tmp_path_factory, "diabetes", build)


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh project with the demo data present and nothing run yet (yours to modify)."""
    return make_project(tmp_path / "repo")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, a skip that says a tool is not installed is a failure, wherever it was raised."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if "not installed" in reason or "not found on PATH" in reason:
            report.outcome = "failed"
            report.longrepr = f"{reason}\nCI=true: a missing tool fails the test, never skips it"


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is present; elsewhere they are skipped, saying why."""
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
