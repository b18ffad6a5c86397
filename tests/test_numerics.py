"""Numerics across machines: the fingerprint every output records, when two are comparable, the
fused optimizer that removes the one vendor-dependent op the probe found, and the probe itself."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from mlproject.core.numerics import DECIDING, card_numerics, comparable, cpu, describe
from mlproject.pipeline.determinism import Pinning, fingerprint

from conftest import ENV, ROOT, other_arch


def test_the_fingerprint_names_what_decides_the_bits():
    fp = fingerprint(Pinning(threads=1), "cpu")
    # Pinned, the CPU's vendor and model do not decide the bits, and are not recorded: the same
    # outputs on AMD and Intel machines then have the same bytes, cards included.
    assert set(DECIDING) - {"cpu"} <= set(fp) and not {"cpu", "cpu_vendor", "cpu_model"} & set(fp)
    assert fp["torch"] == torch.__version__  # the full build, local suffix included
    assert fp["isa"] == "AVX2" and fp["device"] == "cpu" and fp["arch"] == platform.machine()
    assert "1 thread" in fp["pinning"]
    unpinned = fingerprint(Pinning(fast=True), "cpu")
    assert unpinned["isa"] != "AVX2" and unpinned["cpu"] == " ".join(cpu())


def test_outputs_are_comparable_only_when_every_deciding_field_agrees():
    here = fingerprint(Pinning(), "cpu")
    assert comparable(here, dict(here), ("base", "head")) == (True, "")
    arch = other_arch(here["arch"])  # whichever this machine is not
    elsewhere = {**here, "arch": arch, "torch": "2.14.1+cpu"}
    same, why = comparable(elsewhere, here, ("base", "head"))
    assert not same
    assert f"arch {arch} (base) vs {here['arch']} (head)" in why
    assert f"torch 2.14.1+cpu (base) vs {here['torch']} (head)" in why
    # Unpinned (train.fast), the CPU decides: two CPU models' outputs are not compared.
    fast = fingerprint(Pinning(fast=True), "cpu")
    assert not comparable(fast, {**fast, "cpu": "AuthenticAMD AMD EPYC 7B13"})[0]
    assert not comparable(fast, here)[0]
    # A card written before `arch` (it named the CPU vendor instead): not comparable, rebuilt.
    old = {k: v for k, v in here.items() if k != "arch"} | {"cpu_vendor": "AuthenticAMD"}
    assert comparable(old, here, ("base", "head")) == (
        False,
        f"arch None (base) vs {here['arch']} (head)",
    )
    assert comparable(None, here, ("base", "head")) == (
        False,
        "no numerics fingerprint recorded with base",
    )
    assert card_numerics(json.dumps({"numerics": here})) == here
    assert card_numerics("not json") is None and card_numerics(json.dumps({"a": 1})) is None
    assert here["arch"] in describe(here) and "unknown" in describe(None)
    assert fast["cpu"] in describe(fast) and "AuthenticAMD" in describe(old)


def _seeded(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_fused_adamw_is_the_textbook_step_with_a_correctly_rounded_sqrt():
    """Why conf/ trains with `fused: true`: the default Adam step takes sqrt from MKL's vector
    math (not correctly rounded, and rounded differently on Intel and AMD CPUs: the probe's only
    differing op). The fused kernel's sqrt is the IEEE instruction: its result is the same
    formula with numpy's correctly rounded sqrt, on any CPU."""
    lr, wd, eps, (b1, b2) = 3e-3, 1e-4, 1e-8, (0.9, 0.999)
    p = torch.nn.Parameter(_seeded(128, 256, seed=19))
    opt = torch.optim.AdamW([p], lr=lr, weight_decay=wd, fused=True)
    ref = _seeded(128, 256, seed=19)
    m, v = torch.zeros_like(ref), torch.zeros_like(ref)
    for step in range(1, 4):
        grad = _seeded(128, 256, seed=20 + step)
        p.grad = grad.clone()
        opt.step()
        ref.mul_(1 - lr * wd)
        m.lerp_(grad, 1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = lr / (1 - b1**step)
        root = torch.from_numpy(np.sqrt(v.numpy()))  # IEEE: correctly rounded everywhere
        denom = (root / (1 - b2**step) ** 0.5).add_(eps)
        ref.addcdiv_(m, denom, value=-step_size)
    assert torch.equal(p.detach(), ref)


def test_training_uses_the_fused_optimizer():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["train"]["optimizer"]["fused"] is True


def _probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlproject.ops.numerics", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_probe_compares_two_runs_and_names_each_op_that_differs(tmp_path):
    ours = tmp_path / "here.json"
    first = _probe("--out", str(ours))
    assert first.returncode == 0, first.stderr
    data = json.loads(ours.read_text())
    assert {"optim.adamw", "optim.adamw.fused", "sqrt", "model_configured.step4.params"} <= set(
        data["ops"]
    )
    assert data["machine"]["capability"] == "AVX2" and data["machine"]["threads"] == "1"

    # Same machine, same pinning: every op agrees with itself.
    same = _probe("--compare", str(ours))
    assert same.returncode == 0 and "0 of " in same.stdout, same.stdout

    # Another machine whose sqrt rounds otherwise (as an Intel CPU's MKL does): named, exit 1.
    other = dict(data, ops={**data["ops"], "sqrt": "0" * 16})
    (tmp_path / "other.json").write_text(json.dumps(other))
    differs = _probe("--compare", str(tmp_path / "other.json"))
    assert differs.returncode == 1
    assert "DIFFERS  sqrt" in differs.stdout and "1 of " in differs.stdout


def test_the_probe_refuses_a_file_that_is_not_a_probe_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = _probe("--compare", str(bad))
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: {bad}: not a numerics probe file")
    assert "Traceback" not in out.stderr
