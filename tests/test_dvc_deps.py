"""Every stage's deps in dvc.yaml cover every project module it imports, directly or not, so that
editing any of them marks the stage changed (and no stale output survives a code change)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run

SRC = ROOT / "src"


def module_file(name: str, src: Path = SRC) -> Path | None:
    path = src.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def direct_imports(name: str, src: Path = SRC) -> set[str]:
    """Project modules that module `name` imports (at any level: lazy imports count too)."""
    file = module_file(name, src)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] == "mlproject" and module_file(m, src)}


def import_closure(name: str, src: Path = SRC) -> set[str]:
    """Files of every project module that running `name` loads (its packages' __init__ too)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += direct_imports(module, src)
    return {module_file(m, src).relative_to(src.parent).as_posix() for m in seen}


def stage_modules(stage: dict, params: dict) -> list[str]:
    """The modules a stage runs: the runner, the stage module it names, and the project classes
    that Hydra builds from `_target_` strings in the params the stage reads."""
    words = stage["cmd"].split()
    modules = [words[words.index("-m") + 1]]
    if modules[0] == "mlproject.pipeline":  # `python -m mlproject.pipeline <stage>`
        from mlproject.pipeline.run import STAGES

        modules = ["mlproject.pipeline.__main__", STAGES[words[-1]]]
    target = params["model"]["_target_"]
    if target.startswith("mlproject."):
        modules.append(target.rpartition(".")[0])
    # Data kinds are found by name (mlproject.kinds.KINDS, like `_target_`): a stage may run any
    # of them, whichever `data.kind` is configured, so it depends on every kind's modules.
    from mlproject.kinds import KINDS

    modules += [path.partition(":")[0] for path in KINDS.values()]
    return modules


def expected_deps() -> dict[str, set[str]]:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = {}
    for name, stage in dvc["stages"].items():
        files: set[str] = set()
        modules = stage_modules(stage, params)
        if name == "profile":  # the monitor's side of each kind, loaded by name (kinds/base.py)
            from mlproject.kinds import KINDS

            modules += [f"mlproject.kinds.{kind}.monitoring" for kind in KINDS]
        for module in modules:
            files |= import_closure(module)
        if name in ("prepare", "profile"):  # no torch, no model: Hydra builds nothing there
            files -= {"src/mlproject/pipeline/models.py"}
        out[name] = files
    return out


def declared_deps(stage: dict) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}


def covered(file: str, deps: set[str]) -> bool:
    """A file is covered by itself or by a folder above it."""
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.slow  # imports every stage module: seconds
def test_each_stage_depends_on_every_module_it_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    expected = expected_deps()
    assert "src/mlproject/pipeline/train.py" in expected["evaluate"]  # the graph is real, not empty
    assert "src/mlproject/pipeline/determinism.py" in expected["train"]
    missing = {
        name: sorted(f for f in expected[name] if not covered(f, declared_deps(stage)))
        for name, stage in dvc["stages"].items()
    }
    assert not any(missing.values()), f"dvc.yaml misses imported modules: {missing}"


def test_the_import_graph_follows_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "mlproject"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    # Paths relative to the folder above the source root, as dvc.yaml names them (src/...).
    assert import_closure("mlproject.a", tmp_path) == {
        f"{tmp_path.name}/mlproject/{f}"
        for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py")
    }


@pytest.mark.slow
def test_editing_an_imported_module_marks_every_stage_that_imports_it(pipeline_repo, tmp_path):
    repo = tmp_path / "repo"
    # The DVC state database is keyed by inode: a copy must not carry it (see DESIGN.md).
    shutil.copytree(pipeline_repo, repo, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    assert "up to date" in run(["dvc", "status"], repo).stdout
    expected = expected_deps()
    files = sorted(set().union(*expected.values()))
    from dvc.repo import Repo  # `dvc status` in this process: one DVC start, not one per file

    for file in files:
        path = repo / file
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            with Repo(str(repo)) as dvc_repo:
                status = dvc_repo.status()
        finally:
            path.write_bytes(original)
        flagged = {name.split(":")[-1] for name in status}
        importers = {name for name, deps in expected.items() if file in deps}
        assert importers <= flagged, f"editing {file}: {sorted(importers - flagged)} not flagged"
