"""upload-artifact / download-artifact stubs: one folder per artifact name in $ACT_STATE/artifacts.

    python3 artifacts.py upload NAME IF_NO_FILES_FOUND PATHS...   (paths relative to the workspace)
    python3 artifacts.py download NAME DEST
"""

import glob
import os
import shutil
import sys
from pathlib import Path

from record import record


def store(name: str) -> Path:
    return Path(os.environ["ACT_STATE"]) / "artifacts" / name


def upload(name: str, if_no_files: str, patterns: list[str]) -> int:
    files = []
    for pattern in patterns:
        for match in glob.glob(pattern, recursive=True):
            path = Path(match)
            files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    record("stub:upload-artifact", [name, *sorted(map(str, files))])
    if not files:
        message = f"No files were found with the provided path: {' '.join(patterns)}"
        if if_no_files == "error":
            print(f"::error::{message}")
            return 1
        print(f"::warning::{message}. No artifacts will be uploaded." if if_no_files == "warn" else message)
        return 0
    target = store(name)
    if target.exists():
        print(f"::error::An artifact with the name {name!r} already exists in this run")
        return 1
    for path in files:
        dest = target / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    print(f"Artifact {name} has been uploaded: {len(files)} files")
    return 0


def download(name: str, dest: str) -> int:
    source = store(name)
    record("stub:download-artifact", [name, dest])
    if not source.is_dir():
        print(f"::error::Unable to download artifact(s): Artifact not found for name: {name}")
        return 1
    shutil.copytree(source, dest or ".", dirs_exist_ok=True)
    print(f"Artifact {name} downloaded to {dest or '.'}")
    return 0


if __name__ == "__main__":
    action, name, *rest = sys.argv[1:]
    if action == "upload":
        sys.exit(upload(name, rest[0], rest[1:]))
    sys.exit(download(name, rest[0] if rest else "."))
