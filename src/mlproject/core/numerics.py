"""Numerics fingerprints: which outputs may be compared bit for bit (standard library only).

pipeline/determinism.py writes a fingerprint (torch build, device, CPU architecture, the ISA
level the pinning allows, the pinning) into every checkpoint and model card; the report and
`make repro` read two of them and compare outputs only when `comparable` says so.
"""

from __future__ import annotations

import json

# The fingerprint fields that decide the bits: two outputs are comparable when these agree.
# Pinned, the CPU vendor and model do not decide (`make numerics-probe` and a fresh clone's
# `make repro` gave the same bytes on AMD EPYC and Intel Xeon with AVX-512 and AMX, see
# docs/pipeline.md#reproducibility), so a pinned fingerprint does not record them: the outputs'
# bytes are the same on either. `cpu` (vendor and model) is there only with `train.fast`.
DECIDING = ("torch", "device", "arch", "isa", "pinning", "cpu")


def cpu() -> tuple[str, str]:
    """(vendor id, model name) from /proc/cpuinfo; the platform's words elsewhere."""
    import platform

    vendor = model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "model name" and not model:
                    model = value.strip()
                if vendor and model:
                    break
    except OSError:
        pass
    return vendor or platform.machine(), model or platform.processor() or platform.machine()


def comparable(
    a: dict[str, str] | None, b: dict[str, str] | None, labels: tuple[str, str] = ("a", "b")
) -> tuple[bool, str]:
    """Whether outputs made with fingerprints a and b may be compared bit for bit, and if not,
    why: "torch 2.14.1+cu130 (base) vs 2.14.1+cpu (head); arch ..."."""
    missing = [label for fp, label in zip((a, b), labels, strict=True) if not fp]
    if missing:
        return False, f"no numerics fingerprint recorded with {' and '.join(missing)}"
    assert a is not None and b is not None
    diffs = [
        f"{k} {a.get(k)} ({labels[0]}) vs {b.get(k)} ({labels[1]})"
        for k in DECIDING
        if a.get(k) != b.get(k)
    ]
    return not diffs, "; ".join(diffs)


def card_numerics(text: str | None) -> dict[str, str] | None:
    """The fingerprint in a model card's JSON text (None when absent or not JSON)."""
    try:
        card = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return (card.get("numerics") or None) if isinstance(card, dict) else None


def describe(fp: dict[str, str] | None) -> str:
    """One line: "torch 2.14.1+cu130, cpu, x86_64, AVX2, pinned: ..." (the CPU too, unpinned)."""
    if not fp:
        return "unknown numerics (no fingerprint recorded)"
    where = fp.get("arch") or fp.get("cpu_vendor")  # cpu_vendor: a card from before `arch`
    if fp.get("cpu"):
        where = f"{where}, {fp['cpu']}"
    return f"torch {fp.get('torch')}, {fp.get('device')}, {where}, {fp.get('isa')}, {fp.get('pinning')}"
