"""TMSA: VRT's temporal mutual self attention block, its group (``TMSAG``) and the residual group of stage 8
(``RTMSA``) (Liang et al., "VRT: A Video Restoration Transformer", 2022).

All three take channels-last tokens ``(B, D, H, W, C)``; the official code permutes to channels-first
between modules, which changes no value. Gradient checkpointing is a per-block run-time switch
(``checkpoint_attn``, ``checkpoint_ffn``), set through ``VRT.set_grad_checkpointing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from svrt_model.layers.attention import WindowAttention
from svrt_model.layers.autocast import to_autocast_dtype
from svrt_model.layers.drop_path import DropPath
from svrt_model.layers.mlp import MlpGEGLU
from svrt_model.layers.segment_attention import segment_attention
from svrt_model.layers.window import (
    MaskGroups,
    effective_window,
    mask_groups,
    masked_windows,
    pad_to_windows,
    padded_size,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from svrt_model.layers.window_plan import WindowPlan, gather_windows, scatter_windows, window_plan

__all__ = ["RTMSA", "TMSA", "TMSAG"]

Size3 = tuple[int, int, int]


class TMSA(nn.Module):
    """One block: ``x + attn(norm1(x))`` in (shifted) windows, then ``x + mlp(norm2(x))``.

    Args:
        dim: channels C.
        num_heads: attention heads.
        window: window ``(Wd, Wh, Ww)``.
        shift: cyclic shift ``(Sd, Sh, Sw)``; zeros for an unshifted block.
        mutual: mutual + self attention (window depth 2) instead of self attention only.
        mlp_ratio: GEGLU hidden width over C.
        qkv_bias: bias in the q/k/v projections.
        qk_scale: logit scale override.
        drop_path: stochastic depth probability of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Size3,
        shift: Size3,
        *,
        mutual: bool,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window = tuple(window)
        self.shift = tuple(shift)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, mutual=mutual)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MlpGEGLU(dim, int(dim * mlp_ratio))
        self.checkpoint_attn = False
        self.checkpoint_ffn = False
        # bandwidth savers (VRT.set_bandwidth_savers): same numbers, fewer bytes moved and kept
        self.fused_residual = True  # stochastic depth applied inside the residual addition
        self.grouped_masks = True  # shifted-window masks as one broadcast bias per mask pattern
        self.window_gather = True  # pad + roll + partition as one gather, the reverse as one scatter
        self.mask_split = True  # windows grouped by mask pattern: each attends once (needs window_gather)
        self.pad_skip = True  # no query rows / mutual direction for zero-padded frames (needs mask_split)
        self._attention_fn = self.attention_core  # replaced by compiled versions through compile_parts()
        self._mlp_fn = self.mlp_core

    def compile_parts(self, attn: bool, ffn: bool) -> None:
        """Run the attention and/or MLP core through ``torch.compile`` (``False`` restores eager).

        Stochastic depth stays outside the compiled cores, so blocks that differ only in their drop
        rate share compiled code.
        """
        self._attention_fn = torch.compile(self.attention_core, dynamic=False) if attn else self.attention_core
        self._mlp_fn = torch.compile(self.mlp_core, dynamic=False) if ffn else self.mlp_core

    def attention_core(
        self, x: torch.Tensor, win: Size3, shift: Size3, mask: torch.Tensor | None, mask_windows: torch.Tensor | None,
        groups: tuple[MaskGroups, MaskGroups] | None = None, plan: WindowPlan | None = None,
    ) -> torch.Tensor:
        """norm1, pad, roll, window attention, reverse, roll back, crop (no stochastic depth).

        With a ``plan`` the padding, roll and partition are one gather and the way back one scatter; a plan
        that groups windows by mask pattern attends segment by segment (``mask`` etc. unused).
        """
        b, d, h, w, _ = x.shape
        if plan is not None:
            tokens = gather_windows(to_autocast_dtype(self.norm1(x)), plan)  # padding tokens zero, after the norm
            if plan.split:
                return scatter_windows(segment_attention(self.attn, tokens, plan), plan)
            return scatter_windows([self.attn(tokens, mask, mask_windows, groups)], plan)
        x = pad_to_windows(to_autocast_dtype(self.norm1(x)), win)  # pad after the norm: padded tokens are zeros
        size = tuple(x.shape[1:4])
        if mask is not None:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        out = self.attn(window_partition(x, win), mask, mask_windows, groups)  # B*nW N C
        x = window_reverse(out, win, b, size)
        if mask is not None:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        if size != (d, h, w):
            x = x[:, :d, :h, :w]
        return x

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The attention branch without stochastic depth: ``(B, D, H, W, C)`` to the same shape."""
        b, d, h, w, _ = x.shape
        win, shift = effective_window((d, h, w), self.window, self.shift)
        mask = mask_windows = groups = plan = None
        shifted = any(s > 0 for s in shift)
        if self.window_gather and (shifted or padded_size((d, h, w), win) != (d, h, w)):
            plan = window_plan(b, (d, h, w), win, shift, x.device, split=self.mask_split,
                               skip_pads=self.mask_split and self.pad_skip, half=self.attn.mutual)
            if plan.split:  # the segments carry their mask patterns: no per-window mask on the device
                return self._attention_fn(x, win, shift, None, None, None, plan)
        if shifted:
            size = padded_size((d, h, w), win)
            mask = shifted_window_mask(size, win, shift, x.device)
            mask_windows = masked_windows(size, win, shift, x.device)
            if self.grouped_masks:
                n = win[0] * win[1] * win[2]
                groups = (mask_groups(size, win, shift, x.device), mask_groups(size, win, shift, x.device, n // 2))
        return self._attention_fn(x, win, shift, mask, mask_windows, groups, plan)

    def attention_part(self, x: torch.Tensor) -> torch.Tensor:
        """The attention branch (before the residual add): ``(B, D, H, W, C)`` to the same shape."""
        return self.drop_path(self.attention_branch(x))

    def mlp_core(self, x: torch.Tensor) -> torch.Tensor:
        """norm2 and the GEGLU MLP (no stochastic depth)."""
        return self.mlp(to_autocast_dtype(self.norm2(x)))

    def mlp_part(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP branch (before the residual add)."""
        return self.drop_path(self._mlp_fn(x))

    def _branch(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, ckpt: bool) -> torch.Tensor:
        return checkpoint(fn, x, use_reentrant=False) if ckpt and torch.is_grad_enabled() else fn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` to the same shape."""
        if self.fused_residual:
            # x + drop_path(branch) in one pass (same random draw): the scaled branch is never written out
            x = self.drop_path.residual(x, self._branch(self.attention_branch, x, self.checkpoint_attn))
            return self.drop_path.residual(x, self._branch(self._mlp_fn, x, self.checkpoint_ffn))
        x = x + self._branch(self.attention_part, x, self.checkpoint_attn)
        return x + self._branch(self.mlp_part, x, self.checkpoint_ffn)


def _drop_rates(drop_path: float | Sequence[float], depth: int) -> list[float]:
    if isinstance(drop_path, (int, float)):
        return [float(drop_path)] * depth
    return [float(p) for p in drop_path[:depth]]


class TMSAG(nn.Module):
    """A group of TMSA blocks; odd blocks shift by half the window (or by ``shift``).

    Args:
        dim, num_heads, mutual, mlp_ratio, qkv_bias, qk_scale: as in :class:`TMSA`.
        depth: number of blocks.
        window: the group's window.
        shift: the odd blocks' shift; default ``window // 2``.
        drop_path: one probability, or a list whose first ``depth`` entries go to the blocks in order
            (the official code hands both groups of a stage the stage's list).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: Size3,
        *,
        shift: Size3 | None = None,
        mutual: bool,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        shift = tuple(w // 2 for w in window) if shift is None else tuple(shift)
        rates = _drop_rates(drop_path, depth)
        self.blocks = nn.ModuleList(
            TMSA(
                dim, num_heads, window, (0, 0, 0) if i % 2 == 0 else shift, mutual=mutual, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop_path=rates[i],
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` to the same shape."""
        for block in self.blocks:
            x = block(x)
        return x


class RTMSA(nn.Module):
    """Stage-8 group: ``x + linear(TMSAG(x))`` with self attention only.

    Args:
        dim, depth, num_heads, window, mlp_ratio, qkv_bias, qk_scale, drop_path: as in :class:`TMSAG`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: Size3,
        *,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.residual_group = TMSAG(
            dim, depth, num_heads, window, mutual=False, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop_path=drop_path,
        )
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` to the same shape."""
        return x + self.linear(self.residual_group(x))
