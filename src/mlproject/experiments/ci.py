"""The steps of .github/workflows/sweep.yml (make ci-sweep-shard / -collect / -pr).

shard    run share --index of --total: grid combinations (-S overrides given) or, without a
         grid, --trials/--total Optuna trials in a study of its own; then `dvc exp push origin`
collect  fetch the experiments' refs from origin, rank every experiment on this commit, write the job summary
         (and reports/sweep/summary.md); the best one's name goes to $GITHUB_OUTPUT
pr       `dvc exp branch` the best experiment, then `cml pr create` with its files
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..core.cli import entry_point

OUT = Path("reports/sweep")
PARAMS = "params.yaml"


def plan(total: int) -> int:
    """The matrix of shards; the plan job runs it with python3 alone (imports stay below)."""
    if not 1 <= total <= 256:
        print(f"error: jobs must be between 1 and 256, got {total}", file=sys.stderr)
        return 1
    line = f"shards={json.dumps(list(range(total)))}\n"
    print(line, end="")
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as fh:
            fh.write(line)
    return 0


def _has_dvc_remote() -> bool:
    from .dvcexp import dvc

    return bool(dvc("remote", "default", check=False).stdout.strip())


@contextlib.contextmanager
def token_config(env: dict[str, str]):
    """`env` with GIT_CONFIG_GLOBAL pointing at a temporary git config file (mode 600, removed
    afterwards) that sends the token as actions/checkout does (http.extraheader). `dvc exp push`
    talks to the remote through dulwich, which reads git's config files but not the
    GIT_CONFIG_COUNT variables that git_auth_env sets for git itself: without the file, GitHub
    answers 401. The user's own global config is included, so nothing else changes."""
    header = next(
        (
            env[f"GIT_CONFIG_VALUE_{i}"]
            for i in range(int(env.get("GIT_CONFIG_COUNT") or 0))
            if env.get(f"GIT_CONFIG_KEY_{i}", "").lower() == "http.extraheader"
        ),
        None,
    )
    if header is None:  # no token: nothing to pass
        yield env
        return
    fd, name = tempfile.mkstemp(prefix="git-auth-", suffix=".config")  # mode 600
    own = env.get("GIT_CONFIG_GLOBAL") or os.path.expanduser("~/.gitconfig")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if os.path.isfile(own):
                fh.write(f"[include]\n\tpath = {own}\n")
            fh.write(f"[http]\n\textraheader = {header}\n")
        yield {**env, "GIT_CONFIG_GLOBAL": name}
    finally:
        os.unlink(name)


def push(remote: str = "origin") -> None:
    """`dvc exp push` this commit's experiments; their outputs too when a DVC remote is set."""
    from .dvcexp import dvc

    cache = [] if _has_dvc_remote() else ["--no-cache"]
    if cache:
        print("no DVC remote: pushing the experiments' git refs only (params, metrics, plots)")
    # The checkout keeps no token: it reaches git through the environment (as for retraining)
    # and dulwich through a temporary config file.
    from ..ops.retrain import git_auth_env

    with token_config(git_auth_env()) as env:
        print(dvc("exp", "push", *cache, remote, timeout=1800, env=env).stdout.strip())


def shard(overrides: list[str], index: int, total: int, trials: int, space: Path) -> int:
    if overrides:
        from .sweep import shard as grid_shard

        grid_shard(overrides, index, total)
    else:
        from .hpo import search

        share = math.ceil(trials / total)
        print(f"shard {index + 1}/{total}: {share} of {trials} trial(s)")
        search(space, share, shard=index)
    push()
    return 0


def ranked_rows():
    """Every finished experiment on this commit, with the params it changed, best first."""
    import yaml

    from ..report.diff import flatten
    from .dvcexp import experiments, objective, ranked

    target = objective()
    base = flatten(yaml.safe_load(Path(PARAMS).read_text()) or {})
    rows = []
    for exp in experiments():
        if exp.state != "success":
            continue
        mine = flatten(exp.params)
        changed = {k: str(v) for k, v in mine.items() if base.get(k) != v and k in base}
        rows.append((exp, changed))
    return ranked(rows, target), target


def collect(remote: str = "origin") -> int:
    from ..core.io import atomic_write_text
    from ..ops.retrain import git_auth_env
    from .dvcexp import ExperimentError, metric_value
    from .dvcexp import table as render_table

    # The experiments' refs, fetched by git itself: `dvc exp pull` fetches through libgit2, which
    # failed to write its pack from a local bare remote under act; the ranking needs only the
    # refs (metrics and params are in git), and a PR's outputs are in the DVC remote they pushed.
    fetched = subprocess.run(
        ["git", "fetch", remote, "+refs/exps/*:refs/exps/*"],
        capture_output=True,
        text=True,
        env=git_auth_env(),
    )
    if fetched.returncode != 0:
        raise ExperimentError(f"git fetch {remote} refs/exps/*: {fetched.stderr.strip()}")
    print(f"fetched the experiments' refs from {remote}")
    rows, target = ranked_rows()
    if not rows:
        raise ExperimentError("no finished experiment on this commit was pushed by the shards")
    best = rows[0][0]
    text = (
        f"### Sweep: {len(rows)} experiment(s), ranked by {target.metric} "
        f"({'higher' if target.higher_is_better else 'lower'} is better)\n\n"
        + render_table(rows, target, md=True)
        + f"\n\nBest: `{best.name}` ({target.metric} {metric_value(best, target)})\n"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "summary.md", text)
    print(text)
    for var, line in (("GITHUB_STEP_SUMMARY", text), ("GITHUB_OUTPUT", f"best={best.name}\n")):
        if os.environ.get(var):
            with open(os.environ[var], "a", encoding="utf-8") as fh:
                fh.write(line)
    return 0


def _git(*args: str) -> str:
    from .dvcexp import ExperimentError

    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExperimentError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def open_pr() -> int:
    from ..ops.retrain import RetrainError, create_pr, pr_create_args
    from .dvcexp import ExperimentError, dvc, metric_value

    rows, target = ranked_rows()
    if not rows or metric_value(rows[0][0], target) is None:
        raise ExperimentError("no finished experiment to propose; run `make ci-sweep-collect`")
    best, changed = rows[0]
    branch = f"sweep/{best.name}"
    dvc("exp", "branch", best.name, branch)
    paths = _git("diff", "--name-only", "HEAD", branch).split()
    if not paths:
        print(f"sweep: {best.name} changes no file against this commit; no pull request")
        return 0
    _git("checkout", branch, "--", *paths)  # the experiment's files, for CML to commit
    summary = OUT / "summary.md"
    body = summary.read_text() if summary.is_file() else ""
    value = metric_value(best, target)
    settings = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the baseline's params"
    try:
        url = create_pr(
            pr_create_args(
                branch,
                f"Sweep: best {target.metric} {value:.4f} with {settings}",
                f"The best experiment of the sweep, `{best.name}` ({best.rev[:7]}).\n\n{body}",
                f"Sweep: apply {best.name} ({settings})",
                "mlproject-sweep",
                paths,
            )
        )
    except RetrainError as exc:  # a 403 says which setting to change
        raise ExperimentError(str(exc)) from exc
    print(f"sweep: pull request {url}")
    return 0


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproject.experiments.ci")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan").add_argument("--total", type=int, required=True)
    p = sub.add_parser("shard")
    p.add_argument("-S", "--set-param", dest="overrides", action="append", default=[])
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--space", type=Path, default=Path("conf/hpo/default.yaml"))
    for name in ("collect", "pr"):  # the grid is not needed: every experiment on HEAD counts
        sub.add_parser(name).add_argument("-S", "--set-param", dest="overrides", action="append")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan(args.total)
    if args.command == "shard":
        return shard(args.overrides, args.index, args.total, args.trials, args.space)
    return collect() if args.command == "collect" else open_pr()


if __name__ == "__main__":
    raise SystemExit(main())
