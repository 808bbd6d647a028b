"""``VRTConfig``: the VRT backbone's hyper-parameters, named as the official constructor names them.

The fields are the keyword arguments of ``VRT.__init__`` in the official implementation (Liang et al.,
"VRT: A Video Restoration Transformer", 2022; JingyunLiang/VRT ``models/network_vrt.py``), so an
official config dict builds the same network: ``VRTConfig(**official_kwargs)``. Lists become tuples
(the config is frozen). Defaults are the official constructor's, except ``upscale`` (1 here: this
implementation covers the deblurring / ``upscale=1`` branch only; the official default is 4). One field
is an svrt extension: ``alignment`` (the parallel warping's alignment module), whose default ``"dcn"`` is
the official network.

Presets are keyword-only factory functions: :func:`gopro_deblurring`, :func:`dvd_deblurring`,
:func:`svrt_baseline` and :func:`tiny`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from svrt_model.errors import ModelConfigError

__all__ = [
    "ALIGNMENTS",
    "NUM_FEATURE_STAGES",
    "STAGE_SCALES",
    "VRTConfig",
    "dvd_deblurring",
    "gopro_deblurring",
    "svrt_baseline",
    "tiny",
]

ALIGNMENTS = ("dcn", "deform_attn")
"""Alignment modules of the parallel warping (``VRTConfig.alignment``)."""

NUM_FEATURE_STAGES = 7
"""Stages 1-7 (the U-shaped feature pass); every later depth entry is a stage-8 group."""

STAGE_SCALES = (1, 2, 4, 8, 4, 2, 1)
"""Downscale factor of stages 1-7 relative to the input frames."""

_TUPLE_FIELDS = (
    "img_size",
    "window_size",
    "depths",
    "indep_reconsts",
    "embed_dims",
    "num_heads",
    "no_checkpoint_attn_blocks",
    "no_checkpoint_ffn_blocks",
)


@dataclass(frozen=True)
class VRTConfig:
    """Hyper-parameters of VRT (official keyword names; see the module docstring).

    Args:
        upscale: output scale; only 1 (deblurring, denoising-free restoration) is implemented.
        in_chans: input channels: 3 (RGB), or RGB followed by extra channels (e.g. 4 = RGB + one
            spike channel, the original S-VRT's early fusion). SpyNet reads the first 3 channels, every
            channel is pre-aligned and fed to ``conv_first``, and the output residual adds the first 3.
        out_chans: output channels (3; the output is a residual added to the input).
        img_size: ``(T, H, W)`` of the training clips; informational, as in the official code.
        window_size: ``(Wd, Wh, Ww)`` attention window of the self-attention groups.
        depths: blocks per stage: 7 feature stages, then one entry per stage-8 group.
        indep_reconsts: stage-8 indices (into ``depths``) whose window is ``(1, Wh, Ww)``.
        embed_dims: channels per stage (same length as ``depths``).
        num_heads: attention heads per stage (same length as ``depths``).
        mul_attn_ratio: share of each stage's blocks in its mutual+self attention group.
        mlp_ratio: hidden width of the GEGLU MLPs relative to the channels.
        qkv_bias: bias in the q/k/v projections.
        qk_scale: attention scale; None means ``head_dim ** -0.5``.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        spynet_path: local file with SpyNet weights (``{'params': ...}`` or a bare state_dict), or None.
        pa_frames: frames used by parallel warping; only 2 is implemented.
        deformable_groups: offset groups of the flow-guided deformable convolution.
        recal_all_flows: official option for ``pa_frames > 2``; must be False.
        nonblind_denoising: official denoising variant with a noise-level input; must be False.
        use_checkpoint_attn: initial gradient checkpointing of every block's attention part.
        use_checkpoint_ffn: initial gradient checkpointing of every block's MLP part.
        no_checkpoint_attn_blocks: stage indices exempt from ``use_checkpoint_attn``.
        no_checkpoint_ffn_blocks: stage indices exempt from ``use_checkpoint_ffn``.
        alignment: svrt extension: the parallel warping's alignment, ``"dcn"`` (the official flow-guided
            deformable convolution, official parameter names) or ``"deform_attn"`` (RVRT's guided
            deformable attention, ``deformable_groups`` heads; new parameters, see
            :mod:`svrt_model.layers.deform_attn_align`).
    """

    upscale: int = 1
    in_chans: int = 3
    out_chans: int = 3
    img_size: tuple[int, ...] = (6, 64, 64)
    window_size: tuple[int, ...] = (6, 8, 8)
    depths: tuple[int, ...] = (8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4)
    indep_reconsts: tuple[int, ...] = (11, 12)
    embed_dims: tuple[int, ...] = (120, 120, 120, 120, 120, 120, 120, 180, 180, 180, 180, 180, 180)
    num_heads: tuple[int, ...] = (6,) * 13
    mul_attn_ratio: float = 0.75
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_path_rate: float = 0.2
    spynet_path: str | None = None
    pa_frames: int = 2
    deformable_groups: int = 16
    recal_all_flows: bool = False
    nonblind_denoising: bool = False
    use_checkpoint_attn: bool = False
    use_checkpoint_ffn: bool = False
    no_checkpoint_attn_blocks: tuple[int, ...] = field(default=())
    no_checkpoint_ffn_blocks: tuple[int, ...] = field(default=())
    alignment: str = "dcn"

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ModelConfigError(f"VRTConfig.{name}: expected a list of integers, got {value!r}")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ModelConfigError(f"VRTConfig.{name}: expected integers only, got {list(value)!r}")
            object.__setattr__(self, name, tuple(value))
        if self.spynet_path is not None:
            object.__setattr__(self, "spynet_path", str(self.spynet_path))
        _validate(self)

    @property
    def num_stage8(self) -> int:
        """Number of stage-8 reconstruction groups (``len(depths) - 7``)."""
        return len(self.depths) - NUM_FEATURE_STAGES

    def to_dict(self) -> dict[str, Any]:
        """The config as official keyword arguments (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VRTConfig:
        """Build from an official kwargs dict, naming every key that is not a constructor argument."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                f"VRTConfig: unknown keys {unknown}; expected official VRT constructor arguments "
                f"({', '.join(sorted(known))}). Remove wrapper keys such as KAIR's 'net_type' / 'init_type'."
            )
        return cls(**dict(values))


def _positive_ints(cfg: VRTConfig, name: str, length: int | None = None) -> None:
    value = getattr(cfg, name)
    if length is not None and len(value) != length:
        raise ModelConfigError(f"VRTConfig.{name}: expected {length} entries, got {len(value)}: {list(value)}")
    if any(v <= 0 for v in value):
        raise ModelConfigError(f"VRTConfig.{name}: every entry must be positive, got {list(value)}")


def _validate(cfg: VRTConfig) -> None:
    def unsupported(name: str, expected: str) -> ModelConfigError:
        return ModelConfigError(
            f"VRTConfig.{name}={getattr(cfg, name)!r} is not supported: this implementation covers the official "
            f"deblurring branch ({expected}); the value is valid for the official code but not implemented here"
        )

    if cfg.upscale != 1:
        raise unsupported("upscale", "upscale=1")
    if cfg.pa_frames != 2:
        raise unsupported("pa_frames", "pa_frames=2")
    if cfg.nonblind_denoising:
        raise unsupported("nonblind_denoising", "nonblind_denoising=False")
    if cfg.recal_all_flows:
        raise unsupported("recal_all_flows", "recal_all_flows=False")
    if cfg.in_chans < 3 or cfg.out_chans != 3:
        raise ModelConfigError(
            f"VRTConfig: in_chans={cfg.in_chans}, out_chans={cfg.out_chans}; expected in_chans >= 3 (RGB first, then "
            "any extra channels) and out_chans = 3 (SpyNet reads the RGB channels and the output is a residual "
            "added to them)"
        )
    _positive_ints(cfg, "img_size", 3)
    _positive_ints(cfg, "window_size", 3)
    n = len(cfg.depths)
    if n < NUM_FEATURE_STAGES + 1:
        raise ModelConfigError(
            f"VRTConfig.depths: expected at least {NUM_FEATURE_STAGES + 1} entries (7 feature stages and at least "
            f"one stage-8 group), got {n}: {list(cfg.depths)}"
        )
    _positive_ints(cfg, "depths", n)
    _positive_ints(cfg, "embed_dims", n)
    _positive_ints(cfg, "num_heads", n)
    dims, heads = cfg.embed_dims, cfg.num_heads
    for i, (c, h) in enumerate(zip(dims, heads, strict=True)):
        if c % h:
            raise ModelConfigError(
                f"VRTConfig: embed_dims[{i}]={c} is not divisible by num_heads[{i}]={h}; pick heads dividing the width"
            )
    # The U-shaped pass adds stage outputs to skips and stage 8 is residual: these widths must agree.
    for a, b in ((0, 6), (1, 5), (2, 4)):
        if dims[a] != dims[b]:
            raise ModelConfigError(
                f"VRTConfig.embed_dims: stage {b + 1} output is added to stage {a + 1} output, so embed_dims[{a}] "
                f"and embed_dims[{b}] must be equal, got {dims[a]} and {dims[b]}"
            )
    if len(set(dims[NUM_FEATURE_STAGES:])) != 1:
        raise ModelConfigError(
            f"VRTConfig.embed_dims: the stage-8 groups are residual, so embed_dims[7:] must all be equal, "
            f"got {list(dims[NUM_FEATURE_STAGES:])}"
        )
    for i in range(NUM_FEATURE_STAGES):
        if dims[i] % 2:
            raise ModelConfigError(
                f"VRTConfig.embed_dims[{i}]={dims[i]} must be even (the mutual attention's sine position "
                "encoding has dims/2 features per axis)"
            )
        if dims[i] % cfg.deformable_groups:
            raise ModelConfigError(
                f"VRTConfig: embed_dims[{i}]={dims[i]} is not divisible by deformable_groups="
                f"{cfg.deformable_groups}; the deformable convolution splits channels into equal groups"
            )
    for i in (4, 5, 6):  # 'up' stages pixel-shuffle the previous stage's channels by 2x2
        if dims[i - 1] % 4:
            raise ModelConfigError(
                f"VRTConfig.embed_dims[{i - 1}]={dims[i - 1]} must be divisible by 4 (stage {i + 1} pixel-shuffles it)"
            )
    bad = [i for i in cfg.indep_reconsts if not NUM_FEATURE_STAGES <= i < n]
    if bad:
        raise ModelConfigError(
            f"VRTConfig.indep_reconsts: indices {bad} are not stage-8 groups; expected values in "
            f"[{NUM_FEATURE_STAGES}, {n - 1}] (indices into depths)"
        )
    if not 0.0 <= cfg.mul_attn_ratio <= 1.0:
        raise ModelConfigError(f"VRTConfig.mul_attn_ratio={cfg.mul_attn_ratio}; expected a value in [0, 1]")
    if cfg.mlp_ratio <= 0:
        raise ModelConfigError(f"VRTConfig.mlp_ratio={cfg.mlp_ratio}; expected a positive value")
    if cfg.qk_scale is not None and cfg.qk_scale <= 0:
        raise ModelConfigError(f"VRTConfig.qk_scale={cfg.qk_scale}; expected None or a positive value")
    if not 0.0 <= cfg.drop_path_rate < 1.0:
        raise ModelConfigError(f"VRTConfig.drop_path_rate={cfg.drop_path_rate}; expected a value in [0, 1)")
    if cfg.alignment not in ALIGNMENTS:
        raise ModelConfigError(
            f"VRTConfig.alignment={cfg.alignment!r} is unknown; expected one of {', '.join(ALIGNMENTS)} (dcn: the "
            "official deformable convolution, deform_attn: guided deformable attention)"
        )
    if cfg.deformable_groups <= 0:
        raise ModelConfigError(f"VRTConfig.deformable_groups={cfg.deformable_groups}; expected a positive value")
    for name in ("no_checkpoint_attn_blocks", "no_checkpoint_ffn_blocks"):
        bad = [i for i in getattr(cfg, name) if not 0 <= i < n]
        if bad:
            raise ModelConfigError(f"VRTConfig.{name}: indices {bad} out of range [0, {n - 1}]")


def gopro_deblurring(*, spynet_path: str | None = None, drop_path_rate: float = 0.2) -> VRTConfig:
    """Official video-deblurring config (GoPro, task 006; also DVD 005 and REDS 007): 18.32 M parameters."""
    return VRTConfig(
        upscale=1,
        img_size=(6, 192, 192),
        window_size=(6, 8, 8),
        depths=(8,) * 7 + (4,) * 4,
        indep_reconsts=(9, 10),
        embed_dims=(96,) * 7 + (120,) * 4,
        num_heads=(6,) * 11,
        spynet_path=spynet_path,
        pa_frames=2,
        deformable_groups=16,
        drop_path_rate=drop_path_rate,
    )


def dvd_deblurring(*, spynet_path: str | None = None, drop_path_rate: float = 0.2) -> VRTConfig:
    """Official DVD deblurring config (task 005): the same network as :func:`gopro_deblurring`."""
    return gopro_deblurring(spynet_path=spynet_path, drop_path_rate=drop_path_rate)


def svrt_baseline(*, spynet_path: str | None = None, drop_path_rate: float = 0.2) -> VRTConfig:
    """The S-VRT baseline RGB backbone: 5-frame windows, 13 stages of 96 channels (18.26 M parameters)."""
    return VRTConfig(
        upscale=1,
        img_size=(5, 256, 256),
        window_size=(5, 8, 8),
        depths=(8,) * 7 + (4,) * 6,
        indep_reconsts=(11, 12),
        embed_dims=(96,) * 13,
        num_heads=(6,) * 13,
        spynet_path=spynet_path,
        pa_frames=2,
        deformable_groups=16,
        drop_path_rate=drop_path_rate,
    )


def tiny(*, spynet_path: str | None = None, drop_path_rate: float = 0.2) -> VRTConfig:
    """A small config for tests (the golden files' config): 1.92 M parameters, 1.44 M of them SpyNet."""
    return VRTConfig(
        upscale=1,
        img_size=(6, 64, 64),
        window_size=(6, 8, 8),
        depths=(4,) * 7 + (2,) * 4,
        indep_reconsts=(9, 10),
        embed_dims=(16,) * 7 + (24,) * 4,
        num_heads=(2,) * 11,
        spynet_path=spynet_path,
        pa_frames=2,
        deformable_groups=4,
        drop_path_rate=drop_path_rate,
    )
