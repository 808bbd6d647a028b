"""VRT, the video restoration transformer (Liang et al., "VRT: A Video Restoration Transformer", 2022),
deblurring branch (``upscale=1``, ``pa_frames=2``), parameter-compatible with the official code.

Forward pass for frames ``x`` ``(B, T, 3, H, W)``:

1. flows between neighbours at 4 scales (SpyNet, or given);
2. "nearest4" pre-alignment of the neighbours' pixels, ``conv_first`` on 27 channels;
3. stages 1-4 (encoder; optional ``encoder_hook`` after each), stages 5-7 (decoder, with skips),
   stage 8 (reconstruction groups), ``norm``;
4. ``conv_first output + conv_after_body(features)``, ``conv_last``, plus the input.

Internally features are channels-last ``(B, T, H, W, C)``; the official code transposes between
modules, which changes no value. Run-time switches: :meth:`VRT.set_attention` (fused SDPA or plain
matmul-softmax) and :meth:`VRT.set_grad_checkpointing`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from svrt_model.config import NUM_FEATURE_STAGES, STAGE_SCALES, VRTConfig
from svrt_model.errors import ModelConfigError, ModelInputError, UntrainedSpyNetWarning
from svrt_model.layers.attention import ATTENTION_IMPLS, WindowAttention, raise_recompile_limits
from svrt_model.layers.autocast import autocast_disabled
from svrt_model.layers.flow_warp import flow_warp_nearest4
from svrt_model.layers.mlp import MlpGEGLU
from svrt_model.layers.spynet import SpyNet, load_spynet_weights
from svrt_model.layers.stage import Stage
from svrt_model.layers.tmsa import RTMSA, TMSA

__all__ = [
    "BANDWIDTH_SAVERS", "CHECKPOINT_PARTS", "COMPILE_SAVERS", "SAVER_NEEDS", "EncoderHook", "Flows", "VRT",
    "align_images", "with_needed_savers",
]

EncoderHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(stage, feats)``: stage in 1..4, feats ``(B, C, T, H, W)``; returns a tensor of the same shape."""

Flows = tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]
"""``(flows_backward, flows_forward)``: 4 levels each, level i ``(B, T-1, 2, H/2^i, W/2^i)``."""

CHECKPOINT_PARTS = ("attn", "ffn", "align", "align-full", "align1", "attn-mutual", "attn8")
BANDWIDTH_SAVERS = (
    "residual", "mutual-proj", "mask-groups", "rel-bias", "window-gather", "mask-split", "pad-skip", "mlp-packed",
    "align-lean",
)
"""Changes that move or compute less for the same numbers (``VRT.set_bandwidth_savers``)."""
COMPILE_SAVERS = ("residual", "mutual-proj", "mask-groups")
"""Savers that compiled blocks keep (``VRT.compile_blocks``): the ones verified under ``torch.compile`` on the
H200. With the others on, the compiled tiny S-VRT's float32 gradients differed from eager by 5% on CUDA
(``conv_first``; the CPU agrees to 6e-5 and the eager savers pass on the H200): until that is explained,
compiling turns them off and ``compile_blocks("none")`` restores them."""
SAVER_NEEDS = {"mask-split": "window-gather", "pad-skip": "mask-split"}
"""Savers that only exist on top of another (a plan's segments need its gather; skipped rows need segments)."""


def with_needed_savers(name: str) -> str:
    """``name`` and the savers it needs (:data:`SAVER_NEEDS`), ``+``-joined in :data:`BANDWIDTH_SAVERS` order:
    the smallest valid ``set_bandwidth_savers`` argument that turns ``name`` on."""
    names = {name}
    while name in SAVER_NEEDS:
        name = SAVER_NEEDS[name]
        names.add(name)
    return "+".join(n for n in BANDWIDTH_SAVERS if n in names)


_RESHAPES = ("none", "down", "down", "down", "up", "up", "up")
_FLOW_LEVELS = 4
_STAGE_FLOW_LEVEL = (0, 1, 2, 3, 2, 1, 0)


def align_images(x: torch.Tensor, flow_backward: torch.Tensor, flow_forward: torch.Tensor) -> torch.Tensor:
    """Pixels of both neighbours pre-aligned to every frame ("nearest4"), beside the frame itself.

    Args:
        x: ``(B, T, C, H, W)``.
        flow_backward, flow_forward: ``(B, T-1, 2, H, W)`` full-size flows.

    Returns:
        ``(B, T, 9C, H, W)``: ``[x, next frame warped (4C), previous frame warped (4C)]``, zeros where a
        frame has no such neighbour.
    """
    b, t, c, h, w = x.shape
    src = torch.cat([x[:, 1:], x[:, :-1]], dim=1).flatten(0, 1)  # (B 2(T-1)) C H W
    flow = torch.cat([flow_backward, flow_forward], dim=1).flatten(0, 1)
    warped = flow_warp_nearest4(src, flow).to(x.dtype).view(b, 2 * (t - 1), 4 * c, h, w)
    zero = x.new_zeros(b, 1, 4 * c, h, w)
    x_backward = torch.cat([warped[:, : t - 1], zero], dim=1)
    x_forward = torch.cat([zero, warped[:, t - 1 :]], dim=1)
    return torch.cat([x, x_backward, x_forward], dim=2)


class VRT(nn.Module):
    """VRT for video deblurring; state_dict names and shapes equal the official model's.

    Args:
        config: hyper-parameters (official keyword names); default: the GoPro deblurring preset is
            NOT implied, pass one from :mod:`svrt_model.config`.
    """

    def __init__(self, config: VRTConfig) -> None:
        super().__init__()
        if not isinstance(config, VRTConfig):
            raise ModelConfigError(f"VRT: expected a VRTConfig, got {type(config).__name__}")
        self.config = config
        dims, depths = config.embed_dims, config.depths
        win = tuple(config.window_size)
        self.conv_first = nn.Conv3d(config.in_chans * 9, dims[0], kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.spynet = SpyNet()
        rates = torch.linspace(0, config.drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(len(depths) + 1)]
        for i in range(NUM_FEATURE_STAGES):
            stage = Stage(
                dims[i - 1], dims[i], depths[i], config.num_heads[i], win,
                reshape=_RESHAPES[i], mul_attn_ratio=config.mul_attn_ratio, mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias, qk_scale=config.qk_scale, drop_path=rates[starts[i]:starts[i + 1]],
                deformable_groups=config.deformable_groups, max_residue_magnitude=10 / STAGE_SCALES[i],
                alignment=config.alignment,
            )
            self.add_module(f"stage{i + 1}", stage)
        c6, c7 = dims[NUM_FEATURE_STAGES - 1], dims[NUM_FEATURE_STAGES]
        stage8: list[nn.Module] = [nn.Sequential(nn.Identity(), nn.LayerNorm(c6), nn.Linear(c6, c7))]
        for i in range(NUM_FEATURE_STAGES, len(depths)):
            window = (1, win[1], win[2]) if i in config.indep_reconsts else win
            stage8.append(RTMSA(
                dims[i], depths[i], config.num_heads[i], window, mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias, qk_scale=config.qk_scale, drop_path=rates[starts[i]:starts[i + 1]],
            ))
        self.stage8 = nn.ModuleList(stage8)
        self.norm = nn.LayerNorm(dims[-1])
        self.conv_after_body = nn.Linear(dims[-1], dims[0])
        self.conv_last = nn.Conv3d(dims[0], config.out_chans, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self._warned_spynet = False
        if config.spynet_path is not None:
            load_spynet_weights(self.spynet, config.spynet_path)
        self.set_grad_checkpointing("official")
        self._requested_savers: frozenset[str] = frozenset()  # set_bandwidth_savers' choice, compiled or not
        self._compiled = False  # any TMSA part compiled (compile_blocks): only COMPILE_SAVERS run then
        self.set_bandwidth_savers("all")

    # ------------------------------------------------------------------ run-time switches
    def set_attention(self, impl: str) -> None:
        """Window attention path of every block: ``"fused"`` (SDPA, default), ``"flex"`` (FlexAttention; its
        backward needs a GPU) or ``"plain"`` (reference)."""
        if impl not in ATTENTION_IMPLS:
            raise ModelConfigError(f"VRT.set_attention: unknown impl {impl!r}; expected one of {ATTENTION_IMPLS}")
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.impl = impl

    def _stage_groups(self) -> list[tuple[int, list[tuple[TMSA, bool]]]]:
        """(stage index into depths, [(block, is_in_an_attention-only second group)]) per stage."""
        groups = []
        for i in range(NUM_FEATURE_STAGES):
            stage = getattr(self, f"stage{i + 1}")
            blocks = [(b, False) for b in stage.residual_group1.blocks]
            blocks += [(b, True) for b in stage.residual_group2.blocks]
            groups.append((i, blocks))
        for j, layer in enumerate(self.stage8[1:]):
            groups.append((NUM_FEATURE_STAGES + j, [(b, False) for b in layer.residual_group.blocks]))
        return groups

    def set_grad_checkpointing(self, policy: str = "all") -> None:
        """Choose which activations are recomputed in backward instead of kept. Never changes numbers.

        Args:
            policy: ``"none"``; ``"official"`` (the default: what the official code does, i.e. the
                attention part of each stage's second group always, plus ``use_checkpoint_attn`` /
                ``use_checkpoint_ffn`` of the config outside ``no_checkpoint_*_blocks``); ``"all"``
                (``"attn+ffn+align"``); or a ``+``-joined set of parts: ``"attn"`` (attention part of
                every block), ``"attn-mutual"`` (attention part of the blocks of every stage's first,
                mutual-attention group: the most activations per token), ``"attn8"`` (attention part of
                the stage-8 blocks), ``"ffn"`` (MLP part of every block), ``"align"`` (the deformable
                alignment of stages 1-7), ``"align-full"`` (the alignment of the full-resolution stages
                1 and 7 only, which hold about three quarters of its activations and recompute),
                ``"align1"`` (stage 1's alignment only: its activations are kept the longest, through
                the peak at the start of backward, and its recompute comes last, when little else is
                held), e.g. ``"ffn+align1"`` (the fastest policy within the official memory, see
                benchmarks/RESULTS.md).
        """
        parts = self._parse_checkpoint_policy(policy)
        cfg = self.config
        for idx, blocks in self._stage_groups():
            for block, second_group in blocks:
                if policy == "official":
                    attn = second_group or (cfg.use_checkpoint_attn and idx not in cfg.no_checkpoint_attn_blocks)
                    ffn = cfg.use_checkpoint_ffn and idx not in cfg.no_checkpoint_ffn_blocks
                else:
                    feature_stage = idx < NUM_FEATURE_STAGES
                    attn = ("attn" in parts or ("attn-mutual" in parts and feature_stage and not second_group)
                            or ("attn8" in parts and not feature_stage))
                    ffn = "ffn" in parts
                block.checkpoint_attn = bool(attn)
                block.checkpoint_ffn = bool(ffn)
        full_resolution = (1, NUM_FEATURE_STAGES)  # stages 2-6 run at 1/2, 1/4, 1/8, 1/4, 1/2
        for i in range(1, NUM_FEATURE_STAGES + 1):
            getattr(self, f"stage{i}").checkpoint_align = (
                "align" in parts or ("align-full" in parts and i in full_resolution) or ("align1" in parts and i == 1)
            )
        self.checkpoint_policy = policy

    @staticmethod
    def _parse_checkpoint_policy(policy: str) -> set[str]:
        if policy in ("none", "official"):
            return set()
        if policy == "all":
            return set(CHECKPOINT_PARTS)
        parts = set(policy.split("+")) if isinstance(policy, str) else {repr(policy)}
        if not parts or not parts <= set(CHECKPOINT_PARTS):
            raise ModelConfigError(
                f"VRT.set_grad_checkpointing: unknown policy {policy!r}; expected 'none', 'official', 'all' or a "
                f"'+'-joined subset of {CHECKPOINT_PARTS} such as 'ffn+align'"
            )
        return parts

    def set_bandwidth_savers(self, names: str = "all") -> None:
        """Switch the bandwidth savers (all on by default): changes that move, keep or compute less and never
        change the numbers beyond rounding order (the golden parity holds with any set; float64 on == off to
        1e-12), so turning one off attributes its gain. While blocks are compiled (:meth:`compile_blocks`) only
        the chosen savers of :data:`COMPILE_SAVERS` run, whichever is called first; the others switch on when
        the blocks go back to eager. ``bandwidth_savers`` names the ones running.

        Args:
            names: ``"all"``, ``"none"`` or a ``+``-joined subset of :data:`BANDWIDTH_SAVERS`:
                ``residual`` (stochastic depth inside the residual addition, one pass instead of two),
                ``mutual-proj`` (the mutual blocks' output projection read from the attention outputs in
                place, without the two concatenated copies it would otherwise make and keep),
                ``mask-groups`` (shifted-window masks added as one broadcast bias per mask pattern instead
                of a bias materialised, and kept for backward, per masked window),
                ``rel-bias`` (the relative position bias gathered straight into its ``(nH, N, N)`` layout,
                cast once per block; its backward one ``index_add`` instead of a sorting ``index_put``),
                ``window-gather`` (a shifted or padded block's pad + roll + partition as one precomputed
                gather and the way back as one scatter, :mod:`~svrt_model.layers.window_plan`),
                ``mask-split`` (needs ``window-gather``: windows ordered by mask pattern, each group attends
                once with one broadcast bias; no window computed twice, no per-window mask on the device),
                ``pad-skip`` (needs ``mask-split``: in windows whose other frame is zero padding (T odd in
                the mutual blocks' 2-frame windows), no query rows, mutual direction or projection for
                the padding tokens, whose outputs are cropped away),
                ``mlp-packed`` (each GEGLU MLP's two input projections as one GEMM, forward and backward),
                ``align-lean`` (the alignment's offsets without concatenated and repeated copies, and the
                fusion MLP's input built channels-last in one copy).
        """
        chosen = set(BANDWIDTH_SAVERS) if names == "all" else set() if names == "none" else set(names.split("+"))
        if not chosen <= set(BANDWIDTH_SAVERS) or (names not in ("all", "none") and not chosen):
            raise ModelConfigError(
                f"VRT.set_bandwidth_savers: unknown names {names!r}; expected 'all', 'none' or a '+'-joined subset "
                f"of {BANDWIDTH_SAVERS}"
            )
        for saver, needed in SAVER_NEEDS.items():
            if saver in chosen and needed not in chosen:
                raise ModelConfigError(
                    f"VRT.set_bandwidth_savers: {saver!r} needs {needed!r} (got {names!r}); add {needed!r} or drop "
                    f"{saver!r}"
                )
        self._requested_savers = frozenset(chosen)
        self._apply_savers()

    def _apply_savers(self) -> None:
        """Switch the requested savers on (only those of :data:`COMPILE_SAVERS` while blocks are compiled)."""
        chosen = self._requested_savers & set(COMPILE_SAVERS) if self._compiled else self._requested_savers
        for m in self.modules():
            if isinstance(m, TMSA):
                m.fused_residual = "residual" in chosen
                m.grouped_masks = "mask-groups" in chosen
                m.window_gather = "window-gather" in chosen
                m.mask_split = "mask-split" in chosen
                m.pad_skip = "pad-skip" in chosen
            elif isinstance(m, WindowAttention):
                m.split_proj = "mutual-proj" in chosen
                m.fast_bias = "rel-bias" in chosen
            elif isinstance(m, MlpGEGLU):
                m.packed = "mlp-packed" in chosen
            elif isinstance(m, Stage):
                m.lean_fuse = m.pa_deform.lean = "align-lean" in chosen
        self.bandwidth_savers = "+".join(n for n in BANDWIDTH_SAVERS if n in chosen) or "none"

    def compile_blocks(self, parts: str = "ffn") -> None:
        """Compile parts of every TMSA block with ``torch.compile`` (first calls pay the compile time).

        Global side effect, not restored: compiling raises torch dynamo's process-wide recompile limits
        (``torch._dynamo.config.recompile_limit`` / ``cache_size_limit``) to at least 64, because every
        distinct block (shape, window, shift, mutual) is one compiled variant (~20 for VRT) and past the
        default limit dynamo runs the further variants eagerly. The limits stay raised for the whole process
        (compilation happens at the first calls, long after this method returns), also after
        ``parts="none"``; other compiled code in the process sees them too.

        Compiled blocks run only the savers of :data:`COMPILE_SAVERS` (the others chosen by
        :meth:`set_bandwidth_savers` are off while any part is compiled, before or after that call, and on
        again after ``parts="none"``).

        Args:
            parts: ``"none"`` (back to eager), ``"ffn"``, ``"attn"`` or ``"attn+ffn"``.
        """
        chosen = set() if parts == "none" else set(parts.split("+"))
        if not chosen <= {"attn", "ffn"} or (parts != "none" and not chosen):
            raise ModelConfigError(
                f"VRT.compile_blocks: unknown parts {parts!r}; expected 'none', 'ffn', 'attn' or 'attn+ffn'"
            )
        if chosen:  # one compiled variant per distinct (shape, window, shift, mutual) block: ~20 for VRT
            raise_recompile_limits()
        self._compiled = bool(chosen)
        self._apply_savers()
        for _, blocks in self._stage_groups():
            for block, _ in blocks:
                block.compile_parts(attn="attn" in chosen, ffn="ffn" in chosen)

    def set_deform_conv_backend(self, backend: str) -> None:
        """Backend of every alignment's op (``"auto"`` default): :func:`kernels.deform_conv.deform_conv2d`
        (``"reference"`` or ``"cuda"``), or :func:`kernels.deform_attn.deform_attn` with
        ``alignment="deform_attn"`` (where ``"reference"`` means its torch path)."""
        for i in range(NUM_FEATURE_STAGES):
            getattr(self, f"stage{i + 1}").pa_deform.backend = backend

    # ------------------------------------------------------------------ checks
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ModelInputError` unless ``x`` is ``(B, T>=2, in_chans, H, W)`` with H, W valid."""
        wh, ww = self.config.window_size[1:]
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[2] != self.config.in_chans:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelInputError(f"VRT: expected frames (B, T, {self.config.in_chans}, H, W), got {got}")
        if not x.is_floating_point():
            raise ModelInputError(f"VRT: expected floating-point frames in [0, 1], got dtype {x.dtype}")
        _, t, _, h, w = x.shape
        if t < 2:
            raise ModelInputError(f"VRT: needs at least 2 frames (T >= 2) for flows and mutual attention, got T={t}")
        if h % 8 or w % 8 or h < 8 * wh or w < 8 * ww:
            raise ModelInputError(
                f"VRT: frame size {h}x{w} is not supported; H and W must be multiples of 8 and at least "
                f"{8 * wh}x{8 * ww} (the 1/8 scale must hold one attention window). Pad the clip first "
                "(the official test protocol mirrors the bottom/right border), then crop the output."
            )

    def _check_flows(self, flows: Flows, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b, t, _, h, w = x.shape
        if not isinstance(flows, (tuple, list)) or len(flows) != 2:
            raise ModelInputError(
                "VRT: flows must be (flows_backward, flows_forward), each a list of 4 tensors, got "
                f"{type(flows).__name__}"
            )
        out = []
        for name, levels in zip(("flows_backward", "flows_forward"), flows, strict=True):
            if not isinstance(levels, (tuple, list)) or len(levels) != _FLOW_LEVELS:
                raise ModelInputError(f"VRT: {name} must be a list of {_FLOW_LEVELS} tensors (full, 1/2, 1/4, 1/8)")
            for i, f in enumerate(levels):
                want = (b, t - 1, 2, h // 2**i, w // 2**i)
                if not isinstance(f, torch.Tensor) or tuple(f.shape) != want:
                    got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                    raise ModelInputError(f"VRT: {name}[{i}] has shape {got}, expected {want}")
            out.append(list(levels))
        return out[0], out[1]

    # ------------------------------------------------------------------ forward
    def compute_flows(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """SpyNet flows between neighbours, official layout.

        Both directions run as one batch, outside autocast (flows are positions: float32 at least).

        Args:
            x: ``(B, T, 3, H, W)``.

        Returns:
            ``(flows_backward, flows_forward)``; level i ``(B, T-1, 2, H/2^i, W/2^i)``; backward[t] is
            the flow from frame t to t+1, forward[t] from frame t+1 to t.
        """
        if not self.spynet.weights_loaded and not self._warned_spynet:
            warnings.warn(
                "VRT: SpyNet weights were never loaded, so flows start untrained. Load an official VRT "
                "checkpoint (load_official_checkpoint), or set VRTConfig.spynet_path to a local "
                "spynet_sintel_final-3d2a1287.pth; nothing is downloaded.",
                UntrainedSpyNetWarning,
                stacklevel=3,
            )
            self._warned_spynet = True
        b, t, c, h, w = x.shape
        dtype = self.spynet.basic_module[0].basic_module[0].weight.dtype
        with autocast_disabled(x.device.type):
            x = x.to(dtype)
            first, second = x[:, :-1].reshape(-1, c, h, w), x[:, 1:].reshape(-1, c, h, w)
            flows = self.spynet(torch.cat([first, second]), torch.cat([second, first]))
        n = b * (t - 1)
        shapes = [(b, t - 1, 2, h // 2**i, w // 2**i) for i in range(_FLOW_LEVELS)]
        backward = [f[:n].view(s) for f, s in zip(flows, shapes, strict=True)]
        forward = [f[n:].view(s) for f, s in zip(flows, shapes, strict=True)]
        return backward, forward

    def forward_features(
        self,
        x: torch.Tensor,
        flows_backward: Sequence[torch.Tensor],
        flows_forward: Sequence[torch.Tensor],
        encoder_hook: EncoderHook | None = None,
    ) -> torch.Tensor:
        """Stages 1-8 and ``norm``: ``(B, T, H, W, C0)`` channels-last to ``(B, T, H, W, C_last)``."""

        def stage(i: int, feats: torch.Tensor) -> torch.Tensor:
            lvl = _STAGE_FLOW_LEVEL[i - 1]
            return getattr(self, f"stage{i}")(feats, flows_backward[lvl], flows_forward[lvl])

        def hook(i: int, feats: torch.Tensor) -> torch.Tensor:
            if encoder_hook is None:
                return feats
            view = feats.permute(0, 4, 1, 2, 3)  # B C T H W, no copy
            out = encoder_hook(i, view)
            if not isinstance(out, torch.Tensor) or out.shape != view.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelInputError(
                    f"VRT: encoder_hook(stage={i}) returned {got}; it must return a tensor of the input's shape "
                    f"{tuple(view.shape)} (B, C, T, H, W)"
                )
            return out.permute(0, 2, 3, 4, 1)  # B T H W C

        x1 = hook(1, stage(1, x))
        x2 = hook(2, stage(2, x1))
        x3 = hook(3, stage(3, x2))
        x4 = hook(4, stage(4, x3))
        x = stage(5, x4)
        x = stage(6, x + x3)
        x = stage(7, x + x2)
        x = x + x1
        for layer in self.stage8:
            x = layer(x)
        return self.norm(x)

    def forward(
        self,
        x: torch.Tensor,
        flows: Flows | None = None,
        encoder_hook: EncoderHook | None = None,
    ) -> torch.Tensor:
        """Restore a clip.

        Args:
            x: ``(B, T, in_chans, H, W)`` frames in [0, 1] (RGB first, then ``in_chans - 3`` extra channels);
                T >= 2; H, W multiples of 8 and >= 8 * window.
            flows: None (SpyNet computes them) or ``(flows_backward, flows_forward)`` in the official
                layout: 4 levels each, level i ``(B, T-1, 2, H/2^i, W/2^i)``, channel 0 = x.
            encoder_hook: optional ``hook(stage, feats) -> feats`` applied to the outputs of stages
                1-4 (``(B, C, T, H', W')``) before they feed the next stage and the decoder skips; the
                spike-fusion entry point.

        Returns:
            ``(B, T, 3, H, W)``.
        """
        self.check_input(x)
        rgb = x[:, :, :3] if x.shape[2] > 3 else x  # extra input channels (early fusion) stay out of flows
        if flows is None:
            flows_backward, flows_forward = self.compute_flows(rgb)
        else:
            flows_backward, flows_forward = self._check_flows(flows, x)
        inp = align_images(x, flows_backward[0], flows_forward[0])  # B T 9*Cin H W
        shallow = self.conv_first(inp.transpose(1, 2)).permute(0, 2, 3, 4, 1)  # B T H W C0
        feats = self.forward_features(shallow, flows_backward, flows_forward, encoder_hook)
        y = shallow + self.conv_after_body(feats)
        out = self.conv_last(y.permute(0, 4, 1, 2, 3))  # B 3 T H W
        return out.transpose(1, 2) + rgb
