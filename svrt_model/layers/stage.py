"""One of VRT's stages 1-7: resize, mutual+self attention group, self attention group, parallel warping.

Tokens are channels-last ``(B, D, H, W, C)`` throughout. Parallel warping aligns every frame's
neighbours (the next frame for the backward direction, the previous for the forward one) with
:class:`FlowGuidedDeformAlign` (or, with ``alignment="deform_attn"``, :class:`FlowGuidedDeformAttnAlign`),
all frames of both directions in ONE batched call (frames are
independent, so this equals the official per-frame loop), then fuses ``[x, backward, forward]`` with
a GEGLU MLP (no residual around it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops.layers.torch import Rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from svrt_model.errors import ModelConfigError
from svrt_model.layers.deform_align import FlowGuidedDeformAlign
from svrt_model.layers.deform_attn_align import FlowGuidedDeformAttnAlign
from svrt_model.layers.flow_warp import flow_warp
from svrt_model.layers.mlp import MlpGEGLU
from svrt_model.layers.tmsa import TMSAG

__all__ = ["RESHAPES", "Stage", "make_alignment", "make_reshape", "parallel_warp"]

RESHAPES = ("none", "down", "up")


def make_reshape(kind: str, in_dim: int, dim: int) -> nn.Sequential:
    """The stage's entry: channels-last resize + LayerNorm (+ Linear), keys ``reshape.1`` / ``reshape.2``.

    ``"none"``: LayerNorm(C). ``"down"``: 2x2 pixel-unshuffle, channel order (neiw, neih, c), then
    LayerNorm(4C) and Linear(4C, C). ``"up"``: the inverse shuffle, LayerNorm(C/4), Linear(C/4, C).
    """
    if kind == "none":
        return nn.Sequential(nn.Identity(), nn.LayerNorm(dim))
    elif kind == "down":
        return nn.Sequential(
            Rearrange("n d (h neih) (w neiw) c -> n d h w (neiw neih c)", neih=2, neiw=2),
            nn.LayerNorm(4 * in_dim),
            nn.Linear(4 * in_dim, dim),
        )
    elif kind == "up":
        return nn.Sequential(
            Rearrange("n d h w (neiw neih c) -> n d (h neih) (w neiw) c", neih=2, neiw=2),
            nn.LayerNorm(in_dim // 4),
            nn.Linear(in_dim // 4, dim),
        )
    else:
        raise ModelConfigError(f"Stage reshape {kind!r} is unknown; expected one of {RESHAPES}")


def make_alignment(
    kind: str, dim: int, deformable_groups: int, max_residue_magnitude: float
) -> FlowGuidedDeformAlign | FlowGuidedDeformAttnAlign:
    """The parallel warping's alignment (``VRTConfig.alignment``), kept as ``pa_deform``.

    ``"dcn"``: the official flow-guided deformable convolution; ``"deform_attn"``: guided deformable
    attention with ``deformable_groups`` heads. Both take ``(neighbour, warped, current, flow)``.
    """
    if kind == "dcn":
        return FlowGuidedDeformAlign(dim, deformable_groups, max_residue_magnitude)
    elif kind == "deform_attn":
        return FlowGuidedDeformAttnAlign(dim, deformable_groups, max_residue_magnitude)
    else:
        raise ModelConfigError(f"Stage alignment {kind!r} is unknown; expected 'dcn' or 'deform_attn'")


def parallel_warp(align: FlowGuidedDeformAlign | FlowGuidedDeformAttnAlign, x: torch.Tensor,
                  flows_backward: torch.Tensor, flows_forward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour features aligned to every frame, for both directions, in one batched alignment.

    Args:
        align: the stage's flow-guided alignment (deformable convolution or deformable attention).
        x: ``(B, T, C, H, W)`` features.
        flows_backward: ``(B, T-1, 2, H, W)``: flow from frame t to frame t+1.
        flows_forward: ``(B, T-1, 2, H, W)``: flow from frame t+1 to frame t.

    Returns:
        ``(x_backward, x_forward)``, each ``(B, T, C, H, W)``: frame t of ``x_backward`` is frame t+1
        aligned to t (zeros for the last frame); frame t of ``x_forward`` is frame t-1 aligned to t
        (zeros for the first frame).
    """
    b, t, c, h, w = x.shape
    neighbour = torch.cat([x[:, 1:], x[:, :-1]], dim=1).flatten(0, 1)  # (B 2(T-1)) C H W
    current = torch.cat([x[:, :-1], x[:, 1:]], dim=1).flatten(0, 1)
    flow = torch.cat([flows_backward, flows_forward], dim=1).flatten(0, 1)  # (B 2(T-1)) 2 H W
    warped = flow_warp(neighbour, flow).to(x.dtype)
    aligned = align(neighbour, warped, current, flow).to(x.dtype).view(b, 2 * (t - 1), c, h, w)
    zero = x.new_zeros(b, 1, c, h, w)
    x_backward = torch.cat([aligned[:, : t - 1], zero], dim=1)
    x_forward = torch.cat([zero, aligned[:, t - 1 :]], dim=1)
    return x_backward, x_forward


class Stage(nn.Module):
    """Stage 1-7 of VRT.

    Args:
        in_dim: channels of the previous stage's output.
        dim: channels of this stage.
        depth: blocks of the stage; ``int(depth * mul_attn_ratio)`` go to the mutual group.
        num_heads: attention heads.
        window: the stage's self-attention window ``(Wd, Wh, Ww)``; the mutual group uses ``(2, Wh, Ww)``.
        reshape: ``"none"``, ``"down"`` or ``"up"``.
        mul_attn_ratio, mlp_ratio, qkv_bias, qk_scale: as in ``VRTConfig``.
        drop_path: the stage's stochastic-depth rates (one per block; both groups read from the start).
        deformable_groups: offset groups of the alignment.
        max_residue_magnitude: bound of the alignment's learned offsets (10 / scale).
        alignment: ``"dcn"`` or ``"deform_attn"`` (:func:`make_alignment`).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        window: tuple[int, int, int],
        *,
        reshape: str,
        mul_attn_ratio: float = 0.75,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path: Sequence[float] = (),
        deformable_groups: int = 16,
        max_residue_magnitude: float = 10.0,
        alignment: str = "dcn",
    ) -> None:
        super().__init__()
        rates = list(drop_path) or [0.0] * depth
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_path=rates)
        n_mutual = int(depth * mul_attn_ratio)
        self.reshape = make_reshape(reshape, in_dim, dim)
        self.residual_group1 = TMSAG(dim, n_mutual, num_heads, (2, window[1], window[2]), mutual=True, **common)
        self.linear1 = nn.Linear(dim, dim)
        self.residual_group2 = TMSAG(dim, depth - n_mutual, num_heads, tuple(window), mutual=False, **common)
        self.linear2 = nn.Linear(dim, dim)
        self.pa_deform = make_alignment(alignment, dim, deformable_groups, max_residue_magnitude)
        self.pa_fuse = MlpGEGLU(3 * dim, 3 * dim, dim)
        self.checkpoint_align = False
        self.lean_fuse = True  # pa_fuse's input built channels-last in one copy (VRT.set_bandwidth_savers)

    def forward(self, x: torch.Tensor, flows_backward: torch.Tensor, flows_forward: torch.Tensor) -> torch.Tensor:
        """Run the stage.

        Args:
            x: ``(B, D, H', W', C_in)`` previous stage output (channels last).
            flows_backward, flows_forward: ``(B, D-1, 2, H, W)`` flows at this stage's resolution.

        Returns:
            ``(B, D, H, W, C)``.
        """
        x = self.reshape(x)
        x = self.linear1(self.residual_group1(x)) + x
        x = self.linear2(self.residual_group2(x)) + x
        frames = x.permute(0, 1, 4, 2, 3)  # B D C H W
        if self.checkpoint_align and torch.is_grad_enabled():
            x_backward, x_forward = checkpoint(
                parallel_warp, self.pa_deform, frames, flows_backward, flows_forward, use_reentrant=False
            )
        else:
            x_backward, x_forward = parallel_warp(self.pa_deform, frames, flows_backward, flows_forward)
        if self.lean_fuse:  # one copy straight into the channels-last layout the MLP reads
            aligned = [a.permute(0, 1, 3, 4, 2) for a in (x_backward, x_forward)]  # B D H W C views
            fused = torch.cat([x, *aligned], dim=4)  # B D H W 3C
        else:  # a channels-first copy, then another when the MLP's GEMM makes its input contiguous
            fused = torch.cat([frames, x_backward, x_forward], dim=2).permute(0, 1, 3, 4, 2)  # B D H W 3C
        return self.pa_fuse(fused)
