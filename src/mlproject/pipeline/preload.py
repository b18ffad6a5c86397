"""Stages start as copies of a process that has imported torch already: one import per repro.

    python -m mlproject.pipeline train     # asks the preload server of this project, else runs here
    MLPROJECT_PRELOAD=0 dvc repro          # every stage imports everything itself, as before

Each stage is a new process, and four of them import torch (2 s of CPU for the CUDA build), the
export stage also TorchDynamo and the ONNX exporter (2-3 s more). So the stage runner
(`run.py`) asks a small server for the stage instead: the server imports the third-party
modules the stages use once, and forks a child for each stage. What every torch stage needs comes
first; the later stages' extras are imported ahead only while a core is idle (IdleCores): on a
busy machine (a test suite, parallel sweeps) importing ahead would slow the stage that runs, and
is wasted when no later stage comes, so a stage then imports what it lacks itself. The child
takes the stage's working directory, environment, arguments and standard streams (passed over a Unix socket), imports the project's own modules afresh (so an
edited stage runs as edited) and runs the stage exactly as `run.py` would; its exit status goes
back to the runner, which is what DVC waits for.

Same bits: the server starts with the stage's environment, pinning included (determinism.py:
torch reads it when it loads), and serves only requests whose environment, directory,
interpreter, path and CPU set are the same (the key of its socket); anything else gets a server
of its own. It never touches CUDA (a forked child could not use it then). It quits after
`IDLE_SECONDS` without a request. When anything is off (no fork, no Unix sockets, another user's
socket, a server that died) the runner runs the stage in its own process, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_SWITCH = "MLPROJECT_PRELOAD"
IDLE_SECONDS = float(os.environ.get("MLPROJECT_PRELOAD_IDLE", 30))
IDLE_POLL = 0.25  # how often a server with groups left to import looks for an idle core
# How many cores must have sat idle (over the last IDLE_POLL) for the server to import ahead.
AHEAD_IDLE_CORES = float(os.environ.get("MLPROJECT_PRELOAD_AHEAD", 0.75))
# Imported by the server in this order, a group at a time, answering requests in between: the
# first group is what every torch stage needs, then train's, export's and explain's extras.
# Third-party modules only: the project's own are imported by each child, as edited.
MODULE_GROUPS = (
    ("numpy", "yaml", "torch", "omegaconf", "hydra.utils", "torch.nn.functional"),
    ("dvclive", "torch._dynamo"),
    (  # what torch.onnx.export(dynamo=True) imports as it goes (found by diffing sys.modules)
        "onnx",
        "onnxruntime",
        "torch.export._trace",
        "torch._functorch.aot_autograd",
        "torch._functorch.partitioners",
        "torch._inductor.decomposition",
        "torch._export.passes",
        "networkx",
        "torch.onnx",
        "torch.onnx._internal.exporter._core",
        "torch.onnx._internal.exporter._compat",
        "torch.onnx._internal.exporter._registration",
        "torch.onnx._internal.exporter._capture_strategies",
        "onnxscript.function_libs.torch_lib.ops",
        "onnxscript._framework_apis.torch_2_11",
        "onnxscript.optimizer",
        "onnxscript.rewriter",
        "onnxscript.rewriter.rules",
    ),
    ("captum.attr", "matplotlib", "matplotlib.backends.backend_agg"),
)
# Set per stage by DVC or the shell; nothing reads them when a library loads.
VOLATILE_ENV = ("DVC_STAGE", "PWD", "OLDPWD", "SHLVL", "_")


# ------------------------------------------------------------------------------ the runner's side


def run_stage(stage: str) -> int | None:
    """Run `stage` in a child of this project's preload server (started when none runs); its
    exit status, or None when it cannot be run there (the caller then runs it itself)."""
    if not _usable():
        return None
    path = _socket_path()
    if path is None:
        return None
    conn = _connect(path) or _start_and_connect(path)
    if conn is None:
        return None
    with conn:
        return _request(conn, stage)


def start() -> None:
    """Start this project's server in the background (prepare does, so that train finds torch
    loaded); no wait, no error."""
    if _usable() and (path := _socket_path()) is not None and not _listening(path):
        _spawn(path)


def _usable() -> bool:
    return (
        os.environ.get(ENV_SWITCH, "1") != "0"
        and sys.platform == "linux"  # fork after importing torch, SCM_RIGHTS: Linux only here
        and hasattr(socket, "send_fds")
        and not sys.warnoptions
        and not sys._xoptions  # -X importtime and the like apply to this process only
    )


def _key() -> str:
    env = {k: v for k, v in os.environ.items() if k not in VOLATILE_ENV}
    identity = {
        "python": sys.executable,
        "version": sys.version,
        "cwd": os.getcwd(),
        "cpus": sorted(os.sched_getaffinity(0)),  # the child inherits the server's
        "path": sys.path[1:],  # [0] is the runner's own folder (python -m): not the child's
        "env": sorted(env.items()),
        "server": Path(__file__).stat().st_mtime_ns,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _socket_path() -> Path | None:
    """<tmp>/mlproject-preload-<uid>/<key>.sock, in a folder only this user can enter."""
    folder = Path(tempfile.gettempdir()) / f"mlproject-preload-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder / f"{_key()}.sock"


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _listening(path: Path) -> bool:
    conn = _connect(path)
    if conn is not None:
        conn.close()
    return conn is not None


def _spawn(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlproject.pipeline.preload", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the stage's process group, nor holding its pipes
    )


def _start_and_connect(path: Path, timeout: float = 30.0) -> socket.socket | None:
    """Start a server and connect to it (or to the one that won the race to start it)."""
    server, spawned = _spawn(path), 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if server.poll() is not None:  # it quit: failed, or lost the race to a server now gone
            if server.returncode != 0 or spawned == 3:
                return None  # run here
            server, spawned = _spawn(path), spawned + 1
        time.sleep(0.02)
    return None


def _request(conn: socket.socket, stage: str) -> int | None:
    request = {
        "stage": stage,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "argv": sys.argv,
        "path": sys.path,
    }
    try:
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reply = conn.makefile("r")
        first = reply.readline()
        if not first.startswith("pid "):
            return None  # the server could not fork: run here
        pid = int(first.split()[1])
    except (OSError, ValueError):
        return None
    # The child is the server's, not ours: pass on what would have stopped us.
    forward = {s: signal.signal(s, lambda sig, _f: _kill(pid, sig)) for s in _FORWARDED}
    try:
        line = reply.readline()
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)
    try:
        return int(line.split()[1])
    except (IndexError, ValueError):
        return 1  # the server died while the stage ran; the stage said what it could


_FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


# ------------------------------------------------------------------------------ the server


def serve(path: Path) -> int:
    import fcntl  # POSIX only, as the server is; run.py imports this module everywhere

    lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 -- held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server has this key
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # through `finally`: no stale socket
    children: dict[int, socket.socket] = {}
    pending = list(MODULE_GROUPS)
    try:
        _import(pending.pop(0))
        if _cuda_loaded():
            return 0  # a forked child could not use CUDA: clients run their stages themselves
        idle_since = time.monotonic()
        idle = IdleCores()
        while True:
            left = idle_since + IDLE_SECONDS - time.monotonic()
            if not children and left <= 0:
                return 0
            timeout = IDLE_POLL if pending else max(0.0, left)
            watched = [listener, wake_r, *children.values()]
            ready, _, _ = select.select(watched, [], [], timeout)
            if wake_r in ready:
                os.read(wake_r, 512)
            if _reap(children):
                idle_since = time.monotonic()
            for conn in [c for c in children.values() if c in ready]:
                if not conn.recv(1, socket.MSG_PEEK):  # the runner is gone: so is its stage
                    _kill(next(p for p, c in children.items() if c is conn), signal.SIGTERM)
            if listener in ready:
                conn, _ = listener.accept()
                pid = _fork_stage(conn, listener, lock)
                if pid is not None:
                    children[pid] = conn
                idle_since = time.monotonic()
            elif not ready and pending and idle.cores() >= AHEAD_IDLE_CORES:  # see the docstring
                _import(pending.pop(0))
                if _cuda_loaded():
                    return 0
    finally:  # a forked child never gets here (os._exit)
        listener.close()
        path.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)


class IdleCores:
    """How many CPU cores sat idle since the last call, from /proc/stat (the machine's, not this
    process's); where there is no /proc/stat, every core counts as idle."""

    def __init__(self, stat: str = "/proc/stat") -> None:
        self._stat = stat
        self._last = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self._stat, encoding="ascii") as fh:
                fields = [int(v) for v in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + fields[4]  # all ticks, idle + iowait ticks

    def cores(self) -> float:
        now, last = self._read(), self._last
        self._last = now
        count = os.cpu_count() or 1
        if now is None or last is None or now[0] <= last[0]:
            return float(count)
        return (now[1] - last[1]) / (now[0] - last[0]) * count


def _import(group: tuple[str, ...]) -> None:
    for name in group:
        with contextlib.suppress(Exception):  # the stage that needs it will say what is wrong
            importlib.import_module(name)


def _cuda_loaded() -> bool:
    """Whether the CUDA driver is in this process (a forked child cannot initialise it again)."""
    with contextlib.suppress(OSError):
        return "libcuda.so" in Path("/proc/self/maps").read_text()
    return True


def _reap(children: dict[int, socket.socket]) -> bool:
    """Collect the stages that ended and send their exit status; whether any did."""
    reaped = False
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped = True
        conn = children.pop(pid, None)
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())
            conn.close()
    return reaped


def _fork_stage(conn: socket.socket, listener: socket.socket, lock) -> int | None:
    try:
        message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        while not message.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("request cut short")
            message += more
        request = json.loads(message)
    except (OSError, ValueError):
        conn.close()
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:  # the stage
        listener.close()
        lock.close()
        _run_child(request, fds, conn)
    for fd in fds:  # the stage's pipes must close when the stage ends, not when we do
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    return pid


def _run_child(request: dict, fds: list[int], conn: socket.socket) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, *_FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.close()
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv[:] = request["argv"]
        sys.path[:] = request["path"]
        for name in [m for m in sys.modules if m == "mlproject" or m.startswith("mlproject.")]:
            del sys.modules[name]  # the project's code as it is on disk now
        from mlproject.pipeline.run import run_here

        code = run_here(request["stage"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # what the interpreter would print, and its exit status
        import traceback

        traceback.print_exc()
        code = 128 + signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlproject.pipeline.preload <socket path>", file=sys.stderr)
        return 2
    return serve(Path(args[0]))


if __name__ == "__main__":
    raise SystemExit(main())
