"""`make pr-local` on a table with a number to predict: the pull-request workflow (pr.yml) run for
real by act, as the runner user, in a project switched to data=diabetes and model=mlp as a fork
would (no code edit): it retrains on the branch, reports the regression metrics and their
significance against main, and posts the comment. (The classification PR loop is
test_act_workflows.py's, on the digits.)"""

from __future__ import annotations

import json

import pytest

from actlib import act, commit_all, pr_branch, remove, require_act, workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table_pr(regression_repo):
    require_act()
    repo = workspace(regression_repo)
    commit_all(repo, "base: the regression demo's outputs")
    pr_branch(repo, {"epochs: 40": "epochs: 8", "T_max: 40": "T_max: 8"})
    result = act.run_workflow(
        "pr.yml", "pull_request", repo, secrets={"GITHUB_TOKEN": "ghs_test"}, echo=False
    )
    yield result
    remove(repo)


def test_the_pr_workflow_retrains_the_regression_table_and_posts_its_report(table_pr):
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
    for metric in ("rmse", "mae", "r2"):  # lower is better for the first two
        assert rows[metric]["old"] is not None and rows[metric]["new"] is not None, rows
    assert "accuracy" not in rows
    sig = report["significance"]
    assert sig["rmse"]["test"] and sig["rmse"]["ci95"], sig  # Wilcoxon + bootstrap on errors
    assert "#### Is the difference real?" in body
    assert "significance" in report and "error" not in report["significance"], report
