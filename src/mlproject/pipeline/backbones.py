"""Pretrained backbones from timm: `model=timm model.name=<any timm architecture>`.

    dvc exp run -S model=timm -S model.name=resnet18                     # hub weights (cached)
    dvc exp run -S model=timm -S model.weights=/path/resnet18.safetensors   # a local file
    dvc exp run -S model=timm -S model.pretrained=false                  # random init

Hub weights download at train time into Hugging Face's cache (~/.cache/huggingface, HF_HOME);
the classifier is replaced to fit the classes, the first convolution adapted to the channels.
`train.freeze_backbone_epochs: N` trains the classifier only for the first N epochs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .config import ConfigError


class TimmClassifier(nn.Module):
    """A timm model with its classifier sized to the data; `net` is the timm model itself."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        name: str = "resnet18",
        pretrained: bool = True,
        weights: str | None = None,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ConfigError(
                f"model.name: '{name}' is not a timm architecture; list them with "
                "`python -c \"import timm; print(timm.list_models('resnet*'))\"`."
            )
        kwargs = {"num_classes": num_classes, "in_chans": in_channels, "drop_rate": drop_rate}
        if weights:
            if not Path(weights).is_file():
                raise ConfigError(f"model.weights: {weights}: no such file.")
            # timm loads the file as it would the hub's, adapting classifier and input channels.
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        else:
            kwargs["pretrained"] = bool(pretrained)
        try:
            self.net = timm.create_model(name, **kwargs)
        except ConfigError:
            raise
        except Exception as exc:  # the hub raises several kinds when offline or unreachable
            if weights or not pretrained:
                raise ConfigError(f"model: cannot build timm '{name}': {exc}") from exc
            raise ConfigError(
                f"model.pretrained: cannot fetch the weights of '{name}' from the Hugging Face "
                f"hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                "Offline? Use a local weights file: model.weights=<path to .safetensors/.pth> "
                "(e.g. saved where you are online with timm.create_model(name, pretrained=True) "
                "and safetensors.torch.save_file(model.state_dict(), path)), or train from "
                "scratch with model.pretrained=false."
            ) from exc
        self.image_size = list(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.net.get_classifier().parameters()


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter but the classifier's (what train.freeze_backbone_epochs holds still)."""
    if not isinstance(model, TimmClassifier):
        raise ConfigError(
            f"train.freeze_backbone_epochs needs a pretrained backbone (model=timm); "
            f"{type(model).__name__} has none. Set it to 0."
        )
    head = {id(p) for p in model.head_parameters()}
    return [p for p in model.parameters() if id(p) not in head]


def without_downloads(model_cfg: dict) -> dict:
    """The model config to rebuild a trained model: its weights come from the checkpoint."""
    if "pretrained" in model_cfg or "weights" in model_cfg:
        return {**model_cfg, "pretrained": False, "weights": None}
    return model_cfg
