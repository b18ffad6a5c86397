"""This repository as a copier template: a project's answers, its updates and their pull request.

    python -m mlproject.ops.template apply ...     the answers, applied once after `copier copy`
                                                   (copier.yml's task; stdlib and PyYAML only)
    python -m mlproject.ops.template update        copier update to the newest tag (--ref TAG),
                                                   --dry-run: what would change, changing nothing
    python -m mlproject.ops.template adopt --ref TAG --template URL
                                                   a fork without .copier-answers.yml records the
                                                   template version it came from
    python -m mlproject.ops.template pr            template-update.yml's step: update, then open
                                                   one pull request listing changes and conflicts

The answers that change a copied file are applied by `apply` rather than by .jinja files: the
template runs on those same files (conf/config.yaml, params.yaml), and a .jinja file cannot share
its name with one. `apply` runs on copy only, so on update the project's choices are its own
edits, which copier's 3-way merge keeps. The package keeps its name (mlproject) in every project:
renaming it would make every module differ from the template's and turn updates into conflicts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ANSWERS_FILE = Path(".copier-answers.yml")
# The demo each `data` answer starts from, and what apply writes for it.
DEMOS = {"digits": ("images", "classification"), "cars": ("table", "classification")}
DEMOS["diabetes"] = ("table", "regression")
DEFAULT_NAME = "mlproject"
DEFAULT_PYTHON = "3.11"
TOKEN_ENV = "TEMPLATE_UPDATE_TOKEN"
TOKEN_HELP = f"""\
{TOKEN_ENV} is not set. The template's update changes workflow files, and GitHub lets no
workflow's default token push those. Store a fine-grained personal access token (contents,
pull requests and workflows: read and write, on this repository) or a GitHub App's token as the
repository secret {TOKEN_ENV}; see docs/template.md."""
CONFLICT = re.compile(r"^<{7} ", re.MULTILINE)
BODY_DIR = Path("outputs/template")


class TemplateError(Exception):
    """A template step cannot go on; the message says why and what to do."""


# --- apply: the answers, once, after copier copy (runs under copier's own Python) ------------


def _replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise TemplateError(f"{path}: expected the line {old.strip()!r}")
    path.write_text(text.replace(old, new, 1))


def compose_params(root: Path, data: str, model: str) -> str:
    """params.yaml with the `data` and `model` sections taken from conf/ (as `make params` would
    write them: OmegaConf's YAML is PyYAML's block style, keys in file order)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"] = yaml.safe_load((root / "conf" / "data" / f"{data}.yaml").read_text())
    params["model"] = yaml.safe_load((root / "conf" / "model" / f"{model}.yaml").read_text())
    return yaml.dump(params, default_flow_style=False, allow_unicode=True, sort_keys=False)


def set_python(root: Path, version: str) -> None:
    """The Python of CI (the setup action's and pr-loop's default) and of the serving image."""
    pattern = re.compile(r'(python-version:\n(?:[ \t]+\w[^\n]*\n)*?[ \t]+default: )"[0-9.]+"')
    for rel in (".github/actions/setup/action.yml", ".github/workflows/pr-loop.yml"):
        path = root / rel
        text, n = pattern.subn(rf'\g<1>"{version}"', path.read_text(), count=1)
        if n != 1:
            raise TemplateError(f"{rel}: no python-version input with a default to set")
        path.write_text(text)
    dockerfile = root / "Dockerfile"
    text, n = re.subn(r"^ARG PYTHON_VERSION=.*$", f"ARG PYTHON_VERSION={version}",
                      dockerfile.read_text(), count=1, flags=re.MULTILINE)  # fmt: skip
    if n != 1:
        raise TemplateError("Dockerfile: no `ARG PYTHON_VERSION=` line")
    dockerfile.write_text(text)


def set_remote(root: Path, url: str, name: str = "storage") -> None:
    """The default DVC remote in .dvc/config, as `dvc remote add -d` writes it."""
    path = root / ".dvc" / "config"
    text = path.read_text()
    if "[core]\n" not in text:
        raise TemplateError(f"{path}: no [core] section")
    text = text.replace("[core]\n", f"[core]\n    remote = {name}\n", 1)
    path.write_text(text.rstrip("\n") + f"\n['remote \"{name}\"']\n    url = {url}\n")


def set_title(root: Path, name: str, description: str) -> None:
    """The README's title block: the project's name and sentence over the template's text."""
    path = root / "README.md"
    lines = path.read_text().split("\n")
    if not lines or not lines[0].startswith("# "):
        raise TemplateError("README.md: the first line is not a `# ` title")
    block = [f"# {name}", "", description.strip(), "", f"Made from the {DEFAULT_NAME} template"]
    block[-1] += " (`.copier-answers.yml`; updates: `make template-update`, docs/template.md)."
    path.write_text("\n".join(block + lines[1:]))


def apply(
    root: Path,
    data: str,
    model: str,
    python: str = DEFAULT_PYTHON,
    remote: str = "",
    name: str = DEFAULT_NAME,
    description: str = "",
) -> list[str]:
    """Write the answers into a freshly copied project; returns what it changed. The defaults
    change nothing: the project is the template's demo as it is."""
    if data not in DEMOS:
        raise TemplateError(f"data: {data!r} is not one of {', '.join(DEMOS)}")
    changed = []
    if data != "digits" or model != "cnn":
        config = root / "conf" / "config.yaml"
        _replace_line(config, "  - data: digits\n", f"  - data: {data}\n")
        _replace_line(config, "  - model: cnn\n", f"  - model: {model}\n")
        (root / "params.yaml").write_text(compose_params(root, data, model))
        changed += ["conf/config.yaml", "params.yaml"]
    if python != DEFAULT_PYTHON:
        set_python(root, python)
        changed += [".github/actions/setup/action.yml", ".github/workflows/pr-loop.yml"]
        changed.append("Dockerfile")
    if remote.strip():
        set_remote(root, remote.strip())
        changed.append(".dvc/config")
    if name.strip() != DEFAULT_NAME:
        set_title(root, name.strip(), description)
        changed.append("README.md")
    return changed


# --- update, adopt, pr: in a generated project, with the package installed --------------------


def _git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise TemplateError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def read_answers(root: Path = Path(".")) -> dict | None:
    path = root / ANSWERS_FILE
    return yaml.safe_load(path.read_text()) if path.is_file() else None


NO_ANSWERS = (
    f"no {ANSWERS_FILE}: this is the template repository itself, or a project that has not "
    "adopted it yet (make template-adopt REF=<tag> TEMPLATE=<url>); nothing to update."
)


def changed_files(root: Path) -> list[str]:
    out = _git("status", "--porcelain", "--untracked-files=all", cwd=root)
    return sorted({line[3:].split(" -> ")[-1].strip('"') for line in out.splitlines() if line})


def conflicted(root: Path, files: list[str]) -> list[str]:
    """Files copier left with inline conflict markers (or unmerged in git's index)."""
    unmerged = set(_git("diff", "--name-only", "--diff-filter=U", cwd=root).split())
    for rel in files:
        path = root / rel
        try:
            if path.is_file() and CONFLICT.search(path.read_text(errors="replace")):
                unmerged.add(rel)
        except OSError:
            continue
    return sorted(unmerged)


def run_update(root: Path, ref: str | None) -> dict:
    """`copier update` with the recorded answers; returns {from, to, changed, conflicts, output}."""
    before = read_answers(root) or {}
    if _git("status", "--porcelain", cwd=root).strip():
        raise TemplateError("the working tree has uncommitted changes: commit or stash them first")
    args = [sys.executable, "-m", "copier", "update", "--defaults", "--trust"]
    args += ["--conflict", "inline", *(["--vcs-ref", ref] if ref else []), str(root)]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise TemplateError(f"copier update exited {proc.returncode}:\n{output.strip()}")
    after = read_answers(root) or {}
    files = changed_files(root)
    return {
        "from": str(before.get("_commit", "?")),
        "to": str(after.get("_commit", "?")),
        "changed": files,
        "conflicts": conflicted(root, files),
        "output": output,
    }


def summary(result: dict) -> str:
    lines = [f"template {result['from']} -> {result['to']}: {len(result['changed'])} files changed"]
    lines += [f"  {f}" for f in result["changed"]]
    if result["conflicts"]:
        lines.append("conflicts (resolve the <<<<<<< markers, then commit):")
        lines += [f"  {f}" for f in result["conflicts"]]
    return "\n".join(lines)


def pr_body(result: dict) -> str:
    lines = [
        f"The template's changes from `{result['from']}` to `{result['to']}` "
        "(`make template-update`), 3-way merged with this project's own edits.",
        "",
    ]
    if result["conflicts"]:
        lines += ["**Conflicts** (marked inline with `<<<<<<<`; resolve them on this branch):", ""]
        lines += [f"- `{f}`" for f in result["conflicts"]] + [""]
    else:
        lines += ["No conflicts.", ""]
    lines += ["Changed files:", ""] + [f"- `{f}`" for f in result["changed"]]
    return "\n".join(lines) + "\n"


def update(ref: str | None = None, dry_run: bool = False, root: Path = Path(".")) -> dict | None:
    """Update the project (or, dry, a throwaway clone of its HEAD) to the template at `ref`."""
    if read_answers(root) is None:
        print(NO_ANSWERS)
        return None
    if not dry_run:
        result = run_update(root, ref)
        print(summary(result))
        return result
    with tempfile.TemporaryDirectory(prefix="template-update.") as tmp:
        clone = Path(tmp) / "project"
        _git("clone", "--quiet", str(root.resolve()), str(clone))
        result = run_update(clone, ref)
    print(summary(result).replace(": ", " (dry run, nothing changed here): ", 1))
    return result


def adopt(ref: str, template: str, root: Path = Path(".")) -> Path:
    """Record the template version a fork came from, with answers read from the fork itself, and
    commit it; `make template-update` then brings what came after `ref`."""
    if not ref or not template:
        raise TemplateError("template-adopt needs REF=<the template tag this fork came from> and "
                            "TEMPLATE=<the template's git URL or path>")  # fmt: skip
    if (root / ANSWERS_FILE).exists():
        raise TemplateError(f"{ANSWERS_FILE} exists: this project receives updates already")
    if _git("ls-remote", template, ref, check=False).strip() == "" and not _is_commit(
        template, ref
    ):
        raise TemplateError(f"{template}: no tag or branch {ref!r}")
    config = (root / "conf" / "config.yaml").read_text()
    found = re.search(r"^  - data: (\S+)$", config, re.MULTILINE)
    data = found.group(1) if found else "digits"
    if data not in DEMOS:  # the fork's own data: the demo of the same kind and task
        spec = yaml.safe_load((root / "conf" / "data" / f"{data}.yaml").read_text()) or {}
        want = (spec.get("kind", "images"), spec.get("task", "classification"))
        data = next((d for d, kt in DEMOS.items() if kt == want), "digits")
    action = (root / ".github/actions/setup/action.yml").read_text()
    found = re.search(r'python-version:\n(?:[ \t]+\w[^\n]*\n)*?[ \t]+default: "([0-9.]+)"', action)
    answers = {
        "_commit": ref,
        "_src_path": template,
        "data": data,
        "dvc_remote": "",
        "gpu_route": "none",
        "project_name": DEFAULT_NAME,
        "project_description": "",
        "python_version": found.group(1) if found else DEFAULT_PYTHON,
    }
    path = root / ANSWERS_FILE
    head = "# Written by make template-adopt: the template version this fork came from.\n"
    path.write_text(head + yaml.safe_dump(answers, sort_keys=True))
    _git("add", str(ANSWERS_FILE), cwd=root)
    _git("commit", "-q", "-m", f"template: adopt {template} at {ref}", cwd=root)
    print(f"{ANSWERS_FILE}: this project came from {template} at {ref} (committed);")
    print("now `make template-update` brings the template's later changes (DRY=1 to look first).")
    return path


def _is_commit(template: str, ref: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{7,40}", ref)) and Path(template).is_dir()


def open_pr(ref: str | None = None, root: Path = Path(".")) -> str | None:
    """template-update.yml: update, then open one pull request with the change (CML)."""
    if read_answers(root) is None:
        print(NO_ANSWERS)
        return None
    if not os.environ.get(TOKEN_ENV):
        raise TemplateError(TOKEN_HELP)
    result = run_update(root, ref)
    print(summary(result))
    if not result["changed"]:
        print("template: up to date, no pull request.")
        return None
    from ..core.io import atomic_write_text
    from .retrain import create_pr, pr_create_args

    body = pr_body(result)
    atomic_write_text(BODY_DIR / "pr-body.md", body)
    branch = "template-update/" + re.sub(r"[^A-Za-z0-9._-]+", "-", result["to"])
    title = f"Template update {result['from']} -> {result['to']}"
    if result["conflicts"]:
        title += f" ({len(result['conflicts'])} conflicts)"
    # CML commits the listed paths (deletions included) to the branch and opens the PR.
    args = pr_create_args(branch, title, body, title, "mlproject-template", result["changed"])
    os.environ.setdefault("REPO_TOKEN", os.environ[TOKEN_ENV])
    url = create_pr(args)
    print(f"template: pull request {url}")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproject.ops.template", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("apply", help="write the answers into a fresh copy (copier's task)")
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="cnn")
    p.add_argument("--python", default=DEFAULT_PYTHON)
    p.add_argument("--remote", default="")
    p.add_argument("--name", default=DEFAULT_NAME)
    p.add_argument("--description", default="")
    p = sub.add_parser("update", help="copier update to the template's newest tag (or --ref)")
    p.add_argument("--ref", default=None)
    p.add_argument("--dry-run", action="store_true", help="list what would change; change nothing")
    p = sub.add_parser("adopt", help="record the template version a fork came from")
    p.add_argument("--ref", default="")
    p.add_argument("--template", default="")
    p = sub.add_parser("pr", help="update and open the pull request (template-update.yml)")
    p.add_argument("--ref", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "apply":
            changed = apply(Path("."), args.data, args.model, args.python, args.remote,
                            args.name, args.description)  # fmt: skip
            print("template answers applied: " + (", ".join(changed) or "nothing to change"))
        elif args.command == "update":
            update(args.ref or None, args.dry_run)
        elif args.command == "adopt":
            adopt(args.ref, args.template)
        else:
            open_pr(args.ref or None)
    except TemplateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
