"""`python -m mlproject.pipeline <stage>`: run one DVC stage, pinned (see run.py)."""

from .run import main

if __name__ == "__main__":
    raise SystemExit(main())
