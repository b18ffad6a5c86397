"""Inference server: the exported ONNX model behind the Open Inference Protocol (KServe V2 /
Triton) and a friendly image API, with Prometheus metrics and an optional prediction log.

Runs on onnxruntime and the model card only: nothing here imports PyTorch, Hydra, DVC or the
training modules, so the serving environment and image stay small. `python -m mlproject.serve`.
"""
