"""Server settings: environment variables first, command-line flags over them.

Every knob has one name in the environment (what a container sets) and one flag (what a person
types); `Settings.from_env()` reads the former, `__main__` applies the latter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..core.errors import SettingsError  # the project's one settings error (a ValueError)

# name -> (environment variable, help); the settings table in docs/serving.md mirrors this.
ENV = {
    "model": ("MODEL_PATH", "ONNX model file"),
    "card": ("MODEL_CARD", "model card JSON written by the export stage"),
    "reference_profile": (
        "REFERENCE_PROFILE",
        "the monitor's reference profile of this model (default: reference_profile.json beside "
        "the card, if there); a regression model's predicted-value histogram takes its buckets",
    ),
    "host": ("HOST", "address to listen on"),
    "port": ("PORT", "port to listen on"),
    "threads": ("ORT_THREADS", "onnxruntime intra-op threads (1 is fastest for small batches)"),
    "inference": ("INFERENCE_MODE", "batch: requests ready together share a run; inline; thread"),
    "max_batch": ("MAX_BATCH", "most items (tensor rows or images) in one request"),
    "max_body_bytes": ("MAX_BODY_BYTES", "largest request body accepted, in bytes"),
    "default_top_k": (
        "TOP_K",
        "classes returned per item by /predict when top_k is not given (classifiers)",
    ),
    "prediction_log": ("PREDICTION_LOG", "directory for prediction logs (JSONL); empty: off"),
    "prediction_log_max_bytes": ("PREDICTION_LOG_MAX_BYTES", "rotate the log file at this size"),
    "prediction_log_files": ("PREDICTION_LOG_FILES", "rotated files kept besides the current one"),
    "http": ("HTTP_IMPL", "uvicorn HTTP parser: auto (httptools when installed), h11, httptools"),
    "loop": ("LOOP_IMPL", "event loop: auto (uvloop when installed), asyncio, uvloop"),
    "access_log": ("ACCESS_LOG", "1: log every request line (costs throughput)"),
    "bench_endpoint": (
        "BENCH_ENDPOINT",
        "1: add the benchmark routes /bench/constant (ceiling) and /bench/floor",
    ),
}


INFERENCE_MODES = ("batch", "inline", "thread")


@dataclass(frozen=True)
class Settings:
    model: Path = Path("models/model.onnx")
    card: Path = Path("models/model_card.json")
    reference_profile: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1
    inference: str = "batch"
    max_batch: int = 64
    max_body_bytes: int = 8 * 1024 * 1024
    default_top_k: int = 3
    prediction_log: Path | None = None
    prediction_log_max_bytes: int = 16 * 1024 * 1024
    prediction_log_files: int = 5
    http: str = "auto"
    loop: str = "auto"
    access_log: bool = False
    bench_endpoint: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = ENV[f.name][0]
            if f.name in overrides and overrides[f.name] is not None:
                raw, source = overrides[f.name], f"--{f.name.replace('_', '-')}"
            elif environ.get(var, "") != "":
                raw, source = environ[var], var
            else:
                continue
            values[f.name] = _convert(f.name, raw, source)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for name in (
            "threads",
            "max_batch",
            "max_body_bytes",
            "default_top_k",
            "prediction_log_max_bytes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(
                    f"{ENV[name][0]}: must be at least 1, got {getattr(self, name)}"
                )
        if self.prediction_log_files < 0:
            raise SettingsError(
                f"PREDICTION_LOG_FILES: must be >= 0, got {self.prediction_log_files}"
            )
        if self.inference not in INFERENCE_MODES:
            raise SettingsError(
                f"INFERENCE_MODE: one of {', '.join(INFERENCE_MODES)}, got {self.inference!r}"
            )
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PORT: must be 0..65535, got {self.port}")


def _convert(name: str, raw, source: str):
    if name in ("model", "card", "prediction_log", "reference_profile"):
        return Path(raw)
    if name in ("access_log", "bench_endpoint"):
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{source}: expected 1/0, true/false, got {raw!r}")
    if name in ("host", "inference", "http", "loop"):
        return str(raw)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: expected an integer, got {raw!r}") from None
