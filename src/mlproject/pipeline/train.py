"""Stage `train`: one plain PyTorch loop, read top to bottom.

    dvc repro train                                               # as a pipeline stage
    python -m mlproject.pipeline.train                                     # the same, directly
    torchrun --standalone --nproc_per_node=2 -m mlproject.pipeline.train   # DDP (gloo on CPU, nccl on CUDA)

The device is chosen automatically (CUDA, then MPS, then CPU); mixed precision runs on CUDA; on
CPU the run is seeded and pinned (mlproject.pipeline.determinism: threads, instruction sets), so the same
commit gives the same bits on any x86-64 machine; `train.fast: true` opts out. Per-epoch metrics go to DVCLive (reports/train) and to a
progress line. The best epoch by validation is kept; the checkpoint carries the config, the class
names and the input spec, and loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import copy
import io
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .. import kinds, tasks
from ..core.cli import entry_point
from ..core.io import atomic_dir, atomic_write_bytes, read_json
from ..core.paths import CHECKPOINT, PREPARED, TRAIN_REPORTS
from ..tasks import classification
from .backbones import backbone_parameters, without_downloads
from .config import ConfigError, instantiate_model, load_params
from .determinism import (
    deterministic_algorithms,
    fingerprint,
    pin_torch,
    read_pinning,
    torch_was_pinned,
)
from .distributed import dump_trace, open_trace, sync_buffers
from .loader import InMemory, index_batches

LIVE_DIR = TRAIN_REPORTS


# ------------------------------------------------------------------------------ helpers


def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeds legacy global RNG users (libraries)
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # On CUDA some kernels have no deterministic version: warn there rather than fail.
    deterministic_algorithms(warn_only=device.type != "cpu")


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


batches = index_batches  # the index batches every data source draws (loader.py)


def _source(x, y):
    """Tensors (x, y) or a loader source (x, with y None): what the loops iterate."""
    return x if y is None else InMemory(x, y)


class EarlyStopping:
    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best, self.bad_epochs = math.inf if mode == "min" else -math.inf, 0

    def improved(self, metrics: dict[str, float]) -> bool:
        if self.monitor not in metrics:
            raise ConfigError(
                f"train.early_stopping.monitor: '{self.monitor}' is not a logged "
                f"metric; choose one of {sorted(metrics)}."
            )
        value = metrics[self.monitor]
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


# ------------------------------------------------------------------------------ the loop


def train_one_epoch(
    model,
    normalize,
    optimizer,
    scaler,
    x,
    y,
    batch_size,
    generator,
    device,
    amp,
    rank=0,
    world=1,
    *,
    augment=None,
    frozen=(),
    trace=None,
    objective=None,
) -> dict[str, float]:
    """One epoch over this rank's shard; x, y tensors, or x a loader source and y None.
    augment: uint8 batch -> uint8 batch; frozen: parameters kept still; trace: gets (indices,
    local loss sum, local score sum, local count) of the epoch (the DDP test's debug dump);
    objective: the task's loss and epoch metric (mlproject.tasks; default: a classifier's
    cross-entropy and accuracy)."""
    objective = objective or classification.Objective()
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = objective.zero(device)
    seen = 0
    for idx, pixels, targets in _source(x, y).batches(batch_size, generator, rank, world):
        if augment is not None:
            pixels = augment(pixels)
        inputs = normalize(pixels)
        with autocast(device, amp):
            logits = model(inputs)
            loss = objective.loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for param in frozen:  # no gradient: the optimizer leaves it (and its decay) alone
            param.grad = None
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.detach() * len(idx)
        correct += objective.score(logits, targets)
        seen += len(idx)
        if trace is not None:
            trace.setdefault("indices", []).extend(idx.tolist())
    totals = torch.stack(
        [total_loss, correct.to(total_loss.dtype), torch.tensor(float(seen), device=device)]
    )
    if trace is not None:
        trace["local"] = totals.tolist()
    if world > 1:  # every rank saw its own shard: sum them so each reports the global epoch
        torch.distributed.all_reduce(totals)
        sync_buffers(model)
    return {
        "loss": (totals[0] / totals[2]).item(),
        objective.metric: objective.finish(totals[1], totals[2]).item(),
    }


@torch.no_grad()
def predict_logits(model, normalize, x, batch_size, device, amp=False) -> torch.Tensor:
    """Logits of every item of x (a tensor, or a loader source), in order."""
    model.eval()
    outs = []
    source = x if hasattr(x, "batches") else InMemory(x, x.new_empty(len(x)))
    for _, pixels, _ in source.batches(batch_size):
        with autocast(device, amp):
            outs.append(model(normalize(pixels)).float())
    return torch.cat(outs)


def evaluate_split(
    model, normalize, x, y, batch_size, device, amp, objective=None
) -> dict[str, float]:
    """Loss and the task's metric (a classifier's accuracy) on a split: x, y tensors, or x a
    loader source and y None."""
    objective = objective or classification.Objective()
    source = _source(x, y)
    logits = predict_logits(model, normalize, source, batch_size, device, amp)
    y = torch.from_numpy(source.labels).to(logits.device)
    return {
        "loss": objective.loss(logits, y).item(),
        objective.metric: objective.finish(objective.score(logits, y), len(y)).item(),
    }


def train(
    cfg: DictConfig,
    prepared: Path = PREPARED,
    checkpoint: Path = CHECKPOINT,
    live_dir: Path | None = LIVE_DIR,
    log=print,
) -> dict[str, Any]:
    """Train the configured model; write the best checkpoint; return its metrics."""
    tc = cfg.train
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = select_device(tc.device)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    seed_everything(int(tc.seed), device)
    is_main = rank == 0
    pinning = read_pinning(OmegaConf.to_container(cfg, resolve=True))
    if device.type == "cpu":
        pin_torch(pinning)
        if is_main and not torch_was_pinned(pinning):
            log(
                "warning: torch loaded before the pinning; run `python -m mlproject.pipeline train` "
                "for bits that match other machines"
            )

    meta = read_json(prepared / "meta.json")
    spec, classes = meta["input"], meta["classes"]
    kind = kinds.for_spec(spec)  # images, a table, ...: what the data is (mlproject.kinds)
    train_data = kind.open_split(prepared, "train", cfg.data, device)
    val_data = kind.open_split(prepared, "val", cfg.data, device)
    normalize = kind.input_module(spec).to(device)
    augment = kind.augmenter(cfg.get("augment"), spec, int(tc.seed) + rank)

    task = tasks.for_card(meta)  # classification, regression: what is predicted (mlproject.tasks)
    stats = task.target_stats(train_data.labels)
    network = instantiate_model(cfg.model, **kind.model_kwargs(spec, task.num_outputs(classes)))
    frozen_epochs = int(tc.get("freeze_backbone_epochs", 0))
    backbone = backbone_parameters(network) if frozen_epochs > 0 else []
    model = task.head(network, stats).to(device)
    objective = task.Objective(str(tc.get("loss", "auto")), stats)
    metric = objective.metric  # accuracy, rmse
    short = {"accuracy": "acc"}.get(metric, metric)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = instantiate(tc.optimizer)(model.parameters())
    scheduler = instantiate(tc.scheduler)(optimizer) if tc.get("scheduler") else None
    amp = bool(tc.amp) and device.type == "cuda"
    # Loss scaling only for float16; bfloat16 and float32 do not need it.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    stopper = EarlyStopping(**OmegaConf.to_container(tc.early_stopping))
    generator = torch.Generator().manual_seed(int(tc.seed))
    trace = open_trace(rank, world)  # MLPROJECT_DEBUG_DUMP: what this rank did (distributed.py)

    live_ctx = atomic_dir(live_dir) if (is_main and live_dir is not None) else nullcontext(None)
    best: dict[str, Any] = {}
    with live_ctx as live_tmp:
        live = _open_live(live_tmp)
        if is_main:
            log(
                f"train: {type(network).__name__} on {device} ({world} process{'es' * (world > 1)}), "
                f"{len(train_data)} train / {len(val_data)} val samples"
                f"{' (streamed from disk)' if train_data.streamed else ''}, "
                f"amp={'on' if amp else 'off'}"
                + (f", {pinning.describe()}" if device.type == "cpu" else "")
            )
        for epoch in range(1, int(tc.epochs) + 1):
            start = time.perf_counter()
            epoch_trace = {} if trace is not None else None
            train_m = train_one_epoch(
                net,
                normalize,
                optimizer,
                scaler,
                train_data,
                None,
                int(tc.batch_size) // world,
                generator,
                device,
                amp,
                rank,
                world,
                augment=augment,
                frozen=backbone if epoch <= frozen_epochs else (),
                trace=epoch_trace,
                objective=objective,
            )
            val_m = evaluate_split(
                model, normalize, val_data, None, int(tc.batch_size), device, amp, objective
            )
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            metrics = {
                "train/loss": train_m["loss"],
                f"train/{metric}": train_m[metric],
                "val/loss": val_m["loss"],
                f"val/{metric}": val_m[metric],
                "lr": lr,
            }
            if trace is not None:
                trace["epochs"].append({**epoch_trace, "logged": metrics})
            improved = stopper.improved(metrics)
            if improved:
                best = {
                    "epoch": epoch,
                    "metrics": metrics,
                    "state": copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}),
                }
            if live is not None:
                for name, value in metrics.items():
                    live.log_metric(name, value)
                live.next_step()
            if is_main:
                log(
                    f"epoch {epoch:3d}/{tc.epochs}  train_loss {metrics['train/loss']:.4f}  "
                    f"val_loss {metrics['val/loss']:.4f}  val_{short} {metrics[f'val/{metric}']:.4f}  "
                    f"lr {lr:.2e}  {time.perf_counter() - start:.2f}s{'  *' if improved else ''}"
                )
            if stopper.should_stop:
                if is_main:
                    log(
                        f"early stop: {stopper.monitor} has not improved for {stopper.patience} epochs"
                    )
                break
        if live is not None:
            live.summary["best/epoch"] = best["epoch"]
            for name in ("val/loss", f"val/{metric}"):
                live.summary[f"best/{name}"] = best["metrics"][name]
            live.make_summary()
            live.end()
        if is_main:
            _save_checkpoint(
                checkpoint,
                best,
                cfg,
                classes,
                spec,
                numerics(pinning, device),
                tasks.name_of(meta),
                stats,
            )
            log(
                f"best epoch {best['epoch']}: val_{short} {best['metrics'][f'val/{metric}']:.4f}  "
                f"-> {checkpoint}"
            )
    dump_trace(trace, model)
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"epoch": best["epoch"], **best["metrics"]}


def _open_live(directory: Path | None):
    if directory is None:
        return None
    from dvclive import Live

    # Metrics and plots are declared in dvc.yaml; DVCLive must not edit it or make experiments.
    return Live(str(directory), dvcyaml=None, save_dvc_exp=False, report=None, monitor_system=False)


def numerics(pinning, device: torch.device) -> dict[str, str]:
    """The numerics fingerprint of a model trained on `device` (determinism.fingerprint)."""
    if device.type == "cuda":
        name = f"cuda: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        name = device.type
    return fingerprint(pinning, name)


def _save_checkpoint(
    path: Path,
    best: dict[str, Any],
    cfg: DictConfig,
    classes: list[str],
    spec: dict[str, Any],
    numerics: dict[str, str] | None = None,
    task: str = "classification",
    target: dict[str, float] | None = None,
) -> None:
    payload = {
        "model_state": best["state"],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "task": task,
        "classes": list(classes),
        "input": spec,
        "epoch": best["epoch"],
        "metrics": best["metrics"],
        "numerics": numerics or {},
    }
    if target:  # a regression target's training mean and std (the head's, restored on load)
        payload["target"] = dict(target)
    # Saved through a buffer: torch.save names the archive after the file it writes, and the
    # atomic write's temporary name is random; in memory the name is fixed, so are the bytes.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path = CHECKPOINT, device: str | torch.device = "cpu"):
    """Rebuild the trained model (eval mode) and return it with the checkpoint payload."""
    payload = torch.load(path, map_location=device, weights_only=True)
    spec = payload["input"]
    task = tasks.get(payload.get("task"))
    model = task.head(
        instantiate_model(
            OmegaConf.create(without_downloads(payload["config"]["model"])),
            **kinds.for_spec(spec).model_kwargs(spec, task.num_outputs(payload["classes"])),
        ),
        payload.get("target") or {},
    )
    model.load_state_dict(payload["model_state"])
    return model.to(device).eval(), payload


@entry_point(stage="train")
def main() -> int:
    train(load_params())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
