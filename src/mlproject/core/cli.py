"""One wrapper for every entry point: error printing, exit codes and the stage timing line.

    @entry_point                                      # a tool: python -m mlproject.ops.x ...
    def main(argv=None) -> int: ...

    @entry_point(stage="prepare")                     # a pipeline stage: prints the timing line
    def main() -> int: ...

Exit codes, the same everywhere: 0 done; 1 a failed check (gate, drift, validation) or an error;
2 a usage error (bad argument). A tool whose exit 1 means "the check failed" passes
`error_code=2`, so that "could not check" stays apart from "checked and failed".
A ProjectError (core/errors.py) prints `error: <message>` on stderr (with its traceback too when
MLPROJECT_DEBUG=1); anything else is a bug and keeps its traceback. `subcommands()` builds the argparse parser that every multi-command tool uses.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable

from .errors import ProjectError

Main = Callable[..., int | None]


def exit_code(exc: BaseException, error_code: int | None = None) -> int:
    """A usage error exits 2; any other error exits `error_code` if the tool sets one, else 1."""
    own = getattr(exc, "exit_code", 1)
    return own if own == 2 or error_code is None else error_code


def run_main(
    fn: Main,
    *args,
    stage: str | None = None,
    error_code: int | None = None,
    errors: tuple[type[BaseException], ...] = (),
    **kwargs,
) -> int:
    """Call fn; a project error (or one of `errors`) -> `error: <message>` on stderr and its
    exit code. With stage, print `<stage>: done in <s> s` after a run that succeeded."""
    start = time.perf_counter()
    try:
        code = fn(*args, **kwargs) or 0
    except (ProjectError, *errors) as exc:
        if os.environ.get("MLPROJECT_DEBUG", "") not in ("", "0"):
            traceback.print_exc()  # for whoever debugs the tool itself
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc, error_code)
    if stage and code == 0:
        print(f"{stage}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return code


def entry_point(
    fn: Main | None = None,
    *,
    stage: str | None = None,
    error_code: int | None = None,
    errors: tuple[type[BaseException], ...] = (),
):
    """Decorator form of run_main for a module's `main()`."""

    def wrap(inner: Main) -> Callable[..., int]:
        @functools.wraps(inner)
        def main(*args, **kwargs) -> int:
            return run_main(
                inner, *args, stage=stage, error_code=error_code, errors=errors, **kwargs
            )

        return main

    return wrap(fn) if fn is not None else wrap


def subcommands(prog: str, doc: str | None) -> tuple[argparse.ArgumentParser, Callable]:
    """A parser whose first argument is a required subcommand, and `add(name, help)` that adds
    one and returns its sub-parser. The module docstring becomes the help's epilog."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(doc or "").strip().split("\n")[0],
        epilog="\n".join((doc or "").strip().split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, help: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    return parser, add
