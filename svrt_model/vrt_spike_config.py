"""``VRTSpikeConfig``: the VRT+Spike (S-VRT) hyper-parameters, named as the original constructor names them.

The fields ``vrt``, ``spike_bins``, ``channels_per_scale``, ``temporal_strides``, ``spatial_strides``,
``tsa_heads``, ``tsa_mlp_ratio``, ``fuse_heads`` and ``fuse_mlp_ratio`` are the keyword arguments of the
original ``VRTWithSpike`` (S-VRT ``src/models/integrate_vrt.py``; its backbone becomes the ``vrt``
config), so the golden files' config dict builds the same network through :meth:`VRTSpikeConfig.from_dict`.
The other fields are ours: the fusion variant, early-fusion channels, zero-initialised fusion outputs,
the spike input kind (and the raw input's initial decay), bounded-memory chunking, the attention path,
the encoder's activation op and the spike features' resize.

Presets are keyword-only factory functions: :func:`svrt_base` and :func:`svrt_tiny`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from svrt_model.config import VRTConfig, svrt_baseline
from svrt_model.errors import ModelConfigError

__all__ = [
    "BASE_CHROMAS",
    "BASE_TARGETS",
    "BIT_INPUTS",
    "ENCODER_ACTIVATIONS",
    "FUSIONS",
    "NUM_SCALES",
    "SPIKE_ATTENTION_IMPLS",
    "SPIKE_BASES",
    "SPIKE_INPUTS",
    "SPIKE_RESIZES",
    "VRTSpikeConfig",
    "load_config",
    "svrt_base",
    "svrt_tiny",
]

NUM_SCALES = 4
"""Spike feature scales = VRT encoder stages 1-4 (1, 1/2, 1/4, 1/8 of the RGB frame)."""

FUSIONS = ("cross_attention", "early", "rgb_only")
"""``cross_attention``: the S-VRT model (default); ``early``: spike channels concatenated to the RGB
input; ``rgb_only``: plain VRT, spikes ignored."""

SPIKE_INPUTS = ("voxels", "raw", "intervals")
"""How spikes arrive: ``voxels`` = ``(B, T, K, Hs, Ws)`` bin counts (or their transforms); ``raw`` = the
loader's packed bits and bin plan (:class:`~svrt_model.spike.inputs.RawSpikes`), accumulated in the model
with a learnable decay per bin (:class:`~svrt_model.spike.accumulator.SpikeAccumulator`); ``intervals`` =
the same bits read as inter-spike-interval voxels (:func:`kernels.spike_intervals.spike_intervals`: the
firing rate at each bin's centre from the ``interval_spikes`` spikes on each side, times the bin's length)."""

SPIKE_BASES = ("none", "intervals", "refined")
"""What the output's residual starts from besides the blurry frames: ``none`` (VRT's: the blurry frames) or
``intervals`` (plus the spike luminance base, :class:`~svrt_model.spike.base.SpikeLumaBase`) or ``refined``
(that base corrected by a small learned CNN at the spike size, :class:`~svrt_model.spike.base.LumaRefiner`)."""

BASE_TARGETS = ("output", "input")
"""Where the spike luminance base goes: added to the backbone's ``output`` (its residual then starts from the
blurry frames), or to its ``input`` (the backbone, SpyNet included, restores from the spike-corrected frames)."""

BASE_CHROMAS = ("blurry", "colorline")
"""The spike base's colours: the ``blurry`` frame's chroma (one luminance delta on all three channels), or the
``colorline`` transfer (:func:`~svrt_model.spike.base.colorline_chroma`: the blurry frame's local colour lines
applied to the spikes' luminance)."""

BIT_INPUTS = ("raw", "intervals")
"""The spike inputs that read packed bits (``data.spike_input=raw``) rather than stored voxels."""

ENCODER_ACTIVATIONS = ("relu", "fused_bias_act")
"""The spike encoder's bias + ReLU: ``relu`` (the original's) or ``fused_bias_act`` (one fused op)."""

SPIKE_RESIZES = ("bilinear", "upfirdn2d")
"""Resizing spike features to a stage's (or, for early fusion, the RGB) size: ``bilinear`` (the original's)
or ``upfirdn2d`` (anti-aliased 2x FIR steps, :func:`kernels.resample.resize`)."""

SPIKE_ATTENTION_IMPLS = ("fused", "reference")
"""Per-pixel temporal attention: ``fused`` (one SDPA call per block over all pixels, or the compiled
block) or ``reference`` (``nn.MultiheadAttention`` on pixel-major tokens, the original formulation)."""

_TUPLE_FIELDS = ("channels_per_scale", "temporal_strides", "spatial_strides", "centre_rates", "refine_rates")


@dataclass(frozen=True)
class VRTSpikeConfig:
    """Hyper-parameters of :class:`~svrt_model.vrt_spike.VRTSpike` (see the module docstring).

    Args:
        vrt: the RGB backbone (``in_chans`` stays 3: early fusion adds ``early_channels`` itself).
        spike_bins: K, voxel bins per RGB frame.
        channels_per_scale: spike feature channels of the 4 scales; for cross-attention fusion they
            must equal the backbone's stage widths ``vrt.embed_dims[0:4]``.
        temporal_strides: the encoder's temporal strides between scales (3 entries); VRT keeps T in
            every stage, so cross-attention fusion needs all 1.
        spatial_strides: the encoder's spatial strides between scales (3 entries; 2 matches VRT's scales;
            features of any other size are resized to the stage's size).
        tsa_heads, tsa_mlp_ratio: heads and MLP width ratio of the spike temporal self-attention.
        fuse_heads, fuse_mlp_ratio: heads and MLP width ratio of the cross-attention fusion.
        fusion: one of :data:`FUSIONS`.
        early_channels: extra input channels of ``fusion="early"``: the K bins are split into this many
            equal consecutive groups, each channel the mean of its group (K must be divisible).
        fuse_zero_init: zero the fusion blocks' output projections (attention ``out_proj`` and the
            MLP's last layer), so the fused model starts as exactly the backbone.
        spike_input: one of :data:`SPIKE_INPUTS`; ``"raw"`` and ``"intervals"`` make ``VRTSpike.forward``
            take :class:`~svrt_model.spike.inputs.RawSpikes` as its ``spikes``.
        raw_init_gamma: ``spike_input="raw"``: the accumulator's initial decay, in (0, 1] (1: the count
            voxels ``"voxels"`` would receive).
        interval_spikes: ``spike_input="intervals"``: spikes on each side of a bin's centre whose span gives
            its firing rate (>= 1; 2 reconstructed ``train_quality``'s test frames best without learning);
            also the ``m`` of ``spike_base="intervals"``.
        spike_base: one of :data:`SPIKE_BASES`: ``"intervals"`` adds the spike luminance base
            (:class:`~svrt_model.spike.base.SpikeLumaBase`) to the output; needs a bit input (``spike_input``
            ``"raw"`` or ``"intervals"``) and spikes (not ``rgb_only``).
        spike_base_gain: ``spike_base``: the luminance in [0, 1] of a pixel firing once per frame (the
            integrate-and-fire threshold; 2.0 is ``svrt-data synth``'s default sensor); also the scale of
            ``centre_rates``.
        centre_rates: ``m`` values (each >= 1, distinct; empty: none): the spike encoder also reads, for each,
            the luminance the spikes' intervals give at each frame's exposure centre (``spike_base_gain`` times
            the rate from ``m`` spikes on each side, :func:`~svrt_model.spike.base.exposure_rates`), as extra
            input channels after the K bins. Count bins lose the spike times inside a bin; these keep them
            (exact-time estimates of the sharp frame, short ``m`` for moving edges, long ``m`` for flat
            areas). Needs a bit input and ``fusion="cross_attention"``.
        refine_channels: ``spike_base="refined"``: the width of its :class:`~svrt_model.spike.base.LumaRefiner`.
        refine_rates: ``spike_base="refined"``: the ``m`` values (distinct, >= 1) whose interval luminance the
            refiner reads (with the base's own ``interval_spikes`` and the blurry luma).
        refine_bins: ``spike_base="refined"``: the refiner also reads the interval luminance (``interval_spikes``
            spikes on each side) at each of the K bins' centres, the readings across the exposure
            (:func:`~svrt_model.spike.base.bin_rates`): K more input channels.
        base_into: one of :data:`BASE_TARGETS`, for a ``spike_base``: ``"output"`` adds the base to the
            backbone's output; ``"input"`` adds it to the blurry frames the backbone reads, so its attention,
            alignment and SpyNet flows see the spike-corrected luminance and its residual corrects the base.
            Both start from the same output with the identity start.
        base_chroma: one of :data:`BASE_CHROMAS`, for a ``spike_base``: ``"colorline"`` recolours the base along
            the blurry frame's local colour lines in windows of ``colorline_radius`` at the spike size.
        colorline_radius: ``base_chroma="colorline"``: the windows' radius r (>= 1; (2r+1)^2 spike pixels).
        chunk_tokens: None (every pixel at once) or the most pixel sequences (B x pixels) a temporal
            attention block processes at a time; bounds transient memory, never changes results.
        attention: one of :data:`SPIKE_ATTENTION_IMPLS` (initial value of ``VRTSpike.set_spike_attention``).
        encoder_activation: one of :data:`ENCODER_ACTIVATIONS`.
        spike_resize: one of :data:`SPIKE_RESIZES`.
    """

    vrt: VRTConfig = field(default_factory=svrt_baseline)
    spike_bins: int = 32
    channels_per_scale: tuple[int, ...] = (96, 96, 96, 96)
    temporal_strides: tuple[int, ...] = (1, 1, 1)
    spatial_strides: tuple[int, ...] = (2, 2, 2)
    tsa_heads: int = 4
    tsa_mlp_ratio: float = 2
    fuse_heads: int = 4
    fuse_mlp_ratio: float = 2
    fusion: str = "cross_attention"
    early_channels: int = 1
    fuse_zero_init: bool = False
    spike_input: str = "voxels"
    chunk_tokens: int | None = None
    attention: str = "fused"
    raw_init_gamma: float = 1.0
    interval_spikes: int = 2
    encoder_activation: str = "relu"
    spike_resize: str = "bilinear"
    spike_base: str = "none"
    spike_base_gain: float = 2.0
    centre_rates: tuple[int, ...] = ()
    refine_channels: int = 48
    refine_rates: tuple[int, ...] = (1, 2, 3, 4, 6)
    refine_bins: bool = False
    base_into: str = "output"
    base_chroma: str = "blurry"
    colorline_radius: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.vrt, Mapping):
            object.__setattr__(self, "vrt", VRTConfig.from_dict(self.vrt))
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ModelConfigError(f"VRTSpikeConfig.{name}: expected a list of integers, got {value!r}")
            if not all(_is_int(v) for v in value):
                raise ModelConfigError(f"VRTSpikeConfig.{name}: expected integers only, got {list(value)!r}")
            object.__setattr__(self, name, tuple(value))
        _validate(self)

    @property
    def backbone(self) -> VRTConfig:
        """The VRT config the model builds: ``vrt`` with ``3 + early_channels`` inputs for early fusion."""
        if self.fusion == "early":
            return dataclasses.replace(self.vrt, in_chans=3 + self.early_channels)
        return self.vrt

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples become lists, ``vrt`` a dict of VRT keyword arguments), e.g. for YAML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, VRTConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VRTSpikeConfig:
        """Build from a mapping (``vrt`` a mapping of VRTConfig fields), naming every unknown key."""
        if not isinstance(values, Mapping):
            raise ModelConfigError(f"VRTSpikeConfig.from_dict: expected a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                f"VRTSpikeConfig: unknown keys {unknown}; expected some of {sorted(known)} (the original "
                "VRTWithSpike keywords plus svrt's own; dropout and chunk_cfg are not supported: use chunk_tokens)"
            )
        values = dict(values)
        if "vrt" in values and not isinstance(values["vrt"], (Mapping, VRTConfig)):
            raise ModelConfigError(
                f"VRTSpikeConfig.vrt: expected a mapping of VRTConfig fields, got {type(values['vrt']).__name__}"
            )
        return cls(**values)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(cfg: VRTSpikeConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ModelConfigError(f"VRTSpikeConfig.{name}={value!r} is unknown; expected one of {allowed}")


def _validate(cfg: VRTSpikeConfig) -> None:
    if not isinstance(cfg.vrt, VRTConfig):
        raise ModelConfigError(f"VRTSpikeConfig.vrt: expected a VRTConfig or a mapping, got {type(cfg.vrt).__name__}")
    _choice(cfg, "fusion", FUSIONS)
    _choice(cfg, "spike_input", SPIKE_INPUTS)
    _choice(cfg, "attention", SPIKE_ATTENTION_IMPLS)
    _choice(cfg, "encoder_activation", ENCODER_ACTIVATIONS)
    _choice(cfg, "spike_resize", SPIKE_RESIZES)
    g = cfg.raw_init_gamma
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:
        raise ModelConfigError(f"VRTSpikeConfig.raw_init_gamma={g!r}; expected a decay in (0, 1]")
    if not _is_int(cfg.interval_spikes) or cfg.interval_spikes < 1:
        raise ModelConfigError(f"VRTSpikeConfig.interval_spikes={cfg.interval_spikes!r}; expected an integer >= 1")
    _choice(cfg, "spike_base", SPIKE_BASES)
    g = cfg.spike_base_gain
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g < float("inf"):
        raise ModelConfigError(f"VRTSpikeConfig.spike_base_gain={g!r}; expected a positive number (the luminance "
                               "of one spike per frame)")
    if cfg.spike_base != "none" and cfg.spike_input not in BIT_INPUTS:
        raise ModelConfigError(f"VRTSpikeConfig.spike_base={cfg.spike_base!r} reads packed spike bits, but "
                               f"spike_input={cfg.spike_input!r}; set spike_input to one of {BIT_INPUTS} (and "
                               "data.spike_input=raw) or spike_base='none'")
    if cfg.spike_base != "none" and cfg.fusion == "rgb_only":
        raise ModelConfigError(f"VRTSpikeConfig.spike_base={cfg.spike_base!r} needs spikes, but fusion='rgb_only' "
                               "ignores them; set spike_base='none' or another fusion")
    if not isinstance(cfg.refine_bins, bool):
        raise ModelConfigError(f"VRTSpikeConfig.refine_bins={cfg.refine_bins!r}; expected true or false")
    if cfg.refine_bins and cfg.spike_base != "refined":
        raise ModelConfigError(f"VRTSpikeConfig.refine_bins=True feeds the refiner of spike_base='refined', but "
                               f"spike_base={cfg.spike_base!r}; set spike_base='refined' or refine_bins=False")
    for name, choices, verb in (("base_into", BASE_TARGETS, "places"), ("base_chroma", BASE_CHROMAS, "recolours")):
        _choice(cfg, name, choices)
        value = getattr(cfg, name)
        if value != choices[0] and cfg.spike_base == "none":  # choices[0]: the default, which needs no base
            raise ModelConfigError(f"VRTSpikeConfig.{name}={value!r} {verb} the spike luminance base, but "
                                   f"spike_base='none'; set spike_base to 'intervals' or 'refined', or "
                                   f"{name}={choices[0]!r}")
    if not _is_int(cfg.colorline_radius) or cfg.colorline_radius < 1:
        raise ModelConfigError(f"VRTSpikeConfig.colorline_radius={cfg.colorline_radius!r}; expected an integer >= 1 "
                               "(1: 3x3 windows at the spike size)")
    if not _is_int(cfg.refine_channels) or cfg.refine_channels < 1:
        raise ModelConfigError(f"VRTSpikeConfig.refine_channels={cfg.refine_channels!r}; expected an integer >= 1")
    for name in ("centre_rates", "refine_rates"):
        ms = getattr(cfg, name)
        if any(m < 1 for m in ms) or len(set(ms)) != len(ms):
            raise ModelConfigError(f"VRTSpikeConfig.{name}={list(ms)}; expected distinct integers >= 1 (spikes on "
                                   "each side of the exposure centre), e.g. [1, 2, 3, 4, 6]")
    if cfg.centre_rates and (cfg.spike_input not in BIT_INPUTS or cfg.fusion != "cross_attention"):
        raise ModelConfigError(f"VRTSpikeConfig.centre_rates={list(cfg.centre_rates)} are spike-encoder channels read "
                               f"from packed bits, but fusion={cfg.fusion!r}, spike_input={cfg.spike_input!r}; use "
                               f"fusion='cross_attention' with spike_input in {BIT_INPUTS} (and data.spike_input="
                               "raw), or centre_rates=[]")
    if not _is_int(cfg.spike_bins) or cfg.spike_bins < 1:
        raise ModelConfigError(f"VRTSpikeConfig.spike_bins={cfg.spike_bins!r}; expected an integer K >= 1")
    if cfg.vrt.in_chans != 3:
        raise ModelConfigError(
            f"VRTSpikeConfig.vrt.in_chans={cfg.vrt.in_chans}; expected 3 (the RGB backbone): early fusion adds "
            "its spike channels through early_channels"
        )
    for name, n in (("channels_per_scale", NUM_SCALES), ("temporal_strides", NUM_SCALES - 1),
                    ("spatial_strides", NUM_SCALES - 1)):
        value = getattr(cfg, name)
        if len(value) != n:
            raise ModelConfigError(f"VRTSpikeConfig.{name}: expected {n} entries, got {len(value)}: {list(value)}")
        if any(v < 1 for v in value):
            raise ModelConfigError(f"VRTSpikeConfig.{name}: every entry must be >= 1, got {list(value)}")
    for name in ("tsa_heads", "fuse_heads"):
        heads = getattr(cfg, name)
        if not _is_int(heads) or heads < 1:
            raise ModelConfigError(f"VRTSpikeConfig.{name}={heads!r}; expected a positive integer")
        for i, c in enumerate(cfg.channels_per_scale):
            if c % heads:
                raise ModelConfigError(
                    f"VRTSpikeConfig: channels_per_scale[{i}]={c} is not divisible by {name}={heads}; pick heads "
                    "dividing every scale's channels"
                )
    for name in ("tsa_mlp_ratio", "fuse_mlp_ratio"):
        ratio = getattr(cfg, name)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
            raise ModelConfigError(f"VRTSpikeConfig.{name}={ratio!r}; expected a positive number")
    if not _is_int(cfg.early_channels) or not 1 <= cfg.early_channels <= cfg.spike_bins:
        raise ModelConfigError(
            f"VRTSpikeConfig.early_channels={cfg.early_channels!r}; expected an integer in [1, spike_bins="
            f"{cfg.spike_bins}]"
        )
    if cfg.fusion == "early" and cfg.spike_bins % cfg.early_channels:
        raise ModelConfigError(
            f"VRTSpikeConfig: spike_bins={cfg.spike_bins} is not divisible by early_channels={cfg.early_channels}; "
            "early fusion averages equal groups of consecutive bins"
        )
    if not isinstance(cfg.fuse_zero_init, bool):
        raise ModelConfigError(f"VRTSpikeConfig.fuse_zero_init={cfg.fuse_zero_init!r}; expected True or False")
    if cfg.chunk_tokens is not None and (not _is_int(cfg.chunk_tokens) or cfg.chunk_tokens < 1):
        raise ModelConfigError(
            f"VRTSpikeConfig.chunk_tokens={cfg.chunk_tokens!r}; expected None (no chunking) or a positive integer"
        )
    if cfg.fusion == "cross_attention":
        stages = tuple(cfg.vrt.embed_dims[:NUM_SCALES])
        if tuple(cfg.channels_per_scale) != stages:
            raise ModelConfigError(
                f"VRTSpikeConfig: channels_per_scale={list(cfg.channels_per_scale)} must equal the backbone's stage "
                f"widths vrt.embed_dims[0:4]={list(stages)}: each scale is fused into the output of a VRT stage"
            )
        if any(s != 1 for s in cfg.temporal_strides):
            raise ModelConfigError(
                f"VRTSpikeConfig.temporal_strides={list(cfg.temporal_strides)}: cross-attention fusion needs all 1, "
                "because VRT keeps all T frames in every stage and each RGB frame attends to the spike features of "
                "the same T frames"
            )


def svrt_base(*, spynet_path: str | None = None, drop_path_rate: float = 0.2, fusion: str = "cross_attention",
              chunk_tokens: int | None = None) -> VRTSpikeConfig:
    """The S-VRT baseline (seed ``002``): T=5, 256 crops, K=32, 96 channels per scale, 4 heads, MLP ratio 2,
    on :func:`~svrt_model.config.svrt_baseline`."""
    return VRTSpikeConfig(
        vrt=svrt_baseline(spynet_path=spynet_path, drop_path_rate=drop_path_rate),
        spike_bins=32, channels_per_scale=(96,) * 4, temporal_strides=(1, 1, 1), spatial_strides=(2, 2, 2),
        tsa_heads=4, tsa_mlp_ratio=2, fuse_heads=4, fuse_mlp_ratio=2, fusion=fusion, chunk_tokens=chunk_tokens,
    )


def svrt_tiny(*, drop_path_rate: float = 0.0, fusion: str = "cross_attention", spike_bins: int = 8,
              frames: int = 6) -> VRTSpikeConfig:
    """A small model for CPU tests and demos: the golden files' configuration (VRT of 16/24 channels with
    ``[2]*7+[1]*4`` depths, K=8, 4 heads, MLP ratio 2); ``frames`` sets the window depth (T)."""
    vrt = VRTConfig(
        upscale=1, img_size=(frames, 64, 64), window_size=(frames, 8, 8), depths=(2,) * 7 + (1,) * 4,
        indep_reconsts=(9, 10), embed_dims=(16,) * 7 + (24,) * 4, num_heads=(2,) * 11, pa_frames=2,
        deformable_groups=4, drop_path_rate=drop_path_rate,
    )
    return VRTSpikeConfig(
        vrt=vrt, spike_bins=spike_bins, channels_per_scale=(16,) * 4, tsa_heads=4, tsa_mlp_ratio=2, fuse_heads=4,
        fuse_mlp_ratio=2, fusion=fusion,
    )


def load_config(path: str | Path) -> VRTSpikeConfig:
    """Read a YAML file holding a mapping of :class:`VRTSpikeConfig` fields (``vrt`` a mapping of
    ``VRTConfig`` fields); unknown keys are named (:meth:`VRTSpikeConfig.from_dict`)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ModelConfigError(f"{path}: cannot read the model config ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(values, Mapping):
        raise ModelConfigError(
            f"{path}: expected a mapping of VRTSpikeConfig fields (spike_bins: 32, vrt: {{...}}), got "
            f"{type(values).__name__}"
        )
    try:
        return VRTSpikeConfig.from_dict(values)
    except ModelConfigError as exc:
        raise ModelConfigError(f"{path}: {exc}") from exc
