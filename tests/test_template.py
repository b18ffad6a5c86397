"""The template tests itself by generating (issue 22): real copier, real git repositories in tmp,
offline. A local copy of this checkout is the template, tagged v1.0.0 and, with a change to a
workflow, a module and a conf file, v2.0.0; projects are copied from it and updated.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_project, run

copier = pytest.importorskip("copier")
from mlproject.ops import template  # noqa: E402

if not (ROOT / "copier.yml").is_file():
    pytest.skip("a generated project: copier.yml is the template's", allow_module_level=True)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


@pytest.fixture(scope="module")
def tmpl(tmp_path_factory) -> Path:
    """The template at v1.0.0 and v2.0.0 (v2: ci.yml, ops/doctor.py and conf/config.yaml)."""
    repo = make_project(tmp_path_factory.mktemp("template") / "tmpl", with_data=False)
    run(["git", "tag", "v1.0.0"], repo)
    ci = repo / ".github" / "workflows" / "ci.yml"
    ci.write_text("# template v2: a workflow change\n" + ci.read_text())
    doctor = repo / "src" / "mlproject" / "ops" / "doctor.py"
    doctor.write_text(doctor.read_text() + "# template v2: a module change\n")
    config = repo / "conf" / "config.yaml"
    text = config.read_text()
    assert "    patience: 8\n" in text and "  epochs: 40\n" in text
    text = text.replace("    patience: 8\n", "    patience: 10\n")
    config.write_text(text.replace("  epochs: 40\n", "  epochs: 30\n"))
    commit(repo, "v2")
    run(["git", "tag", "v2.0.0"], repo)
    return repo


def generate(tmpl: Path, dest: Path, **data) -> Path:
    copier.run_copy(str(tmpl), str(dest), data=data, defaults=True, unsafe=True,
                    vcs_ref="v1.0.0", quiet=True)  # fmt: skip
    run(["git", "init", "-q", "-b", "main"], dest)
    commit(dest, "from the template")
    return dest


@pytest.fixture(scope="module")
def default_project(tmpl, tmp_path_factory) -> Path:
    """A project copied from v1.0.0 with every default, committed (copy it to change it)."""
    return generate(tmpl, tmp_path_factory.mktemp("default") / "proj")


def copy_of(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_params_from_apply_equal_the_composition():
    """`apply` writes params.yaml without Hydra (copier's Python has none): it must equal what
    `make params` composes, for each table demo."""
    from mlproject.pipeline.config import compose_checked, to_yaml

    for data in ("cars", "diabetes"):
        expected = to_yaml(compose_checked([f"data={data}", "model=mlp"]))
        assert template.compose_params(ROOT, data, "mlp") == expected


def test_template_repository_itself_has_nothing_to_update(capsys):
    assert template.update(root=ROOT) is None
    assert "template repository itself" in capsys.readouterr().out
    assert template.open_pr(root=ROOT) is None  # no token needed to say so


def test_pr_without_token_names_the_secret(tmp_path, monkeypatch):
    (tmp_path / ".copier-answers.yml").write_text("_commit: v1.0.0\n_src_path: x\n")
    monkeypatch.delenv("TEMPLATE_UPDATE_TOKEN", raising=False)
    with pytest.raises(template.TemplateError, match="TEMPLATE_UPDATE_TOKEN"):
        template.open_pr(root=tmp_path)


@pytest.mark.slow
def test_copy_defaults_is_the_demo_project(tmpl, default_project):
    proj = default_project
    answers = yaml.safe_load((proj / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v1.0.0" and answers["_src_path"] == str(tmpl)
    assert answers["data"] == "digits" and answers["python_version"] == "3.11"
    # The defaults reproduce today's project: the same files, less the template's own ones.
    for rel in ("conf/config.yaml", "params.yaml", "README.md", "dvc.lock", ".dvc/config"):
        assert (proj / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    for demo in ("digits", "cars", "diabetes"):  # the tests use every demo
        assert (proj / f"conf/data/{demo}.yaml").is_file(), demo
    for rel in ("copier.yml", "tests/test_template.py", ".github/workflows/template.yml"):
        assert not (proj / rel).exists(), rel
    assert (proj / ".github/workflows/template-update.yml").is_file()
    # Copied as is: ${{ }} survives.
    assert "${{" in (proj / ".github/workflows/pr.yml").read_text()


# Which answers `make repro` runs for: the cheapest here; template.yml runs each (TEMPLATE_DATA),
# and the generated project's own `make test-fast` too (TEMPLATE_TEST_FAST=1: 10-13 minutes on
# one core, too long for `make test`, where it is off).
DATA = os.environ.get("TEMPLATE_DATA", "diabetes").split(",")
TEST_FAST = os.environ.get("TEMPLATE_TEST_FAST", "0") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("data", DATA)
def test_copy_with_answers_then_make_repro(tmpl, tmp_path, data):
    # A Python version other than the default shows the answer applied; when the project's own
    # tests run too, it is this interpreter's (their act runs link it: the stub installs nothing).
    python = f"{sys.version_info[0]}.{sys.version_info[1]}" if TEST_FAST else "3.12"
    answers = {"python_version": python, "dvc_remote": "s3://bucket/p", "project_name": "Proj"}
    proj = generate(tmpl, tmp_path / "proj", data=data, **answers)
    config = (proj / "conf/config.yaml").read_text()
    model = "cnn" if data == "digits" else "mlp"
    assert f"  - data: {data}\n" in config and f"  - model: {model}\n" in config
    for demo in ("digits", "cars", "diabetes"):  # all kept: the project's tests use them
        assert (proj / f"conf/data/{demo}.yaml").is_file(), demo
    for rel in ("dvc.lock", "models/model_card.json", "reports/eval/metrics.json"):
        # a table project's outputs come from its own first repro, not the digits demo's
        assert (proj / rel).exists() == (data == "digits"), rel
    assert f'default: "{python}"' in (proj / ".github/actions/setup/action.yml").read_text()
    assert f'default: "{python}"' in (proj / ".github/workflows/pr-loop.yml").read_text()
    assert f"ARG PYTHON_VERSION={python}" in (proj / "Dockerfile").read_text()
    assert "url = s3://bucket/p" in (proj / ".dvc/config").read_text()
    assert (proj / "README.md").read_text().startswith("# Proj\n")
    # The README's two commands, in the generated project (this venv, the project's own code).
    # Its remote does not answer offline: without it the pipeline runs here.
    (proj / ".dvc/config").write_text((ROOT / ".dvc/config").read_text())
    env = dict(os.environ, PYTHONPATH=str(proj / "src"))
    venv = [f"VENV={Path(sys.executable).parent.parent}", "VENV_PREBUILT=1"]
    start = time.monotonic()
    out = run(["make", "repro", *venv], proj, env=env, timeout=1200).stdout
    print(f"make repro, generated {data} project: {time.monotonic() - start:.0f} s")
    task = "regression" if data == "diabetes" else "classification"
    assert ("rmse" in out) == (task == "regression")
    run([sys.executable, "-m", "mlproject.pipeline.config", "--check"], proj, env=env)
    if TEST_FAST:  # the generated project's own tests pass there
        run(["make", "test-fast", *venv, "TEST_JOBS=0"], proj, env=env, timeout=3600)


@pytest.mark.slow
def test_update_brings_changes_keeps_edits_marks_conflicts(default_project, tmp_path):
    proj = copy_of(default_project, tmp_path / "proj")
    config = proj / "conf/config.yaml"
    text = config.read_text().replace("  lr: 0.003\n", "  lr: 0.01\n")  # own edit: stays
    config.write_text(text.replace("  epochs: 40\n", "  epochs: 10\n"))  # conflicts with v2
    commit(proj, "own edits")
    head = run(["git", "rev-parse", "HEAD"], proj).stdout

    env = dict(os.environ, PYTHONPATH=str(proj / "src"))
    cmd = [sys.executable, "-m", "mlproject.ops.template", "update", "--dry-run"]
    out = run(cmd, proj, env=env).stdout
    assert "dry run" in out and "conf/config.yaml" in out and ".github/workflows/ci.yml" in out
    assert run(["git", "status", "--porcelain"], proj).stdout == ""  # nothing changed
    assert run(["git", "rev-parse", "HEAD"], proj).stdout == head

    out = run(cmd[:-1] + ["--ref", "v2.0.0"], proj, env=env).stdout
    assert "conflicts" in out and "  conf/config.yaml" in out.split("conflicts")[1]
    text = config.read_text()
    assert "    patience: 10\n" in text  # the template's conf change arrived
    assert "  lr: 0.01\n" in text  # the project's own edit stayed
    assert "<<<<<<< " in text and "  epochs: 10\n" in text and "  epochs: 30\n" in text
    assert "# template v2: a workflow change" in (proj / ".github/workflows/ci.yml").read_text()
    assert "# template v2: a module change" in (proj / "src/mlproject/ops/doctor.py").read_text()
    answers = yaml.safe_load((proj / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v2.0.0"


@pytest.mark.slow
def test_adopt_a_fork_without_answers_then_update(tmpl, tmp_path):
    """A "Use this template" copy of v1 (no answers, no history), with its own edit."""
    fork = tmp_path / "fork"
    run(["git", "clone", "-q", "--branch", "v1.0.0", str(tmpl), str(fork)], tmp_path)
    run(["rm", "-rf", ".git"], fork)
    run(["git", "init", "-q", "-b", "main"], fork)
    readme = fork / "README.md"
    readme.write_text(readme.read_text() + "\nOur own notes.\n")
    commit(fork, "Initial commit")

    template.adopt("v1.0.0", str(tmpl), root=fork)
    answers = yaml.safe_load((fork / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v1.0.0" and answers["data"] == "digits"
    assert run(["git", "status", "--porcelain"], fork).stdout == ""  # committed
    with pytest.raises(template.TemplateError, match="exists"):
        template.adopt("v1.0.0", str(tmpl), root=fork)

    result = template.update("v2.0.0", root=fork)
    assert result["conflicts"] == []
    assert "    patience: 10\n" in (fork / "conf/config.yaml").read_text()
    assert "Our own notes." in readme.read_text()


def test_template_update_in_the_template_repository_says_why_and_installs_nothing():
    out = run(["make", "-n", "template-update"], ROOT).stdout
    assert "template repository itself" in out and "uv" not in out


@pytest.mark.slow
def test_template_update_workflow_under_act_records_the_pull_request(
    tmpl, default_project, tmp_path
):
    """template-update.yml in a generated project, against the local template: the update and
    the one pull request CML would open (recorded, nothing sent); without the token, it fails
    naming the secret."""
    from mlproject.ops import act

    from actlib import remove, require_act, workspace

    require_act()
    proj = copy_of(default_project, tmp_path / "proj")
    config = proj / "conf/config.yaml"
    config.write_text(config.read_text().replace("  epochs: 40\n", "  epochs: 10\n"))
    commit(proj, "own edit")
    repo = workspace(proj)
    # The template where act's job can reach it (as root, act runs jobs as user `runner`, who
    # may not enter pytest's folders): beside the workspace, which act hands to the runner.
    near = repo.parent / "template"
    run(["git", "clone", "-q", str(tmpl), str(near)], tmp_path)
    answers = repo / ".copier-answers.yml"
    answers.write_text(answers.read_text().replace(f"_src_path: {tmpl}", f"_src_path: {near}"))
    commit(repo, "the template's URL as the runner reaches it")
    try:
        result = act.run_workflow("template-update.yml", "workflow_dispatch", repo, echo=False)
        assert result.returncode != 0
        assert "TEMPLATE_UPDATE_TOKEN is not set" in result.output

        secrets = {"TEMPLATE_UPDATE_TOKEN": "pat_template"}
        result = act.run_workflow(
            "template-update.yml", "workflow_dispatch", repo, secrets=secrets, echo=False
        )
        assert result.returncode == 0, result.output[-4000:]
        prs = [c["argv"] for c in result.records if c.get("argv", [])[:2] == ["pr", "create"]]
        assert len(prs) == 1, result.records
        argv = prs[0]
        title, body = argv[argv.index("--title") + 1], argv[argv.index("--body") + 1]
        assert argv[argv.index("--branch") + 1] == "template-update/v2.0.0"
        assert "v1.0.0 -> v2.0.0" in title and "1 conflicts" in title
        conflicts = body.split("**Conflicts**")[1].split("Changed files")[0]
        assert "`conf/config.yaml`" in conflicts
        assert "`.github/workflows/ci.yml`" in body and "`src/mlproject/ops/doctor.py`" in body
        assert {"conf/config.yaml", ".copier-answers.yml"} <= set(argv)  # committed to the branch
    finally:
        remove(repo)
