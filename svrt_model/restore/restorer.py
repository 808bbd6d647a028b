"""Restoring whole sequences with the published test-time tiling (:mod:`svrt_model.restore.tiling`).

:func:`restore_clip` runs a model over the spatial patches of a clip (each an independent forward with
its own flows, batched) and blends them; :func:`restore_sequences` feeds it the temporal clips of every
sequence (read by :class:`svrt_data.loader.dataset.SpikeDeblurDataset` in evaluation mode, whose clip starts
are exactly the protocol's) and puts each sequence back together in frame order with
:class:`svrt_data.loader.assemble.SequenceAssembler`, which averages frames held by several clips.
:func:`restore_split` does this for a store's split. Outputs are rounded to uint8 frames
(:func:`svrt_model.metrics.to_uint8`), what PNGs hold and what metrics measure.

A model here is any callable ``model(rgb, spikes) -> (B, T, 3, H, W)`` with ``rgb`` ``(B, T, 3, H, W)`` in
``[0, 1]`` and ``spikes`` voxels ``(B, T, K, Hs, Ws)``, packed bits as
:class:`~svrt_model.spike.inputs.RawSpikes` (what ``SpikeTransform(raw_output="bits")`` leaves in a batch;
tiles are cut from the unpacked bits and packed again, :mod:`kernels.packed_bits`), or None for
RGB-only input; e.g. ``VRTSpike``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kernels.packed_bits import pack_bits, unpack_bits
from svrt_data.loader import SequenceAssembler, SpikeDeblurDataset, make_loader, move_batch
from svrt_data.loader.clip_geometry import AxisScale
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store.layout import SEQUENCE_ATTR
from svrt_data.store.reader import SvrtStore
from svrt_errors import StoreError, SvrtValueError
from svrt_model.errors import ModelInputError
from svrt_model.metrics import to_uint8
from svrt_model.precision import precision_context
from svrt_model.restore.tiling import InputRules, Tile, axis_plan, mirror_index, with_clip_len
from svrt_model.spike.inputs import RawSpikes, model_spikes
from svrt_model.vrt import VRT

__all__ = [
    "RestoreModel",
    "RestoredSequence",
    "clip_length",
    "counted",
    "evaluating",
    "input_rules",
    "model_device",
    "restore_clip",
    "restore_sequences",
    "restore_split",
]

RestoreModel = Callable[[torch.Tensor, "torch.Tensor | RawSpikes | None"], torch.Tensor]
"""``model(rgb (B, T, 3, H, W), spikes (B, T, K, Hs, Ws) | RawSpikes | None) -> (B, T, 3, H, W)``."""


@dataclass
class RestoredSequence:
    """One restored sequence; frames uint8 ``(N, 3, H, W)`` on the CPU, in frame order."""

    name: str  # the sequence's name in its split
    key: str  # ``split/name``
    output: torch.Tensor
    blur: torch.Tensor
    sharp: torch.Tensor | None
    frame_names: list[str]  # the source image names (stems) when the store recorded them, else 000000, ...


def input_rules(model: Any) -> InputRules:
    """The :class:`InputRules` of a VRT-based model: ``VRT`` itself or a model holding one as ``.vrt``
    (``VRTSpike``). Other models must pass ``rules=`` explicitly."""
    vrt = model if isinstance(model, VRT) else getattr(model, "vrt", None)
    if not isinstance(vrt, VRT):
        raise SvrtValueError(f"restore: cannot tell what input sizes a {type(model).__name__} accepts; pass "
                             "rules=InputRules(...) (VRT-based models: InputRules.for_vrt(config))")
    return InputRules.for_vrt(vrt.config)


def model_device(model: Any, device: torch.device | str | None = None) -> torch.device:
    """``device`` when given, else where the model's parameters are (the CPU for a parameterless callable)."""
    if device is not None:
        return torch.device(device)
    params = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return params.device if params is not None else torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: Any, device: torch.device | str | None) -> Iterator[torch.device]:
    """Move an ``nn.Module`` model to ``device`` (default: where it is) in eval mode; training mode comes back
    afterwards (validation inside a training loop). Yields the device."""
    dev = model_device(model, device)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.to(dev).eval()
    try:
        yield dev
    finally:
        if was_training:
            model.train()


def clip_length(tile: Tile | None, n_frames: int) -> int:
    """Frames per temporal clip of a sequence of ``n_frames`` (all of them when untiled in time)."""
    return min(tile.frames, n_frames) if tile is not None and tile.frames else n_frames


def counted(items: Iterable[Any], bar: tqdm) -> Iterator[Any]:
    """``items``, advancing ``bar`` by one after each."""
    for item in items:
        yield item
        bar.update(1)


def _full_float(x: torch.Tensor | None) -> torch.Tensor | None:
    """Half-precision input (a transform of a bf16 run) as float32: the weights are float32, and ``precision``
    (autocast) decides the compute precision."""
    return x.float() if x is not None and x.dtype in (torch.float16, torch.bfloat16) else x


def _pad_frames(x: torch.Tensor | None, length: int) -> torch.Tensor | None:
    if x is None or x.shape[1] == length:
        return x
    return x.index_select(1, mirror_index(x.shape[1], length).to(x.device))


def _patch(x: torch.Tensor, y0: int, x0: int, h: int, w: int, iy: torch.Tensor | None,
           ix: torch.Tensor | None) -> torch.Tensor:
    """A (B, T, C, h, w) window of x, mirror-padded along H / W by the index vectors (None: no padding)."""
    p = x[..., y0 : y0 + h, x0 : x0 + w]
    if iy is not None:
        p = p.index_select(-2, iy)
    if ix is not None:
        p = p.index_select(-1, ix)
    return p


def _check_clip(rgb: Any, spikes: Any, batch_size: Any) -> None:
    if not isinstance(rgb, torch.Tensor) or rgb.dim() != 5 or rgb.shape[2] != 3 or not rgb.is_floating_point():
        got = f"{rgb.dtype} {tuple(rgb.shape)}" if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise ModelInputError(f"restore_clip: rgb must be float frames (B, T, 3, H, W), got {got}")
    if isinstance(spikes, RawSpikes):
        bits, ranges = spikes.bits, spikes.ranges
        if bits.dim() != 4 or bits.shape[0] != rgb.shape[0] or ranges.dim() != 4 or ranges.shape[:2] != rgb.shape[:2]:
            raise ModelInputError(f"restore_clip: RawSpikes need bits (B, S, Hs, Ws/8) and ranges (B, T, K, 2) with "
                                  f"the frames' B, T = {tuple(rgb.shape[:2])}, got {tuple(bits.shape)} and "
                                  f"{tuple(ranges.shape)}")
    elif spikes is not None and (not isinstance(spikes, torch.Tensor) or spikes.dim() != 5
                                 or spikes.shape[:2] != rgb.shape[:2]):
        got = tuple(spikes.shape) if isinstance(spikes, torch.Tensor) else type(spikes).__name__
        raise ModelInputError(f"restore_clip: spikes must be (B, T, K, Hs, Ws) with the frames' B, T = "
                              f"{tuple(rgb.shape[:2])}, got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SvrtValueError(f"restore_clip: batch_size must be a positive integer, got {batch_size!r}")


def restore_clip(
    model: RestoreModel,
    rgb: torch.Tensor,
    spikes: torch.Tensor | RawSpikes | None,
    *,
    tile: Tile | None,
    rules: InputRules,
    spike_scale: tuple[AxisScale, AxisScale] | None = None,
    batch_size: int = 1,
    precision: str = "fp32",
) -> torch.Tensor:
    """Restore one clip patch by patch (the spatial half of the protocol; time is left to the caller).

    Args:
        model: see the module docstring.
        rgb: ``(B, T, 3, H, W)`` float in ``[0, 1]``, on the model's device (half precision is taken as
            float32; ``precision`` decides how the model computes).
        spikes: ``(B, T, K, Hs, Ws)``, :class:`RawSpikes` or None.
        tile: patch sizes (``tile.frames == 0`` also pads the clip to ``rules.frame_multiple`` frames, as the
            untiled protocol does); None: untiled.
        rules: what the model accepts (:func:`input_rules`).
        spike_scale: spike/RGB scales ``(y, x)``; default ``Hs/H`` and ``Ws/W``.
        batch_size: patches per forward (each patch of each clip is one batch element).
        precision: see :mod:`svrt_model.precision`.

    Returns:
        ``(B, T, 3, H, W)`` float32, each pixel the weighted mean of the patches that cover it.
    """
    tile = tile or Tile(0, 0, 0, 0, 0)
    _check_clip(rgb, spikes, batch_size)
    ranges = None
    if isinstance(spikes, RawSpikes):  # tiles of packed rows are cut from the unpacked bits
        ranges = spikes.ranges
        spikes = unpack_bits(spikes.bits, spikes.width)  # B S Hs Ws
    b, t, _, h, w = rgb.shape
    if spike_scale is None:
        hs, ws = (spikes.shape[-2], spikes.shape[-1]) if spikes is not None else (h, w)
        spike_scale = (AxisScale(h, hs), AxisScale(w, ws))
    sy, sx = spike_scale
    frame_multiple = rules.frame_multiple if tile.frames == 0 else 1
    t_pad = -(-max(t, rules.min_frames) // frame_multiple) * frame_multiple
    rgb = _pad_frames(_full_float(rgb), t_pad)
    if ranges is None:
        spikes = _pad_frames(_full_float(spikes), t_pad)
    else:  # padded frames repeat their bins' frame ranges; the bits stay as they are
        ranges = _pad_frames(ranges, t_pad)
    py = axis_plan(h, tile.height, tile.overlap, sy, multiple=rules.size_multiple, minimum=rules.min_size[0],
                   axis="height")
    px = axis_plan(w, tile.width, tile.overlap, sx, multiple=rules.size_multiple, minimum=rules.min_size[1],
                   axis="width")
    dev = rgb.device
    iy = py.index().to(dev) if py.padded != py.size else None
    ix = px.index().to(dev) if px.padded != px.size else None
    siy = py.spike_index().to(dev) if py.spike_padded != py.spike_size else None
    six = px.spike_index().to(dev) if px.spike_padded != px.spike_size else None
    boxes = [(i, j) for i in range(len(py.starts)) for j in range(len(px.starts))]
    total = torch.zeros((b, t, 3, h, w), dtype=torch.float32, device=dev)
    weight = torch.zeros((h, w), dtype=torch.float32, device=dev)
    for first in range(0, len(boxes), batch_size):
        group = boxes[first : first + batch_size]
        rgb_in = torch.cat([_patch(rgb, py.starts[i], px.starts[j], py.size, px.size, iy, ix) for i, j in group])
        spk_in = None
        if spikes is not None:
            spk_in = torch.cat([_patch(spikes, py.spike_starts[i], px.spike_starts[j], py.spike_size, px.spike_size,
                                       siy, six) for i, j in group])
        if ranges is not None:
            width = spk_in.shape[-1]
            spk_in = RawSpikes(pack_bits(spk_in), ranges.repeat(len(group), 1, 1, 1), width if width % 8 else None)
        with torch.inference_mode(), precision_context(precision, dev):
            out = model(rgb_in, spk_in)
        out = out.float()[:, :t, :, : py.size, : px.size].unflatten(0, (len(group), b))  # n B T 3 h w
        for k, (i, j) in enumerate(group):
            mask = py.weights[i].to(dev)[:, None] * px.weights[j].to(dev)[None, :]
            y0, x0 = py.starts[i], px.starts[j]
            total[..., y0 : y0 + py.size, x0 : x0 + px.size] += out[k] * mask
            weight[y0 : y0 + py.size, x0 : x0 + px.size] += mask
    return total / weight


def restore_sequences(
    model: RestoreModel,
    clips: Iterable[dict[str, Any]],
    assembler: SequenceAssembler,
    *,
    tile: Tile | None,
    rules: InputRules,
    transform: SpikeTransform,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 1,
    keep: tuple[str, ...] = ("blur", "sharp"),
) -> dict[str, dict[str, torch.Tensor]]:
    """Run ``model`` over collated clips (dataset batches, uint8, any sequence order) into ``assembler``.

    Returns, per sequence key, the uint8 frames of ``keep`` found in the clips, ``(N, 3, H, W)`` on the CPU
    (the inputs, for metrics and reports); the restored frames are ``assembler.result(key)``.
    """
    inputs: dict[str, dict[str, torch.Tensor]] = {}
    for batch in clips:
        x = transform(move_batch(batch, device))
        spikes = model_spikes(x)
        out = restore_clip(model, x["blur"], spikes, tile=tile, rules=rules, batch_size=batch_size,
                           precision=precision)
        assembler.add(out, batch["sequence"], batch["frames"])
        for bi, key in enumerate(batch["sequence"]):
            n = assembler.n_frames[key]
            seq = inputs.setdefault(key, {})
            for name in keep:
                if name in batch:
                    frames = batch[name][bi]
                    if name not in seq:
                        seq[name] = torch.zeros((n, *frames.shape[1:]), dtype=torch.uint8)
                    seq[name][batch["frames"][bi]] = frames
    return inputs


def _frame_names(attrs: dict, n: int) -> list[str]:
    files = ((attrs.get(SEQUENCE_ATTR) or {}).get("provenance") or {}).get("blur_files")
    if isinstance(files, list) and len(files) == n:
        return [Path(str(f)).stem for f in files]
    return [f"{i:06d}" for i in range(n)]


def restore_split(
    model: RestoreModel | nn.Module,
    store: str | os.PathLike,
    split: str,
    *,
    tile: Tile | None,
    transform: SpikeTransform,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    clip_len: int | None = None,
    sequences: list[str] | None = None,
    sharp: bool | None = None,
    rules: InputRules | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Iterator[RestoredSequence]:
    """Restore every sequence of a store's split, one at a time, in the store's order.

    Args:
        model: see the module docstring (an ``nn.Module`` is put in eval mode for the run and restored).
        store, split: the store (``svrt-data voxelize`` output) and split.
        tile: the protocol's tiles (:data:`svrt_model.restore.tiling.DEFAULT_TILE`), or None: untiled.
        transform: turns loader batches into model input (a :class:`SpikeTransform`; its ``spike_input``
            decides what is read); moved to ``device``.
        device: where the model runs; default: where its parameters are (the CPU for a parameterless callable).
        precision: ``fp32`` / ``tf32`` / ``bf16`` / ``fp16`` (autocast; outputs are blended in float32).
        batch_size: spatial patches per forward.
        clip_len: temporal clips of this many frames instead of ``tile.frames``
            (:func:`~svrt_model.restore.tiling.with_clip_len`; e.g. the training clip length).
        sequences: names to restore (default: all of the split).
        sharp: read the sharp frames (True: required; None: when present).
        rules: the model's input rules (default: :func:`input_rules`).
        num_workers: DataLoader workers reading clips.
        progress: show a tqdm bar over clips (on a terminal: tqdm stays silent when stderr is not a TTY).

    Yields:
        :class:`RestoredSequence`.
    """
    st = SvrtStore(store)
    names = [q for s, q in st.sequence_keys(include_incomplete=True) if s == split]
    if not names:
        raise StoreError(f"{st.path}: no split {split!r}; the store has splits {st.splits()}")
    if sequences is not None:
        unknown = [q for q in sequences if q not in names]
        if unknown:
            raise StoreError(f"{st.path}: split {split!r} has no sequence(s) {unknown}; it has {names}")
        names = [q for q in names if q in sequences]
    rules = rules or input_rules(model)
    tile = with_clip_len(tile, clip_len)
    datasets = []
    for name in names:
        clip_len = clip_length(tile, st.sequence(split, name).n_frames)
        stride = clip_len - tile.frame_overlap if tile is not None and tile.frames else clip_len
        datasets.append(SpikeDeblurDataset(store, split, clip_len=clip_len, stride=max(stride, 1), mode="eval",
                                           spike_input=transform.spike_input, sequences=[name], sharp=sharp))
    bar = tqdm(total=sum(len(d) for d in datasets), unit="clip", disable=None if progress else True,
               desc=f"restore {split}")
    with evaluating(model, device) as dev, bar:
        transform = transform.to(dev)
        for name, ds in zip(names, datasets, strict=True):
            bar.set_postfix_str(name)
            assembler = SequenceAssembler(ds)
            loader = make_loader(ds, batch_size=1, num_workers=num_workers, shuffle=False, persistent_workers=False)
            with torch.inference_mode():
                inputs = restore_sequences(model, counted(loader, bar), assembler, tile=tile, rules=rules,
                                           transform=transform, device=dev, precision=precision,
                                           batch_size=batch_size)
            key = ds.sequences[0]
            frames = inputs[key]
            yield RestoredSequence(name=name, key=key, output=to_uint8(assembler.result(key)), blur=frames["blur"],
                                   sharp=frames.get("sharp"),
                                   frame_names=_frame_names(st.sequence(split, name).attrs, assembler.n_frames[key]))
