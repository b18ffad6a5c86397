"""Print uv's package-source options for `make install`: this machine's pip configuration
(find-links, index URLs; uv does not read pip's) and the torch build chosen with TORCH.

    python requirements/uv_sources.py [--torch cpu|cuda|""] [--pip-args | --cert | --shell]

TORCH=cpu adds PyTorch's CPU index (GitHub's CPU runners: ~1.5 GB environment instead of ~5 GB);
TORCH=cuda uses PyPI's default (CUDA) build; empty keeps what the machine's pip would take.
`--pip-args` prints the same choice for pip, the fallback; `--cert` prints pip's `cert` (a CA
bundle, for uv's SSL_CERT_FILE); `--shell` prints both as `sources=...` and `cert=...` for the
shell's `eval` (one `pip config list`, which costs half a second, instead of two). Standard
library only.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import subprocess
import sys

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip_config(python: str = sys.executable) -> dict[str, list[str]]:
    """find-links / index-url / extra-index-url from `pip config list` (files and PIP_* env)."""
    proc = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    found: dict[str, list[str]] = {
        "find-links": [],
        "index-url": [],
        "extra-index-url": [],
        "cert": [],
    }
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if not sep or option not in found:
            continue
        try:
            value = ast.literal_eval(value)  # pip prints each value with repr()
        except (ValueError, SyntaxError):
            continue
        for item in str(value).split():
            if item not in found[option]:
                found[option].append(item)
    return found


def uv_args(config: dict[str, list[str]], torch: str) -> list[str]:
    args: list[str] = []
    for link in config["find-links"]:
        args += ["--find-links", link]
    if config["index-url"]:
        args += ["--index-url", config["index-url"][-1]]
    extra = list(config["extra-index-url"])
    if torch == "cpu":
        extra.append(TORCH_CPU_INDEX)
    for url in extra:
        args += ["--extra-index-url", url]
    if extra or config["find-links"]:
        # pip's rule: the best version from any source (a local build like 2.14.1+cpu sorts above
        # 2.14.1). uv's default takes the first index that has the package at all.
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="", choices=("", "cpu", "cuda"))
    parser.add_argument("--pip-args", action="store_true", help="print pip's options instead")
    parser.add_argument("--cert", action="store_true", help="print pip's CA bundle, if any")
    parser.add_argument("--shell", action="store_true", help="print sources= and cert= for eval")
    args = parser.parse_args(argv)
    if args.cert:
        print((pip_config()["cert"] or [""])[-1])
        return 0
    if args.pip_args:
        print(shlex.join(["--extra-index-url", TORCH_CPU_INDEX] if args.torch == "cpu" else []))
        return 0
    # uv reads its own variables too; this adds pip's, so both kinds of set-up work.
    config = pip_config()
    sources = shlex.join(uv_args(config, args.torch))
    if args.shell:
        print(f"sources={shlex.quote(sources)}")
        print(f"cert={shlex.quote((config['cert'] or [''])[-1])}")
        return 0
    print(sources)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
