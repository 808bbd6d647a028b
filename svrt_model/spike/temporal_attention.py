"""Spike temporal self-attention (S-VRT's ``SpikeTemporalSA``, seed ``002``): at every pixel of every
scale, a pre-LN transformer block over the T frames (Vaswani et al., 2017): ``x + MHA(LN(x))``, then
``x + MLP(LN(x))`` with an exact-GELU MLP of ``mlp_ratio * C`` hidden units.

Parameter names are the original's (``blocks.i.{ln1, attn, ln2, mlp.0, mlp.2}``, ``attn`` a
``batch_first`` ``nn.MultiheadAttention``). Blocks take channels-last tokens ``(B, T, S, C)``;
:class:`SpikeTemporalSA` takes and returns the encoder's ``(B, C, T, H, W)`` scales as views of
channels-last memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from svrt_model.errors import ModelInputError
from svrt_model.spike.temporal_mha import PixelAttentionBlock, temporal_attention

__all__ = ["SpikeTemporalSA", "SpikeTemporalSelfAttention", "feature_tokens", "tokens_to_features"]


def feature_tokens(feats: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` to channels-last tokens ``(B, T, H*W, C)`` (a view when the memory is
    channels-last, as the backbone's and the encoder's GPU features are; a copy otherwise)."""
    return feats.permute(0, 2, 3, 4, 1).flatten(2, 3)  # B T (H W) C


def tokens_to_features(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`feature_tokens`: ``(B, T, H*W, C)`` to a ``(B, C, T, H, W)`` view."""
    return tokens.unflatten(2, (h, w)).permute(0, 4, 1, 2, 3)  # B C T H W


class SpikeTemporalSelfAttention(PixelAttentionBlock):
    """One per-pixel temporal self-attention block.

    Args:
        dim: C.
        heads: attention heads (dividing C).
        mlp_ratio: MLP hidden width over C.
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, S, C)`` tokens to the same shape (contiguous when ``x`` is)."""
        x = x + temporal_attention(self.ln1(x), None, self.attn, self.impl)
        return x + self.mlp(self.ln2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, S, C)`` to the same shape; switches as in :class:`PixelAttentionBlock`."""
        return self.run(x)


class SpikeTemporalSA(nn.Module):
    """One :class:`SpikeTemporalSelfAttention` per scale.

    Args:
        channels_per_scale: C_i of each scale.
        heads, mlp_ratio: as in :class:`SpikeTemporalSelfAttention`.
    """

    def __init__(self, channels_per_scale: Sequence[int], heads: int = 4, mlp_ratio: float = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SpikeTemporalSelfAttention(c, heads, mlp_ratio) for c in channels_per_scale)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Attend over T at every pixel of every scale.

        Args:
            feats: one ``(B, C_i, T, H_i, W_i)`` tensor per scale (the encoder's outputs).

        Returns:
            the same shapes, each a view of channels-last ``(B, T, H_i, W_i, C_i)`` memory.
        """
        if len(feats) != len(self.blocks):
            raise ModelInputError(f"SpikeTemporalSA: expected {len(self.blocks)} scales, got {len(feats)}")
        out = []
        for i, (block, f) in enumerate(zip(self.blocks, feats, strict=True)):
            if f.ndim != 5 or f.shape[1] != block.ln1.normalized_shape[0]:
                raise ModelInputError(
                    f"SpikeTemporalSA: scale {i} expected (B, {block.ln1.normalized_shape[0]}, T, H, W), "
                    f"got {tuple(f.shape)}"
                )
            h, w = f.shape[-2:]
            out.append(tokens_to_features(block(feature_tokens(f)), h, w))
        return out
