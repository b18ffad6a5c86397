"""Tables: prepare, a training epoch and streamed memory, each beside its baseline, with the ratio.

A generated table of --rows rows (default 1,000,000: 20 feature columns, a quarter of them
categorical, 5% of every column missing, a 3-class target) is written as CSV, then:

1. `frame.prepare` (read, type, validate, dedupe, split, fit, write Parquet) vs reading the
   same CSV alone with `pyarrow.csv.read_csv`. Target: speed ratio >= 0.5.
2. A training epoch through the table loader (`loader.open_split` in memory, then the model=mlp
   network's forward/backward/Adam step per batch, as `pipeline/train.train_one_epoch` does) vs
   a bare loop over the same pre-encoded tensors (shuffled index batches, no loader).
   Target: speed ratio >= 0.85. The streamed source's epoch is printed beside them.
3. Peak RSS of a child process that opens the train split streamed and trains one epoch, at
   --rows and at 4x --rows. Target: growth <= 10%. The figure is the child's VmHWM
   (/proc/self/status): Linux carries ru_maxrss over fork and exec, so a child of this
   (gigabyte-sized) process reports the parent's peak there; ru_maxrss is printed beside it.

Run: `python benchmarks/table.py` (full size), `--rows 100000` for a quick look. The machine's
load average is printed: the figures are wall-clock times on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

N_NUMERIC, N_CATEGORICAL, MISSING = 15, 5, 0.05

CHILD = """
import json, resource, sys, time
import torch
from mlproject.core.io import read_json
from mlproject.kinds.table.loader import open_split
sys.path.insert(0, sys.argv[3])
from table import epoch, network
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[4]))
meta = read_json(sys.argv[1] + "/meta.json")
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
before = hwm()
start = time.perf_counter()
source = open_split(sys.argv[1], "train", {"in_memory": False}, torch.device("cpu"),
                    meta["input"], meta)
opened = time.perf_counter() - start
model = network(meta)
seconds = epoch(model, source.batches(int(sys.argv[2]), torch.Generator().manual_seed(0)))
print(json.dumps({"rows": len(source), "open_s": opened, "epoch_s": seconds,
                  "rss_after_imports_mb": before, "peak_mb": hwm(),
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(rows: int, seed: int = 0) -> pa.Table:
    """The benchmark table: numbers of several scales, categories of 3 to 40 values, 5% of
    every column missing, a target that depends on a few columns (something to learn)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    score = np.zeros(rows)
    for j in range(N_NUMERIC):
        values = np.round(rng.normal(10.0 * j, 1.0 + j, rows), 3)
        if j < 3:
            score += (values - 10.0 * j) / (1.0 + j)
        columns[f"num{j:02d}"] = pa.array(values, mask=rng.random(rows) < MISSING)
    for j in range(N_CATEGORICAL):
        k = (3, 5, 10, 20, 40)[j]
        codes = rng.integers(0, k, rows)
        if j == 0:
            score += codes - 1
        words = pa.array([f"cat{j}_{v:02d}" for v in range(k)])
        mask = pa.array(rng.random(rows) < MISSING)
        columns[f"cat{j}"] = pa.compute.if_else(
            mask, pa.scalar(None, pa.string()), words.take(pa.array(codes))
        )
    label = np.digitize(score + rng.normal(0, 0.5, rows), [-0.7, 0.7])
    columns["label"] = pa.array(np.array(["low", "mid", "high"])[label])
    return pa.table(columns)


def config(root: Path, file: str) -> dict:
    return {
        "root": str(root),
        "file": file,
        "target": "label",
        "task": "classification",
        "duplicates": "drop",
        "missing_target": "drop",
        "min_rows_per_class": 5,
        "split": {"val": 0.15, "test": 0.15, "seed": 42},
        "in_memory": "auto",
        "memory_budget_mb": 1024,
    }


def best(fn, repeats: int) -> tuple[float, float]:
    """The fastest of repeats: (wall seconds, CPU seconds of this process, all threads)."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def network(meta: dict):
    """model=mlp (conf/model/mlp.yaml) on the encoded input."""
    from mlproject.pipeline.models import MLP

    width = meta["input"]["encoded_width"]
    return MLP(1, len(meta["classes"]), (1, width), hidden=(256, 128), dropout=0.2)


def epoch(model, batches) -> float:
    """Seconds of one epoch over batches: forward, loss, backward, Adam step, running totals."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    total, correct, seen = torch.zeros(()), torch.zeros((), dtype=torch.long), 0
    start = time.perf_counter()
    for idx, x, y in batches:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
    _ = (total / seen).item(), (correct / seen).item()
    return time.perf_counter() - start


def bare_batches(x, y, batch_size: int, generator):
    """The baseline: shuffled index batches straight from tensors (no loader)."""
    import torch

    order = torch.randperm(len(y), generator=generator)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, x[idx], y[idx]


def streamed_rss(prepared: Path, batch_size: int, threads: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(prepared),
            str(batch_size),
            str(Path(__file__).parent),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"streamed child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(name: str, ours: float, base: float, unit: str, ratio: float, target: str) -> str:
    return f"{name:<44} {ours:>10.3f} {unit:<3} {base:>10.3f} {unit:<3} {ratio:>7.2f}  {target}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both loops (1: steadier on a shared machine)",
    )
    parser.add_argument(
        "--parts",
        default="prepare,epoch,rss",
        help="comma-separated figures to run (prepare needs to run first once "
        "in --work for the others)",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    args = parser.parse_args()

    import torch

    from mlproject.kinds.table import frame

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-table-"))
    work.mkdir(parents=True, exist_ok=True)
    table = generate(args.rows)
    pacsv.write_csv(table, work / "table.csv")
    size_mb = (work / "table.csv").stat().st_size / 2**20
    lines = [
        f"table: {args.rows:,} rows x {N_NUMERIC + N_CATEGORICAL} features "
        f"({N_CATEGORICAL} categorical, {MISSING:.0%} missing) + target; CSV {size_mb:.0f} MiB",
        f"{'figure':<44} {'ours':>14} {'baseline':>14} {'ratio':>7}  target",
    ]

    parts = set(args.parts.split(","))
    # 1. prepare vs reading alone
    cfg = config(work, "table.csv")
    prepared = work / "prepared"
    read_s, prepare_s = [], []
    for _ in range(
        args.repeats if "prepare" in parts else 0
    ):  # alternated, so load changes hit both alike
        read_s.append(best(lambda: pacsv.read_csv(work / "table.csv"), 1))
        prepare_s.append(best(lambda: frame.prepare(cfg, prepared), 1))
    if "prepare" in parts:
        (read_wall, read_cpu), (prep_wall, prep_cpu) = min(read_s), min(prepare_s)
        lines.append(
            row(
                "prepare vs pyarrow.csv.read_csv (speed)",
                prep_wall,
                read_wall,
                "s",
                read_wall / prep_wall,
                ">= 0.5",
            )
        )
        lines.append(
            row(
                "  same, CPU time (all threads)",
                prep_cpu,
                read_cpu,
                "s",
                read_cpu / prep_cpu,
                "(load-independent view)",
            )
        )
    if not (prepared / "meta.json").exists():
        frame.prepare(cfg, prepared)
    if "epoch" in parts:
        lines += epochs(prepared, args.batch_size, args.repeats)
    if "rss" in parts:
        lines += peak_rss(work, prepared, args.rows, args.batch_size, args.threads)
    load_end = os.getloadavg()
    lines.append(
        f"load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; "
        f"{os.cpu_count()} CPUs; torch threads {args.threads}"
    )
    print("\n".join(lines))
    return 0


def epochs(prepared: Path, batch_size: int, repeats: int) -> list[str]:
    import torch

    from mlproject.kinds.table import encode
    from mlproject.kinds.table.loader import open_split

    lines = []

    # 2. an epoch through the loader vs a bare loop over the same tensors
    meta = json.loads((prepared / "meta.json").read_text())
    cpu = torch.device("cpu")
    start = time.perf_counter()
    source = open_split(prepared, "train", {"in_memory": True}, cpu, meta["input"], meta)
    open_s = time.perf_counter() - start
    x = torch.from_numpy(
        encode.encode(pq.read_table(prepared / "train.parquet").to_pandas(), meta["input"])
    )
    y = torch.from_numpy(source.labels)

    def run(batches) -> float:
        torch.manual_seed(0)
        return epoch(network(meta), batches)

    epoch(network(meta), bare_batches(x, y, batch_size, torch.Generator()))  # warm-up
    loader_s, bare_s = [], []
    for _ in range(repeats):  # alternated, so load changes hit both alike
        g = torch.Generator().manual_seed(0)
        loader_s.append(run(source.batches(batch_size, g)))
        g = torch.Generator().manual_seed(0)
        bare_s.append(run(bare_batches(x, y, batch_size, g)))
    lines.append(
        row(
            "epoch: table loader (in memory) vs bare loop",
            min(loader_s),
            min(bare_s),
            "s",
            min(bare_s) / min(loader_s),
            ">= 0.85",
        )
    )
    streamed = open_split(prepared, "train", {"in_memory": False}, cpu, meta["input"], meta)
    stream_s = run(streamed.batches(batch_size, torch.Generator().manual_seed(0)))
    lines.append(
        row(
            "epoch: table loader (streamed) vs bare loop",
            stream_s,
            min(bare_s),
            "s",
            min(bare_s) / stream_s,
            "(no target)",
        )
    )
    lines.append(
        f"  open_split in memory (read Parquet + encode once): {open_s:.3f} s; "
        f"{len(y):,} train rows, batch {batch_size}, "
        f"encoded width {meta['input']['encoded_width']}"
    )
    return lines


def peak_rss(work: Path, prepared: Path, rows: int, batch_size: int, threads: int) -> list[str]:
    from mlproject.kinds.table import frame

    # 3. peak RSS of a streamed epoch, rows vs 4x rows (each in its own process)
    lines = []
    small = streamed_rss(prepared, batch_size, threads)
    big_root = work / "big"
    big_root.mkdir(exist_ok=True)
    if not (big_root / "prepared" / "meta.json").exists():  # deterministic: kept in --work
        pq.write_table(generate(4 * rows, seed=1), big_root / "table.parquet")
        frame.prepare(config(big_root, "table.parquet"), big_root / "prepared")
    big = streamed_rss(big_root / "prepared", batch_size, threads)
    growth = big["peak_mb"] / small["peak_mb"] - 1
    lines.append(
        f"{'peak RSS, streamed epoch: 4x rows vs 1x rows':<44} {big['peak_mb']:>10.0f} MiB "
        f"{small['peak_mb']:>10.0f} MiB {growth:>+7.1%}  <= +10%"
    )
    for name, r in (("1x", small), ("4x", big)):
        lines.append(
            f"  {name}: {r['rows']:,} train rows, open {r['open_s']:.1f} s, epoch "
            f"{r['epoch_s']:.1f} s, peak after imports {r['rss_after_imports_mb']:.0f} MiB, "
            f"ru_maxrss {r['ru_maxrss_mb']:.0f} MiB (inherited, see above)"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
