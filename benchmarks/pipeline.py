"""Pipeline benchmark: `make bench` prints every figure next to its target, in one run.

- training loop: the project's `train_one_epoch` against a bare forward/backward loop over the
  same preloaded tensors (same model, batch size and order), time per epoch;
- whole pipeline: `dvc repro --force` on the demo data (environment present), stage by stage:
  each stage's wall time, the part its own work takes (its `done in` line) and the rest
  (interpreter start, imports, DVC's bookkeeping), with the preload server (the default) and
  without it (`MLPROJECT_PRELOAD=0`), runs interleaved; and what `import torch` alone costs;
- no-op `dvc repro` wall time;
- ONNX Runtime against eager PyTorch, latency at batch 1 and 256;
- the train stage pinned (same bits on any x86-64 machine, the default) against unpinned
  (`train.fast: true`): median time per epoch and stage wall time, runs interleaved;
- fresh clone `make repro` including environment creation (skip with --no-clone).

Runs in a temporary copy of the project; the checkout is not touched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ENV, make_project, run  # noqa: E402


def timed(args, cwd, env=None) -> float:
    start = time.perf_counter()
    run(args, cwd, env=env, timeout=1200)
    return time.perf_counter() - start


STAGE_START = re.compile(r"^Running stage '([^']+)'")
STAGE_DONE = re.compile(r"^(\w+): done in ([0-9.]+) s")


def repro_by_stage(repo: Path, env: dict[str, str]) -> tuple[float, dict[str, tuple[float, float]]]:
    """`dvc repro --force`, its output read as it comes: the total wall time, and per stage
    (wall from its "Running stage" line to the next one, its own `done in` figure)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "repro", "--force"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks: list[tuple[str, float]] = []
    work: dict[str, float] = {}
    output = []
    for line in proc.stdout:
        output.append(line)
        if found := STAGE_START.match(line):
            marks.append((found[1], time.perf_counter()))
        elif found := STAGE_DONE.match(line):
            work[found[1]] = float(found[2])
    if proc.wait() != 0:
        raise AssertionError("dvc repro --force failed:\n" + "".join(output[-40:]))
    end = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [end]
    stages = {
        name: (stop - t, work.get(name, 0.0)) for (name, t), stop in zip(marks, ends, strict=True)
    }
    return end - start, stages


def pipeline_breakdown(repo: Path, rounds: int) -> dict[str, dict]:
    """{"preload"|"no preload": {"total": median s, "stages": {stage: (median wall, median
    work)}}}, the two settings interleaved so that machine noise hits both alike."""
    settings = {"preload": {}, "no preload": {"MLPROJECT_PRELOAD": "0"}}
    runs: dict[str, list] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, extra in settings.items():
            runs[name].append(repro_by_stage(repo, {**ENV, **extra}))
    out = {}
    for name, results in runs.items():
        stages = results[0][1].keys()
        out[name] = {
            "total": statistics.median(total for total, _ in results),
            "stages": {
                s: tuple(statistics.median(r[1][s][i] for r in results) for i in (0, 1))
                for s in stages
            },
        }
    return out


def torch_import(repo: Path, repeat: int = 3) -> float:
    """Median wall time of a new interpreter importing torch, pinned as the stages are."""
    code = (
        "from mlproject.pipeline.determinism import pin_environment, read_pinning; "
        "pin_environment(read_pinning()); import torch"
    )
    return statistics.median(
        timed([sys.executable, "-c", code], repo) - timed([sys.executable, "-c", "pass"], repo)
        for _ in range(repeat)
    )


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_loop(repo: Path) -> tuple[float, float, float]:
    """Seconds per epoch: project loop, project loop + validation, bare loop."""
    import torch
    import torch.nn.functional as F

    from mlproject.core.io import read_json
    from mlproject.kinds.images.modules import Normalizer
    from mlproject.pipeline.config import instantiate_model, load_params
    from mlproject.pipeline.data import load_split
    from mlproject.pipeline.train import evaluate_split, train_one_epoch

    torch.manual_seed(0)
    cfg = load_params(repo / "params.yaml")
    meta = read_json(repo / "outputs/prepared/meta.json")
    spec = meta["input"]
    x, y = (torch.from_numpy(a) for a in load_split(repo / "outputs/prepared", "train"))
    xv, yv = (torch.from_numpy(a) for a in load_split(repo / "outputs/prepared", "val"))
    device, bs = torch.device("cpu"), int(cfg.train.batch_size)

    def fresh():
        model = instantiate_model(
            cfg.model,
            in_channels=spec["channels"],
            num_classes=10,
            image_size=[spec["height"], spec["width"]],
        )
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    norm = Normalizer(spec["mean"], spec["std"])
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    model, opt = fresh()
    gen = torch.Generator().manual_seed(0)

    def project_epoch():
        train_one_epoch(model, norm, opt, scaler, x, y, bs, gen, device, False)

    def project_epoch_with_val():
        project_epoch()
        evaluate_split(model, norm, xv, yv, bs, device, False)

    bare_model, bare_opt = fresh()
    xf = norm(x)  # the bare loop gets tensors already normalized: no per-batch work at all
    bare_gen = torch.Generator().manual_seed(0)

    def bare_epoch():
        bare_model.train()
        for idx in torch.randperm(len(y), generator=bare_gen).split(bs):
            loss = F.cross_entropy(bare_model(xf[idx]), y[idx])
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()

    for fn in (project_epoch, bare_epoch):  # warm-up
        fn()
    # Interleave so that machine noise hits both alike.
    proj, projv, bare = [], [], []
    for _ in range(7):
        bare.append(median_time(bare_epoch, 3))
        proj.append(median_time(project_epoch, 3))
        projv.append(median_time(project_epoch_with_val, 1))
    return statistics.median(proj), statistics.median(projv), statistics.median(bare)


def inference(repo: Path) -> dict[int, tuple[float, float]]:
    """Median latency (s) of onnxruntime and eager PyTorch at batch 1 and 256."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from mlproject.pipeline.train import load_checkpoint

    model, _ = load_checkpoint(repo / "outputs/model.pt")
    session = ort.InferenceSession(
        str(repo / "models/model.onnx"), providers=["CPUExecutionProvider"]
    )
    out = {}
    for batch in (1, 256):
        x = np.random.default_rng(0).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        xt = torch.from_numpy(x)
        repeat = 2000 if batch == 1 else 200

        def ort_run(x=x):
            session.run(None, {"input": x})

        def torch_run(xt=xt):
            with torch.inference_mode():
                model(xt)

        for fn in (ort_run, torch_run):
            for _ in range(50):
                fn()
        ort_t = statistics.median(median_time(ort_run, repeat // 10) for _ in range(10))
        torch_t = statistics.median(median_time(torch_run, repeat // 10) for _ in range(10))
        out[batch] = (ort_t, torch_t)
    return out


def pinned_vs_fast(repo: Path, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """{"pinned"|"fast": (median s/epoch, median stage wall s)} of `python -m mlproject.pipeline
    train`, the two settings interleaved so that machine noise hits both alike."""
    import re

    params = repo / "params.yaml"
    original = params.read_text()
    epochs: dict[str, list[float]] = {"pinned": [], "fast": []}
    walls: dict[str, list[float]] = {"pinned": [], "fast": []}
    try:
        for _ in range(rounds):
            for name, fast in (("pinned", "false"), ("fast", "true")):
                params.write_text(original.replace("fast: false", f"fast: {fast}"))
                start = time.perf_counter()
                out = run([sys.executable, "-m", "mlproject.pipeline.run", "train"], repo).stdout
                walls[name].append(time.perf_counter() - start)
                epochs[name] += [float(t) for t in re.findall(r"  ([0-9.]+)s(?:  \*)?$", out, re.M)]
    finally:
        params.write_text(original)
    return {n: (statistics.median(epochs[n]), statistics.median(walls[n])) for n in epochs}


def fresh_clone() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        run(["git", "clone", "--quiet", str(ROOT), str(clone)], tmp)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT))
        )
        return timed(["make", "repro"], clone, env=env)


def print_breakdown(breakdown: dict[str, dict], torch_s: float) -> None:
    """Where `dvc repro --force` spends its time, stage by stage, with and without preload."""
    names = list(breakdown)
    print("\ndvc repro --force, stage by stage (medians; the rest = start, imports, DVC)")
    head = "".join(f"  {n + ': wall / work / rest':>30}" for n in names)
    print(f"{'stage':<10}{head}")
    for stage in breakdown[names[0]]["stages"]:
        cells = []
        for n in names:
            wall, work = breakdown[n]["stages"].get(stage, (0.0, 0.0))
            cells.append(f"{wall:8.1f} s / {work:5.1f} s / {wall - work:5.1f} s")
        print(f"{stage:<10}" + "".join(f"  {c:>30}" for c in cells))
    totals = []
    for n in names:
        stages = breakdown[n]["stages"].values()
        work = sum(w for _, w in stages)
        total = breakdown[n]["total"]
        totals.append(f"{total:8.1f} s / {work:5.1f} s / {total - work:5.1f} s")
    print(f"{'total':<10}" + "".join(f"  {c:>30}" for c in totals) + "   target <= 20 s")
    print(f"import torch alone (pinned, new interpreter): {torch_s:.2f} s; load {_load()}")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-clone", action="store_true", help="skip the fresh-clone timing")
    parser.add_argument(
        "--rounds", type=int, default=3, help="dvc repro --force runs per setting (default 3)"
    )
    parser.add_argument(
        "--pipeline-only", action="store_true", help="only the stage-by-stage dvc repro --force"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_project(Path(tmp) / "repo")
        run(["dvc", "repro"], repo)  # warm caches (imports, page cache) before timing
        breakdown = pipeline_breakdown(repo, args.rounds)
        torch_s = torch_import(repo)
        full = breakdown["preload"]["total"]
        if args.pipeline_only:
            print_breakdown(breakdown, torch_s)
            return 0 if full <= 20 else 1
        noop = min(timed(["dvc", "repro"], repo) for _ in range(3))
        acc = __import__("json").loads((repo / "reports/eval/metrics.json").read_text())["accuracy"]
        proj, projv, bare = training_loop(repo)
        infer = inference(repo)
        pin = pinned_vs_fast(repo)
        shutil.rmtree(repo / ".dvc/cache", ignore_errors=True)

    rows.append(("test accuracy (default config)", f"{acc:.4f}", ">= 0.97", "", acc >= 0.97))
    rows.append(("dvc repro --force (whole pipeline)", f"{full:.1f} s", "<= 20 s", "", full <= 20))
    rows.append(("dvc repro, nothing changed", f"{noop:.2f} s", "<= 2 s", "", noop <= 2))
    rows.append(("bare loop, s/epoch", f"{bare * 1000:.1f} ms", "", "1.00x", True))
    rows.append(
        (
            "project loop, s/epoch",
            f"{proj * 1000:.1f} ms",
            "<= 1.15x bare",
            f"{proj / bare:.2f}x",
            proj / bare <= 1.15,
        )
    )
    rows.append(
        (
            "project loop + validation, s/epoch",
            f"{projv * 1000:.1f} ms",
            "(info)",
            f"{projv / bare:.2f}x",
            True,
        )
    )
    for batch, (ort_t, torch_t) in infer.items():
        speedup = torch_t / ort_t
        target = ">= 3x faster" if batch == 1 else "(info)"
        rows.append(
            (
                f"batch {batch}: onnxruntime / eager torch",
                f"{ort_t * 1e6:.0f} us / {torch_t * 1e6:.0f} us",
                target,
                f"{speedup:.1f}x",
                speedup >= 3 if batch == 1 else True,
            )
        )
    (pin_epoch, pin_wall), (fast_epoch, fast_wall) = pin["pinned"], pin["fast"]
    rows.append(
        (
            "train: pinned / unpinned (fast), s/epoch",
            f"{pin_epoch * 1000:.0f} ms / {fast_epoch * 1000:.0f} ms",
            "(info)",
            f"{pin_epoch / fast_epoch:.2f}x",
            True,
        )
    )
    rows.append(
        (
            "train stage wall: pinned / unpinned",
            f"{pin_wall:.1f} s / {fast_wall:.1f} s",
            "(info)",
            f"{pin_wall / fast_wall:.2f}x",
            True,
        )
    )
    if not args.no_clone:
        clone = fresh_clone()
        rows.append(
            ("fresh clone: make repro (with venv)", f"{clone:.0f} s", "<= 45 s", "", clone <= 45)
        )

    print_breakdown(breakdown, torch_s)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':>22}  {'target':>14}  {'ratio':>6}  ok")
    for name, value, target, ratio, ok in rows:
        print(f"{name:<{width}}  {value:>22}  {target:>14}  {ratio:>6}  {'yes' if ok else 'NO'}")
    from mlproject.core.numerics import cpu  # figures differ by CPU (docs/performance.md)

    print(f"\nmachine: {os.cpu_count()} CPUs ({' '.join(cpu())}), Python {sys.version.split()[0]}")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    ENV.setdefault("DVC_NO_ANALYTICS", "1")
    raise SystemExit(main())
