"""A training checkpoint put to work: evaluate it on a store's split, or restore a store or a raw dataset into
PNG frames. The glue between :mod:`svrt_model.train` (the checkpoint and its run config) and
:mod:`svrt_model.restore` (tiling, metrics, outputs); ``svrt-model eval`` and ``svrt-model infer`` call it.

The run's own config decides the input: the spike representation (stored voxels or raw bits re-binned
to K), ``log1p`` and the normalisation statistics recorded at training time (so evaluation normalises
exactly as training did), and K. Inference from a raw dataset voxelizes with that K and the training
store's voxel mode (``count`` unless told otherwise; the run config does not record it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from svrt_data.align import read_align_log
from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store.reader import SvrtStore
from svrt_errors import SvrtValueError
from svrt_model.errors import CheckpointError
from svrt_model.restore import (
    EvalReport,
    RestoredSequence,
    SelfEnsemble,
    Tile,
    check_destination,
    dihedral_views,
    evaluate_split,
    restore_raw,
    restore_split,
    write_sequence_pngs,
)
from svrt_model.train import RunConfig, build_transform, load_model
from svrt_model.vrt_spike import VRTSpike

__all__ = ["LoadedCheckpoint", "default_device", "ensembled", "evaluate_checkpoint", "infer_checkpoint",
           "load_checkpoint", "resolve_tile"]


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to run: the model (eval mode, on its device), its input transform, its run config."""

    model: VRTSpike
    transform: SpikeTransform
    config: RunConfig


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint(path: str | os.PathLike, *, device: str | None = None, use_ema: bool | None = None
                    ) -> LoadedCheckpoint:
    """Load ``RUN_DIR/best.pt`` (or ``last.pt``) onto ``device`` (default: CUDA when available) with the
    transform its run trained with, producing float32 input (autocast decides the compute precision)."""
    dev = device or default_device()
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        raise SvrtValueError(f"device {dev!r} asked for, but CUDA is not available here; use --device cpu")
    try:
        model, config = load_model(path, map_location=dev, use_ema=use_ema)
    except CheckpointError as exc:  # torch's reasons span lines; a command's error is one line
        raise CheckpointError(" ".join(str(exc).split())) from exc
    transform = build_transform(config).float()
    transform.dtype = torch.float32  # a bf16 run's transform made bf16 input; autocast handles precision here
    return LoadedCheckpoint(model, transform.to(dev), config)


def ensembled(model: VRTSpike, views: int) -> VRTSpike | SelfEnsemble:
    """``model`` averaged over ``views`` flips / transpositions at test time, or itself when ``views`` is 1."""
    return model if views == 1 else SelfEnsemble(model, views)


def resolve_tile(tile: Tile | str | None, config: RunConfig) -> Tile | None:
    """``"clip"``: clips of the run's training length, whole frames (:meth:`Tile.clip`); a Tile or None as is."""
    if tile == "clip":
        return Tile.clip(config.data.clip_len)
    if tile is None or isinstance(tile, Tile):
        return tile
    raise SvrtValueError(f"tile: expected a Tile, None or 'clip', got {tile!r}")


def evaluate_checkpoint(
    path: str | os.PathLike,
    store: str | os.PathLike,
    split: str,
    *,
    tile: Tile | str | None,
    device: str | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    sequences: list[str] | None = None,
    use_ema: bool | None = None,
    ensemble: int = 1,
    num_workers: int = 0,
    progress: bool = True,
) -> EvalReport:
    """PSNR / SSIM of a checkpoint on ``store``'s ``split`` (:func:`svrt_model.restore.evaluate_split`);
    ``tile="clip"`` scores it on clips of its training length (:func:`resolve_tile`); ``ensemble``: views of
    the test-time self-ensemble (1, 2, 4, 8: :class:`svrt_model.restore.SelfEnsemble`; 1: the model alone)."""
    dihedral_views(ensemble)  # a bad count fails before the checkpoint loads
    ck = load_checkpoint(path, device=device, use_ema=use_ema)
    return evaluate_split(ensembled(ck.model, ensemble), store, split, tile=resolve_tile(tile, ck.config),
                          transform=ck.transform, precision=precision, batch_size=batch_size, sequences=sequences,
                          num_workers=num_workers, progress=progress)


def infer_checkpoint(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    split: str | None = None,
    raw: str | os.PathLike | None = None,
    align: str | os.PathLike | None = None,
    tile: Tile | str | None,
    device: str | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    sequences: list[str] | None = None,
    use_ema: bool | None = None,
    ensemble: int = 1,
    voxel_mode: str = "count",
    overwrite: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Restore every sequence of a store's split, or of a raw dataset with its align log, into
    ``out/<sequence>/<frame>.png`` (:func:`svrt_model.restore.write_sequence_pngs`); returns the folders.
    ``ensemble`` as :func:`evaluate_checkpoint`."""
    dihedral_views(ensemble)
    from_store, from_raw = store is not None or split is not None, raw is not None or align is not None
    if from_store == from_raw or (from_store and (store is None or split is None)) or (
            from_raw and (raw is None or align is None)):
        raise SvrtValueError("infer reads either a store (--store STORE.zarr --split SPLIT) or a raw dataset "
                             "(--raw RAW_DIR --align ALIGN.csv): give exactly one of the two pairs")
    names = _sequence_names(store, split, align, sequences)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SvrtValueError(f"sequence name(s) {twice} appear in several splits and would share a folder of {out}; "
                             "restore one split at a time with --sequences SPLIT/NAME,...")
    for name in names:  # refuse before any work is done
        check_destination(out, name, overwrite=overwrite)
    ck = load_checkpoint(path, device=device, use_ema=use_ema)
    model = ensembled(ck.model, ensemble)
    common = dict(tile=resolve_tile(tile, ck.config), transform=ck.transform, precision=precision,
                  batch_size=batch_size, sequences=sequences, progress=progress)
    restored: object
    if from_store:
        restored = restore_split(model, store, split, sharp=False, num_workers=num_workers, **common)
    else:
        restored = restore_raw(model, raw, align, bins=ck.model.config.spike_bins, mode=voxel_mode, **common)
    folders = []
    for seq in restored:
        folders.append(_write(out, seq, overwrite))
    return folders


def _sequence_names(store: str | os.PathLike | None, split: str | None, align: str | os.PathLike | None,
                    sequences: list[str] | None) -> list[str]:
    """The names of the sequences infer will write (their folders' names)."""
    if store is not None:
        keys = [k for k in SvrtStore(store).sequence_keys(include_incomplete=True) if k[0] == split]
    else:
        keys = list(read_align_log(align).sequences())
    wanted = set(sequences) if sequences is not None else None
    return [q for s, q in keys if wanted is None or q in wanted or f"{s}/{q}" in wanted]


def _write(out: str | os.PathLike, seq: RestoredSequence, overwrite: bool) -> Path:
    frames = seq.output.permute(0, 2, 3, 1).contiguous().numpy()  # N H W 3
    return write_sequence_pngs(out, seq.name, frames, seq.frame_names, overwrite=overwrite)
