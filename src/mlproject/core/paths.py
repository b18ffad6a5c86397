"""Where the pipeline's files live, relative to the repository root (standard library only).

dvc.yaml names the same paths as stage outputs; change both together.
"""

from __future__ import annotations

from pathlib import Path

DATA_DVC = Path("data.dvc")  # records the version of the raw dataset folder data/
PARAMS = Path("params.yaml")  # the composed image of conf/

PREPARED = Path("outputs/prepared")  # prepare: {train,val,test}.npz
CHECKPOINT = Path("outputs/model.pt")  # train: the PyTorch weights

MODELS = Path("models")  # export: what is released and served
ONNX_MODEL = MODELS / "model.onnx"
MODEL_CARD = MODELS / "model_card.json"
REFERENCE_PROFILE = MODELS / "reference_profile.json"  # profile: the drift reference

TRAIN_REPORTS = Path("reports/train")
EVAL_REPORTS = Path("reports/eval")
EVAL_METRICS = EVAL_REPORTS / "metrics.json"
EXPLAIN_REPORTS = Path("reports/explain")
MONITOR_REPORTS = Path("reports/monitor")
RETRAIN_REPORTS = Path("reports/retrain")
PR_REPORTS = Path("reports/pr")
