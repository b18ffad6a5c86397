"""sweep.yml under a real Actions engine (act): two matrix shards each run one short experiment
and `dvc exp push origin` to a local bare remote; the compare job pulls both, ranks them in the
job summary and opens a pull request with the best (`cml` is a recorder). Slow: it trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from actlib import act, bare_origin, git, remove, require_act, workspace
from conftest import make_project

pytestmark = pytest.mark.slow  # two short experiments in act's copies of the project


@pytest.fixture
def repo(tmp_path):
    require_act()
    source = make_project(tmp_path / "source")
    repo = workspace(source)
    bare_origin(repo)
    yield repo
    remove(repo)


def test_shards_push_experiments_and_the_best_gets_a_pull_request(repo: Path):
    inputs = {
        "grid": "-S train.epochs=1 -S 'train.lr=0.01,0.0001'",
        "trials": "2",
        "jobs": "2",
        "open-pr": "true",
    }
    body = act.payload("workflow_dispatch", repo, inputs=inputs)
    result = act.run_workflow(
        "sweep.yml", "workflow_dispatch", repo, event_payload=body, echo=False, timeout=2400
    )
    assert result.returncode == 0, result.output[-4000:]
    assert set(result.jobs.values()) == {"success"}, result.jobs
    # Both shards pushed their experiment to the bare origin.
    refs = git(repo.parent / "origin.git", "for-each-ref", "--format=%(refname)", "refs/exps")
    assert len(refs.split()) == 2, refs
    # The compare job prints the summary it writes (act's job copies do not outlive the run).
    start = result.output.index("### Sweep:")
    summary = result.output[start : result.output.index("Best: `", start) + 200]
    assert "ranked by accuracy" in summary
    rows = [line for line in summary.splitlines() if line.startswith("|")][2:]
    cells = [c.strip() for c in rows[0].split("|")]
    assert len(rows) == 2 and cells[1] == "*" and "0.01" in cells  # train.lr=0.01 ranks first
    (pr,) = [r for r in result.recorded("cml") if r["argv"][:2] == ["pr", "create"]]
    argv = pr["argv"]
    best = summary.split("Best: `")[1].split("`")[0]
    assert argv[argv.index("--branch") + 1] == f"sweep/{best}"
    assert "params.yaml" in argv and "train.lr=0.01" in argv[argv.index("--title") + 1]
