"""`make pr-local` on the table demo: the pull-request workflow (pr.yml) run for real by act, as
the runner user, in a project switched to data=cars and model=mlp as a fork would (no code
edit): it retrains on the branch, reports against main and posts the comment."""

from __future__ import annotations

import json

import pytest

from actlib import act, commit_all, pr_branch, remove, require_act, workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table_pr(table_repo):
    require_act()
    repo = workspace(table_repo)
    commit_all(repo, "base: the table demo's outputs")
    pr_branch(repo, {"epochs: 40": "epochs: 8", "T_max: 40": "T_max: 8"})
    result = act.run_workflow(
        "pr.yml", "pull_request", repo, secrets={"GITHUB_TOKEN": "ghs_test"}, echo=False
    )
    yield result
    remove(repo)


def test_the_pr_workflow_retrains_the_table_and_posts_its_report(table_pr):
    result = table_pr
    assert result.jobs["train"] in ("success", "failure"), result.output[-3000:]
    assert result.jobs["comment"] == "success", result.output[-3000:]
    assert result.step("train", "Build the report") == "success", result.output[-3000:]
    (cml,) = result.recorded("cml")
    (body,) = [f["text"] for f in cml["files"] if f["path"].endswith(".md")]
    assert body.startswith(("### ✅ Quality gate", "### ❌ Quality gate"))
    assert "| `train.epochs` | 40 | 8 |" in body
    report = json.loads((result.state / "artifacts/pr-report/reports/pr/report.json").read_text())
    rows = {r["name"]: r for table in report["metrics"] for r in table["rows"]}
    assert rows["accuracy"]["old"] is not None and rows["accuracy"]["new"] is not None
    assert "significance" in report and "error" not in report["significance"], report
