"""The docs site and the README: the site builds strict (a broken link fails it), the README stays
short, every `make <target>` they name exists, `make help` / `make help-ci` list every target
exactly once, the pages name every server setting, alert, repository variable and secret, and
docs.yml builds and "deploys" the site under act (the Pages actions are stubs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from actlib import act, remove, require_act, workspace
from conftest import BIN, ROOT, run

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
MAKE = re.compile(r"\bmake[ \t]+([a-z][\w-]*)")
TARGET = re.compile(r"^([A-Za-z0-9_-]+):(?!=)", re.M)


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
        project,
        check=False,
        timeout=300,
    )


def copy_docs(dest: Path) -> Path:
    shutil.copy2(ROOT / "mkdocs.yml", dest / "mkdocs.yml")
    shutil.copytree(DOCS, dest / "docs")
    return dest


def code_text(markdown: str) -> str:
    """The fenced blocks and inline code of a Markdown page: where commands are written."""
    blocks = FENCE.findall(markdown)
    return "\n".join([*blocks, *INLINE.findall(FENCE.sub("", markdown))])


def make_targets() -> set[str]:
    return set(TARGET.findall((ROOT / "Makefile").read_text()))


def listed(which: str) -> list[str]:
    out = run(["make", "--no-print-directory", which], ROOT).stdout
    return re.findall(r"^  make (\S+)", out, re.M)


# ------------------------------------------------------------------------------- the site


def test_the_site_builds_strict(tmp_path):
    assert "mkdocs build --strict" in run(["make", "-n", "docs"], ROOT).stdout
    result = mkdocs_build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    for page in PAGES:  # every page is in nav and rendered
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / name).is_file(), page.name


@pytest.mark.parametrize(
    ("link", "says"),
    [
        ("[the gate](no-such-page.md)", "no-such-page.md"),
        ("[the gate](report.md#no-such-anchor)", "no-such-anchor"),
        ("[home](/index.md)", "/index.md"),
    ],
)
def test_a_broken_link_fails_the_build(tmp_path, link, says):
    project = copy_docs(tmp_path)
    page = project / "docs" / "serving.md"
    page.write_text(page.read_text() + f"\nSee {link}.\n")
    result = mkdocs_build(project, tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr
    assert says in result.stderr and "serving.md" in result.stderr, result.stderr


def test_a_page_left_out_of_nav_fails_the_build(tmp_path):
    project = copy_docs(tmp_path)
    (project / "docs" / "orphan.md").write_text("# Orphan\n")
    result = mkdocs_build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "orphan.md" in result.stderr, result.stderr


# ------------------------------------------------------------------- README and make targets


def test_the_readme_is_short_and_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "make repro" in readme and "make test" in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_make_target_the_docs_name_exists(path):
    named = set(MAKE.findall(code_text(path.read_text())))
    missing = named - make_targets()
    assert not missing, f"{path.name} names make targets the Makefile lacks: {sorted(missing)}"


def test_every_target_is_in_exactly_one_of_help_and_help_ci():
    people, ci = listed("help"), listed("help-ci")
    assert len(people) == len(set(people)) and len(ci) == len(set(ci))
    assert not set(people) & set(ci), set(people) & set(ci)
    assert set(people) | set(ci) == make_targets(), make_targets() ^ (set(people) | set(ci))
    # what people type stays apart from the workflows' steps (`*-local` runs a workflow here)
    steps = ("ci-", "retrain-", "release-")
    assert not [t for t in people if t.startswith(steps) and not t.endswith("-local")]
    assert {"repro", "test", "docs", "serve", "monitor", "register"} <= set(people)


def test_help_is_short_and_readable():
    for which in ("help", "help-ci"):
        out = run(["make", "--no-print-directory", which], ROOT).stdout
        wide = [line for line in out.splitlines() if len(line) > 90]
        assert not wide, f"make {which}: keep each line to 90 characters: {wide}"


# ------------------------------------------------------------------- the docs match the code


def test_every_server_setting_is_documented():
    from mlproject.serve.settings import ENV

    page = (DOCS / "serving.md").read_text()
    missing = [var for var, _ in ENV.values() if f"`{var}`" not in page]
    assert not missing, f"docs/serving.md: settings table lacks {missing}"


def test_every_alert_is_documented():
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    page = (DOCS / "deployment.md").read_text()
    assert alerts and not [a for a in alerts if f"`{a}`" not in page], alerts


def test_every_repository_variable_and_secret_is_documented():
    texts = [p.read_text() for p in (ROOT / ".github").glob("*/*.yml")]
    names = set(re.findall(r"\b(?:vars|secrets)\.([A-Z][A-Z0-9_]*)", "\n".join(texts)))
    names -= {"GITHUB_TOKEN"}  # GitHub's own
    docs = "\n".join(p.read_text() for p in PAGES)
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", docs))
    assert names and not missing, f"no page of docs/ names {missing}"


# ------------------------------------------------------------------------ docs.yml under act


def test_docs_workflow_builds_and_deploys_the_site_under_act():
    """Both jobs for real; the Pages actions are stubs (.github/act/actions/*-pages)."""
    require_act()
    repo = workspace(ROOT)
    try:
        # The repository says Pages is on (without PAGES_ENABLED only the build runs).
        result = act.run_workflow(
            "docs.yml", "push", repo, variables={"PAGES_ENABLED": "true"}, echo=False, timeout=600
        )
    finally:
        remove(repo)
    assert result.returncode == 0, result.output[-3000:]
    assert result.jobs == {"build": "success", "deploy": "success"}
    assert result.step("build", "Build the docs site") == "success"
    (upload,) = result.recorded("stub:upload-pages-artifact")
    assert upload["argv"] == ["name=github-pages", "path=site"]
    (deploy,) = result.recorded("stub:deploy-pages")
    assert deploy["job"] == "deploy"
    assert "Documentation built" in result.output
