"""The pull-request workflow's steps, as commands that run the same here and in CI.

    python -m mlproject.report.ci repro      dvc repro, pulling cached outputs when a remote is set
    python -m mlproject.report.ci summary    append the report to $GITHUB_STEP_SUMMARY
    python -m mlproject.report.ci comment    post/update the one PR comment with CML
    python -m mlproject.report.ci launch-runner   start a cloud GPU runner with cost guards

Standard library only (plus render.py), so the comment job needs no environment beyond python3.

Images in the PR comment (REPORT_IMAGES): `artifact` (default) keeps PNGs in the run's artifacts
and links them; `none` leaves them out; `cml` uploads them with `cml comment update --publish`,
to CML's public asset host unless REPORT_PUBLISH_URL names one the repository controls. A private
repository (REPO_VISIBILITY) never uses the public host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import REPORT_DIR
from .render import render

WATERMARK = "mlproject-pr-report"
IMAGE_SETTINGS = ("artifact", "cml", "none")


def _run(args: list[str], check: bool = True) -> int:
    print("+ " + " ".join(args), flush=True)
    code = subprocess.run(args).returncode
    if check and code != 0:
        raise SystemExit(code)
    return code


def _warn(message: str) -> None:
    # GitHub shows ::warning:: lines as annotations; elsewhere they are plain text.
    print(
        f"::warning::{message}" if os.environ.get("GITHUB_ACTIONS") else f"warning: {message}",
        file=sys.stderr,
    )


def _load(report_dir: str) -> dict:
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no report; run `make report` (or `make ci-pr-report`) first.")
    return json.loads(path.read_text())


def remote_configured(cwd: str | None = None) -> bool:
    result = subprocess.run(["dvc", "remote", "list"], capture_output=True, text=True, cwd=cwd)
    return result.returncode == 0 and bool(result.stdout.strip())


STAGE_LINES = (
    (re.compile(r"^Running stage '([^']+)'"), "ran"),
    (re.compile(r"^Stage '([^']+)' didn't change, skipping"), "up to date"),
    (re.compile(r"^Stage '([^']+)' is cached - skipping run"), "restored"),
    (re.compile(r"^Pulling data for stage: '([^']+)'"), "pulled"),
)


def _run_dvc_repro(
    args: list[str],
    stages: dict[str, str],
    cwd: str | None = None,
    env: dict | None = None,
    output: list[str] | None = None,
) -> int:
    """Run `dvc repro ...`, passing its output through and noting what each stage did (a stage
    pulled from the remote stays `pulled`); its last lines go to `output` when given."""
    print("+ " + " ".join(args), flush=True)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if output is not None:
            output[:] = [*output[-19:], line]
        for pattern, what in STAGE_LINES:
            match = pattern.match(line.strip())
            if match:
                stage = match.group(1).split(":")[-1]
                if stages.get(stage) != "pulled" or what == "ran":
                    stages[stage] = what
    return proc.wait()


def stages_missing_outputs(cwd: str | None = None) -> set[str]:
    """Stages whose outputs are not in the workspace (`dvc status`): if DVC then skips them, they
    came from the cache or the remote."""
    result = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, cwd=cwd)
    try:
        status = json.loads(result.stdout or "{}") if result.returncode == 0 else {}
    except json.JSONDecodeError:
        return set()
    missing = set()
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
            if any(state in ("deleted", "not in cache") for state in outs.values()):
                missing.add(stage.split(":")[-1])
    return missing


def stage_summary(stages: dict[str, str]) -> str:
    """One line: the stages that ran, those pulled from the DVC remote (named only when some
    were), those restored from the DVC cache, those up to date."""

    def names(what: str) -> str:
        return ", ".join(s for s, w in stages.items() if w == what) or "none"

    pulled = f" · from the DVC remote: {names('pulled')}" if "pulled" in stages.values() else ""
    return (
        f"repro: ran: {names('ran')}{pulled} · from the cache: {names('restored')} · "
        f"up to date: {names('up to date')}"
    )


def repro() -> int:
    """Restore the committed outputs from the DVC cache (carried between runs by actions/cache),
    then `dvc repro`, pulling from the DVC remote when one is set: only the stages whose code,
    params or data changed run. Fork PRs get no secrets, so a failed pull means rebuilding.
    Ends with one line naming the stages that ran and those that came from the cache."""
    # Outputs missing from the cache make checkout complain; repro rebuilds those anyway.
    missing = stages_missing_outputs()
    _run(["dvc", "checkout", "--quiet"], check=False)
    stages: dict[str, str] = {}
    tail: list[str] = []
    code = None
    if remote_configured():
        code = _run_dvc_repro(["dvc", "repro", "--pull"], stages, output=tail)
        if code != 0:
            from ..ops.remote import reason

            _warn(f"dvc repro --pull failed: {reason(''.join(tail))}; rebuilding instead")
    if code != 0:
        code = _run_dvc_repro(["dvc", "repro"], stages)
    for stage in missing:  # skipped yet missing before: restored (pulled or from the cache)
        if stages.get(stage) == "up to date":
            stages[stage] = "restored"
    print(stage_summary(stages), flush=True)
    return code


def image_setting(env: dict[str, str]) -> str:
    """The REPORT_IMAGES setting after the privacy rule; unknown values are an error."""
    setting = (env.get("REPORT_IMAGES") or "artifact").strip().lower()
    if setting not in IMAGE_SETTINGS:
        raise SystemExit(f"REPORT_IMAGES={setting!r}: expected one of {', '.join(IMAGE_SETTINGS)}.")
    if (
        setting == "cml"
        and env.get("REPO_VISIBILITY", "private") != "public"
        and not env.get("REPORT_PUBLISH_URL")
    ):
        _warn(
            "REPORT_IMAGES=cml would upload a non-public repository's plots to CML's public "
            "host; using artifact links instead (set REPORT_PUBLISH_URL to a host you control)."
        )
        return "artifact"
    return setting


def cml_args(markdown: str, setting: str, env: dict[str, str]) -> list[str]:
    """`cml comment update` for the one report comment of this PR (found by its watermark)."""
    target = f"pr/{env['PR_NUMBER']}" if env.get("PR_NUMBER") else "pr"
    args = ["cml", "comment", "update", f"--target={target}", f"--watermark-title={WATERMARK}"]
    if setting == "cml":
        args.append("--publish")
        if env.get("REPORT_PUBLISH_URL"):
            args.append(f"--publish-url={env['REPORT_PUBLISH_URL']}")
    else:
        args.append("--no-publish")  # CML uploads local images by default; never silently
    return [*args, markdown]


def comment(report_dir: str = REPORT_DIR, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    setting = image_setting(env)
    report = _load(report_dir)
    text = render(report, images={"cml": "inline", "artifact": "artifact"}.get(setting, "none"))
    path = Path(report_dir) / "comment.md"
    path.write_text(text)
    if not shutil.which("cml"):
        raise SystemExit("cml is not on PATH; install it with `make ci-install-cml`.")
    return _run(cml_args(str(path), setting, env), check=False)


def summary(report_dir: str = REPORT_DIR, env: dict[str, str] | None = None) -> int:
    """Append the report (no images: a summary cannot show local files) to the job summary."""
    env = os.environ if env is None else env
    report = _load(report_dir)
    text = render(report, images="artifact" if report.get("ci") else "none")
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        print(text)
        return 0
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")
    print(f"report appended to the job summary ({len(text)} characters)")
    return 0


def launch_runner_args(env: dict[str, str]) -> list[str]:
    """`cml runner launch` for one GPU job: it exits after that job (--single) or when no job
    arrives within the idle timeout, so no instance is left running and billing.

    The cloud, region, type, GPU and spot settings are read by CML itself from CML_RUNNER_*
    variables (its `--cloud-type` is CML_RUNNER_CLOUD_TYPE, and so on)."""
    missing = [k for k in ("CML_RUNNER_CLOUD", "CML_RUNNER_CLOUD_TYPE") if not env.get(k)]
    if missing:
        raise SystemExit(
            f"set {' and '.join(missing)} (repository variables GPU_CLOUD, "
            "GPU_CLOUD_TYPE) to launch a cloud GPU runner."
        )
    idle = env.get("GPU_IDLE_TIMEOUT") or "10min"
    return [
        "cml",
        "runner",
        "launch",
        "--single",
        f"--idle-timeout={idle}",
        f"--labels={env.get('GPU_RUNNER_LABEL') or 'cml-gpu'}",
    ]


def launch_runner(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    return _run(launch_runner_args(env), check=False)


COMMANDS = {"repro": repro, "summary": summary, "comment": comment, "launch-runner": launch_runner}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in COMMANDS:
        print(__doc__)
        return 0 if args in ([], ["-h"], ["--help"]) else 2
    return COMMANDS[args[0]]()


if __name__ == "__main__":
    raise SystemExit(main())
