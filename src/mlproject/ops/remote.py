"""The DVC remote: which one is configured and whether it answers.

    python -m mlproject.ops.remote check      (make remote-check)

Exit 0 when no remote is configured (the pipeline then runs locally) or the default remote
answers; 1 when it does not, with the reason (credentials refused, endpoint unreachable, no such
bucket) and what happens instead: `make data` writes the embedded demo data and `make repro` /
the PR loop rebuild the outputs locally rather than pulling them.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

FALLBACK = (
    "without it, `make data` writes the embedded demo data and `make repro` (and the PR loop's "
    "`python -m mlproject.report.ci repro`) rebuild the outputs locally instead of pulling them"
)
# Substrings of DVC/botocore errors -> what the operator should read.
REASONS = (
    (("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403",
      "Unable to locate credentials", "NoCredentialsError", "ExpiredToken"),
     "the remote refused the credentials (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
     "`dvc remote modify --local <name> access_key_id ...`)"),
    (("NoSuchBucket", "bucket does not exist", "404"),
     "the bucket does not exist (create it, or fix the remote's URL)"),
    (("Could not connect", "Connection refused", "ConnectTimeout", "Name or service not known",
      "EndpointConnectionError", "timed out", "ClientConnectorError", "Cannot connect"),
     "the endpoint does not answer (check `endpointurl` and the network)"),
)  # fmt: skip


@dataclass
class Remote:
    name: str
    url: str
    endpoint: str | None


def _dvc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], capture_output=True, text=True, timeout=timeout
    )


def default_remote() -> Remote | None:
    """The remote `dvc push`/`pull` use (core.remote), else the only one; None when none is."""
    from dvc.repo import Repo

    with Repo() as repo:
        config = repo.config
        remotes = config.get("remote", {})
        name = config.get("core", {}).get("remote") or (
            next(iter(remotes)) if len(remotes) == 1 else None
        )
        if not name or name not in remotes:
            return None
        section = remotes[name]
        return Remote(name, section.get("url", ""), section.get("endpointurl"))


def reason(stderr: str) -> str:
    for needles, text in REASONS:
        if any(n in stderr for n in needles):
            return text
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no answer"


def check(timeout: float = 120) -> int:
    remote = default_remote()
    if remote is None:
        print("DVC remote: none configured; the pipeline runs locally (see docs/data.md).")
        return 0
    where = f"{remote.url}" + (f" at {remote.endpoint}" if remote.endpoint else "")
    print(f"DVC remote: '{remote.name}' -> {where}")
    try:
        # Compares the workspace's outputs with the remote: it has to list the remote to answer.
        status = _dvc("status", "--cloud", "--remote", remote.name, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  does not answer within {timeout:.0f} s; {FALLBACK}.", file=sys.stderr)
        return 1
    if status.returncode != 0:
        print(f"  does not answer: {reason(status.stderr + status.stdout)}.", file=sys.stderr)
        print(f"  {FALLBACK[0].upper()}{FALLBACK[1:]}.", file=sys.stderr)
        return 1
    missing = sum(1 for line in status.stdout.splitlines() if line.strip().startswith("new:"))
    print(
        "  answers: "
        + (f"{missing} output(s) not pushed yet (dvc push)" if missing else "everything pushed")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["check"]:
        return check()
    print(__doc__)
    return 0 if args in ([], ["-h"], ["--help"]) else 2


if __name__ == "__main__":
    raise SystemExit(main())
