"""SpyNet optical flow (Ranjan & Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR
2017), in the layout VRT uses: six basic modules, coarse to fine, returning flows at 4 scales.

Parameter and buffer names are the official ones (``basic_module.{i}.basic_module.{j}``, ``mean``,
``std``), so both the standalone SpyNet weights (``spynet_sintel_final-3d2a1287.pth``) and the
``spynet.*`` entries of a VRT checkpoint load strictly. Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from svrt_model.checkpoint import read_state_dict, state_dict_mismatch
from svrt_model.errors import CheckpointError, ModelInputError
from svrt_model.layers.flow_warp import flow_warp

__all__ = ["SpyNet", "SpyNetBasicModule", "load_spynet_weights"]

_LEVELS = 6
_RETURN_LEVELS = (2, 3, 4, 5)  # pyramid levels of the 1/8, 1/4, 1/2 and full-size flows


class SpyNetBasicModule(nn.Module):
    """Flow residual at one pyramid level: 5 convolutions 7x7 (8 -> 32 -> 64 -> 32 -> 16 -> 2), ReLU between."""

    def __init__(self) -> None:
        super().__init__()
        chans = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], kernel_size=7, stride=1, padding=3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 8, H, W)`` (reference, warped support, upsampled flow) to ``(N, 2, H, W)``."""
        return self.basic_module(x)


class SpyNet(nn.Module):
    """Flow from ``ref`` to ``supp`` (backward flow: ``warp(supp, flow)`` aligns supp to ref)."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetBasicModule() for _ in range(_LEVELS))
        # float32 literals as in the official buffers (their float64 casts keep the float32 rounding)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1))
        self.weights_loaded = False  # set by any load_state_dict that brings SpyNet weights

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if f"{prefix}basic_module.0.basic_module.0.weight" in state_dict:
            self.weights_loaded = True

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [(x - self.mean) / self.std]
        for _ in range(_LEVELS - 1):
            levels.insert(0, F.avg_pool2d(levels[0], kernel_size=2, stride=2, count_include_pad=False))
        return levels  # coarse to fine

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> list[torch.Tensor]:
        """Flows at full, 1/2, 1/4 and 1/8 size.

        Args:
            ref, supp: ``(N, 3, H, W)`` RGB in [0, 1].

        Returns:
            ``[(N, 2, H, W), (N, 2, H/2, W/2), (N, 2, H/4, W/4), (N, 2, H/8, W/8)]``, channel 0 = x.
        """
        if ref.shape != supp.shape or ref.ndim != 4 or ref.shape[1] != 3:
            raise ModelInputError(
                f"SpyNet: expected ref and supp of one shape (N, 3, H, W), got {tuple(ref.shape)} and "
                f"{tuple(supp.shape)}"
            )
        h, w = ref.shape[-2:]
        h32, w32 = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        ref = F.interpolate(ref, size=(h32, w32), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h32, w32), mode="bilinear", align_corners=False)
        refs, supps = self._pyramid(ref), self._pyramid(supp)
        n = ref.shape[0]
        flow = refs[0].new_zeros(n, 2, refs[0].shape[2] // 2, refs[0].shape[3] // 2)
        flows: list[torch.Tensor] = []
        for level in range(_LEVELS):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.shape[2] != refs[level].shape[2]:  # odd size at this level: repeat the last row
                up = F.pad(up, (0, 0, 0, 1), mode="replicate")
            if up.shape[3] != refs[level].shape[3]:
                up = F.pad(up, (0, 1, 0, 0), mode="replicate")
            warped = flow_warp(supps[level], up, padding_mode="border").to(up.dtype)
            flow = self.basic_module[level](torch.cat([refs[level], warped, up], dim=1)) + up
            if level in _RETURN_LEVELS:
                scale = 2 ** (_LEVELS - 1 - level)
                out = F.interpolate(flow, size=(h // scale, w // scale), mode="bilinear", align_corners=False)
                fx = out[:, :1] * (float(w // scale) / float(w32 // scale))
                fy = out[:, 1:] * (float(h // scale) / float(h32 // scale))
                flows.insert(0, torch.cat([fx, fy], dim=1))
        return flows


def load_spynet_weights(spynet: SpyNet, path: str | Path) -> None:
    """Load SpyNet weights from a local file (``{'params': state_dict}`` or a bare state_dict), strictly.

    The file may hold the standalone SpyNet keys (``basic_module.*``) or a whole VRT's
    (``spynet.basic_module.*``); ``mean``/``std`` may be absent (they are constants). Nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"SpyNet weights: {path} does not exist; pass the local path of spynet_sintel_final-3d2a1287.pth "
            "(nothing is downloaded), or spynet_path=None and load a full VRT checkpoint instead"
        )
    state = read_state_dict(path)
    if any(k.startswith("spynet.") for k in state):
        state = {k[len("spynet."):]: v for k, v in state.items() if k.startswith("spynet.")}
    for name in ("mean", "std"):
        state.setdefault(name, getattr(spynet, name))
    problems = state_dict_mismatch(spynet, state)
    if problems:
        raise CheckpointError(f"SpyNet weights: {path} does not fit SpyNet:\n{problems}")
    spynet.load_state_dict(state, strict=True)
