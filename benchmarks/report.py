"""PR-loop benchmark: the pull-request workflow's steps from a clean clone, and `make report`.

    make bench-report                     # or: python benchmarks/report.py [--epochs 20]

Makes a temporary git repository from this checkout (tracked and untracked files, as a clone
would have them): `main` holds the project, branch `feature` one commit that changes
`train.epochs`. Then, with the environment present (this venv), runs .github/workflows/pr.yml
under act (mlproject.ops.act: as user `runner` when called as root, actions stubbed, `cml` a
recorder), twice:
  - cold: no DVC cache (a first run, or a cache miss): the whole pipeline is rebuilt;
  - warm: the PR's reproduced dvc.lock and metrics are committed, the DVC cache of that run is
    carried over (the actions/cache stub), and the next push changes only docs: nothing reruns.
Finally times `make report` on the feature branch with every output cached (median of 3).
Prints each step's time and the totals next to the targets (steps <= 180 s, report <= 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlproject.ops import act

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import BIN, ENV  # noqa: E402  (venv first on PATH, no DVC analytics, git identity)

TARGET_STEPS_S = 180.0
TARGET_REPORT_S = 10.0


def sh(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def make_clone(dest: Path, epochs: int) -> Path:
    """The project as a fresh clone would have it, plus a `feature` branch changing epochs."""
    files = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    dest.mkdir(parents=True)
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-q", "-m", "project"], dest)
    sh(["git", "checkout", "-q", "-b", "feature"], dest)
    for rel in ("params.yaml", "conf/config.yaml"):
        path = dest / rel
        path.write_text(
            path.read_text()
            .replace("epochs: 40", f"epochs: {epochs}")
            .replace("T_max: 40", f"T_max: {epochs}")
        )
    sh(["git", "commit", "-q", "-am", f"train.epochs: 40 -> {epochs}"], dest)
    return dest


def run_steps(repo: Path, tmp: Path) -> tuple[float, list[tuple[str, float, int]]]:
    """Run pr.yml under act; (total seconds, [(job: step, seconds, exit code)]). Repositories
    in the same `tmp` share act's state, so the cache stub carries .dvc/cache between them."""
    tmp.chmod(0o755)  # act's runner user must reach the repository
    start = time.perf_counter()
    result = act.run_workflow(
        "pr.yml",
        "pull_request",
        repo,
        secrets={"GITHUB_TOKEN": "ghs_bench_token"},
        echo=False,
        timeout=3600,
    )
    total = time.perf_counter() - start
    if result.returncode:
        print(result.output[-3000:])
    steps = [
        (f"{e['jobID']}: {e['step']}", e["executionTime"] / 1e9, int(e["stepResult"] != "success"))
        for e in result.log
        if e.get("stepResult") in ("success", "failure")
        and e.get("stage") == "Main"
        and len(e.get("stepID", [])) == 1
    ]
    return total, steps


def time_make_report(repo: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sh(["make", "-o", "install", "report", f"VENV={BIN.parent}"], repo)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_steps(title: str, total: float, steps: list[tuple[str, float, int]]) -> None:
    print(f"\n{title}")
    for name, seconds, code in steps:
        print(f"  {seconds:7.1f} s  exit {code}  {name}")
    print(
        f"  {total:7.1f} s  total   (target <= {TARGET_STEPS_S:.0f} s: "
        f"{total / TARGET_STEPS_S:.2f} of it)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20, help="the head's train.epochs")
    args = parser.parse_args()
    from mlproject.core.numerics import cpu  # figures differ by CPU (docs/performance.md)

    print(f"machine: {os.cpu_count()} CPUs ({' '.join(cpu())}); python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp_name:
        tmp = Path(tmp_name)
        repo = make_clone(tmp / "cold", args.epochs)
        sh([sys.executable, "-m", "mlproject.pipeline.data"], repo)
        cold_total, cold_steps = run_steps(repo, tmp)
        print_steps(
            f"PR workflow steps, clean clone, no DVC cache (train.epochs 40 -> "
            f"{args.epochs}, the whole pipeline runs)",
            cold_total,
            cold_steps,
        )

        # Warm: the PR's results were reproduced and committed (dvc.lock, metrics), as DVC's
        # workflow has it, and that run's .dvc/cache was saved by actions/cache; the next push
        # changes only the README. The runner starts from a bare checkout with no outputs in the
        # workspace: `dvc checkout` restores them from the cache and no stage runs.
        warm = make_clone(tmp / "warm", args.epochs)
        sh([sys.executable, "-m", "mlproject.pipeline.data"], warm)
        sh(["dvc", "repro"], warm)
        sh(["git", "add", "-A"], warm)
        sh(["git", "commit", "-q", "-m", "reproduced: dvc.lock and metrics"], warm)
        for rel in ("outputs", "models/model.onnx"):
            shutil.rmtree(warm / rel) if (warm / rel).is_dir() else (warm / rel).unlink()
        (warm / "README.md").write_text((warm / "README.md").read_text() + "\nA docs change.\n")
        sh(["git", "commit", "-q", "-am", "docs only"], warm)
        warm_total, warm_steps = run_steps(warm, tmp)
        print_steps(
            "PR workflow steps, next push to the PR (docs only), DVC cache carried over",
            warm_total,
            warm_steps,
        )

        report_s = time_make_report(repo)
        built = json.loads((repo / "reports/pr/report.json").read_text())
        print(
            f"\nmake report, outputs cached (median of 3): {report_s:.2f} s "
            f"(target <= {TARGET_REPORT_S:.0f} s: {report_s / TARGET_REPORT_S:.2f} of it); "
            f"{len(built['plots'])} plots"
        )
    ok = cold_total <= TARGET_STEPS_S and report_s <= TARGET_REPORT_S
    print("\nwithin targets" if ok else "\nOVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
