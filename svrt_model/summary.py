"""What a VRTSpike configuration costs: parameters per part and the activations a training step keeps.

Parts: the VRT backbone (``vrt.*``, SpyNet included), the spike encoder (``spike_input.*`` and
``spike_encoder.*``), the temporal self-attention (``spike_temporal_sa.*``) and the fusion
(``cross_attn_fuse.*``).

The activation estimate runs one training forward of the model on the ``meta`` device (shapes only:
nothing is allocated or computed) and adds up the distinct storages autograd saves for backward,
attributing each to the part whose module saved it. Attention is accounted as the CUDA fused kernels
keep it (inputs, output and log-sum-exp; not the attention matrix the CPU's math path keeps). That is
the memory a training step holds when its backward starts on a GPU, without gradient checkpointing,
in float32, for the given clip; it excludes parameters, gradients, optimizer state (reported
separately) and the short-lived temporaries of single operations. Under bf16 autocast most saved
tensors take half the bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from svrt_model.errors import ModelConfigError, UntrainedSpyNetWarning
from svrt_model.vrt_spike import VRTSpike
from svrt_model.vrt_spike_config import VRTSpikeConfig

__all__ = ["PARTS", "ModelSummary", "PartSummary", "summarize"]

PARTS = ("VRT backbone", "spike encoder", "temporal attention", "fusion")
_PREFIXES = {"vrt.": PARTS[0], "spike_input.": PARTS[1], "spike_encoder.": PARTS[1],
             "spike_temporal_sa.": PARTS[2], "cross_attn_fuse.": PARTS[3]}
_TRAINING_BYTES_PER_PARAMETER = 16  # float32 value + gradient + AdamW's two moments


@dataclass(frozen=True)
class PartSummary:
    """One part: parameter count and saved activations in bytes (None when not estimated)."""

    name: str
    parameters: int
    activation_bytes: int | None


@dataclass(frozen=True)
class ModelSummary:
    """Parameters and activation estimate of a configuration for one clip size."""

    config: VRTSpikeConfig
    clip: tuple[int, int, int, int]
    spike_size: tuple[int, int]
    parts: tuple[PartSummary, ...]

    @property
    def parameters(self) -> int:
        """All parameters."""
        return sum(p.parameters for p in self.parts)

    @property
    def activation_bytes(self) -> int | None:
        """All saved activations (None when not estimated)."""
        values = [p.activation_bytes for p in self.parts]
        return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]

    def format(self, title: str = "VRTSpike") -> str:
        """A plain-text table with a note on what the figures count."""
        b, t, h, w = self.clip
        cfg = self.config
        lines = [
            f"{title}: fusion={cfg.fusion}, clip {b}x{t}x3x{h}x{w}"
            + (f", spikes {b}x{t}x{cfg.spike_bins}x{self.spike_size[0]}x{self.spike_size[1]}"
               if cfg.fusion != "rgb_only" else ""),
            f"{'part':<20} {'parameters':>12} {'activations GiB':>16}",
        ]
        rows = [*self.parts, PartSummary("total", self.parameters, self.activation_bytes)]
        for p in rows:
            act = "-" if p.activation_bytes is None else f"{p.activation_bytes / 2**30:.3f}"
            lines.append(f"{p.name:<20} {p.parameters:>12,} {act:>16}")
        training_gib = self.parameters * _TRAINING_BYTES_PER_PARAMETER / 2**30
        lines.append(f"parameters + gradients + AdamW state (float32): {training_gib:.3f} GiB")
        if self.activation_bytes is not None:
            lines.append(
                "activations: distinct storages autograd keeps for backward after one training forward on a GPU "
                "(fused attention kernels), without gradient checkpointing, float32 (bf16 autocast stores most in "
                "half the bytes); traced on the meta device"
            )
        return "\n".join(lines)


def _part_of(name: str) -> str:
    for prefix, part in _PREFIXES.items():
        if name.startswith(prefix):
            return part
    raise ModelConfigError(f"summary: parameter {name!r} belongs to no known part")


@contextlib.contextmanager
def _attribution(model: VRTSpike, current: list[str]) -> Iterator[None]:
    """Set ``current[-1]`` to the part whose module is running (module hooks; removed on exit)."""
    modules: list[tuple[nn.Module, str]] = []
    for attr, part in (("spike_input", PARTS[1]), ("spike_encoder", PARTS[1]), ("spike_temporal_sa", PARTS[2])):
        if hasattr(model, attr):
            modules.append((getattr(model, attr), part))
    if hasattr(model, "cross_attn_fuse"):
        modules += [(block, PARTS[3]) for block in model.cross_attn_fuse.fuse_blocks]
    def leave(_module: nn.Module, _args: object, _out: object) -> None:  # returns None: keeps the output
        current.pop()

    handles = []
    for module, part in modules:
        handles.append(module.register_forward_pre_hook(lambda _m, _a, part=part: current.append(part)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _saved_activations(model: VRTSpike, clip: tuple[int, int, int, int], spike_size: tuple[int, int]) -> dict[str, int]:
    b, t, h, w = clip
    current = [PARTS[0]]
    seen: set[int] = set()
    totals = dict.fromkeys(PARTS, 0)

    def pack(x: torch.Tensor) -> torch.Tensor:
        storage = x.untyped_storage()
        if storage._cdata not in seen:  # views share their base's storage: count it once
            seen.add(storage._cdata)
            totals[current[-1]] += storage.nbytes()
        return x

    rgb = torch.empty(b, t, 3, h, w, device="meta")
    spikes = torch.empty(b, t, model.config.spike_bins, *spike_size, device="meta")
    with _attribution(model, current), torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model(rgb, None if model.config.fusion == "rgb_only" else spikes)
    return totals


def summarize(
    config: VRTSpikeConfig,
    *,
    clip: tuple[int, int, int] | None = None,
    batch: int = 1,
    spike_size: tuple[int, int] | None = None,
    activations: bool = True,
) -> ModelSummary:
    """Parameters per part and, optionally, the saved-activation estimate (see the module docstring).

    Args:
        config: the model.
        clip: ``(T, H, W)`` of the RGB clip; default ``config.vrt.img_size``.
        batch: clips per batch.
        spike_size: ``(Hs, Ws)`` of the spike voxels; default the RGB size.
        activations: trace a training forward to estimate saved activations (a few seconds for the base
            model; nothing is computed).

    Returns:
        a :class:`ModelSummary`.
    """
    if not isinstance(config, VRTSpikeConfig):
        raise ModelConfigError(f"summarize: expected a VRTSpikeConfig, got {type(config).__name__}")
    t, h, w = clip if clip is not None else config.vrt.img_size
    if batch < 1:
        raise ModelConfigError(f"summarize: batch={batch}; expected >= 1")
    spike_size = tuple(spike_size) if spike_size is not None else (h, w)
    config = dataclasses.replace(config, vrt=dataclasses.replace(config.vrt, spynet_path=None))  # nothing to read
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        model = VRTSpike(config)
    params = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        params[_part_of(name)] += p.numel()
    saved = None
    if activations:
        model.set_grad_checkpointing("none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedSpyNetWarning)
            saved = _saved_activations(model.train(), (batch, t, h, w), spike_size)
    parts = tuple(PartSummary(p, params[p], None if saved is None else saved[p]) for p in PARTS)
    return ModelSummary(config=config, clip=(batch, t, h, w), spike_size=spike_size, parts=parts)
