"""Stage `prepare`: read and validate the raw data, split it train/val/test, fit the
preprocessing on the training split; what that means is the data kind's (mlproject.kinds).

Outputs (written atomically): outputs/prepared/ with the splits and meta.json (the classes, the
model's input spec, the counts and leakage checks of every split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .. import kinds
from ..core.cli import entry_point
from ..core.paths import PREPARED
from .config import load_params

OUT_DIR = PREPARED


def prepare(cfg: DictConfig, out_dir: Path = OUT_DIR) -> dict[str, Any]:
    return kinds.for_config(cfg.data).prepare(cfg, Path(out_dir))


@entry_point(stage="prepare")
def main() -> int:
    cfg = load_params()
    meta = prepare(cfg)
    print(kinds.for_config(cfg.data).describe_prepared(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
