"""Loading official VRT checkpoints (e.g. ``006_VRT_videodeblurring_GoPro.pth``), strictly, with a report.

Official files hold ``{'params': state_dict}`` (KAIR also writes bare state_dicts); both load. A file
whose keys or shapes do not match the model raises :class:`CheckpointError` listing every missing,
unexpected and shape-mismatched key, instead of torch's generic error. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from svrt_model.errors import CheckpointError

__all__ = ["load_official_checkpoint", "read_state_dict", "state_dict_mismatch"]

_LIST_LIMIT = 20  # keys listed per category before "... and N more"


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LIST_LIMIT]
    more = f"\n    ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {s}" for s in shown) + more


def state_dict_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """A readable report of how ``state`` differs from ``model.state_dict()``; empty when it fits exactly.

    Lists missing keys (in the model, not in ``state``), unexpected keys (the reverse) and keys whose
    shapes differ (``name: file (..) vs model (..)``).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = []
    for key in sorted(set(own) & set(state)):
        theirs = state[key]
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
        if shape != tuple(own[key].shape):
            mismatched.append(f"{key}: file {shape} vs model {tuple(own[key].shape)}")
    parts = []
    if missing:
        parts.append(_listing("missing from the file", missing))
    if unexpected:
        parts.append(_listing("unexpected in the file", unexpected))
    if mismatched:
        parts.append(_listing("shape mismatch", mismatched))
    return "\n".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its state_dict (``file['params']`` or the bare dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a local .pth file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"checkpoint {path} cannot be read as a torch file: {exc}") from exc
    if isinstance(blob, Mapping) and "params" in blob:
        blob = blob["params"]
    if not isinstance(blob, Mapping) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(
            f"checkpoint {path}: expected {{'params': state_dict}} or a bare state_dict of tensors, got "
            f"{type(blob).__name__}" + (f" with keys {sorted(blob)[:8]}" if isinstance(blob, Mapping) else "")
        )
    return dict(blob)


def load_official_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an official VRT checkpoint into ``model`` strictly (names, shapes, buffers).

    Args:
        model: a :class:`svrt_model.vrt.VRT` built from the checkpoint's config.
        path: local ``.pth`` file: ``{'params': state_dict}`` or a bare state_dict.

    Raises:
        CheckpointError: the file is unreadable, or its keys/shapes differ from the model's; the
            message lists every missing, unexpected and mismatched key (build the model from the
            config the checkpoint was trained with).
    """
    state = read_state_dict(path)
    problems = state_dict_mismatch(model, state)
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match the model:\n{problems}\n"
            "Build the model from the config the checkpoint was trained with (e.g. svrt_model.config.gopro_deblurring "
            "for 006_VRT_videodeblurring_GoPro.pth)."
        )
    model.load_state_dict(state, strict=True)
