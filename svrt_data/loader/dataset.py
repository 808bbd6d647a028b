"""Training and evaluation clips from an svrt Zarr store, as a torch Dataset: :class:`SpikeDeblurDataset`.

``SpikeDeblurDataset(store, split, clip_len=5, crop=256)`` serves clips of ``T = clip_len`` consecutive
frames (which clips, and every random choice: :mod:`svrt_data.loader.clip_plan`; reading:
:mod:`svrt_data.loader.clip_reader`; checks: :mod:`svrt_data.loader.store_scan`). Everything is checked
when the dataset is built; workers only read.

An item is a dict (T frames; output crop ``h x w``; its spike crop ``hs x ws``; K voxel bins):

==================  =========================  ===================================================
key                 shape, dtype               meaning
==================  =========================  ===================================================
``blur``            ``(T, 3, h, w)`` uint8      blurry RGB frames, flipped/transposed as ``augment``
``sharp``           ``(T, 3, h, w)`` uint8      sharp frames (when the store has them and ``sharp``
                                               allows), transformed alike
``spikes``          ``(T, K, hs, ws)`` uint8    ``spike_input="voxels"``: voxel counts (float16 for
                                               stores of mode ``linear``), transformed alike
``spike_bits``      ``(S, hs, ws/8)`` uint8     ``spike_input="raw"``: packed spike frames
                                               ``[lo, lo + spike_len)`` of the sequence's ``spikes``
                                               array, upright rows, pixel x = bit ``x % 8`` of byte
                                               ``x // 8`` (little), transformed alike; frames
                                               ``spike_len..S-1`` are zero padding (S: the most any
                                               clip of the dataset needs, so batches stack)
``spike_windows``   ``(T, 2)`` float64          raw: ``[t0, t1)`` of each frame in ``spike_bits``
                                               frame units (``0 <= t0 < t1 <= spike_len``)
``spike_len``       int                        raw: valid frames of ``spike_bits``
``spike_first``     int                        raw: ``lo``, the stored frame ``spike_bits[0]`` holds;
                                               ``spike_windows + spike_first`` are the store's windows
                                               exactly (the subtraction was exact)
``sequence``        str                        ``split/name``
``frames``          ``(T,)`` int64              frame indices in the sequence (time order kept)
``crop``            ``(4,)`` int64              ``y0, x0, h, w`` of the RGB region read, in the
                                               stored frame, before flips/transposition
``spike_crop``      ``(4,)`` int64              the same region in spike pixels
``augment``         ``(3,)`` int64              ``flip_y, flip_x, transpose`` applied (in that order)
``index, epoch``    int                        the clip's number and epoch
==================  =========================  ===================================================

Stored uint8 stays uint8 until the GPU; :class:`svrt_data.loader.spike_transform.SpikeTransform` converts,
normalises and (for raw input) re-bins there. Voxelizing ``spike_bits[:spike_len]`` with the
windows ``spike_windows + spike_first`` and ``first_frame=spike_first`` (what ``SpikeTransform`` does)
gives exactly the stored voxels (the spatial transforms commute with binning).

Determinism: every random choice of clip ``i`` in epoch ``e`` comes from ``(seed, e, i)``. Indices may
be ints (using :meth:`SpikeDeblurDataset.set_epoch`) or :class:`~svrt_data.loader.sampler.ClipKey`
``(epoch, index)`` pairs, which is what :class:`~svrt_data.loader.sampler.ClipSampler` yields, so
persistent workers see the epoch without being told.

The loader that serves these items (:func:`~svrt_data.loader.recipe.make_loader`): see
:mod:`svrt_data.loader.recipe`; batches are collated by :func:`~svrt_data.loader.collate.collate_clips`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from svrt_data.loader.args import positive_int
from svrt_data.loader.batch_buffers import RELEASE_KEY, batch_buffer, torch_dtype
from svrt_data.loader.clip_plan import AUGMENTS, ClipPlan, ClipSpec
from svrt_data.loader.clip_reader import ClipReader
from svrt_data.loader.sampler import ClipKey
from svrt_data.loader.store_scan import SequenceInfo, scan_store
from svrt_errors import SvrtValueError

__all__ = ["SpikeDeblurDataset"]


def _crop(crop: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    pair = (crop, crop) if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool) else tuple(crop)
    if len(pair) != 2:
        raise SvrtValueError(f"crop must be an int, an (h, w) pair or None, got {crop!r}")
    return positive_int("crop height", pair[0]), positive_int("crop width", pair[1])


def _augment(augment: bool | str | None, mode: str) -> str:
    if augment is None:
        return "dihedral" if mode == "train" else "none"
    if augment is True:
        return "dihedral"
    if augment is False:
        return "none"
    if augment not in AUGMENTS:
        raise SvrtValueError(f"augment must be True, False, None or one of {AUGMENTS}, got {augment!r}")
    return augment


class SpikeDeblurDataset(Dataset):
    """Clips of blurry frames, spikes and (optionally) sharp frames from an svrt store.

    Args:
        store: the store folder (written by ``svrt-data voxelize``).
        split: the split to read (``""`` for stores without splits).
        clip_len: T, frames per clip.
        stride: training: starts per slot (each epoch serves one clip per slot; default T, so an
            epoch sees every frame about once); evaluation: distance between clip starts.
        crop: ``h`` or ``(h, w)`` of the RGB output crop (random in training, centred in evaluation),
            on the spike/RGB scale grid; None: full frames.
        spike_input: ``"voxels"`` (stored voxel counts), ``"raw"`` (packed bits + windows) or ``"none"``.
        augment: ``"dihedral"`` (flips and transposition: the 8 symmetries; True), ``"flips"``, ``"none"``
            (False); None: dihedral in training, none in evaluation.
        mode: ``"train"`` (random clips and crops) or ``"eval"`` (every frame, deterministic).
        seed: seeds every random choice, with the epoch and the index.
        sequences: names (``SEQ`` or ``split/SEQ``) to keep; None: all of the split.
        sharp: True requires sharp frames, False skips them, None loads them when all sequences have them.
        jitter: training: draw the first frame within its slot (else the slot's first frame).
        cache_bytes: per-process cache of decoded chunks (0: none); worth it when the decoded dataset
            (or the part a worker revisits) fits in memory.
        reader: ``"fast"`` (chunk-aligned shard reads) or ``"zarr"`` (zarr-python; slower reference).

    Raises:
        SvrtValueError, StoreError, StoreLayoutError, IncompleteSequenceError: at construction, naming the
            store or sequence, what was expected and got, and the fix.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        split: str,
        *,
        clip_len: int,
        stride: int | None = None,
        crop: int | tuple[int, int] | None = None,
        spike_input: Literal["voxels", "raw", "none"] = "voxels",
        augment: bool | Literal["none", "flips", "dihedral"] | None = None,
        mode: Literal["train", "eval"] = "train",
        seed: int = 0,
        sequences: Sequence[str] | None = None,
        sharp: bool | None = None,
        jitter: bool = True,
        cache_bytes: int = 0,
        reader: Literal["fast", "zarr"] = "fast",
    ) -> None:
        if mode not in ("train", "eval"):
            raise SvrtValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        clip_len = positive_int("clip_len", clip_len)
        stride = clip_len if stride is None else positive_int("stride", stride)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SvrtValueError(f"seed must be an integer >= 0, got {seed!r}")
        if isinstance(sequences, str):
            raise SvrtValueError(f"sequences must be a list of names, got the string {sequences!r}")
        crop_hw = _crop(crop)
        aug = _augment(augment, mode)
        self.store = str(store)
        self.split, self.mode, self.seed, self.epoch = split, mode, int(seed), 0
        self.spike_input = spike_input
        infos, read_sharp = scan_store(store, split, sequences=sequences, spike_input=spike_input, sharp=sharp,
                                       reader=reader)
        self.infos: list[SequenceInfo] = infos
        self.plan = ClipPlan([i.clip_source() for i in infos], clip_len=clip_len, stride=stride, crop=crop_hw,
                             mode=mode, augment=aug, seed=self.seed, jitter=jitter, raw_spikes=spike_input == "raw")
        self.reader = ClipReader(infos, spike_input=spike_input, sharp=read_sharp, reader=reader,
                                 cache_bytes=cache_bytes, max_spike_frames=self.plan.max_spike_frames)

    # -- description --------------------------------------------------------------------------------
    @property
    def clip_len(self) -> int:
        return self.plan.clip_len

    @property
    def sequences(self) -> list[str]:
        return [i.key for i in self.infos]

    @property
    def has_sharp(self) -> bool:
        return self.reader.sharp

    @property
    def bins(self) -> int | None:
        """K of the stored voxels (``spike_input="voxels"``), else None."""
        return self.infos[0].bins

    @property
    def max_spike_frames(self) -> int:
        """S of ``spike_bits`` (raw input), else 0."""
        return self.plan.max_spike_frames

    def __repr__(self) -> str:
        return (f"SpikeDeblurDataset({self.store!r}, {self.split!r}, mode={self.mode!r}, clips={len(self)}, "
                f"sequences={len(self.infos)}, clip_len={self.clip_len}, crop={self.plan.crop}, "
                f"spike_input={self.spike_input!r}, augment={self.plan.augment!r}, seed={self.seed})")

    def __len__(self) -> int:
        return len(self.plan)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for int indices (with persistent workers, index with :class:`ClipKey` instead)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise SvrtValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def spec(self, key: int | ClipKey | tuple[int, int]) -> ClipSpec:
        """The plan of one clip (frames, boxes, flips) without reading it."""
        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = self.epoch, key
        return self.plan.spec(int(index), int(epoch))

    # -- reading ------------------------------------------------------------------------------------
    def _item(self, spec: ClipSpec, arrays: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        item: dict[str, Any] = dict(tensors)
        if "spike_len" in arrays:
            item["spike_len"] = int(arrays["spike_len"])
            item["spike_first"] = int(arrays["spike_first"])
        item["sequence"] = self.infos[spec.seq].key
        item["frames"] = torch.from_numpy(spec.frames)
        item["crop"] = torch.tensor(spec.box, dtype=torch.int64)
        item["spike_crop"] = torch.tensor(spec.spike_box, dtype=torch.int64)
        item["augment"] = torch.tensor(spec.dihedral.code, dtype=torch.int64)
        item["index"] = spec.index
        item["epoch"] = spec.epoch
        return item

    def __getitem__(self, key: int | ClipKey | tuple[int, int]) -> dict[str, Any]:
        spec = self.spec(key)
        arrays = self.reader.read(spec)
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
        return self._item(spec, arrays, tensors)

    def __getitems__(self, keys: Sequence[int | ClipKey | tuple[int, int]]) -> list[dict[str, Any]]:
        """A whole batch: clips of equal shapes are read into one buffer per key (shared memory inside a
        DataLoader worker; reused when :func:`~svrt_data.loader.recipe.make_loader` set up a buffer ring),
        and items are views of it that :func:`~svrt_data.loader.collate.collate_clips` stacks without a copy."""
        specs = [self.spec(k) for k in keys]
        shapes = [self.reader.shapes(s) for s in specs]
        if not specs or any(s != shapes[0] for s in shapes[1:]):
            return [self[k] for k in keys]
        shared = torch.utils.data.get_worker_info() is not None
        ring = getattr(self, "_buffer_ring", None) if shared else None
        slot, release = ring.take() if ring is not None else ({}, None)
        batch = {k: batch_buffer(slot, k, (len(specs), *shape), torch_dtype(np.dtype(dtype)), shared)
                 for k, (shape, dtype) in shapes[0].items()}
        items = []
        for i, spec in enumerate(specs):
            views = {k: v[i] for k, v in batch.items()}
            arrays = self.reader.read(spec, {k: v.numpy() for k, v in views.items()})
            items.append(self._item(spec, arrays, views))
        # The small per-clip tensors (frames, boxes, augmentation) become rows of batch buffers too: every
        # tensor of a worker's batch is then one (reused) shared buffer, and none is copied when sent.
        for k, v in items[0].items():
            if k in batch or not isinstance(v, torch.Tensor) or any(it[k].shape != v.shape for it in items):
                continue
            buf = batch_buffer(slot, k, (len(items), *v.shape), v.dtype, shared)
            for i, it in enumerate(items):
                buf[i] = it[k]
                it[k] = buf[i]
        if release is not None:
            for it in items:
                it[RELEASE_KEY] = release
        return items
