"""The pull-request workflow's steps, as commands that run the same here and in CI.

    python -m mlproject.report.ci repro      dvc repro, pulling cached outputs when a remote is set
    python -m mlproject.report.ci summary    append the report to $GITHUB_STEP_SUMMARY
    python -m mlproject.report.ci comment    post/update the one PR comment with CML
    python -m mlproject.report.ci launch-runner   start a cloud GPU runner with cost guards

Standard library only (plus render.py and core/'s standard-library helpers), so the comment job
needs no environment beyond python3.

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

from ..core.cli import entry_point, subcommands
from ..core.errors import ProjectError, SettingsError
from ..core.numerics import card_numerics, comparable, describe
from ..core.paths import MODEL_CARD as _CARD
from ..core.proc import dvc_remote_configured, run, tool
from . import REPORT_DIR
from .render import render

WATERMARK = "mlproject-pr-report"
MODEL_CARD = _CARD.as_posix()
IMAGE_SETTINGS = ("artifact", "cml", "none")


def _call(args: list[str]) -> int:
    """Run a step's command, echoed, its output straight to the log; its exit status."""
    return run(args, echo=True, capture=False, check=False).returncode


def _warn(message: str) -> None:
    # GitHub shows ::warning:: lines as annotations; elsewhere they are plain text.
    print(
        f"::warning::{message}" if os.environ.get("GITHUB_ACTIONS") else f"warning: {message}",
        file=sys.stderr,
    )


def _load(report_dir: str) -> dict:
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        raise ProjectError(f"{path}: no report; run `make report` (or `make ci-pr-report`) first.")
    return json.loads(path.read_text())


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
    pulled from the remote stays `pulled`; the stage running when DVC fails is `failed`); its
    last lines go to `output` when given."""
    print("+ " + " ".join(args), flush=True)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
    )
    assert proc.stdout is not None
    running = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if output is not None:
            output[:] = [*output[-19:], line]
        for pattern, what in STAGE_LINES:
            match = pattern.match(line.strip())
            if match:
                stage = match.group(1).split(":")[-1]
                if what == "ran":
                    running = stage
                if stages.get(stage) != "pulled" or what == "ran":
                    stages[stage] = what
    code = proc.wait()
    if code != 0 and running is not None:  # DVC stops at the first stage that fails
        stages[running] = "failed"
    return code


def _dvc_status(cwd: str | None = None) -> dict:
    result = run([tool("dvc"), "status", "--json"], cwd=cwd, check=False)
    try:
        status = json.loads(result.stdout or "{}") if result.returncode == 0 else {}
    except json.JSONDecodeError:
        return {}
    return status if isinstance(status, dict) else {}


def stale_stages(cwd: str | None = None) -> dict[str, str]:
    """{stage: why} for each stage whose outputs do not match its code, params and data
    (`dvc status`): "changed deps: params.yaml (train.lr)", "deleted outs: models/model.onnx"."""
    stale = {}
    for stage, changes in _dvc_status(cwd).items():
        if not isinstance(changes, list) or stage.endswith(".dvc"):
            continue
        reasons = []
        for change in changes:
            if not isinstance(change, dict):
                reasons.append(str(change))
                continue
            for kind, entries in change.items():
                entries = entries if isinstance(entries, dict) else {}
                # An output only missing from the DVC cache is still the right output.
                entries = {p: st for p, st in entries.items() if st != "not in cache"}
                if kind == "changed outs" and not entries:
                    continue
                named = []
                for path, state in entries.items():
                    if isinstance(state, dict):  # params: {"params.yaml": {"train.lr": "modified"}}
                        named.append(f"{path} ({', '.join(state)})")
                    else:
                        named.append(f"{path} {state}")
                reasons.append(f"{kind}: {', '.join(named)}" if named else kind)
        if reasons:
            stale[stage.split(":")[-1]] = "; ".join(reasons)
    return stale


def refresh_head(mode: str = "refresh", cwd: str | None = None) -> None:
    """Before a report or gate: head's outputs must match head's code, params and data.
    refresh: run the stale stages (saying so); refuse: one-line error naming them."""
    if mode == "as-is":
        return
    stale = stale_stages(cwd)
    if not stale:
        return
    named = ", ".join(f"{stage} ({why})" for stage, why in stale.items())
    if mode == "refuse":
        raise ProjectError(
            f"head's outputs are stale: {named}. Run `make repro` first (or HEAD_OUTPUTS=refresh)."
        )
    print(f"report: head's outputs are stale: {named}; running dvc repro first", flush=True)
    if repro() != 0:
        raise ProjectError("dvc repro failed (above): no report on stale outputs.")


def stages_missing_outputs(cwd: str | None = None) -> set[str]:
    """Stages whose outputs are not in the workspace (`dvc status`): if DVC then skips them, they
    came from the cache or the remote."""
    missing = set()
    for stage, changes in _dvc_status(cwd).items():
        for change in changes if isinstance(changes, list) else []:
            outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
            if any(state in ("deleted", "not in cache") for state in outs.values()):
                missing.add(stage.split(":")[-1])
    return missing


def stage_summary(stages: dict[str, str]) -> str:
    """One line: the stage that failed (first, when one did), the stages that ran, those pulled
    from the DVC remote (named only when some were), those restored from the DVC cache, those up
    to date."""

    def names(what: str) -> str:
        return ", ".join(s for s, w in stages.items() if w == what) or "none"

    failed = (
        f"FAILED at stage {names('failed')} (its error is above) · "
        if "failed" in stages.values()
        else ""
    )
    pulled = f" · from the DVC remote: {names('pulled')}" if "pulled" in stages.values() else ""
    return (
        f"repro: {failed}ran: {names('ran')}{pulled} · from the cache: {names('restored')} · "
        f"up to date: {names('up to date')}"
    )


def tracked_changes(cwd: str | None = None) -> dict[str, str]:
    """{path: git hash of its bytes in the workspace} for each tracked file that differs from
    HEAD (deleted files: ""). Taken before and after a run, it shows what the run changed."""
    listed = run(["git", "diff", "--name-only", "HEAD", "--"], cwd=cwd, check=False)
    if listed.returncode != 0:
        return {}
    paths = [p for p in listed.stdout.splitlines() if p]
    present = [p for p in paths if Path(cwd or ".", p).is_file()]
    hashes = run(["git", "hash-object", "--", *present], cwd=cwd, check=False).stdout.split()
    found = dict(zip(present, hashes, strict=False)) if present else {}
    return {p: found.get(p, "") for p in paths}


def changes_summary(
    before: dict[str, str], after: dict[str, str], cwd: str | None = None
) -> list[str]:
    """The lines that end `make repro` when it changed tracked files: which, why the outputs'
    bytes differ from the committed ones when the numerics do, and the command to commit them."""
    changed = sorted(p for p in {*before, *after} if before.get(p) != after.get(p))
    if not changed:
        return []
    lines = []
    if MODEL_CARD in changed:
        committed = card_numerics(_git_show("HEAD", MODEL_CARD, cwd))
        card = Path(cwd or ".", MODEL_CARD)
        here = card_numerics(card.read_text() if card.is_file() else None)
        same, difference = comparable(committed, here, ("committed", "here"))
        if committed is None:
            lines.append(
                "repro: the committed model card records no numerics fingerprint; these "
                f"outputs were made with {describe(here)}"
            )
        elif not same:
            lines.append(
                "repro: other bytes than committed, made with other numerics: "
                f"{difference} (make numerics-probe compares two machines; docs/pipeline.md)"
            )
    lines.append(
        f"repro: changed {len(changed)} tracked file(s), nothing staged; to commit them: "
        f"git add {' '.join(changed)} && git commit -m 'pipeline outputs refreshed'"
    )
    return lines


def _git_show(rev: str, path: str, cwd: str | None) -> str | None:
    # diff.git_show's twin: diff.py imports PyYAML, and this module stays standard library only.
    result = run(["git", "show", f"{rev}:{path}"], cwd=cwd, check=False)
    return result.stdout if result.returncode == 0 else None


def repro() -> int:
    """Restore the committed outputs from the DVC cache (carried between runs by actions/cache),
    then `dvc repro`, pulling from the DVC remote when one is set: only the stages whose code,
    params or data changed run. Fork PRs get no secrets, so a failed pull means rebuilding.
    Ends with one line naming the stages that ran and those that came from the cache."""
    # Outputs missing from the cache make checkout complain; repro rebuilds those anyway.
    missing = stages_missing_outputs()
    before = tracked_changes()
    _call(["dvc", "checkout", "--quiet"])
    stages: dict[str, str] = {}
    tail: list[str] = []
    code = None
    if dvc_remote_configured():
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
    for line in changes_summary(before, tracked_changes()):
        print(line, flush=True)
    return code


def image_setting(env: dict[str, str]) -> str:
    """The REPORT_IMAGES setting after the privacy rule; unknown values are an error."""
    setting = (env.get("REPORT_IMAGES") or "artifact").strip().lower()
    if setting not in IMAGE_SETTINGS:
        raise SettingsError(
            f"REPORT_IMAGES={setting!r}: expected one of {', '.join(IMAGE_SETTINGS)}."
        )
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
        raise ProjectError("cml is not on PATH; install it with `make ci-install-cml`.")
    return _call(cml_args(str(path), setting, env))


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
        raise SettingsError(
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
    return _call(launch_runner_args(env))


COMMANDS = {"repro": repro, "summary": summary, "comment": comment, "launch-runner": launch_runner}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser, add = subcommands("python -m mlproject.report.ci", __doc__)
    for name, fn in COMMANDS.items():
        add(name, (fn.__doc__ or "").strip().split("\n")[0])
    return COMMANDS[parser.parse_args(argv).command]()


if __name__ == "__main__":
    raise SystemExit(main())
