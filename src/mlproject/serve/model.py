"""The served model: one onnxruntime session per process, described by the export stage's card.

Loading checks that the ONNX file is the one the card describes (sha256), reads input and output
names, datatypes and shapes from the session itself, binds the data kind's serving side
(`mlproject.kinds.for_spec(card["input"]).serving.bind`: it checks the inputs and decodes
requests; see mlproject.kinds.images.serving for the protocol) and the task's
(`serve.task.serving(task).bind`, in mlproject.tasks.<task>_serving: what the outputs mean to
/predict, `make predict`, the metrics and the prediction log), and runs a warm-up so the first request does not pay for memory-arena growth.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .. import kinds, tasks
from .task import serving as task_serving

# ONNX element type strings (as onnxruntime reports them) -> Open Inference Protocol datatypes.
ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
V2_TO_NUMPY = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "INT16": np.dtype("<i2"),
    "INT8": np.dtype("i1"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "BOOL": np.dtype("?"),
}
PROFILE_NAME = "reference_profile.json"  # the monitor's profile, beside the card


class ModelLoadError(RuntimeError):
    """The model or its card cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 marks a dynamic dimension (the batch)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class Model:
    card: dict[str, Any]
    session: ort.InferenceSession
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    kind: Any  # the data kind's serving side, bound to this model (see load_model)
    task: Any  # the task's serving side, bound to this model (see load_model)
    threads: int
    load_seconds: float = 0.0
    output_index: dict[str, int] = field(default_factory=dict)
    # What run() hands onnxruntime, worked out once (its wrapper would rebuild the list per run).
    _output_names: list[str] = field(init=False, repr=False)
    output_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._output_names = [t.name for t in self.outputs]
        self.output_names = tuple(self._output_names)

    @property
    def spec(self) -> Any:
        """The kind's parsed input spec (images: core.preprocess.InputSpec; a table: the dict)."""
        return self.kind.spec

    # Read on every request: worked out once.
    @cached_property
    def name(self) -> str:
        return self.card["name"]

    @cached_property
    def version(self) -> str:
        # The card has no version counter; the content hash identifies the model exactly.
        return self.card["sha256"][:12]

    @property
    def classes(self) -> list[str]:
        """The card's class names ([] for a model that predicts a number)."""
        return self.task.classes

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs for a feed (input name -> batch, as the kind decodes requests), in
        `self.outputs` order."""
        return self.session.run(self._output_names, feed)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_json() for t in self.kind.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


def _tensor_spec(node) -> TensorSpec:
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]
    return TensorSpec(node.name, ORT_TO_V2.get(node.type, node.type), shape)


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # One request runs at a time per event loop; more intra-op threads only add hand-offs for
    # small batches, and spinning threads would steal the CPU the event loop needs.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def read_profile(card: dict[str, Any], card_path: Path, path: Path | None) -> dict | None:
    """The reference profile the task may read (a regression model's histogram buckets): the
    file `path`, or models/reference_profile.json beside the card when there is one. An
    explicit file must exist and describe this model; the default one is skipped (with a
    warning) when it describes another."""
    explicit = path is not None
    path = Path(path) if explicit else Path(card_path).with_name(PROFILE_NAME)
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ModelLoadError(
                f"{path}: reference profile not found (REFERENCE_PROFILE); run `make repro` "
                "(the profile stage writes it) or leave the setting empty"
            ) from None
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the reference profile ({exc})") from None
    sha = (profile.get("model") or {}).get("sha256") if isinstance(profile, dict) else None
    if sha != card["sha256"]:
        message = (
            f"{path}: the reference profile describes model {str(sha)[:12]}, "
            f"not {card['sha256'][:12]}; run `dvc repro` to remake it"
        )
        if explicit:
            raise ModelLoadError(message)
        print(f"warning: {message} (not used)", file=sys.stderr)
        return None
    return profile


def load_model(
    model_path: Path,
    card_path: Path,
    threads: int = 1,
    warmup_batches: tuple[int, ...] = (1, 8),
    profile_path: Path | None = None,
) -> Model:
    """The model and its card, checked, bound to its kind and task, warmed up; `profile_path`:
    the reference profile (None: the one beside the card, if any)."""
    start = time.perf_counter()
    try:
        card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{card_path}: model card not found; run `make repro` "
            "(the export stage writes it) or set MODEL_CARD"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{card_path}: cannot read the model card ({exc})") from None
    for key in ("name", "sha256", "input", "output"):
        if key not in card:
            raise ModelLoadError(f"{card_path}: model card has no '{key}'")
    try:
        blob = Path(model_path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"{model_path}: cannot read the ONNX model ({exc.strerror}); "
            "run `make repro` or `dvc pull`, or set MODEL_PATH"
        ) from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card["sha256"]:
        raise ModelLoadError(
            f"{model_path}: sha256 {digest[:12]} does not match the card "
            f"{card_path} ({card['sha256'][:12]}); serve the pair that "
            "the export stage wrote together"
        )
    try:
        session = ort.InferenceSession(
            blob, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelLoadError(f"{model_path}: onnxruntime cannot load it ({exc})") from None
    inputs = [_tensor_spec(n) for n in session.get_inputs()]
    outputs = [_tensor_spec(n) for n in session.get_outputs()]
    try:
        bound = kinds.for_spec(card["input"]).serving.bind(card, inputs)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"no {exc} in the card's input" if isinstance(exc, KeyError) else exc
        raise ModelLoadError(f"{model_path}: {detail}") from None
    try:
        task = task_serving(tasks.name_of(card))
        bound_task = task.bind(card, outputs, read_profile(card, card_path, profile_path))
    except KeyError as exc:
        raise ModelLoadError(f"{card_path}: model card has no {exc}") from None
    except ValueError as exc:
        raise ModelLoadError(f"{model_path}: {exc}") from None
    model = Model(
        card=card,
        session=session,
        inputs=inputs,
        outputs=outputs,
        kind=bound,
        task=bound_task,
        threads=threads,
        output_index={t.name: i for i, t in enumerate(outputs)},
    )
    for n in warmup_batches:
        model.run(bound.warmup(n))
    model.load_seconds = time.perf_counter() - start
    return model
