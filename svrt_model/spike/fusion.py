"""Temporal cross-attention fusion of RGB and spike features (S-VRT's ``MultiScaleTemporalCrossAttnFuse``,
seed ``002``; cross-attention as in lucidrains' ``cross_vit``: the context is one optional argument).

At every pixel of VRT encoder stage i's output ``Fr`` (the queries) and the temporally attended spike
features ``Fs`` of the same scale (keys = values): ``X = Fr + MHA(LN_q(Fr), LN_kv(Fs))`` over the T frames
(the residual is the un-normalised RGB features), then ``X + FFN(LN_ffn(X))`` with an exact-GELU MLP.
Spike features of another spatial size are first resized to the stage's size (bilinear,
``align_corners=False``, as the original; or anti-aliased through upfirdn2d, ``VRTSpikeConfig.spike_resize``);
a different T is an error.

Parameter names are the original's (``fuse_blocks.i.{ln_q, ln_kv, attn.attn, ln_ffn, ffn.0, ffn.2}``).
With ``zero_init`` the two output projections start at zero, so every block starts as the identity
on ``Fr`` (the fused model starts as exactly its backbone).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from svrt_model.errors import ModelInputError
from svrt_model.spike.inputs import resize_frames
from svrt_model.spike.temporal_attention import feature_tokens, tokens_to_features
from svrt_model.spike.temporal_mha import PixelAttentionBlock, temporal_attention

__all__ = ["MultiScaleTemporalCrossAttnFuse", "TemporalCrossAttention", "TemporalCrossAttnFuseBlock", "resize_features"]


def resize_features(feats: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``(B, C, T, h, w)`` to ``(B, C, T, H, W)`` frame by frame: bilinear (``align_corners=False``, the
    original's) or ``mode="upfirdn2d"`` (anti-aliased, :func:`svrt_model.spike.inputs.resize_frames`).

    Bilinear keeps channels-last memory channels-last (the ``(B*T, C, h, w)`` view is then NHWC, which the
    interpolation keeps); the same size returns ``feats`` itself.
    """
    b, c, t, h, w = feats.shape
    if (h, w) == tuple(size):
        return feats
    frames = feats.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B T) C h w
    out = resize_frames(frames, size, mode)
    return out.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)  # B C T H W, a view in either memory layout


class TemporalCrossAttention(nn.Module):
    """Holder of the fusion's ``nn.MultiheadAttention`` (the original's name ``attn.attn``).

    Args:
        dim: C.
        heads: attention heads (dividing C).
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True)

    def forward(self, query: torch.Tensor, context: torch.Tensor, impl: str = "fused") -> torch.Tensor:
        """Per-pixel attention over T: query and context ``(B, T, S, C)`` to ``(B, T, S, C)``."""
        return temporal_attention(query, context, self.attn, impl)


class TemporalCrossAttnFuseBlock(PixelAttentionBlock):
    """Fuse one scale.

    Args:
        dim: C.
        heads: attention heads (dividing C).
        mlp_ratio: FFN hidden width over C.
        zero_init: zero the attention's ``out_proj`` and the FFN's last layer (identity at start).
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2, zero_init: bool = False) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.attn = TemporalCrossAttention(dim, heads)
        self.ln_ffn = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        if zero_init:
            for layer in (self.attn.attn.out_proj, self.ffn[2]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def compute(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        """RGB tokens ``fr`` and spike tokens ``fs`` ``(B, T, S, C)`` to fused ``(B, T, S, C)`` (fr's layout)."""
        x = fr + self.attn(self.ln_q(fr), self.ln_kv(fs), self.impl)
        return x + self.ffn(self.ln_ffn(x))

    def forward(self, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        """As :meth:`compute`; switches as in :class:`PixelAttentionBlock`."""
        return self.run(fr, fs)


class MultiScaleTemporalCrossAttnFuse(nn.Module):
    """One :class:`TemporalCrossAttnFuseBlock` per scale.

    Args:
        channels_per_scale: C_i of each scale (= VRT's stage widths).
        heads, mlp_ratio, zero_init: as in :class:`TemporalCrossAttnFuseBlock`.
    """

    def __init__(
        self, channels_per_scale: Sequence[int], heads: int = 4, mlp_ratio: float = 2, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.fuse_blocks = nn.ModuleList(
            TemporalCrossAttnFuseBlock(c, heads, mlp_ratio, zero_init) for c in channels_per_scale
        )
        self.resize = "bilinear"  # how spike features reach the stage size (resize_features); a run-time switch

    def fuse_scale(self, i: int, fr: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
        """Fuse scale ``i`` (0-based).

        Args:
            i: scale index.
            fr: ``(B, C, T, H, W)`` RGB stage output (a view of channels-last memory in VRT).
            fs: ``(B, C, T, h, w)`` spike features; resized to ``H x W`` when ``h x w`` differs.

        Returns:
            ``(B, C, T, H, W)``, a view of contiguous channels-last ``(B, T, H, W, C)`` memory.
        """
        block = self.fuse_blocks[i]
        if fr.ndim != 5 or fs.ndim != 5 or fr.shape[:3] != fs.shape[:3]:
            raise ModelInputError(
                f"cross-attention fusion, scale {i + 1}: RGB features {tuple(fr.shape)} and spike features "
                f"{tuple(fs.shape)} must agree in (B, C, T): each RGB frame attends to the spike features of the "
                "same T frames (check the spike clip's T and the encoder's temporal strides)"
            )
        h, w = fr.shape[-2:]
        fs = resize_features(fs, (h, w), self.resize)
        return tokens_to_features(block(feature_tokens(fr), feature_tokens(fs)), h, w)

    def forward(self, fr_list: Sequence[torch.Tensor], fs_list: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fuse every scale: lists of ``(B, C_i, T, H_i, W_i)`` RGB and ``(B, C_i, T, h_i, w_i)`` spike features."""
        if len(fr_list) != len(self.fuse_blocks) or len(fs_list) != len(self.fuse_blocks):
            raise ModelInputError(
                f"MultiScaleTemporalCrossAttnFuse: expected {len(self.fuse_blocks)} scales, got {len(fr_list)} RGB "
                f"and {len(fs_list)} spike feature maps"
            )
        return [self.fuse_scale(i, fr, fs) for i, (fr, fs) in enumerate(zip(fr_list, fs_list, strict=True))]
