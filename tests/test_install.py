"""`make install` hands uv the package sources pip would use (uv reads no pip configuration),
and the torch build asked for; the fresh-clone test runs the install itself."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from conftest import ENV, ROOT

SCRIPT = ROOT / "requirements" / "uv_sources.py"


def sources(tmp_path, *args: str, config: str = "") -> list[str]:
    conf = tmp_path / "pip.conf"
    conf.write_text(config)
    # Only this pip configuration: no user or site files, no PIP_* variables of the machine.
    env = {k: v for k, v in ENV.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(conf), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, check=True
    )
    return shlex.split(out.stdout)


PIP_CONF = """[global]
find-links = /opt/wheels
extra-index-url = file:///opt/pypi/simple https://mirror.example/simple
cert = /etc/ssl/certs/ca.pem
"""


def test_pip_configuration_becomes_uv_options(tmp_path):
    args = sources(tmp_path, config=PIP_CONF)
    assert args[:2] == ["--find-links", "/opt/wheels"]
    assert args[4:6] == ["--extra-index-url", "https://mirror.example/simple"]
    # pip takes the best version from any source (2.14.1+cpu from find-links); so must uv.
    assert args[-2:] == ["--index-strategy", "unsafe-best-match"]
    assert sources(tmp_path, "--cert", config=PIP_CONF) == ["/etc/ssl/certs/ca.pem"]
    # make install reads both from one run, through the shell's eval
    conf = tmp_path / "pip.conf"
    shell = f'eval "$({shlex.quote(sys.executable)} {SCRIPT} --shell)"; '
    shell += 'printf "%s\\n" "$cert"; printf "%s\\n" $sources'
    env = {k: v for k, v in ENV.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(conf), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["/etc/ssl/certs/ca.pem", *args]


def test_torch_choice(tmp_path):
    cpu = sources(tmp_path, "--torch", "cpu")
    index = cpu.index("https://download.pytorch.org/whl/cpu")
    assert cpu[index - 1] == "--extra-index-url"
    assert cpu[-2:] == ["--index-strategy", "unsafe-best-match"]
    assert "https://download.pytorch.org/whl/cpu" not in sources(tmp_path, "--torch", "cuda")
    assert sources(tmp_path, "--torch", "cpu", "--pip-args")[1].endswith("/whl/cpu")
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--torch", "rocm"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "invalid choice: 'rocm'" in bad.stderr


def test_uv_is_pinned_in_the_lock():
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    assert [line for line in lock if line.startswith("uv==")]
    assert [line for line in lock if line.startswith("pip==")]  # the venv is made without pip


UV_SH = ROOT / "requirements" / "uv.sh"


def _fake_uv(path, version: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'uv {version} (fake)'\n")
    path.chmod(0o755)
    return path


def _find_uv(tmp_path, python: str, path_dirs=()):
    env = {
        "PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    return subprocess.run(
        ["bash", str(UV_SH), "1.2.3", str(tmp_path / "venv" / "bin"), python],
        env=env, capture_output=True, text=True,
    )  # fmt: skip


def test_uv_is_found_in_the_venv_then_on_path_then_in_the_machines_cache(tmp_path):
    never = "/bin/false"  # pip is not needed when a pinned uv is there
    cached = _fake_uv(tmp_path / "cache" / "mlproject" / "uv-1.2.3" / "bin" / "uv", "1.2.3")
    on_path = _fake_uv(tmp_path / "path" / "uv", "1.2.3")
    assert _find_uv(tmp_path, never, [on_path.parent]).stdout.strip() == str(on_path)
    venv = _fake_uv(tmp_path / "venv" / "bin" / "uv", "1.2.3")
    assert _find_uv(tmp_path, never, [on_path.parent]).stdout.strip() == str(venv)
    venv.unlink()
    _fake_uv(on_path, "9.9.9")  # another version on PATH is passed over
    assert _find_uv(tmp_path, never, [on_path.parent]).stdout.strip() == str(cached)
    cached.unlink()
    missing = _find_uv(tmp_path, never, [on_path.parent])
    assert missing.returncode == 1 and missing.stdout == ""  # make install falls back to pip


def test_uv_is_bootstrapped_once_into_the_machines_cache(tmp_path):
    # A stand-in for `python -m pip install --target DIR uv==1.2.3`; it counts its calls.
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {calls}\n'
        'while [ "$1" != --target ]; do shift; done\n'
        'mkdir -p "$2/bin" && printf "#!/bin/sh\\necho uv 1.2.3\\n" > "$2/bin/uv" && chmod +x "$2/bin/uv"\n'
    )
    python.chmod(0o755)
    home = tmp_path / "cache" / "mlproject" / "uv-1.2.3"
    (home / "bin").mkdir(parents=True)  # a broken copy from an interrupted run is replaced
    first = _find_uv(tmp_path, str(python))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(home / "bin" / "uv")
    assert "install" in calls.read_text() and "uv==1.2.3" in calls.read_text()
    second = _find_uv(tmp_path, str(python))
    assert second.stdout.strip() == str(home / "bin" / "uv")
    assert len(calls.read_text().splitlines()) == 1  # pip ran once
    assert [p.name for p in home.parent.iterdir()] == ["uv-1.2.3"]  # no temporary copies left


def test_make_install_tries_the_uv_cache_first_then_the_indexes_then_warms_bytecode(tmp_path):
    """The install recipe itself, with a stand-in uv that has nothing cached (its --offline run
    fails) and a stand-in venv python: both log what they were asked to do."""
    version = next(
        line.split("==")[1].split()[0]
        for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
        if line.startswith("uv==")
    )
    log = tmp_path / "log"
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "uv").write_text(
        "#!/bin/bash\n"
        f'[ "$1" = --version ] && {{ echo "uv {version}"; exit 0; }}\n'
        f'echo "uv $*" >> {log}\n'
        'for a in "$@"; do [ "$a" = --offline ] && exit 1; done; exit 0\n'
    )
    (bin_dir / "python").write_text(f'#!/bin/bash\necho "python $*" >> {log}\n')
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    env = {k: v for k, v in ENV.items() if k != "VIRTUAL_ENV"}
    out = subprocess.run(
        ["make", "install", f"VENV={tmp_path / 'venv'}", "EXTRAS=serve"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "+ uv pip install" in out.stdout
    for _ in range(100):  # the warm-up runs in the background
        lines = log.read_text().splitlines()
        if any("mlproject.pipeline.warm" in line for line in lines):
            break
        time.sleep(0.05)
    uv_calls = [line for line in lines if line.startswith("uv ")]
    assert len(uv_calls) == 2
    assert "--offline" in uv_calls[0].split() and "--offline" not in uv_calls[1].split()
    assert uv_calls[0].replace(" --offline", "") == uv_calls[1]
    assert "-c requirements/lock.txt" in uv_calls[1] and "-e .[serve]" in uv_calls[1]
    assert "python -m mlproject.pipeline.warm" in lines
    assert (bin_dir / ".installed").exists()


def test_the_warm_up_names_modules_that_exist():
    """A misspelt name would be skipped in silence (the warm-up ignores import errors)."""
    import importlib.util

    from mlproject.pipeline.warm import MODULES

    assert [m for m in MODULES if importlib.util.find_spec(m) is None] == []
