"""Training checkpoints: atomic files that ``torch.load(..., weights_only=True)`` reads, and ``load_model``.

A run directory holds ``last.pt`` (written every ``train.checkpoint_every`` steps and at the end),
``best.pt`` (the best validation PSNR so far), ``config.yaml`` (the resolved config) and the logs. A
checkpoint is a dict of plain values and tensors only:

``format``, ``version``, ``step`` (optimizer steps done), ``consumed`` (clips each rank has drawn from its
sampler), ``config`` (the resolved :class:`RunConfig` as a dict), ``model`` (state_dict), ``ema`` (state_dict
or None), ``optimizer``, ``scheduler``, ``scaler`` (state dicts; scaler None without fp16), ``rng`` (one
entry per rank: torch CPU and CUDA generator states, NumPy's and Python's, as tensors and ints),
``metrics`` (best validation PSNR so far and the last validation numbers).

Files are written beside the target and swapped in with ``os.replace``, so a crash (even SIGKILL) leaves
the previous checkpoint whole.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svrt_model import VRTSpike
from svrt_model.checkpoint import state_dict_mismatch
from svrt_model.errors import CheckpointError
from svrt_model.train.config import RunConfig
from svrt_model.train.schema import to_plain

__all__ = [
    "FORMAT",
    "RESUME_FREE_KEYS",
    "VERSION",
    "atomic_save",
    "atomic_write_text",
    "config_differences",
    "get_rng_state",
    "load_model",
    "read_checkpoint",
    "set_rng_state",
]

FORMAT = "svrt-train-checkpoint"
VERSION = 1

RESUME_FREE_KEYS = (
    "train.steps",
    "train.checkpoint_every",
    "train.device",
    "train.threads",
    "train.deterministic",
    "train.grad_checkpoint",
    "train.spike_checkpoint",
    "train.compile",
    "train.attention",
    "train.cuda_graph",
    "data.num_workers",
    "data.cache_bytes",
    "data.stats_frames",
    "loss.vgg_weights",
    "log",
)
"""Keys that may differ when resuming: they change neither the math nor the data order (``train.steps``
may grow or shrink to extend or end a run early; the cosine horizon follows the new value from the resume
step on, so only an unchanged ``train.steps`` continues the original curve exactly)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic(path: Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` (never a half-written file)."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file beside and swap it in."""
    _atomic(Path(path), lambda f: f.write(text.encode()))


# -- random number generators ---------------------------------------------------------------------------
def get_rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as weights-only-loadable values."""
    # the legacy global NumPy generator: what third-party code (and np.random.* calls) draw from
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only where the devices are present)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    legacy = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(legacy)  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


# -- reading --------------------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint (``weights_only=True``) and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass RUN_DIR/last.pt or RUN_DIR/best.pt of a run")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read as a torch file: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = sorted(blob)[:8] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(
            f"checkpoint {path} is not an svrt training checkpoint (expected format {FORMAT!r}, got {got}); "
            "official VRT weights load with svrt_model.load_official_checkpoint"
        )
    if blob.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: version {blob.get('version')!r}, this svrt reads version {VERSION}")
    return blob


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_differences(saved: RunConfig | Mapping[str, Any], new: RunConfig | Mapping[str, Any]) -> list[str]:
    """``["train.lr: 0.0002 -> 0.001", ...]``: keys that change the math or the data order (all but
    :data:`RESUME_FREE_KEYS`) whose values differ between two configs."""
    a = _flatten(saved.to_dict() if isinstance(saved, RunConfig) else to_plain(saved))
    b = _flatten(new.to_dict() if isinstance(new, RunConfig) else to_plain(new))

    def free(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in RESUME_FREE_KEYS)

    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if not free(key) and va != vb:
            show = ["(absent)" if v is missing else repr(v) for v in (va, vb)]
            out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def load_model(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    use_ema: bool | None = None,
) -> tuple[VRTSpike, RunConfig]:
    """The model of a training checkpoint, built from the checkpoint's own config, and that config.

    Args:
        path: ``RUN_DIR/last.pt`` or ``RUN_DIR/best.pt``.
        map_location: where the weights go.
        use_ema: the EMA weights (True), the trained weights (False), or the EMA weights when the run kept
            them (None).

    Returns:
        ``(model, config)``: the model in eval mode on ``map_location``; ``config.data`` holds the spike
        normalisation the run trained with, and ``svrt_model.train.build_transform(config)`` is the batch
        transform (uint8 to [0, 1], ``log1p``, that normalisation) to feed the model with.
    """
    blob = read_checkpoint(path, map_location=map_location)
    config = RunConfig.from_dict(blob["config"], source=f"checkpoint {path}")
    ema = blob.get("ema")
    if use_ema and ema is None:
        raise CheckpointError(f"checkpoint {path} has no EMA weights (train.ema_decay was null); pass use_ema=False")
    state = ema if (use_ema or (use_ema is None and ema is not None)) else blob["model"]
    model = VRTSpike(config.model.config)
    problems = state_dict_mismatch(model, state)
    if problems:
        raise CheckpointError(f"checkpoint {path}: weights do not match the model its config builds:\n{problems}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), config
