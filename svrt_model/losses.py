"""Training losses of S-VRT: Charbonnier and the VGG16 perceptual loss, with their combination.

- Charbonnier: ``mean(sqrt((x - y)^2 + delta^2))``, ``delta = 1e-3`` (a smooth L1).
- Perceptual (Johnson et al., "Perceptual Losses for Real-Time Style Transfer", 2016): L1 between VGG16
  features (Simonyan & Zisserman, 2015) of output and target after ImageNet normalisation, averaged over
  the chosen ReLU outputs (``relu3_3`` by default). The network is defined here with the layer indices of
  torchvision's ``vgg16().features``, so torchvision's ``vgg16-397923af.pth`` (or any state dict in its
  key format) loads as is; nothing downloads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svrt_model.errors import CheckpointError, ModelConfigError, ModelInputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG_LAYERS",
    "VGG_WEIGHTS_HINT",
    "CharbonnierLoss",
    "DeblurLoss",
    "VGGFeatures",
    "VGGPerceptualLoss",
    "charbonnier",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
"""torchvision's configuration "D" up to the last conv: conv widths and max-pools ("M")."""
VGG_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
"""Index in ``features`` of each ReLU output the perceptual loss can compare."""
VGG_WEIGHTS_HINT = (
    "put torchvision's VGG16 ImageNet weights (vgg16-397923af.pth, from "
    "https://download.pytorch.org/models/vgg16-397923af.pth) on this machine and pass loss.vgg_weights=PATH, "
    "or set loss.vgg=0 to train without the perceptual loss"
)


def charbonnier(x: torch.Tensor, y: torch.Tensor, delta: float = 1e-3) -> torch.Tensor:
    """``mean(sqrt((x - y)^2 + delta^2))`` over every element."""
    diff = x - y
    return torch.sqrt(diff * diff + delta * delta).mean()


class CharbonnierLoss(nn.Module):
    """Charbonnier loss (a differentiable L1) with ``delta`` (1e-3 in S-VRT)."""

    def __init__(self, *, delta: float = 1e-3) -> None:
        super().__init__()
        if delta <= 0:
            raise ModelConfigError(f"CharbonnierLoss: delta must be positive, got {delta}")
        self.delta = float(delta)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: output, target: any equal shapes. Returns: a scalar."""
        if output.shape != target.shape:
            raise ModelInputError(
                f"CharbonnierLoss: output {tuple(output.shape)} and target {tuple(target.shape)} differ"
            )
        return charbonnier(output, target, self.delta)


class VGGFeatures(nn.Module):
    """``features[0 .. last]`` of torchvision's VGG16 (same indices, so its state dict keys load), frozen.

    Args:
        layers: ReLU outputs to return (keys of :data:`VGG_LAYERS`).
    """

    def __init__(self, *, layers: Sequence[str] = ("relu3_3",)) -> None:
        super().__init__()
        bad = [name for name in layers if name not in VGG_LAYERS]
        if not layers or bad:
            raise ModelConfigError(
                f"VGGFeatures: unknown layers {bad or list(layers)}; expected some of {list(VGG_LAYERS)}"
            )
        self.layer_names = tuple(layers)
        self.taps = tuple(VGG_LAYERS[name] for name in layers)
        modules: list[nn.Module] = []
        width = 3
        for spec in VGG16_CONVS:
            if spec == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(width, spec, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                width = spec
        self.features = nn.Sequential(*modules[: max(self.taps) + 1])
        # float64 so that a float64 loss normalises exactly; cast to the input's dtype per call
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always evaluation mode (the network is a fixed measuring instrument)."""
        return super().train(False)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load ``features.*`` from a torchvision-format VGG16 state dict file (other keys are ignored).

        Raises:
            CheckpointError: no such file, not a torch file, or keys/shapes that do not match torchvision's VGG16.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"VGG weights {path} do not exist; {VGG_WEIGHTS_HINT}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"VGG weights {path} cannot be read as a torch file: {exc}") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"VGG weights {path}: expected a state dict, got {type(state).__name__}")
        own = self.features.state_dict()
        mine = {f"features.{k}": k for k in own}
        missing = [k for k in mine if k not in state]
        wrong = [f"{k}: file {tuple(state[k].shape)} vs VGG16 {tuple(own[v].shape)}" for k, v in mine.items()
                 if k in state and tuple(state[k].shape) != tuple(own[v].shape)]
        if missing or wrong:
            parts = [f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}" if missing else "",
                     f"shape mismatches {wrong[:6]}" if wrong else ""]
            raise CheckpointError(
                f"VGG weights {path} do not fit torchvision's VGG16 features: {', '.join(p for p in parts if p)}; "
                f"{VGG_WEIGHTS_HINT}"
            )
        self.features.load_state_dict({v: state[k] for k, v in mine.items()})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x ``(N, 3, H, W)`` RGB in [0, 1]. Returns: the chosen ReLU outputs ``(N, C_l, H_l, W_l)``."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return [out[sorted(self.taps).index(t)] for t in self.taps]


class VGGPerceptualLoss(nn.Module):
    """Mean over the chosen layers of ``L1(VGG(output), VGG(target))``; frames ``(B, T, 3, H, W)`` or ``(N, 3, H, W)``.

    Args:
        weights: local torchvision-format VGG16 weights (required: random VGG features measure nothing).
        layers: ReLU outputs compared (default ``relu3_3``, as S-VRT).
    """

    def __init__(self, *, weights: str | os.PathLike, layers: Sequence[str] = ("relu3_3",)) -> None:
        super().__init__()
        self.vgg = VGGFeatures(layers=layers)
        self.vgg.load_weights(weights)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: output, target ``(B, T, 3, H, W)`` or ``(N, 3, H, W)`` in [0, 1]. Returns: a scalar."""
        if output.shape != target.shape or output.dim() not in (4, 5) or output.shape[-3] != 3:
            raise ModelInputError(
                f"VGGPerceptualLoss: expected equal (B, T, 3, H, W) or (N, 3, H, W) tensors, got "
                f"{tuple(output.shape)} and {tuple(target.shape)}"
            )
        x = output.flatten(0, -4)  # (B T) 3 H W
        y = target.flatten(0, -4)
        with torch.no_grad():
            fy = self.vgg(y)
        fx = self.vgg(x)
        return torch.stack([F.l1_loss(a, b.to(a.dtype)) for a, b in zip(fx, fy, strict=True)]).mean()


class DeblurLoss(nn.Module):
    """``charbonnier_weight * Charbonnier + vgg_weight * perceptual``; returns the total and each term.

    Args:
        charbonnier_weight, delta: the Charbonnier term.
        vgg_weight: the perceptual term's weight (0: off, no VGG built).
        vgg_weights: local VGG16 weights, required when ``vgg_weight > 0``.
        vgg_layers: ReLU outputs compared.
    """

    def __init__(self, *, charbonnier_weight: float = 1.0, delta: float = 1e-3, vgg_weight: float = 0.0,
                 vgg_weights: str | os.PathLike | None = None, vgg_layers: Sequence[str] = ("relu3_3",)) -> None:
        super().__init__()
        self.charbonnier_weight, self.vgg_weight = float(charbonnier_weight), float(vgg_weight)
        self.charbonnier = CharbonnierLoss(delta=delta)
        if self.vgg_weight > 0:
            if vgg_weights is None:
                raise CheckpointError(f"loss.vgg={self.vgg_weight} needs VGG16 weights: {VGG_WEIGHTS_HINT}")
            self.perceptual: VGGPerceptualLoss | None = VGGPerceptualLoss(weights=vgg_weights, layers=vgg_layers)
        else:
            self.perceptual = None

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: output, target ``(B, T, 3, H, W)``. Returns: ``{'loss', 'charbonnier'[, 'vgg']}`` scalars."""
        terms = {"charbonnier": self.charbonnier(output, target)}
        loss = self.charbonnier_weight * terms["charbonnier"]
        if self.perceptual is not None:
            terms["vgg"] = self.perceptual(output, target)
            loss = loss + self.vgg_weight * terms["vgg"]
        return {"loss": loss, **terms}
