"""Data larger than memory: `make bench-scale` prints the figures and ratios side by side.

Synthetic RGB 64x64 image folders of 2,000 and 8,000 images (10 classes) are prepared, then one
training epoch of the small CNN runs in a child process per (size, data.in_memory) pair while
this process samples the memory of the child and its DataLoader workers. Targets:
- peak memory of `train` grows <= 10% from 2,000 to 8,000 images with data.in_memory=false;
- streamed throughput (train images/s) within 1.5x of the in-memory path.

Peak memory is given two ways: the training process's own peak RSS (ru_maxrss) and the peak
proportional set size (PSS) of the process tree, workers included (shared pages counted once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ENV  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from mlproject.pipeline.config import compose
from mlproject.pipeline.train import train
cfg = compose(json.loads(sys.argv[1]), conf_dir=sys.argv[2])
start = time.perf_counter()
train(cfg, prepared=Path(sys.argv[3]), checkpoint=Path(sys.argv[4]), live_dir=None, log=lambda _: None)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_folder(root: Path, n: int, classes: int = 10, size: int = 64) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % classes
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
        pixels[..., label % 3] += np.uint8(55)  # a colour cast per class: something to learn
        Image.fromarray(pixels, "RGB").save(folder / f"{i:05d}.png", compress_level=1)
    return root


def tree_pss_kb(pid: int) -> int:
    """PSS of a process and its descendants (kB), from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack += [int(c) for c in fh.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def train_once(overrides: list[str], prepared: Path, work: Path) -> dict[str, float]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps(overrides),
            str(ROOT / "conf"),
            str(prepared),
            str(work / "model.pt"),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))
            time.sleep(0.2)  # reading smaps costs CPU: sample sparingly

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({overrides}):\n{err}")
    return {**json.loads(out.strip().splitlines()[-1]), "pss_mb": peak[0] / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2000, 8000))
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    from mlproject.pipeline.config import compose
    from mlproject.pipeline.prepare import prepare

    results: dict[tuple[int, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            start = time.perf_counter()
            data = write_folder(work / f"data{n}", n)
            base = [f"data.root={data}", "data.image_size=[64,64]", "data.channels=3"]
            meta = prepare(compose(base, conf_dir=ROOT / "conf"), out_dir=work / f"prep{n}")
            n_train = sum(meta["counts"]["train"])
            print(
                f"{n} images written and prepared in {time.perf_counter() - start:.1f} s "
                f"({n_train} train)",
                flush=True,
            )
            for mode in ("false", "true"):
                overrides = [*base, f"data.in_memory={mode}", f"train.epochs={args.epochs}"]
                r = train_once(overrides, work / f"prep{n}", work)
                r["images_per_s"] = n_train * args.epochs / r["seconds"]
                results[(n, mode)] = r
                print(
                    f"  in_memory={mode}: {r['seconds']:.1f} s, {r['images_per_s']:.0f} img/s, "
                    f"peak RSS {r['maxrss_mb']:.0f} MB, peak tree PSS {r['pss_mb']:.0f} MB",
                    flush=True,
                )

    small, large = args.sizes
    s_small, s_large = results[(small, "false")], results[(large, "false")]
    m_small, m_large = results[(small, "true")], results[(large, "true")]
    rows = [
        ("streamed: peak RSS, MB", s_small["maxrss_mb"], s_large["maxrss_mb"], 1.10),
        ("streamed: peak tree PSS, MB", s_small["pss_mb"], s_large["pss_mb"], 1.10),
        ("in memory: peak RSS, MB", m_small["maxrss_mb"], m_large["maxrss_mb"], None),
        ("in memory: peak tree PSS, MB", m_small["pss_mb"], m_large["pss_mb"], None),
    ]
    print(f"\n{'figure':32} {small:>8,} {large:>8,}  growth  target")
    for name, a, b, target in rows:
        verdict = (
            "" if target is None else f"<= {target:.2f}  {'ok' if b / a <= target else 'MISSED'}"
        )
        print(f"{name:32} {a:8.0f} {b:8.0f}  {b / a:6.3f}  {verdict}")
    print(f"\n{'throughput, train images/s':32} {'streamed':>9} {'in memory':>10}  ratio  target")
    for n in args.sizes:
        s, m = results[(n, "false")]["images_per_s"], results[(n, "true")]["images_per_s"]
        verdict = "ok" if m / s <= 1.5 else "MISSED"
        print(f"{f'{n:,} images':32} {s:9.0f} {m:10.0f}  {m / s:5.2f}  <= 1.50  {verdict}")
    print("(timings on a shared machine are noisy; the ratios come from one run, side by side)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
