"""Numerics fingerprints: which outputs may be compared bit for bit (standard library only).

pipeline/determinism.py writes a fingerprint (torch build, device, CPU vendor, the ISA level the
pinning allows, the pinning) into every checkpoint and model card; the report and `make repro`
read two of them and compare outputs only when `comparable` says so.
"""

from __future__ import annotations

import json

# The fingerprint fields that decide the bits: two outputs are comparable when these agree.
# The CPU model is recorded but not compared: with the pinning, models of one vendor agree.
DECIDING = ("torch", "device", "cpu_vendor", "isa", "pinning")


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
    why: "torch 2.14.1+cu130 (base) vs 2.14.1+cpu (head); cpu_vendor ..."."""
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
    """One line: "torch 2.14.1+cu130, cpu, AuthenticAMD AMD EPYC, AVX2, pinned: ..."."""
    if not fp:
        return "unknown numerics (no fingerprint recorded)"
    return (
        f"torch {fp.get('torch')}, {fp.get('device')}, {fp.get('cpu_vendor')} "
        f"{fp.get('cpu_model')}, {fp.get('isa')}, {fp.get('pinning')}"
    )
