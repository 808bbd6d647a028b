"""Restoring whole sequences with the published test-time tiling (:mod:`svrt_model.restore.tiling`).

:func:`restore_clip` runs a model over the spatial patches of a clip (each an independent forward with
its own flows, batched) and blends them; :func:`restore_sequences` feeds it the temporal clips of every
sequence (read by :class:`svrt_data.dataset.SpikeDeblurDataset` in evaluation mode, whose clip starts
are exactly the protocol's) and puts each sequence back together in frame order with
:class:`svrt_data.dataset.SequenceAssembler`, which averages frames held by several clips.
:func:`restore_split` does this for a store's split. Outputs are rounded to uint8 frames
(:func:`svrt_model.metrics.to_uint8`), what PNGs hold and what metrics measure.

A model here is any callable ``model(rgb, spikes) -> (B, T, 3, H, W)`` with ``rgb`` ``(B, T, 3, H, W)`` in
``[0, 1]`` and ``spikes`` ``(B, T, K, Hs, Ws)`` (None for RGB-only input), e.g. ``VRTSpike``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from svrt_data.clip_geometry import AxisScale
from svrt_data.dataset import SequenceAssembler, SpikeDeblurDataset, make_loader, move_batch
from svrt_data.spike_transform import SpikeTransform
from svrt_data.store.layout import SEQUENCE_ATTR
from svrt_data.store.reader import SvrtStore
from svrt_errors import StoreError, SvrtValueError
from svrt_model.metrics import to_uint8
from svrt_model.precision import precision_context
from svrt_model.restore.tiling import InputRules, Tile, axis_plan, mirror_index
from svrt_model.vrt import VRT

__all__ = [
    "RestoreModel",
    "RestoredSequence",
    "input_rules",
    "model_device",
    "restore_clip",
    "restore_sequences",
    "restore_split",
]

RestoreModel = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``model(rgb (B, T, 3, H, W), spikes (B, T, K, Hs, Ws) | None) -> (B, T, 3, H, W)``."""


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


def restore_clip(
    model: RestoreModel,
    rgb: torch.Tensor,
    spikes: torch.Tensor | None,
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
        rgb: ``(B, T, 3, H, W)`` float in ``[0, 1]``, on the model's device.
        spikes: ``(B, T, K, Hs, Ws)`` or None.
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
    b, t, _, h, w = rgb.shape
    if spike_scale is None:
        hs, ws = (spikes.shape[-2], spikes.shape[-1]) if spikes is not None else (h, w)
        spike_scale = (AxisScale(h, hs), AxisScale(w, ws))
    sy, sx = spike_scale
    frame_multiple = rules.frame_multiple if tile.frames == 0 else 1
    t_pad = -(-max(t, rules.min_frames) // frame_multiple) * frame_multiple
    rgb, spikes = _pad_frames(rgb, t_pad), _pad_frames(spikes, t_pad)
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
        out = restore_clip(model, x["blur"], x.get("spikes"), tile=tile, rules=rules, batch_size=batch_size,
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
        sequences: names to restore (default: all of the split).
        sharp: read the sharp frames (True: required; None: when present).
        rules: the model's input rules (default: :func:`input_rules`).
        num_workers: DataLoader workers reading clips.
        progress: show a tqdm bar over clips.

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
    dev = model_device(model, device)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.to(dev).eval()
    transform = transform.to(dev)
    datasets = []
    for name in names:
        n = st.sequence(split, name).n_frames
        clip_len = min(tile.frames, n) if tile is not None and tile.frames else n
        stride = max(clip_len - tile.frame_overlap, 1) if tile is not None and tile.frames else clip_len
        datasets.append(SpikeDeblurDataset(store, split, clip_len=clip_len, stride=stride, mode="eval",
                                           spike_input=transform.spike_input, sequences=[name], sharp=sharp))
    bar = tqdm(total=sum(len(d) for d in datasets), unit="clip", disable=not progress, desc=f"restore {split}")
    try:
        for name, ds in zip(names, datasets, strict=True):
            bar.set_postfix_str(name)
            assembler = SequenceAssembler(ds)
            loader = make_loader(ds, batch_size=1, num_workers=num_workers, shuffle=False)
            with torch.inference_mode():
                inputs = restore_sequences(model, _counted(loader, bar), assembler, tile=tile, rules=rules,
                                           transform=transform, device=dev, precision=precision,
                                           batch_size=batch_size)
            key = ds.sequences[0]
            frames = inputs[key]
            yield RestoredSequence(name=name, key=key, output=to_uint8(assembler.result(key)), blur=frames["blur"],
                                   sharp=frames.get("sharp"),
                                   frame_names=_frame_names(st.sequence(split, name).attrs, assembler.n_frames[key]))
    finally:
        bar.close()
        if was_training:
            model.train()


def _counted(items: Iterable[Any], bar: tqdm) -> Iterator[Any]:
    for item in items:
        yield item
        bar.update(1)
