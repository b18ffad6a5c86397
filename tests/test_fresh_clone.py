"""The template tests itself as a new user would: clone, `make repro`, then the commands the docs
mark `<!-- doc-test: run -->`, each in a new shell with no environment active.

One session does it all, once (under pytest-xdist too: the first worker to get here runs it, the
others read its record), and the tests check the record. Nothing is compared with bytes made on
another machine: a CPU of another vendor retrains to other bytes (docs/pipeline.md), so the checks
are the structure of the outputs, that a second `make repro` does nothing, and that nothing was
staged for the user.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from test_docs import ACTIVATE, DOCS, marked_blocks

from conftest import ROOT, run

pytestmark = pytest.mark.slow

PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
BLOCKS = [
    (p.relative_to(ROOT).as_posix(), line, body) for p in PAGES for line, body in marked_blocks(p)
]
# A change only the profile stage reads (the cheapest stage): `make repro` reruns it and
# rewrites dvc.lock.
CHANGE = ("conf/config.yaml", "\n    bins: 10\n", "\n    bins: 12\n")


def new_user_env() -> dict[str, str]:
    """A new user's shell: no virtual environment active, no venv of this checkout (or of the
    test run) on PATH, and nothing the Makefile exports to its own recipes."""
    venvs = {str(ROOT), str(Path(sys.executable).parent), os.environ.get("VIRTUAL_ENV") or "//"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONPYCACHEPREFIX", "MAKEFLAGS", "MAKELEVEL")
        and k not in ("MFLAGS", "PYTHONHOME")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not any(p.startswith(v) for v in venvs)
    )
    return env


def step(args, cwd: Path, env: dict, timeout: int = 600) -> dict:
    start = time.monotonic()
    result = run(args, cwd, check=False, env=env, timeout=timeout)
    return {
        "cmd": args if isinstance(args, str) else " ".join(args),
        "rc": result.returncode,
        "out": result.stdout,
        "err": result.stderr,
        "seconds": round(time.monotonic() - start, 1),
    }


def new_user_session(workdir: Path) -> dict:
    """Everything a new user does, recorded: (1) clone and `make repro`, (2) `make repro` again,
    (3) a change to conf/, `make params`, `make repro`, (4) each marked docs block in a new
    shell. Each later part needs the first to have passed."""
    clone = workdir / "clone"
    run(["git", "clone", "--quiet", str(ROOT), str(clone)], workdir)
    env = new_user_env()
    git = {**env, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@example.com"}
    record: dict = {"first": step(["make", "repro"], clone, env, timeout=900)}
    if record["first"]["rc"] != 0:
        return record
    record["metrics"] = json.loads((clone / "reports/eval/metrics.json").read_text())
    record["lock"] = yaml.safe_load((clone / "dvc.lock").read_text())
    record["onnx_bytes"] = (clone / "models/model.onnx").stat().st_size
    record["status_after_repro"] = step(["git", "status", "--porcelain"], clone, git)
    record["second"] = step(["make", "repro"], clone, env)
    record["staged_after_repro"] = step(["git", "diff", "--cached", "--name-only"], clone, git)

    # (3) Change a parameter as a user would, then put everything back as it was.
    lock = (clone / "dvc.lock").read_bytes()
    conf = clone / CHANGE[0]
    original = conf.read_text()
    conf.write_text(original.replace(CHANGE[1], CHANGE[2]))
    record["params"] = step(["make", "params"], clone, env)
    record["changed"] = step(["make", "repro"], clone, env)
    record["staged_after_change"] = step(["git", "diff", "--cached", "--name-only"], clone, git)
    record["status_after_change"] = step(["git", "status", "--porcelain"], clone, git)
    conf.write_text(original)
    (clone / "dvc.lock").write_bytes(lock)
    record["restore"] = step("make params && .venv/bin/dvc checkout --quiet", clone, env)

    # (4) The docs' marked blocks, as written, each in a new shell after the README's set-up.
    record["blocks"] = {}
    for page, line, body in BLOCKS:
        script = f"set -eo pipefail\n{ACTIVATE}\n{body}\n"
        record["blocks"][f"{page}:{line}"] = step(["bash", "-c", script], clone, env)
    record["staged_after_docs"] = step(["git", "diff", "--cached", "--name-only"], clone, git)
    return record


@pytest.fixture(scope="session")
def new_user(tmp_path_factory) -> dict:
    """The session's record, made once per test run (shared by pytest-xdist's workers)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        workdir = tmp_path_factory.mktemp("new-user")
        record = new_user_session(workdir)
        (workdir / "new-user.json").write_text(json.dumps(record, indent=1))  # to read after
        return record
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, common to the workers
    with FileLock(str(shared / "new-user.lock")):
        saved = shared / "new-user.json"
        if not saved.is_file():
            workdir = shared / "new-user"
            workdir.mkdir()
            saved.write_text(json.dumps(new_user_session(workdir)))
        return json.loads(saved.read_text())


def passed(record: dict) -> dict:
    assert record["rc"] == 0, (
        f"{record['cmd']} exited {record['rc']}\n{record['out'][-3000:]}\n{record['err'][-3000:]}"
    )
    return record


def test_make_repro_in_a_fresh_clone_builds_everything(new_user):
    first = passed(new_user["first"])["out"]
    assert "creating .venv" in first
    assert "+ uv pip install" in first  # uv, not the slow pip fallback
    assert "Running stage 'export'" in first
    assert "accuracy" in first  # the metrics table
    assert re.search(r"^repro: ran: prepare, train,", first, re.M)  # the one-line stage summary
    assert "Clock skew" not in new_user["first"]["err"], new_user["first"]["err"]
    # The structure the committed run has, with any machine's numbers.
    committed = json.loads(run(["git", "show", "HEAD:reports/eval/metrics.json"], ROOT).stdout)
    metrics = new_user["metrics"]
    assert set(committed) <= set(metrics) and {"accuracy", "f1_macro"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("accuracy", "f1_macro"))
    assert metrics["accuracy"] >= 0.9  # the demo data is easy: far below means a broken pipeline
    assert new_user["onnx_bytes"] > 0
    committed_lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], ROOT).stdout)
    lock = new_user["lock"]["stages"]
    assert set(lock) == set(committed_lock["stages"])
    for name, stage in committed_lock["stages"].items():
        assert [o["path"] for o in lock[name]["outs"]] == [o["path"] for o in stage["outs"]]


def test_a_second_make_repro_does_nothing(new_user):
    second = passed(new_user["second"])["out"]
    assert "Data and pipelines are up to date." in second
    assert "repro: ran: none · from the cache: none · up to date: prepare, train" in second
    assert "creating .venv" not in second and "installing" not in second


def test_make_repro_stages_nothing(new_user):
    """Issue 19: DVC's autostage put dvc.lock and data.dvc in the index, and they went into an
    unrelated commit. After `make repro` (fresh, then on a change) the index is as it was."""
    assert passed(new_user["staged_after_repro"])["out"] == ""
    passed(new_user["params"])
    assert "Running stage 'profile'" in passed(new_user["changed"])["out"]
    assert passed(new_user["staged_after_change"])["out"] == ""
    changed = {line[3:] for line in passed(new_user["status_after_change"])["out"].splitlines()}
    assert {"conf/config.yaml", "params.yaml", "dvc.lock"} <= changed, changed
    passed(new_user["restore"])


@pytest.mark.parametrize(("page", "line", "body"), BLOCKS, ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_each_marked_docs_block_works_in_a_new_shell(new_user, page, line, body):
    """The commands as written, in a shell whose PATH has no venv, after the README's set-up
    (`make repro`, then `source .venv/bin/activate`)."""
    result = passed(new_user["blocks"][f"{page}:{line}"])
    assert "command not found" not in result["err"], result["err"]


def test_the_docs_commands_stage_nothing(new_user):
    assert passed(new_user["staged_after_docs"])["out"] == ""


def test_the_committed_bytes_come_back_where_they_were_made_and_elsewhere_it_says_why(new_user):
    """Issue 18: on a machine with the committed outputs' numerics (same torch build,
    architecture, pinning; AMD or Intel), a fresh clone's `make repro` changes no tracked file.
    On any other machine it may change them, and its closing lines name the numerics that
    differ."""
    from mlproject.core.numerics import card_numerics, comparable
    from mlproject.pipeline.determinism import fingerprint, read_pinning

    committed = card_numerics(run(["git", "show", "HEAD:models/model_card.json"], ROOT).stdout)
    here = fingerprint(read_pinning(ROOT / "params.yaml"), "cpu")
    same, why = comparable(committed, here, ("committed", "here"))
    changed = [line[3:] for line in passed(new_user["status_after_repro"])["out"].splitlines()]
    first = new_user["first"]["out"]
    if same:
        assert changed == [], f"same numerics ({here}), yet make repro changed {changed}"
        assert "repro: changed" not in first
    elif changed:
        assert f"repro: other bytes than committed, made with other numerics: {why}" in first
        assert re.search(r"^repro: changed \d+ tracked file\(s\), nothing staged", first, re.M)
