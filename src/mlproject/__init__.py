"""A reproducible ML template: Hydra config, DVC stages, PyTorch training, ONNX export."""

__version__ = "0.1.0"
