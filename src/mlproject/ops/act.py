"""Run a GitHub Actions workflow here with act (nektos/act), the way GitHub's runner would.

    make act WORKFLOW=pr.yml EVENT=pull_request [EVENT_JSON=payload.json] [ACT_ARGS="-n"]
    python -m mlproject.ops.act pr.yml pull_request [--event-json F] [--var K=V] [--secret K=V]
                            [--label gpu] [--fork] [--job J] [--plan] [--list]

act runs the workflow on this machine, no Docker (`-P ubuntu-24.04=-self-hosted`), on a copy of
the working tree (act copies what .gitignore does not exclude, as a checkout would). Every
third-party action is mapped to a stub in .github/act/ (`--local-repository`), and `cml` and `gh`
are recorders on PATH that append what they would have sent to `<state>/record.jsonl`.

A normal user's run changes nothing on the machine: act runs as that user, without root or sudo,
and the temporary folder (`act-*` in $TMPDIR) is removed afterwards (--keep / KEEP=1 keeps it).
As GitHub runs it, a root caller's jobs run as user `runner` (uid 1001, a home of its own,
passwordless sudo), created if missing: what that changes is checked first and printed.
Jobs do not reach this machine's Docker engine unless asked (--docker / DOCKER=1).
Without --event-json the event's payload is built here: for `pull_request`, a same-repository PR
from the current branch into `main` (base = the merge-base).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.cli import entry_point
from .act_setup import (  # noqa: F401  (tests and make act use these names from here)
    LABELS,
    NOT_COPIED,
    REPOSITORY,
    RUNNER,
    RUNNER_UID,
    STUBS,
    ActError,
    action_refs,
    check_requirements,
    chown_tree,
    copy_repo,
    ensure_runner,
    find_act,
    git,
    grant_traverse,
    hide_docker,
    install_env,
    payload,
    planned_changes,
    runner_executables,
    runner_exists,
    stub_args,
    untraversable,
    venv_view,
    write_secrets,
)

# ------------------------------------------------------------------------------ the run


@dataclass
class Run:
    """What one act run did: its exit code, each job's and step's result, and the recordings."""

    returncode: int
    log: list[dict]
    records: list[dict]
    state: Path
    output: str = ""
    jobs: dict[str, str] = field(default_factory=dict)
    steps: dict[tuple[str, str], str] = field(default_factory=dict)

    def step(self, job: str, name: str) -> str:
        """A step's result (success, failure, skipped) by the start of its name."""
        found = [r for (j, s), r in self.steps.items() if j == job and s.startswith(name)]
        if not found:
            raise KeyError(f"no step {name!r} in job {job!r}; steps: {sorted(self.steps)}")
        return found[-1]

    @property
    def workspaces(self) -> list[Path]:
        """Where act ran the jobs: its copies of the repository, outputs included, in order."""
        found: list[Path] = []
        for entry in self.log:
            match = re.search(r"GITHUB_WORKSPACE:(\S+)", entry.get("msg", ""))
            if match and Path(match.group(1)) not in found:
                found.append(Path(match.group(1)))
        return found

    @property
    def workspace(self) -> Path | None:
        """The last job's copy of the repository."""
        return self.workspaces[-1] if self.workspaces else None

    def clean(self) -> None:
        """Remove act's copies (one per job, in <cache>/act/<id>/hostexecutor: under the state
        folder, or a runner's ~/.cache/act for runs made before act's cache moved there)."""
        for path in self.workspaces:
            if path.name == "hostexecutor" and path.parent.parent.name == "act":
                shutil.rmtree(path.parent, ignore_errors=True)

    def recorded(self, tool: str) -> list[dict]:
        return [r for r in self.records if r["tool"] == tool]


def parse_log(lines: list[dict]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Job results and step results (Main stage; skipped steps from act's debug lines)."""
    jobs, steps = {}, {}
    for line in lines:
        job = line.get("jobID")
        if line.get("jobResult"):
            jobs[job] = line["jobResult"]
        if (
            line.get("stepResult")
            and line.get("stage") == "Main"
            and len(line.get("stepID", [])) == 1
        ):
            steps[(job, line["step"])] = line["stepResult"]
        msg = line.get("msg", "")
        if line.get("level") == "debug" and msg.startswith("Skipping step '") and job:
            name = msg[len("Skipping step '") :].rsplit("' due to", 1)[0]
            steps[(job, name)] = "skipped"
    return jobs, steps


def run_workflow(
    workflow: str,
    event: str,
    repo: Path,
    *,
    event_json: Path | None = None,
    event_payload: dict | None = None,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    job: str | None = None,
    plan: bool = False,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    venv: Path | None = None,
    timeout: float = 1800,
    echo: bool = True,
    docker: bool = False,
) -> Run:
    """Run `workflow` (a file in .github/workflows) of the repository `repo` on `event` with act.
    `repo` must be a folder act may own (see `prepare`); its state (recordings, artifacts, cache,
    act's own cache and its copies of the jobs) goes to `<repo>/../act-state`. With `docker`
    the jobs may reach this machine's Docker engine; without, they find none."""
    repo = repo.resolve()
    venv = venv or (Path(sys.prefix) if sys.prefix != sys.base_prefix else None)
    check_requirements(venv)  # before anything is changed
    state = repo.parent / "act-state"
    state.mkdir(exist_ok=True)
    record = state / "record.jsonl"
    record.write_text("")  # this run's calls only; the cache (like GitHub's) outlives a run
    shutil.rmtree(state / "artifacts", ignore_errors=True)  # artifacts belong to one run
    remotes = git(repo, "remote").split()
    if "github" not in remotes:  # act names the repository after this remote's URL
        git(repo, "remote", "add", "github", f"https://github.com/{REPOSITORY}.git")
    path = repo / ".github/workflows" / Path(workflow).name
    if not path.is_file():
        raise ActError(f"{path}: no such workflow")
    if event_json is None:
        event_json = state / f"event-{event}.json"
        body = event_payload if event_payload is not None else payload(event, repo)
        event_json.write_text(json.dumps(body, indent=2))
    platforms = [a for label in LABELS for a in ("-P", f"{label}=-self-hosted")]
    args = [
        find_act(),
        event,
        "-W",
        str(path.relative_to(repo)),
        *platforms,
        "--action-offline-mode",
        "--no-cache-server",
        "--json",
        "--verbose",
        "--remote-name",
        "github",
        "-e",
        str(event_json),
        *stub_args(repo),
        *(a for k, v in (variables or {}).items() for a in ("--var", f"{k}={v}")),
        # Secrets go through a file (mode 600), not the command line that `ps` shows.
        "--secret-file",
        str(write_secrets(state / "secrets.env", secrets or {})),
        *(["-j", job] if job else []),
        *(extra or []),
    ]
    # Plan mode: a `make` that records its target, so job selection runs without the work.
    plan_bin = f"{repo / STUBS / 'plan'}:" if plan else ""
    no_docker = {} if docker else hide_docker(state)
    first = f"{no_docker['PATH_FIRST']}:" if no_docker else ""
    run_env = {
        "PATH": f"{first}{plan_bin}{repo / STUBS / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "ACT_STUBS": str(repo / STUBS),
        "ACT_STATE": str(state),
        "ACT_RECORD": str(record),
        "DVC_NO_ANALYTICS": "1",
        "ITERATIVE_DO_NOT_TRACK": "1",
        # act's cache and its copies of the jobs stay in the state folder, not in a home folder.
        "XDG_CACHE_HOME": str(state / "cache-home"),
        **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "UV_", "GIT_"))},
        **(
            {"DOCKER_HOST": os.environ["DOCKER_HOST"]}
            if docker and "DOCKER_HOST" in os.environ
            else {}
        ),
        **(env or {}),
    }
    if no_docker:  # last: a caller's env cannot hand the jobs an engine without `docker`
        run_env["DOCKER_HOST"] = no_docker["DOCKER_HOST"]
    if venv:
        run_env.update(install_env(venv, state / "venv"))
    if os.geteuid() == 0:
        for change in planned_changes(venv):  # what this changes on the machine, and why
            print(f"act: as root, this run will {change}", flush=True)
        grant_traverse(runner_executables(venv))
        user = ensure_runner()
        chown_tree(repo.parent, user.pw_uid, user.pw_gid)
        run_env.update(HOME=user.pw_dir, USER=RUNNER, LOGNAME=RUNNER)
        command = [
            shutil.which("sudo") or "sudo",  # the one check_requirements found
            "-u",
            RUNNER,
            "-H",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in run_env.items()),
            *args,
        ]
    else:
        run_env.setdefault("HOME", os.environ.get("HOME", str(state)))
        command = args
    log_path = state / "act.log"  # act's JSON lines; kept for reading after a failure
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            command,
            cwd=repo,
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise ActError(f"act ran past {timeout:.0f} s; its log: {log_path}") from None
        except BaseException:  # Ctrl-C, SIGTERM: act has a session of its own; stop it too
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
        finally:
            if os.geteuid() == 0:  # the folder is the caller's again once act is done
                chown_tree(repo.parent, os.getuid(), os.getgid())
    log, plain = [], []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            plain.append(line)
            continue
        log.append(entry)
        if echo and entry.get("level") != "debug" and entry.get("msg"):
            job_id = entry.get("jobID", "")
            print(f"[{job_id}] {entry['msg'].rstrip()}", flush=True)
    if echo and plain:
        print("\n".join(plain), flush=True)
    jobs, steps = parse_log(log)
    records = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    output = "".join(e.get("msg", "") for e in log if e.get("raw_output")) + "\n".join(plain)
    result = Run(returncode, log, records, state, output, jobs, steps)
    _RUNS.append(result)
    return result


_RUNS: list[Run] = []


def clean(repo: Path) -> None:
    """Remove act's copies of the jobs of every run made in `repo` by this process."""
    state = repo.resolve().parent / "act-state"
    for run in [r for r in _RUNS if r.state == state]:
        run.clean()
        _RUNS.remove(run)


def prepare(source: Path, where: Path | None = None) -> Path:
    """A copy of `source` in a fresh folder that the runner user can own and reach."""
    top = Path(tempfile.mkdtemp(prefix="act-", dir=where))
    top.chmod(0o755)
    return copy_repo(source, top / "repo")


# ------------------------------------------------------------------------------ CLI


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ActError(f"{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


# Exit 2: act could not start; any other non-zero status is act's own (a job failed).
@entry_point(error_code=2, errors=(subprocess.CalledProcessError,))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.ops.act", description=__doc__.split("\n")[0]
    )
    parser.add_argument("workflow", help="file in .github/workflows, e.g. pr.yml")
    parser.add_argument("event", help="push, pull_request, schedule, repository_dispatch, ...")
    parser.add_argument("--event-json", type=Path, help="the event payload (default: built here)")
    parser.add_argument("--var", action="append", default=[], help="repository variable K=V")
    parser.add_argument("--secret", action="append", default=[], help="secret K=V")
    parser.add_argument("--label", action="append", default=[], help="PR label (pull_request)")
    parser.add_argument("--fork", action="store_true", help="the PR comes from a fork")
    parser.add_argument("--ref", help="push: the ref pushed (e.g. refs/tags/classifier@v1.2.0)")
    parser.add_argument("--job", help="run this job only")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="run the job and step logic with a `make` that only records its target "
        "(act -n still runs run: steps in host mode)",
    )
    parser.add_argument("--list", action="store_true", help="list the jobs (act -l)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (copy, act's job copies, recordings) for debugging",
    )
    parser.add_argument(
        "--docker",
        action="store_true",
        help="let the jobs reach this machine's Docker engine (by default they find none)",
    )
    parser.add_argument("act_args", nargs="*", help="more act arguments, after --")
    args = parser.parse_args(argv)
    variables = _pairs(args.var, "--var")
    secrets = _pairs(args.secret, "--secret")
    if not (Path.cwd() / ".github/workflows" / Path(args.workflow).name).is_file():
        raise ActError(f".github/workflows/{Path(args.workflow).name}: no such workflow")
    venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else None
    check_requirements(venv)  # everything needed, before anything is changed
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: act stops, the folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    # A root run says what it changes on the machine (run_workflow), before it changes it.
    changes = planned_changes(venv)
    repo = prepare(Path.cwd())
    if not changes:
        kept = "kept (--keep)" if args.keep else "removed at the end; KEEP=1 keeps it"
        print(f"act: nothing on this machine changes outside {repo.parent} ({kept})", flush=True)
    try:
        return _run(args, repo, variables, secrets)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not stop the clean-up
        if args.keep:
            print(f"act: kept {repo.parent} (--keep)", flush=True)
        else:
            clean(repo)
            shutil.rmtree(repo.parent, ignore_errors=True)


def _run(args: argparse.Namespace, repo: Path, variables: dict, secrets: dict) -> int:
    print(f"act: running {args.workflow} on {args.event} in {repo}", flush=True)
    body = None
    if args.event_json is None:
        body = payload(
            args.event,
            repo,
            fork=args.fork,
            labels=tuple(args.label),
            action="labeled" if args.label else None,
            ref=args.ref,
        )
    result = run_workflow(
        args.workflow,
        args.event,
        repo,
        event_json=args.event_json.resolve() if args.event_json else None,
        event_payload=body,
        variables=variables,
        secrets=secrets,
        job=args.job,
        plan=args.plan,
        extra=[*(["-l"] if args.list else []), *args.act_args],
        docker=args.docker,
    )
    kept = f"{result.state}/record.jsonl" if args.keep else "--keep / KEEP=1 keeps them"
    print(
        f"\nact: jobs {result.jobs or '(none ran)'}; recorded calls: {len(result.records)} ({kept})"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
