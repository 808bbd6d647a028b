"""Restoring sequences straight from a raw dataset (blurry images, ``.dat`` spike streams, an align log).

No store is written: every temporal clip is read and voxelized on the fly with the store's own rules,
so the model sees exactly what ``svrt-data voxelize`` followed by the loader would give it. The sources
are planned by :func:`svrt_data.store.sources.plan_sequence_sources` (the store writer's planner: spike
ranges, windows in stored frame units), and a clip's voxels come from :func:`svrt_data.voxelize.voxelize`
over the stored frames ``[floor(min t0), ceil(max t1))`` with ``first_frame`` set, as the writer calls it
(bin edges in the same frame units: the same voxels, bit for bit), cast to the store's voxel dtype. For
a model fed raw bits (``SpikeTransform(spike_input="raw")``) the clip's packed frames and windows are
handed over instead, as the dataset delivers them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from svrt_data.align import read_align_log
from svrt_data.loader.assemble import SequenceAssembler
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store.layout import voxel_dtype
from svrt_data.store.sources import SequenceSource, plan_sequence_sources
from svrt_data.voxelize import voxelize
from svrt_errors import SvrtValueError
from svrt_model.metrics import to_uint8
from svrt_model.restore.restorer import (
    RestoredSequence,
    RestoreModel,
    clip_length,
    counted,
    evaluating,
    input_rules,
    restore_sequences,
)
from svrt_model.restore.tiling import InputRules, Tile, tile_starts, with_clip_len

__all__ = ["raw_clips", "restore_raw"]


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise SvrtValueError(f"{path}: cannot read this image ({exc}); replace the file or leave its sequence "
                             "out") from None


def raw_clips(source: SequenceSource, *, clip_len: int, overlap: int, spike_input: str, bins: int | None = None,
              mode: str = "count", backend: str = "auto") -> Iterator[dict[str, Any]]:
    """The temporal clips of one raw sequence as collated batches of one clip (the dataset's keys).

    Args:
        source: a planned sequence (:func:`plan_sequence_sources`).
        clip_len, overlap: the protocol's clip length (at most the sequence) and frame overlap.
        spike_input: ``"voxels"`` (``spikes``: K=``bins`` voxels of ``mode``, the store's dtype), ``"raw"``
            (``spike_bits``, ``spike_windows``, ``spike_first``, ``spike_len``) or ``"none"``.
        bins, mode, backend: voxelization of ``"voxels"`` input (the training store's K and mode).
    """
    n = source.n_frames
    spikes = source.spikes() if spike_input != "none" else None
    for start in tile_starts(n, clip_len, overlap):
        idx = np.arange(start, start + clip_len)
        blur = np.stack([_read_rgb(source.raw_root / source.blur_files[i]) for i in idx])
        if blur.shape[1:3] != source.rgb_shape:
            raise SvrtValueError(f"{source.key}: frame images of {blur.shape[1:3]}, expected {source.rgb_shape}")
        batch: dict[str, Any] = {
            "blur": torch.from_numpy(blur).permute(0, 3, 1, 2)[None].contiguous(),  # 1 T 3 H W
            "sequence": [source.key],
            "frames": torch.from_numpy(idx)[None],
        }
        if spikes is not None:
            win = source.windows[idx]
            lo, hi = int(np.floor(win[:, 0].min())), int(np.ceil(win[:, 1].max()))
            packed = spikes.packed(lo, hi)
            if spike_input == "voxels":
                vox = voxelize(packed, win, bins=bins, mode=mode, backend=backend, first_frame=lo)
                vox = np.asarray(vox.get() if hasattr(vox, "get") else vox, dtype=voxel_dtype(mode))
                batch["spikes"] = torch.from_numpy(vox)[None]
            elif spike_input == "raw":
                batch["spike_bits"] = torch.from_numpy(np.ascontiguousarray(packed))[None]
                batch["spike_windows"] = torch.from_numpy(win - lo)[None]
                batch["spike_first"] = torch.tensor([lo])
                batch["spike_len"] = torch.tensor([hi - lo])
            else:
                raise SvrtValueError(f"spike_input must be 'voxels', 'raw' or 'none', got {spike_input!r}")
        yield batch


def _frame_counts(key: str, n: int) -> SimpleNamespace:
    """What :class:`SequenceAssembler` reads of a dataset (its ``infos``' keys and frame counts), for one
    raw sequence."""
    return SimpleNamespace(infos=[SimpleNamespace(key=key, n_frames=n)])


def restore_raw(
    model: RestoreModel | torch.nn.Module,
    raw_root: str | os.PathLike,
    align_log: str | os.PathLike,
    *,
    tile: Tile | None,
    transform: SpikeTransform,
    bins: int | None = None,
    mode: str = "count",
    device: torch.device | str | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    clip_len: int | None = None,
    sequences: list[str] | None = None,
    blur_dir: str = "blur",
    rules: InputRules | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> Iterator[RestoredSequence]:
    """Restore every sequence of a raw dataset (module docstring), in the align log's order.

    Args:
        model, tile, transform, device, precision, batch_size, clip_len, rules, progress: as
            :func:`~svrt_model.restore.restorer.restore_split`.
        raw_root, align_log: the raw dataset and its align log (``svrt-data align``).
        bins, mode: voxels of ``transform.spike_input == "voxels"`` models: the K and mode of the store the
            model was trained on.
        sequences: names (``SEQ`` or ``split/SEQ``) to restore; default: all.
        blur_dir: the blurry frames' folder inside each sequence.
        backend: voxelize backend.
    """
    spike_input = transform.spike_input
    if spike_input == "voxels" and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise SvrtValueError(f"restore_raw: voxel input needs bins=K (the training store's), got {bins!r}")
    voxel_dtype(mode)  # validates the mode
    sources = plan_sequence_sources(raw_root, read_align_log(align_log), blur_dir=blur_dir, sharp_dir=None,
                                    sequences=sequences)
    rules = rules or input_rules(model)
    tile = with_clip_len(tile, clip_len)
    lengths = [clip_length(tile, s.n_frames) for s in sources]
    overlap = tile.frame_overlap if tile is not None else 0
    total = sum(len(tile_starts(s.n_frames, t, overlap)) for s, t in zip(sources, lengths, strict=True))
    bar = tqdm(total=total, unit="clip", disable=None if progress else True, desc="restore raw")
    with evaluating(model, device) as dev, bar:
        transform = transform.to(dev)
        for source, clip_len in zip(sources, lengths, strict=True):
            bar.set_postfix_str(source.key)
            assembler = SequenceAssembler(_frame_counts(source.key, source.n_frames))
            clips = raw_clips(source, clip_len=clip_len, overlap=overlap, spike_input=spike_input, bins=bins,
                              mode=mode, backend=backend)
            with torch.inference_mode():
                inputs = restore_sequences(model, counted(clips, bar), assembler, tile=tile, rules=rules,
                                           transform=transform, device=dev, precision=precision,
                                           batch_size=batch_size, keep=("blur",))
            yield RestoredSequence(
                name=source.sequence, key=source.key, output=to_uint8(assembler.result(source.key)),
                blur=inputs[source.key]["blur"], sharp=None,
                frame_names=[Path(f).stem for f in source.blur_files],
            )
