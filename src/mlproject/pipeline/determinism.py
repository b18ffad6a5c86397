"""Same commit, same bits on any x86-64 machine: pin what CPU numerics depend on, before torch.

CPU results change with the intra-op thread count and with the instruction set the libraries
dispatch to (AVX-512 on one runner, AVX2 on the next). `pin_environment` fixes both through
environment variables, which the libraries read once, when they load; so it must run before
`import torch` (and numpy). `python -m mlproject.pipeline <name>`, what dvc.yaml runs, does that.

- threads: `train.threads` (OMP/MKL thread counts, `torch.set_num_threads`), dynamic off;
- ATen's vector kernels: `ATEN_CPU_CAPABILITY=avx2` (every x86-64 CI runner has AVX2; `default`,
  scalar code, would call the system libm, whose results vary with the distribution);
- oneDNN: `ONEDNN_MAX_CPU_ISA=AVX2`, and its convolutions off (`torch.backends.mkldnn`): they
  pick blockings by cache size, which differs between CPU models; ATen's conv runs on BLAS;
- MKL (torch's BLAS): `MKL_CBWR=COMPATIBLE` (its conditional numerical reproducibility mode);
- numpy: its AVX-512 kernels off (`NPY_DISABLE_CPU_FEATURES`), OpenBLAS at its AVX2 kernels;
- torch: `use_deterministic_algorithms(True)`.

`train.fast: true` opts out (the libraries then pick the fastest path of the machine). On CUDA the
same bits come back on the same GPU model and software stack only (see docs/pipeline.md).

What the pinning cannot settle is recorded instead: `fingerprint()` names the numerics an output
was made with (torch build, device, CPU architecture, the ISA level the pinning allows, the
pinning; pinned, the CPU vendor does not decide the bits and is not recorded),
train stores it in the checkpoint, export in the model card, and the PR report compares base and
head outputs only when their fingerprints agree (core.numerics.comparable). `make numerics-probe` hashes each
op the demo model uses, to find what differs between two machines (mlproject.ops.numerics).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.numerics import cpu

PARAMS_FILE = "params.yaml"
DEFAULT_THREADS = 1


def numpy_avx512_features() -> str:
    """numpy's names for its AVX-512 kernels (numpy 2.4 groups them as X86_V4), read without
    importing numpy."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(v) for v in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ""
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


@dataclass(frozen=True)
class Pinning:
    threads: int = DEFAULT_THREADS
    fast: bool = False

    def env(self) -> dict[str, str]:
        """The environment variables that pin the numerics (empty when fast)."""
        if self.fast:
            return {}
        n = str(self.threads)
        return {
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "OMP_DYNAMIC": "FALSE",
            "MKL_DYNAMIC": "FALSE",
            "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "MKL_CBWR": "COMPATIBLE",
            "OPENBLAS_NUM_THREADS": n,  # numpy's BLAS
            "OPENBLAS_CORETYPE": "Haswell",
            "NPY_DISABLE_CPU_FEATURES": numpy_avx512_features(),
        }

    def describe(self) -> str:
        if self.fast:
            return "unpinned (train.fast: true): the machine's fastest kernels and threads"
        return f"pinned: {self.threads} thread(s), AVX2 kernels, MKL CBWR=COMPATIBLE"


def read_pinning(params: str | Path | dict[str, Any] = PARAMS_FILE) -> Pinning:
    """`train.threads` and `train.fast` from params.yaml (plain YAML: no torch, no OmegaConf)."""
    if not isinstance(params, dict):
        import yaml

        path = Path(params)
        params = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    train = params.get("train") or {}
    threads = train.get("threads", DEFAULT_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"{PARAMS_FILE}: 'train.threads' must be an integer >= 1, got {threads!r}."
        )
    return Pinning(threads=threads, fast=bool(train.get("fast", False)))


def pin_environment(pinning: Pinning, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the pinning variables (overriding what the shell set); return them. Before torch."""
    environ = os.environ if environ is None else environ
    values = pinning.env()
    environ.update(values)
    return values


def pin_torch(pinning: Pinning) -> None:
    """The settings torch takes at run time (after import): threads, conv backend, algorithms."""
    import torch

    if pinning.fast:
        return
    torch.set_num_threads(pinning.threads)
    torch.backends.mkldnn.enabled = False
    deterministic_algorithms()


def deterministic_algorithms(warn_only: bool = False) -> None:
    """torch.use_deterministic_algorithms(True), less importing the inductor config (TorchDynamo
    with it: ~1-2 s per stage start) to set a flag that only torch.compile reads."""
    import torch

    if "torch._inductor.config" in sys.modules or not hasattr(
        torch._C, "_set_deterministic_algorithms"
    ):
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=warn_only)


def installed_torch() -> str:
    """torch's full version, local build suffix included ("2.14.1+cu130", "2.14.1+cpu"), read
    from torch/version.py without importing torch (the package metadata drops the suffix)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else "unknown"


def fingerprint(pinning: Pinning, device: str = "cpu") -> dict[str, str]:
    """The numerics an output is made with, in words (no torch import: its version is read from
    the installed package). `device` is "cpu" or the GPU's name ("cuda: NVIDIA H200")."""
    import platform

    torch_version = installed_torch()
    isa = (
        "machine's best (unpinned)"
        if pinning.fast
        else pinning.env()["ATEN_CPU_CAPABILITY"].upper()
    )
    fp = {
        "torch": torch_version,
        "device": device,
        "arch": platform.machine(),
        "isa": isa,
        "pinning": pinning.describe(),
    }
    if pinning.fast:  # the machine picks kernels and threads: nothing short of it reproduces
        fp["cpu"] = " ".join(cpu())
    return fp


def torch_was_pinned(pinning: Pinning) -> bool:
    """Whether the running torch dispatches as pinned (False when torch loaded before the env)."""
    import torch

    if pinning.fast:
        return True
    return (
        torch.backends.cpu.get_cpu_capability().lower() in ("avx2", "default")
        and torch.get_num_threads() == pinning.threads
    )
