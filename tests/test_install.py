"""`make install` hands uv the package sources pip would use (uv reads no pip configuration),
and the torch build asked for; the fresh-clone test runs the install itself."""

from __future__ import annotations

import shlex
import subprocess
import sys

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
    shell = f"eval \"$({shlex.quote(sys.executable)} {SCRIPT} --shell)\"; "
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
