#!/usr/bin/env bash
# Print the path of a uv of the pinned version for `make install`; exit 1 when none can be had
# (make install then falls back to pip). Looked for in this order:
#   1. the venv's own (the lock's dev group installs uv into it);
#   2. `uv` on PATH, if it is that version;
#   3. this machine's copy in the user cache, ${XDG_CACHE_HOME:-~/.cache}/mlproject/uv-<version>,
#      made once per machine with pip: so a second clone does not pay pip's 2-4 s again.
#
#   requirements/uv.sh <version> <venv bin> <python with pip>
set -euo pipefail
version=$1 bin=$2 python=$3
is_pinned() { [ -x "$1" ] && [ "$("$1" --version 2>/dev/null | cut -d' ' -f1,2)" = "uv $version" ]; }

for candidate in "$bin/uv" "$(command -v uv || true)"; do
  if [ -n "$candidate" ] && is_pinned "$candidate"; then echo "$candidate"; exit 0; fi
done
home="${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/mlproject/uv-$version"
if is_pinned "$home/bin/uv"; then echo "$home/bin/uv"; exit 0; fi
mkdir -p "$(dirname "$home")" 2>/dev/null || exit 1
tmp=$(mktemp -d "$home.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" \
  "uv==$version" >/dev/null 2>&1 || exit 1
is_pinned "$tmp/bin/uv" || exit 1
# Two installs at once: the first rename wins and the other copy is dropped. A broken copy left
# by an interrupted run is replaced.
is_pinned "$home/bin/uv" || rm -rf "$home"
mv -T "$tmp" "$home" 2>/dev/null || true
is_pinned "$home/bin/uv" && echo "$home/bin/uv"
