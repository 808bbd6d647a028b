"""Training and evaluation clips from an svrt Zarr store, as a torch Dataset, and the loader recipe.

``SpikeDeblurDataset(store, split, clip_len=5, crop=256)`` serves clips of ``T = clip_len`` consecutive
frames (which clips, and every random choice: :mod:`svrt_data.loader.clip_plan`; reading:
:mod:`svrt_data.loader.clip_reader`). Everything is checked when the dataset is built; workers only read.

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
be ints (using :meth:`SpikeDeblurDataset.set_epoch`) or :class:`ClipKey` ``(epoch, index)`` pairs,
which is what :class:`ClipSampler` yields, so persistent workers see the epoch without being told.

Loader recipe (:func:`make_loader`): ``ClipSampler`` (shuffled per epoch from the seed; DDP-aware),
``__getitems__`` reading each batch into one buffer per key (in shared memory inside workers),
:func:`collate_clips` taking those buffers without a copy, ``persistent_workers=True``,
``pin_memory=True`` when CUDA is present, :func:`worker_init` (one thread per worker), then on the GPU
side :func:`move_batch` with ``non_blocking=True`` and a ``SpikeTransform``.
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from svrt_data.loader.clip_plan import AUGMENTS, ClipPlan, ClipSpec
from svrt_data.loader.clip_reader import ClipReader, SequenceInfo, scan_store
from svrt_errors import SvrtValueError

__all__ = [
    "ClipKey",
    "ClipSampler",
    "SequenceAssembler",
    "SpikeDeblurDataset",
    "collate_clips",
    "make_loader",
    "move_batch",
    "worker_init",
]

DEVICE_KEYS = ("blur", "sharp", "spikes", "spike_bits")  # what move_batch sends to the device


class ClipKey(NamedTuple):
    """A dataset index that carries its epoch (what :class:`ClipSampler` yields)."""

    epoch: int
    index: int


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SvrtValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _crop(crop: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    pair = (crop, crop) if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool) else tuple(crop)
    if len(pair) != 2:
        raise SvrtValueError(f"crop must be an int, an (h, w) pair or None, got {crop!r}")
    return _positive_int("crop height", pair[0]), _positive_int("crop width", pair[1])


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
        clip_len = _positive_int("clip_len", clip_len)
        stride = clip_len if stride is None else _positive_int("stride", stride)
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
        self.plan = ClipPlan([i.shape() for i in infos], clip_len=clip_len, stride=stride, crop=crop_hw, mode=mode,
                             augment=aug, seed=self.seed, jitter=jitter, raw_spikes=spike_input == "raw")
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
        DataLoader worker; reused round-robin when :func:`make_loader` set up a buffer ring), and items
        are views of it that :func:`collate_clips` stacks without a copy."""
        specs = [self.spec(k) for k in keys]
        shapes = [self.reader.shapes(s) for s in specs]
        if not specs or any(s != shapes[0] for s in shapes[1:]):
            return [self[k] for k in keys]
        shared = torch.utils.data.get_worker_info() is not None
        ring = getattr(self, "_buffer_ring", None) if shared else None
        slot, release = ring.take() if ring is not None else ({}, None)
        batch = {k: _batch_buffer(slot, k, (len(specs), *shape), _torch_dtype(np.dtype(dtype)), shared)
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
            buf = _batch_buffer(slot, k, (len(items), *v.shape), v.dtype, shared)
            for i, it in enumerate(items):
                buf[i] = it[k]
                it[k] = buf[i]
        if release is not None:
            for it in items:
                it[RELEASE_KEY] = release
        return items


RELEASE_KEY = "_svrt_release"
"""Batch key of a recycled buffer's in-use flag, removed in the main process (see _BufferRing)."""


class _BufferRing:
    """Batch buffers in shared memory that one worker reuses, so handing a batch to the main process
    does not fault in fresh shared memory each time (~4-5 ms per 4.6 MB clip measured on our VMs).

    Each slot has an in-use flag in a small shared array, and ``take`` marks a free slot in use.
    Tracked (without ``pin_memory``): the batch carries a view of its flag (:data:`RELEASE_KEY`) and
    travels as a :class:`_RecycledBatch`, which, unpickled in the main process, clears the flag once
    every shared tensor of the batch is gone (:func:`_release_when_dropped`), however long the loop
    kept it, and also when the DataLoader itself discards the batch. When no slot is free the batch
    goes to fresh shared memory, so a buffer still in use is never rewritten.
    Untracked (with ``pin_memory``): round robin. A slot comes back after ``len(slots) - 1`` later
    batches of the worker; the pin-memory thread has copied its batch by then (the DataLoader gives a
    worker a new task only while processing a later batch, keeping ``prefetch_factor`` per worker
    outstanding; ``slots`` is ``prefetch_factor + 2``).
    """

    def __init__(self, slots: int, tracked: bool) -> None:
        self.slots: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        self.tracked = tracked
        self.in_use = _empty((slots,), torch.int32, True).zero_()
        self.next = 0

    def take(self) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """``(slot, flag)``: a slot's buffers (an empty dict means fresh ones) and the flag to send."""
        n = len(self.slots)
        if not self.tracked:
            i, self.next = self.next, (self.next + 1) % n
            return self.slots[i], None
        flags = self.in_use.tolist()
        for step in range(n):
            i = (self.next + step) % n
            if flags[i] == 0:
                self.next = (i + 1) % n
                self.in_use[i] = 1
                return self.slots[i], self.in_use[i : i + 1]
        return {}, None  # every slot is still held by the main process: fresh buffers for this batch


class _RecycledBatch(dict):
    """A batch in a worker's recycled buffers (with its in-use flag): unpickled in the main process it
    becomes a plain dict whose buffers are released once nothing uses them."""

    def __reduce__(self) -> tuple:
        return _release_when_dropped, (dict(self),)


def _release_when_dropped(batch: dict[str, Any]) -> dict[str, Any]:
    """Main-process side of :class:`_BufferRing`: take the flag out of ``batch`` and clear it once the
    last shared tensor storage of the batch is freed (torch keeps a storage's Python object alive as
    long as any tensor, view or numpy array uses it, so its finalizer runs exactly then)."""
    flag = batch.pop(RELEASE_KEY, None)
    if flag is None:
        return batch
    storages = {}
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.is_shared():
            st = v.untyped_storage()
            storages[st.data_ptr()] = st
    left = [len(storages)]

    def gone() -> None:
        left[0] -= 1
        if left[0] == 0:
            flag.zero_()

    for st in storages.values():
        weakref.finalize(st, gone)
    if not storages:
        flag.zero_()
    return batch


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised tensor; in shared memory when ``shared`` (so sending it from a worker copies nothing,
    as torch's own default_collate does)."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    # set_ (not a view of a 1-D tensor): rows of the result must have it as their ``_base``, which is
    # how collate_clips recognises a batch buffer and hands it on without copying
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _batch_buffer(slot: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], dtype: torch.dtype,
                  shared: bool) -> torch.Tensor:
    """The buffer for ``key`` of a batch: the ring slot's when it fits (and becomes the slot's otherwise)."""
    buf = slot.get(key)
    if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
        buf = slot[key] = _empty(shape, dtype, shared)
    return buf


def _stacked_views(values: list[torch.Tensor]) -> torch.Tensor | None:
    """The batch tensor whose rows ``values`` are, in order, or None."""
    base = values[0]._base
    if base is None or base.dim() != values[0].dim() + 1 or base.shape[0] != len(values):
        return None
    for i, v in enumerate(values):
        if v._base is not base or v.data_ptr() != base[i].data_ptr() or v.shape != base.shape[1:]:
            return None
    return base


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors stacked on a new axis B (taken as is when the items are the rows of one
    ``__getitems__`` buffer), ints as int64 tensors, strings as lists."""
    if not items:
        raise SvrtValueError("collate_clips: no items to batch")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == RELEASE_KEY:  # one flag for the whole batch: sent as a _RecycledBatch (below)
            out[key] = values[0]
            continue
        if isinstance(values[0], torch.Tensor):
            base = _stacked_views(values)
            out[key] = base if base is not None else torch.stack(values)
        elif isinstance(values[0], (int, np.integer)):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = list(values)
    return _RecycledBatch(out) if RELEASE_KEY in out else out


def move_batch(batch: dict[str, Any], device: str | torch.device, *, non_blocking: bool = True) -> dict[str, Any]:
    """Send the pixel tensors (``blur``, ``sharp``, ``spikes``, ``spike_bits``) to ``device``; everything
    else (windows, indices, names) stays on the host, where the re-binning plan is computed."""
    return {k: (v.to(device, non_blocking=non_blocking) if k in DEVICE_KEYS else v) for k, v in batch.items()}


class ClipSampler(Sampler[ClipKey]):
    """Yields :class:`ClipKey` ``(epoch, index)``: a permutation drawn from ``(seed, epoch)`` (or index order),
    split across ``num_replicas`` DDP ranks like ``DistributedSampler`` (padded by wrapping around, or
    cut with ``drop_last``). Call :meth:`set_epoch` before each epoch.

    ``epochs > 1`` makes one pass yield epochs ``epoch .. epoch + epochs - 1`` back to back (for loops
    counted in iterations: the workers' prefetch queue never drains between epochs).
    """

    def __init__(self, dataset: SpikeDeblurDataset | Sequence, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False, epochs: int = 1) -> None:
        self.n = len(dataset)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.epochs = _positive_int("epochs", epochs)
        self.num_replicas = _positive_int("num_replicas", num_replicas)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise SvrtValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        self.rank, self.drop_last = int(rank), drop_last
        if self.n == 0:
            raise SvrtValueError("ClipSampler: the dataset is empty")
        if drop_last and self.n < num_replicas:
            raise SvrtValueError(f"ClipSampler: {self.n} clips cannot feed {num_replicas} replicas with drop_last")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _per_epoch(self) -> int:
        return self.n // self.num_replicas if self.drop_last else -(-self.n // self.num_replicas)

    def __len__(self) -> int:
        return self._per_epoch() * self.epochs

    def __iter__(self) -> Iterator[ClipKey]:
        total = self._per_epoch() * self.num_replicas
        for epoch in range(self.epoch, self.epoch + self.epochs):
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            else:
                order = np.arange(self.n)
            order = order[:total] if self.drop_last else np.resize(order, total)  # np.resize wraps around
            for i in order[self.rank :: self.num_replicas]:
                yield ClipKey(epoch, int(i))


def worker_init(worker_id: int, *, buffer_slots: int = 0, track_buffers: bool = False) -> None:
    """One compute thread per DataLoader worker (the workers are the parallelism); with
    ``buffer_slots > 0`` the worker's dataset reuses that many shared-memory batch buffers, with
    ``track_buffers`` only once the main process has dropped them (see :class:`_BufferRing`; batches
    must then be collated by :func:`collate_clips`, which sends them as :class:`_RecycledBatch`)."""
    torch.set_num_threads(1)
    from numcodecs import blosc

    blosc.use_threads = False
    if buffer_slots:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            info.dataset._buffer_ring = _BufferRing(buffer_slots, track_buffers)


def make_loader(
    dataset: SpikeDeblurDataset,
    *,
    batch_size: int,
    num_workers: int = 4,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int | None = 4,
    multiprocessing_context: str | None = None,
    num_replicas: int = 1,
    rank: int = 0,
    epochs: int = 1,
    reuse_buffers: bool | None = None,
) -> DataLoader:
    """The recommended DataLoader (module docstring). Call ``loader.sampler.set_epoch(epoch)`` before
    each epoch (with ``epochs=E`` one pass covers E epochs); ``shuffle``/``drop_last`` default to True in
    training and False in evaluation; ``pin_memory`` to whether CUDA is available; ``persistent_workers``
    to ``num_workers > 0``.

    ``reuse_buffers`` (default on): workers recycle ``prefetch_factor + 2`` shared-memory batch buffers
    instead of faulting in fresh shared memory for every batch (~4-5 ms per 4.6 MB clip on our CPU
    machine), and batches reach the loop without a copy. A buffer is reused only once the loop has
    dropped every tensor of its batch (or, with ``pin_memory``, once the pinned copy was made), so
    keeping batches is safe: while all buffers are held, workers fall back to fresh shared memory.
    Batches the DataLoader itself discards (the prefetched rest of an abandoned epoch) release theirs too."""
    train = dataset.mode == "train"
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    reuse = True if reuse_buffers is None else bool(reuse_buffers)
    sampler = ClipSampler(dataset, shuffle=train if shuffle is None else shuffle, seed=dataset.seed,
                          num_replicas=num_replicas, rank=rank, epochs=epochs)
    workers = int(num_workers)
    return DataLoader(
        dataset,
        batch_size=_positive_int("batch_size", batch_size),
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=pin,
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=(workers > 0) if persistent_workers is None else (persistent_workers and workers > 0),
        prefetch_factor=prefetch_factor if workers > 0 else None,
        worker_init_fn=functools.partial(worker_init, buffer_slots=(prefetch_factor or 2) + 2 if reuse else 0,
                                         track_buffers=not pin),
        multiprocessing_context=multiprocessing_context if workers > 0 else None,
    )


class SequenceAssembler:
    """Puts per-frame outputs of evaluation clips back into whole sequences.

    A frame held by several clips (``stride < clip_len``, or the clip aligned to the end) gets the mean
    of its outputs. ``add`` takes batches ``(B, T, ...)`` with the batch's ``sequence`` and ``frames``;
    ``result(seq)`` returns ``(N, ...)`` float32 once every frame has an output.
    """

    def __init__(self, dataset: SpikeDeblurDataset) -> None:
        self.n_frames = {i.key: i.n_frames for i in dataset.infos}
        self._sum: dict[str, torch.Tensor] = {}
        self._count: dict[str, torch.Tensor] = {}

    def add(self, outputs: torch.Tensor, sequences: Sequence[str], frames: torch.Tensor) -> None:
        outputs, frames = outputs.detach().to("cpu", torch.float32), frames.to("cpu", torch.int64)
        if outputs.shape[:2] != frames.shape or len(sequences) != outputs.shape[0]:
            raise SvrtValueError(f"SequenceAssembler.add: outputs {tuple(outputs.shape)} need frames (B, T) = "
                                 f"{tuple(outputs.shape[:2])} and B sequence names; got frames "
                                 f"{tuple(frames.shape)} and {len(sequences)} names")
        for b, seq in enumerate(sequences):
            if seq not in self.n_frames:
                raise SvrtValueError(f"SequenceAssembler.add: unknown sequence {seq!r}")
            if seq not in self._sum:
                self._sum[seq] = torch.zeros((self.n_frames[seq], *outputs.shape[2:]), dtype=torch.float32)
                self._count[seq] = torch.zeros(self.n_frames[seq], dtype=torch.int64)
            self._sum[seq].index_add_(0, frames[b], outputs[b])
            self._count[seq].index_add_(0, frames[b], torch.ones_like(frames[b]))

    def result(self, sequence: str) -> torch.Tensor:
        count = self._count.get(sequence)
        if count is None or (count == 0).any():
            have = 0 if count is None else int((count > 0).sum())
            raise SvrtValueError(f"SequenceAssembler: sequence {sequence!r} has outputs for {have} of its "
                                 f"{self.n_frames.get(sequence, '?')} frames; feed every clip of the eval dataset")
        shape = (-1,) + (1,) * (self._sum[sequence].dim() - 1)
        return (self._sum[sequence] / count.view(shape)).float()
