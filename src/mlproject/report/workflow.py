"""Run a GitHub Actions workflow's `run:` steps here, in order, the way a runner would.

`uses:` steps (checkout, setup, caches, artifacts) are skipped: the environment is already here.
`if:` conditions and `${{ }}` expressions are evaluated against a context you give (github,
inputs, vars, secrets, env), with the small expression language GitHub documents: literals,
== != < <= > >= && || !, property access with `.` and `*`, and the functions always, success,
failure, cancelled, contains, startsWith, endsWith, format, fromJSON, toJSON.

    python -m mlproject.report.workflow .github/workflows/pr-loop.yml [context.json]

prints each step and runs it, so the pull-request loop can be tried on a laptop (see README).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[!<>(),\[\]])|(?P<name>[A-Za-z_][\w\-]*|\*)"
    r"|(?P<dot>\.))"
)


class ExpressionError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse expression at {text[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value  # NaN is falsy


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


class _Parser:
    """Recursive descent over the tokens; evaluates as it parses."""

    def __init__(self, text: str, context: dict[str, Any], status: str):
        self.toks, self.i, self.ctx, self.status = _tokens(text), 0, context, status

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExpressionError(f"expected {value!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if _truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.cmp()
            value = right if _truthy(value) else value
        return value

    def cmp(self) -> Any:
        value = self.unary()
        while self.peek() and self.peek()[1] in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take()[1]
            right = self.unary()
            value = {
                "==": lambda a, b: _equal(a, b),
                "!=": lambda a, b: not _equal(a, b),
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }[op](value, right)
        return value

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if "." in value else int(value)
        if value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind != "name":
            raise ExpressionError(f"unexpected {value!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if self.peek() == ("op", "("):
            return self.call(value)
        return self.access(self.ctx.get(value))

    def access(self, value: Any) -> Any:
        while self.peek() in (("dot", "."), ("op", "[")):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.or_()
                self.take("]")
            if key == "*":
                value = list(value.values()) if isinstance(value, dict) else (value or [])
                if self.peek() == ("dot", "."):
                    self.take()
                    field = self.take()[1]
                    value = [v.get(field) if isinstance(v, dict) else None for v in value]
            elif isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and isinstance(key, int):
                value = value[key] if key < len(value) else None
            else:
                value = None
        return value

    def call(self, name: str) -> Any:
        self.take("(")
        args = []
        while self.peek() != ("op", ")"):
            args.append(self.or_())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        fn = name.lower()
        if fn == "always":
            return True
        if fn == "success":
            return self.status == "success"
        if fn == "failure":
            return self.status == "failure"
        if fn == "cancelled":
            return False
        if fn == "contains":
            hay, needle = args
            if isinstance(hay, list):
                return any(_equal(h, needle) for h in hay)
            return _text(needle).lower() in _text(hay).lower()
        if fn == "startswith":
            return _text(args[0]).lower().startswith(_text(args[1]).lower())
        if fn == "endswith":
            return _text(args[0]).lower().endswith(_text(args[1]).lower())
        if fn == "format":
            return re.sub(r"\{(\d+)\}", lambda m: _text(args[1 + int(m.group(1))]), args[0])
        if fn == "fromjson":
            return json.loads(args[0])
        if fn == "tojson":
            return json.dumps(args[0])
        raise ExpressionError(f"unknown function {name}()")


def evaluate(expression: str, context: dict[str, Any], status: str = "success") -> Any:
    return _Parser(expression, context, status).parse()


def substitute(text: str, context: dict[str, Any]) -> str:
    """Replace every `${{ expr }}` in a string with its value as text."""
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(evaluate(m.group(1), context)), str(text))


def condition(expr: Any, context: dict[str, Any], status: str) -> bool:
    """A step's `if:`; like GitHub, a condition without a status function implies success()."""
    if expr is None:
        return status == "success"
    text = str(expr).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    if not re.search(r"\b(always|success|failure|cancelled)\s*\(", text):
        text = f"success() && ({text})"
    return _truthy(evaluate(text, context, status))


@dataclass
class StepResult:
    job: str
    name: str
    run: str | None
    skipped: bool
    returncode: int | None
    seconds: float = 0.0


def job_order(workflow: dict[str, Any]) -> list[str]:
    """Jobs in an order that respects `needs:`."""
    jobs, done = workflow.get("jobs") or {}, []
    while len(done) < len(jobs):
        for name, job in jobs.items():
            needs = job.get("needs") or []
            needs = [needs] if isinstance(needs, str) else needs
            if name not in done and all(n in done for n in needs):
                done.append(name)
                break
        else:
            raise ValueError("cycle in jobs' needs:")
    return done


def input_defaults(workflow: dict[str, Any]) -> dict[str, Any]:
    """Defaults of a reusable workflow's `workflow_call` inputs (YAML reads `on:` as True)."""
    triggers = workflow.get("on", workflow.get(True)) or {}
    call = triggers.get("workflow_call") if isinstance(triggers, dict) else None
    return {name: spec.get("default") for name, spec in ((call or {}).get("inputs") or {}).items()}


def run_workflow(
    path: str | Path,
    context: dict[str, Any],
    cwd: str | Path = ".",
    env: dict[str, str] | None = None,
    jobs: list[str] | None = None,
    echo: bool = True,
    log: IO[str] | None = None,
) -> list[StepResult]:
    """Run the `run:` steps of the workflow's jobs (all, or those named) in order, in `cwd`.

    A failed step fails its job: later steps run only if their `if:` allows it (always(),
    failure()), as on GitHub. Returns every step's result; the caller checks return codes.
    Steps' output goes to `log` when given, else to this process's stdout and stderr.
    """
    workflow = yaml.safe_load(Path(path).read_text())
    context = {**context, "inputs": {**input_defaults(workflow), **(context.get("inputs") or {})}}
    base_env = dict(os.environ if env is None else env)
    results: list[StepResult] = []
    job_status: dict[str, str] = {}
    for job_name in job_order(workflow):
        job = workflow["jobs"][job_name]
        ctx = {**context, "env": {}}
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        upstream = "failure" if any(job_status.get(n) == "failure" for n in needs) else "success"
        if (jobs is not None and job_name not in jobs) or not condition(
            job.get("if"), ctx, upstream
        ):
            job_status[job_name] = "skipped"
            continue
        job_env = {k: substitute(v, ctx) for k, v in (job.get("env") or {}).items()}
        workdir = Path(cwd) / ((job.get("defaults") or {}).get("run", {}) or {}).get(
            "working-directory", "."
        )
        status = "success"
        for step in job.get("steps") or []:
            name = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            step_ctx = {**ctx, "env": {**job_env}}
            if "uses" in step or not condition(step.get("if"), step_ctx, status):
                results.append(StepResult(job_name, name, step.get("run"), True, None))
                continue
            step_env = {k: substitute(v, step_ctx) for k, v in (step.get("env") or {}).items()}
            script = substitute(step["run"], {**step_ctx, "env": {**job_env, **step_env}})
            if echo:
                print(f"::group::{job_name} / {name}\n{script}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                cwd=workdir,
                env={**base_env, **job_env, **step_env},
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
            )
            seconds = time.perf_counter() - start
            if echo:
                print(f"::endgroup:: exit {proc.returncode} in {seconds:.1f} s", flush=True)
            results.append(StepResult(job_name, name, script, False, proc.returncode, seconds))
            if proc.returncode != 0 and not step.get("continue-on-error"):
                status = "failure"
        job_status[job_name] = status
    return results


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    context = json.loads(Path(args[1]).read_text()) if len(args) > 1 else {}
    results = run_workflow(args[0], context)
    failed = [r for r in results if r.returncode]
    for r in results:
        state = "skipped" if r.skipped else f"exit {r.returncode}"
        print(f"{r.job:>12} | {r.name:<45} | {state}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
