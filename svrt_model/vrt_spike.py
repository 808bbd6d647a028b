"""``VRTSpike``: S-VRT, spike-camera-guided video deblurring on the VRT backbone (seeds ``002``/``003``).

Data flow of the default ``fusion="cross_attention"`` for RGB frames ``(B, T, 3, H, W)`` and spike
voxels ``(B, T, K, Hs, Ws)``:

1. spike input module (precomputed voxels pass through; raw packed bits are accumulated with learnable
   decays, ``spike_input="raw"``, or read as inter-spike-interval voxels, ``"intervals"``) ->
   :class:`SpikeEncoder3D`: 4 scales;
2. :class:`SpikeTemporalSA`: per-pixel self-attention over T at every scale;
3. the backbone runs; after each encoder stage 1-4 its ``encoder_hook`` fuses the stage output with
   the same scale's spike features (:class:`MultiScaleTemporalCrossAttnFuse`, spike features resized
   to the stage size), and the fused features replace the stage output: they feed the next stage and
   the decoder skips. No monkey-patching: the hook is an argument of ``VRT.forward``.

``fusion="early"`` concatenates ``early_channels`` spike channels (bin-group means, resized to the RGB
size) to the RGB input of a VRT with ``3 + early_channels`` input channels (SpyNet and the output
residual use RGB only); ``fusion="rgb_only"`` is the plain backbone. With ``spike_base="intervals"`` the
output also adds the spike luminance base (:class:`~svrt_model.spike.base.SpikeLumaBase`: the blurry
luminance replaced by the one the spikes' intervals read at each frame's centre), so the learned residual
starts from that estimate instead of from the blurry frames; ``spike_base="refined"`` corrects that reading by a
small learned CNN first, and ``centre_rates`` feeds such readings to the spike encoder as extra channels.
``base_chroma="colorline"`` recolours the base along the blurry frames' local colour lines (the spikes carry no
colour); ``base_into="input"`` adds it to the frames the backbone reads instead of to its output.

Parameter names are the original implementation's (``vrt.*``, ``spike_encoder.*``,
``spike_temporal_sa.blocks.i.*``, ``cross_attn_fuse.fuse_blocks.i.*``), so its checkpoints load with
``load_state_dict(strict=True)``; an official VRT checkpoint loads into ``model.vrt``
(:func:`~svrt_model.checkpoint.load_official_checkpoint`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from svrt_model.errors import ModelConfigError, ModelInputError
from svrt_model.spike.base import SpikeLumaBase, bin_rates, exposure_rates
from svrt_model.spike.encoder import SpikeEncoder3D
from svrt_model.spike.fusion import MultiScaleTemporalCrossAttnFuse
from svrt_model.spike.inputs import RawSpikes, build_spike_input, early_spike_channels
from svrt_model.spike.temporal_attention import SpikeTemporalSA
from svrt_model.spike.temporal_mha import ATTENTION_IMPLS, PixelAttentionBlock
from svrt_model.vrt import VRT, Flows
from svrt_model.vrt_spike_config import VRTSpikeConfig

__all__ = ["COMPILE_PARTS", "SPIKE_CHECKPOINT_PARTS", "VRTSpike"]

COMPILE_PARTS = ("attn", "ffn", "spike")
"""``compile_blocks`` parts: the backbone blocks' attention / MLP cores, and the spike attention blocks."""

SPIKE_CHECKPOINT_PARTS = ("encoder", "tsa", "fuse")


class VRTSpike(nn.Module):
    """VRT + spike fusion (see the module docstring).

    Args:
        config: hyper-parameters; see :class:`~svrt_model.vrt_spike_config.VRTSpikeConfig`.
    """

    def __init__(self, config: VRTSpikeConfig) -> None:
        super().__init__()
        if not isinstance(config, VRTSpikeConfig):
            raise ModelConfigError(f"VRTSpike: expected a VRTSpikeConfig, got {type(config).__name__}")
        self.config = config
        self.vrt = VRT(config.backbone)
        if config.fusion in ("cross_attention", "early"):
            self.spike_input = build_spike_input(config.spike_input, config.spike_bins,
                                                 init_gamma=config.raw_init_gamma,
                                                 interval_spikes=config.interval_spikes)
        # the interval rates the model reads: the encoder's centre_rates, then the base's (the refiner's
        # refine_rates, the base's own m last); contiguous slices, so no index tensor is made in a CUDA graph, and
        # an m listed twice is computed once (interval_rates)
        base_ms = ((config.refine_rates if config.spike_base == "refined" else ())
                   + ((config.interval_spikes,) if config.spike_base != "none" else ()))
        self._rate_ms = config.centre_rates + base_ms
        self._encoder_rates = len(config.centre_rates)
        if config.spike_base != "none":
            refine = len(base_ms) if config.spike_base == "refined" else 0
            self.spike_base = SpikeLumaBase(
                config.spike_base_gain, config.interval_spikes, refine, config.refine_channels,
                config.spike_bins if config.refine_bins else 0,
                config.colorline_radius if config.base_chroma == "colorline" else 0,
            )
        if config.fusion == "cross_attention":
            chans = config.channels_per_scale
            self.spike_encoder = SpikeEncoder3D(config.spike_bins + len(config.centre_rates), chans,
                                                config.temporal_strides, config.spatial_strides,
                                                activation=config.encoder_activation)
            self.spike_temporal_sa = SpikeTemporalSA(chans, config.tsa_heads, config.tsa_mlp_ratio)
            self.cross_attn_fuse = MultiScaleTemporalCrossAttnFuse(
                chans, config.fuse_heads, config.fuse_mlp_ratio, zero_init=config.fuse_zero_init
            )
            self.cross_attn_fuse.resize = config.spike_resize
            self.set_spike_attention(config.attention)
            self.set_spike_chunking(config.chunk_tokens)
        self.spike_checkpoint = "none"

    # ------------------------------------------------------------------ run-time switches
    def _pixel_blocks(self, part: str | None = None) -> list[PixelAttentionBlock]:
        if self.config.fusion != "cross_attention":
            return []
        blocks: list[PixelAttentionBlock] = []
        if part in (None, "tsa"):
            blocks += list(self.spike_temporal_sa.blocks)
        if part in (None, "fuse"):
            blocks += list(self.cross_attn_fuse.fuse_blocks)
        return blocks

    def set_attention(self, impl: str) -> None:
        """The backbone's window attention: ``"fused"`` (SDPA), ``"flex"`` or ``"plain"`` (``VRT.set_attention``)."""
        self.vrt.set_attention(impl)

    def set_grad_checkpointing(self, policy: str = "all") -> None:
        """The backbone's checkpointing policy (see ``VRT.set_grad_checkpointing``); never changes numbers."""
        self.vrt.set_grad_checkpointing(policy)

    def set_deform_conv_backend(self, backend: str) -> None:
        """Backend of the backbone's deformable convolutions (see ``VRT.set_deform_conv_backend``)."""
        self.vrt.set_deform_conv_backend(backend)

    def set_spike_attention(self, impl: str) -> None:
        """Per-pixel temporal attention of the spike blocks: ``"fused"`` (default) or ``"reference"``."""
        if impl not in ATTENTION_IMPLS:
            raise ModelConfigError(f"VRTSpike.set_spike_attention: unknown impl {impl!r}; expected one of "
                                   f"{ATTENTION_IMPLS}")
        for block in self._pixel_blocks():
            block.impl = impl

    def set_spike_chunking(self, chunk_tokens: int | None) -> None:
        """At most ``chunk_tokens`` pixel sequences per spike-attention call (None: all at once)."""
        if chunk_tokens is not None and (isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int)
                                         or chunk_tokens < 1):
            raise ModelConfigError(f"VRTSpike.set_spike_chunking: chunk_tokens={chunk_tokens!r}; expected None or "
                                   "a positive integer")
        for block in self._pixel_blocks():
            block.chunk_tokens = chunk_tokens

    def set_spike_checkpointing(self, parts: str = "none") -> None:
        """Recompute spike-branch activations in backward instead of keeping them; never changes numbers.

        Args:
            parts: ``"none"``, ``"all"`` or a ``+``-joined subset of ``encoder`` (the whole 3D-conv
                encoder), ``tsa`` (each temporal self-attention block, chunk by chunk) and ``fuse`` (each
                fusion block).
        """
        chosen = set() if parts == "none" else set(SPIKE_CHECKPOINT_PARTS) if parts == "all" else set(parts.split("+"))
        if not chosen <= set(SPIKE_CHECKPOINT_PARTS) or (parts not in ("none", "all") and not chosen):
            raise ModelConfigError(f"VRTSpike.set_spike_checkpointing: unknown parts {parts!r}; expected 'none', "
                                   f"'all' or a '+'-joined subset of {SPIKE_CHECKPOINT_PARTS}")
        for part in ("tsa", "fuse"):
            for block in self._pixel_blocks(part):
                block.checkpoint = part in chosen
        self.spike_checkpoint = "+".join(p for p in SPIKE_CHECKPOINT_PARTS if p in chosen) or "none"

    def compile_blocks(self, parts: str = "ffn") -> None:
        """``torch.compile`` parts of the model (first calls pay the compile time).

        Args:
            parts: ``"none"`` or a ``+``-joined subset of :data:`COMPILE_PARTS`: ``attn`` / ``ffn`` are the
                backbone's (``VRT.compile_blocks``), ``spike`` compiles every fused spike attention block
                (temporal self-attention and fusion) as one region.
        """
        chosen = set() if parts == "none" else set(parts.split("+"))
        if not chosen <= set(COMPILE_PARTS) or (parts != "none" and not chosen):
            raise ModelConfigError(f"VRTSpike.compile_blocks: unknown parts {parts!r}; expected 'none' or a "
                                   f"'+'-joined subset of {COMPILE_PARTS}")
        self.vrt.compile_blocks("+".join(p for p in ("attn", "ffn") if p in chosen) or "none")
        for block in self._pixel_blocks():
            block.set_compiled("spike" in chosen)

    # ------------------------------------------------------------------ checks
    def _check_rgb(self, rgb: torch.Tensor) -> None:
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 5 or rgb.shape[2] != 3:
            got = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
            raise ModelInputError(f"VRTSpike: expected RGB frames (B, T, 3, H, W), got {got}")
        if self.config.fusion != "early":  # early fusion checks the frames with their spike channels
            self.vrt.check_input(rgb)

    def _voxels(self, rgb: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        if spikes is None:
            raise ModelInputError(
                f"VRTSpike(fusion={self.config.fusion!r}) needs spikes (B, T, K={self.config.spike_bins}, Hs, Ws); "
                "got None (use fusion='rgb_only' for a model without spikes)"
            )
        vox = self.spike_input(spikes)
        b, t, _, h, w = rgb.shape
        sb, st, _, hs, ws = vox.shape
        if (sb, st) != (b, t):
            raise ModelInputError(
                f"VRTSpike: spikes have B={sb}, T={st} (shape {tuple(vox.shape)}) but the RGB frames have B={b}, T={t} "
                f"(shape {tuple(rgb.shape)}): give one spike voxel grid per RGB frame"
            )
        if hs < 1 or ws < 1 or abs(hs * w - ws * h) > max(h, w):  # the same field of view, to a pixel
            raise ModelInputError(
                f"VRTSpike: spike frames {hs}x{ws} do not cover the RGB frames {h}x{w} (different aspect ratio); "
                "crop spikes and frames to the same field of view (spikes may be at another resolution, e.g. half)"
            )
        return vox

    # ------------------------------------------------------------------ forward
    def encode_spikes(self, spikes: torch.Tensor) -> list[torch.Tensor]:
        """Spike features after the encoder and the temporal self-attention (cross-attention fusion only).

        Args:
            spikes: what the spike input module takes (voxels ``(B, T, K, Hs, Ws)``).

        Returns:
            4 tensors ``(B, C_i, T, H_i, W_i)`` (views of channels-last memory where the device keeps it).
        """
        if self.config.fusion != "cross_attention":
            raise ModelConfigError(f"VRTSpike.encode_spikes: fusion={self.config.fusion!r} has no spike encoder")
        vox = self.spike_input(spikes)
        return self._encode(self._encoder_input(vox, self._interval_rates(spikes, vox.dtype)))

    def _interval_rates(self, spikes: torch.Tensor | RawSpikes | None, dtype: torch.dtype) -> torch.Tensor | None:
        """Interval rates at each frame's exposure centre ``(B, T, M, Hs, Ws)``, one per ``m`` the encoder and
        the base read (one pass over the bits; None when neither reads any)."""
        ms = self._rate_ms
        return exposure_rates(spikes, ms, torch.promote_types(dtype, torch.float32)) if ms else None

    def _encoder_input(self, vox: torch.Tensor, rates: torch.Tensor | None) -> torch.Tensor:
        """The K voxel bins, then ``spike_base_gain`` times the ``centre_rates`` rates (luminance)."""
        n = self._encoder_rates
        if not n:
            return vox
        return torch.cat([vox, (self.config.spike_base_gain * rates[:, :, :n]).to(vox.dtype)], dim=2)

    def _encode(self, vox: torch.Tensor) -> list[torch.Tensor]:
        if "encoder" in self.spike_checkpoint and torch.is_grad_enabled():
            feats = checkpoint(self.spike_encoder, vox, use_reentrant=False)
        else:
            feats = self.spike_encoder(vox)
        return self.spike_temporal_sa(feats)

    def forward(
        self, rgb: torch.Tensor, spikes: torch.Tensor | RawSpikes | None = None, flows: Flows | None = None
    ) -> torch.Tensor:
        """Restore a clip.

        Args:
            rgb: ``(B, T, 3, H, W)`` blurry frames in [0, 1] (T >= 2; H, W as ``VRT.check_input`` wants).
            spikes: ``(B, T, K, Hs, Ws)`` voxels of the same frames, at the RGB size or another size with
                the same field of view (e.g. half); ignored (may be None) for ``fusion="rgb_only"``. With
                ``spike_input="raw"``: :class:`~svrt_model.spike.inputs.RawSpikes` (the loader's packed
                ``spike_bits`` ``(B, S, Hs, Ws/8)`` and ``spike_bin_ranges`` ``(B, T, K, 2)``, e.g.
                ``RawSpikes.from_batch(SpikeTransform(spike_input="raw", bins=K, raw_output="bits")(batch))``),
                accumulated by the model's learnable decays; with ``spike_input="intervals"`` the same, read as
                interval voxels.
            flows: None (SpyNet) or the backbone's ``(flows_backward, flows_forward)`` (see ``VRT.forward``).

        Returns:
            ``(B, T, 3, H, W)``.
        """
        self._check_rgb(rgb)
        fusion = self.config.fusion
        if fusion == "rgb_only":
            return self.vrt(rgb, flows)
        if fusion not in ("early", "cross_attention"):
            raise ModelConfigError(f"VRTSpike: unknown fusion {fusion!r}")
        vox = self._voxels(rgb, spikes)
        rates = self._interval_rates(spikes, rgb.dtype)
        base = self._base(rgb, spikes, rates)
        into_input = base is not None and self.config.base_into == "input"
        frames = rgb + base.to(rgb.dtype) if into_input else rgb  # the backbone restores from the base
        if fusion == "early":
            extra = early_spike_channels(vox, self.config.early_channels, tuple(rgb.shape[-2:]),
                                         self.config.spike_resize)
            out = self.vrt(torch.cat([frames, extra.to(rgb.dtype)], dim=2), flows)  # B T 3+E H W
        else:
            feats = self._encode(self._encoder_input(vox, rates))

            def fuse(stage: int, stage_out: torch.Tensor) -> torch.Tensor:
                return self.cross_attn_fuse.fuse_scale(stage - 1, stage_out, feats[stage - 1])

            out = self.vrt(frames, flows, encoder_hook=fuse)
        if base is None or into_input:
            return out
        return out + base.to(out.dtype)  # the spike luminance (and colours) on all three channels

    def _base(self, rgb: torch.Tensor, spikes: RawSpikes, rates: torch.Tensor | None) -> torch.Tensor | None:
        """The spike luminance base ``(B, T, 1 or 3, H, W)`` (None for ``spike_base="none"``)."""
        if self.config.spike_base == "none":
            return None
        bins = (bin_rates(spikes, self.config.interval_spikes, torch.promote_types(rgb.dtype, torch.float32))
                if self.config.refine_bins else None)
        return self.spike_base(rgb, spikes, None if rates is None else rates[:, :, self._encoder_rates:], bins)
