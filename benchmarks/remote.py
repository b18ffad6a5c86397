"""S3 round trip of the demo outputs: dvc push, then dvc pull and `make repro` in a fresh clone.

    make bench-remote                    # or: python benchmarks/remote.py [--epochs 40]

Makes a temporary project from this checkout, runs the pipeline once, starts moto's S3 server on
127.0.0.1 as the remote, and times: the first `dvc push` (data, checkpoint, ONNX model), a no-op
push, `dvc pull` into a fresh clone, and `make repro` in another fresh clone (pulls, trains
nothing). Prints the times and the size pushed. Loopback only: a real bucket adds its latency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from mlproject.serve.process import free_port  # noqa: E402

from conftest import ENV, make_project, run  # noqa: E402


def timed(args, cwd, env) -> tuple[float, str]:
    start = time.perf_counter()
    out = run(args, cwd, env=env).stdout
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs for the one run")
    args = parser.parse_args()
    port = free_port()
    env = {
        **ENV,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/mlproject", method="PUT")
            )  # create the bucket
            repo = make_project(Path(tmp) / "repo")
            if args.epochs:
                params = (repo / "params.yaml").read_text()
                (repo / "params.yaml").write_text(
                    params.replace("epochs: 40", f"epochs: {args.epochs}")
                )
            print("running the pipeline once ...", flush=True)
            run(["dvc", "repro"], repo, env=env, timeout=1800)
            run(["dvc", "remote", "add", "-d", "storage", "s3://mlproject/dvc"], repo)
            run(
                ["dvc", "remote", "modify", "storage", "endpointurl", f"http://127.0.0.1:{port}"],
                repo,
            )
            run(["git", "add", "-A"], repo)
            run(["git", "commit", "-q", "-m", "results"], repo)
            cache = sum(f.stat().st_size for f in (repo / ".dvc/cache").rglob("*") if f.is_file())
            push, out = timed(["dvc", "push"], repo, env)
            noop, _ = timed(["dvc", "push"], repo, env)
            clone = Path(tmp) / "clone"
            run(["git", "clone", "-q", str(repo), str(clone)], tmp)
            pull, _ = timed(["dvc", "pull"], clone, env)
            clone2 = Path(tmp) / "clone2"
            run(["git", "clone", "-q", str(repo), str(clone2)], tmp)
            for rel in ("pyproject.toml", "requirements/lock.txt"):  # keep this venv as it is
                subprocess.run(["touch", "-d", "2000-01-01", str(clone2 / rel)], check=True)
            venv = Path(sys.executable).parent.parent
            repro, repro_out = timed(["make", "repro", f"VENV={venv}"], clone2, env)
            trained = "Running stage 'train'" in repro_out
            print(f"\npushed: {out.strip().splitlines()[-1]}, {cache / 1e6:.1f} MB in the cache")
            print(f"dvc push (first)          {push:6.1f} s")
            print(f"dvc push (nothing new)    {noop:6.1f} s")
            print(f"dvc pull (fresh clone)    {pull:6.1f} s")
            print(f"round trip (push + pull)  {push + pull:6.1f} s")
            print(
                f"make repro (fresh clone)  {repro:6.1f} s  "
                + ("TRAINED (unexpected)" if trained else "no stage ran: pulled")
            )
    finally:
        moto.terminate()
        moto.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
