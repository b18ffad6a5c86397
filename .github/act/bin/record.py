"""Append one JSON line describing a call (tool, argv, the files it was given) to $ACT_RECORD."""

import hashlib
import json
import os
import sys
from pathlib import Path


def describe(arg: str) -> dict | None:
    path = Path(arg)
    try:  # text such as a PR body is no file; a long line of it is no valid name either
        if not arg or len(arg) > 4096 or not path.is_file():
            return None
    except OSError:
        return None
    data = path.read_bytes()
    entry = {"path": arg, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if path.suffix in (".md", ".txt", ".json") and len(data) < 200_000:
        entry["text"] = data.decode("utf-8", "replace")
    return entry


def record(tool: str, argv: list[str], **extra) -> None:
    files = [d for d in map(describe, argv) if d]
    token = os.environ.get("REPO_TOKEN") or os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")
    line = {
        "tool": tool,
        "argv": argv,
        "job": os.environ.get("GITHUB_JOB"),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "files": files,
        # Which token the call would authenticate with (a digest: tokens are not written down).
        "token_sha256": token and hashlib.sha256(token.encode()).hexdigest(),
        **extra,
    }
    target = os.environ.get("ACT_RECORD")
    if not target:
        sys.exit(f"{tool} (recorder): ACT_RECORD is not set; nothing is sent to GitHub from here")
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    record(sys.argv[1], sys.argv[2:])
