"""Stage `explain`: attributions that show reviewers what the model looks at, in the PR report.

What they are is the data kind's (mlproject.kinds): for images, Integrated Gradients maps of fixed
test images; for a table, the permutation importance of each column. Both write
reports/explain/attributions.png and reports/explain/attributions.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import kinds
from ..core.cli import entry_point
from ..core.paths import EXPLAIN_REPORTS
from .config import load_params
from .train import CHECKPOINT, PREPARED

OUT_DIR = EXPLAIN_REPORTS


def explain(
    prepared: Path = PREPARED, checkpoint: Path = CHECKPOINT, out_dir: Path = OUT_DIR
) -> dict[str, Any]:
    import torch

    from .train import load_checkpoint

    torch.manual_seed(0)
    model, payload = load_checkpoint(checkpoint)
    return kinds.for_spec(payload["input"]).explain(model, payload, Path(prepared), Path(out_dir))


@entry_point(stage="explain")
def main() -> int:
    load_params()  # fail early on a bad config, naming the key
    summary = explain()
    print(f"explain: {OUT_DIR / 'attributions.png'} ({summary['description']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
