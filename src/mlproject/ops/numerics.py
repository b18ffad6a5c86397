"""Which CPU numerics differ between two machines? Hash the output of each op the demo model uses.

    make numerics-probe                                  # this machine's hashes -> benchmarks/numerics/
    make numerics-probe COMPARE=benchmarks/numerics/<other machine>.json

Each op runs on fixed seeded float32 inputs with the shapes of the demo SmallCNN (8x8 grayscale
digits, batch 64), under the stages' own pinning (threads, instruction sets; see
pipeline/determinism.py), set before torch loads. With a file to compare, it lists the ops whose
bytes differ and exits 1 when any do. `PROBE_SET="MKL_CBWR=AVX2 ..."` overrides pinned variables,
to find which one moves the bits on a machine (each library reads them once, when it loads).

The op names and hashes are those of the probe the Intel/AMD comparison started from, so its
files compare with these; `*.fused` and `model_configured.*` are the optimizer the project trains
with (`train.optimizer` in params.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..core.cli import entry_point
from ..core.errors import ProjectError

OUT_DIR = Path("benchmarks/numerics")


def _pin():
    from ..pipeline import determinism

    pinning = determinism.read_pinning()
    determinism.pin_environment(pinning)
    for item in os.environ.get("PROBE_SET", "").split():
        key, _, value = item.partition("=")
        os.environ[key] = value
    return pinning


def probes(optimizer_cfg: dict[str, Any] | None = None) -> dict[str, str]:
    """{op name: first 16 hex digits of the sha256 of its output bytes}."""
    import torch
    import torch.nn.functional as F

    def h(*tensors: torch.Tensor) -> str:
        d = hashlib.sha256()
        for t in tensors:
            d.update(t.detach().contiguous().cpu().numpy().tobytes())
        return d.hexdigest()[:16]

    def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

    def fwd_bwd(fn, *inputs: torch.Tensor) -> tuple[str, str]:
        xs = [x.clone().requires_grad_(True) for x in inputs]
        out = fn(*xs)
        out.backward(seeded(*out.shape, seed=99))
        return h(out), h(*[x.grad for x in xs])

    r: dict[str, str] = {}
    x1, w1 = seeded(64, 1, 8, 8, seed=1), seeded(32, 1, 3, 3, seed=2)
    r["conv2d_1to32.fwd"], r["conv2d_1to32.bwd"] = fwd_bwd(
        lambda x, w: F.conv2d(x, w, padding=1), x1, w1
    )
    x2, w2 = seeded(64, 32, 4, 4, seed=3), seeded(64, 32, 3, 3, seed=4)
    r["conv2d_32to64.fwd"], r["conv2d_32to64.bwd"] = fwd_bwd(
        lambda x, w: F.conv2d(x, w, padding=1), x2, w2
    )
    g, b = torch.ones(32), torch.zeros(32)
    r["batch_norm.fwd"], r["batch_norm.bwd"] = fwd_bwd(
        lambda x: F.batch_norm(x, None, None, g, b, training=True), seeded(64, 32, 8, 8, seed=5)
    )
    r["max_pool2d.fwd"], r["max_pool2d.bwd"] = fwd_bwd(
        lambda x: F.max_pool2d(x, 2), seeded(64, 32, 8, 8, seed=6)
    )
    x3, w3, b3 = seeded(64, 256, seed=7), seeded(128, 256, seed=8), seeded(128, seed=9)
    r["linear_256to128.fwd"], r["linear_256to128.bwd"] = fwd_bwd(F.linear, x3, w3, b3)
    x4, w4, b4 = seeded(64, 128, seed=10), seeded(10, 128, seed=11), seeded(10, seed=12)
    r["linear_128to10.fwd"], r["linear_128to10.bwd"] = fwd_bwd(F.linear, x4, w4, b4)
    target = torch.arange(64) % 10
    r["cross_entropy.fwd"], r["cross_entropy.bwd"] = fwd_bwd(
        lambda z: F.cross_entropy(z, target).reshape(1), seeded(64, 10, seed=13)
    )
    r["exp"] = h(torch.exp(seeded(4096, seed=14)))
    r["log"] = h(torch.log(seeded(4096, seed=15).abs() + 1e-3))
    # sqrt: MKL's vector math where torch has MKL (not correctly rounded; vendor-dependent).
    r["sqrt"] = h(torch.sqrt(seeded(4096, seed=23).abs()))
    r["sum_4096"] = h(seeded(4096, seed=16).sum())
    r["mm_64x256x128"] = h(seeded(64, 256, seed=17) @ seeded(256, 128, seed=18))
    optimizers = (
        ("adam", torch.optim.Adam, {}),
        ("adam_foreach_off", torch.optim.Adam, {"foreach": False}),
        ("adamw", torch.optim.AdamW, {}),
        ("sgd_momentum", torch.optim.SGD, {"momentum": 0.9}),
        ("adam.fused", torch.optim.Adam, {"fused": True}),
        ("adamw.fused", torch.optim.AdamW, {"fused": True}),
    )
    for name, opt_cls, kw in optimizers:
        p = torch.nn.Parameter(seeded(128, 256, seed=19))
        opt = opt_cls([p], lr=3e-3, **kw)
        for step in range(3):
            p.grad = seeded(128, 256, seed=20 + step)
            opt.step()
        r[f"optim.{name}"] = h(p)
    torch.manual_seed(21)
    r["dropout"] = h(F.dropout(torch.ones(64, 256), 0.25, training=True))

    from hydra.utils import instantiate

    from ..pipeline.models import SmallCNN

    steps = {"model": lambda params: torch.optim.Adam(params, lr=3e-3)}
    if optimizer_cfg:
        configured = {**optimizer_cfg, "lr": 3e-3}
        steps["model_configured"] = lambda params: instantiate(configured)(params)
    for prefix, make_optimizer in steps.items():
        torch.manual_seed(0)
        model = SmallCNN(in_channels=1, num_classes=10, image_size=(8, 8))
        if prefix == "model":
            r["model.init"] = h(*model.state_dict().values())
        opt = make_optimizer(model.parameters())
        x, y = seeded(64, 1, 8, 8, seed=22), torch.arange(64) % 10
        for step in range(5):
            torch.manual_seed(100 + step)
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            r[f"{prefix}.step{step}.logits"] = h(out)
            r[f"{prefix}.step{step}.grads"] = h(*[p.grad for p in model.parameters()])
            opt.step()
            r[f"{prefix}.step{step}.params"] = h(*model.state_dict().values())
    return r


def machine(pinning) -> dict[str, str]:
    import torch

    from ..core.numerics import cpu

    vendor, model = cpu()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = line.split(":", 1)[1].split()
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                flags = " ".join(f for f in wanted if f in have)
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_vendor": vendor,
        "isa_flags": flags,
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
        "pinning": pinning.describe(),
        "probe_set": os.environ.get("PROBE_SET", ""),
    }


def compare(ours: dict[str, str], theirs: dict[str, str]) -> tuple[list[str], list[str]]:
    """(ops whose hashes differ, ops only one side has)."""
    differ = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    one_side = sorted(set(ours) ^ set(theirs))
    return differ, one_side


def default_out(fp_machine: dict[str, str]) -> Path:
    """benchmarks/numerics/<cpu model>.json, e.g. amd-epyc.json."""
    slug = re.sub(r"[^a-z0-9]+", "-", fp_machine["cpu"].lower()).strip("-") or "cpu"
    return OUT_DIR / f"{slug}.json"


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mlproject.ops.numerics", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--compare", type=Path, help="another machine's JSON (make numerics-probe)")
    ap.add_argument("--out", type=Path, help="write this machine's JSON here")
    args = ap.parse_args(argv)
    theirs = None
    if args.compare:  # read first: a bad file fails before a minute of probing
        try:
            theirs = json.loads(args.compare.read_text())
            theirs["ops"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProjectError(
                f"{args.compare}: not a numerics probe file ({type(exc).__name__}: {exc})"
            ) from None
    pinning = _pin()  # before torch (and numpy) load
    import yaml

    from ..pipeline import determinism

    params = yaml.safe_load(Path(determinism.PARAMS_FILE).read_text()) or {}
    optimizer_cfg = (params.get("train") or {}).get("optimizer")
    determinism.pin_torch(pinning)
    ours = {"machine": machine(pinning), "ops": probes(optimizer_cfg)}
    if args.out:
        from ..core.io import write_json

        write_json(args.out, ours)
        print(f"numerics-probe: {len(ours['ops'])} op hashes -> {args.out}")
    if theirs is None:
        if not args.out:
            print(json.dumps(ours, indent=2))
        return 0
    print(f"this machine:  {ours['machine']}")
    print(f"other machine: {theirs['machine']}")
    differ, one_side = compare(ours["ops"], theirs["ops"])
    for k in ours["ops"]:
        if k in theirs["ops"]:
            print(f"{'DIFFERS' if k in differ else 'same   '}  {k}")
    if one_side:
        groups = sorted(
            {k.split(".step")[0] + (".step*" if ".step" in k else "") for k in one_side}
        )
        print(f"{len(one_side)} ops on one side only, not compared: {', '.join(groups)}")
    compared = len(ours["ops"]) - len(set(ours["ops"]) - set(theirs["ops"]))
    print(f"{len(differ)} of {compared} ops differ")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
