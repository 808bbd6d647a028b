"""Optimisation pieces of the training loop: AdamW parameter groups, the learning-rate schedule, the frozen
warm-up of alignment parameters, the weight EMA and the non-finite step guard.

The frozen warm-up follows VRT's recipe (Liang et al. 2022, KAIR's ``fix_iter`` / ``fix_keys`` /
``fix_lr_mul``): for the first ``fix_iter`` steps the parameters whose names contain a ``fix_keys`` entry
(SpyNet and the deformable alignment) do not require gradients, so autograd does not even run SpyNet's
backward and AdamW skips them (no moments, no weight decay); afterwards they train at ``lr * fix_lr_mul``.
Under DistributedDataParallel the loop builds the wrapper with ``find_unused_parameters`` while any
parameter is frozen: globally unused parameters keep their gradient untouched (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from svrt_model.errors import TrainingError

__all__ = ["ModelEMA", "NonFiniteGuard", "build_optimizer", "build_scheduler", "lr_factor", "set_frozen"]


def _is_fixed(name: str, fix_keys: Sequence[str]) -> bool:
    return any(key in name for key in fix_keys)


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    fix_keys: Sequence[str] = (), fix_lr_mul: float = 1.0) -> torch.optim.AdamW:
    """AdamW with two groups: ``main`` (``lr``) and ``fixed`` (names containing a ``fix_keys`` entry,
    ``lr * fix_lr_mul``; omitted when empty). Parameters without ``requires_grad`` are left out."""
    main, fixed = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (fixed if _is_fixed(name, fix_keys) else main).append(p)
    groups = [{"params": main, "lr": lr, "name": "main"}]
    if fixed:
        groups.append({"params": fixed, "lr": lr * fix_lr_mul, "name": "fixed"})
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def lr_factor(step: int, *, steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate for the optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` (``(step + 1) / warmup_steps``), then ``"constant"`` (1) or
    ``"cosine"``: from 1 down to ``min_ratio`` at the last step, ``min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2``
    with ``p = (step - warmup) / (steps - warmup - 1)``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(steps - warmup_steps - 1, 1)
        p = min((step - warmup_steps) / span, 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"lr_factor: unknown schedule {schedule!r}; expected 'cosine' or 'constant'")


def build_scheduler(optimizer: torch.optim.Optimizer, *, steps: int, warmup_steps: int, schedule: str,
                    lr: float, min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every group (its state dict holds only numbers)."""
    ratio = min_lr / lr

    def factor(step: int) -> float:
        return lr_factor(step, steps=steps, warmup_steps=warmup_steps, schedule=schedule, min_ratio=ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_frozen(optimizer: torch.optim.Optimizer, frozen: bool) -> None:
    """Frozen warm-up on or off: the ``fixed`` group's parameters stop (or resume) requiring gradients."""
    for group in optimizer.param_groups:
        if group.get("name") == "fixed":
            for p in group["params"]:
                p.requires_grad_(not frozen)


class ModelEMA:
    """Exponential moving average of a model's state: ``ema = decay * ema + (1 - decay) * weights`` after each
    optimizer step, on floating-point tensors; integer buffers are copied."""

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ModelEMA: decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].detach() for k in floats], 1 - self.decay)
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(state[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) ^ set(state))
        if missing:
            raise TrainingError(f"ModelEMA: the saved EMA does not match the model (keys differ: {missing[:8]})")
        for k, v in state.items():
            self.shadow[k].copy_(v)


class NonFiniteGuard:
    """Counts optimizer steps whose loss or gradient norm is not finite; such steps are skipped by the loop.

    Raises :class:`TrainingError` once ``limit`` consecutive steps were non-finite (a diverged run, not a
    stray batch); ``skipped`` counts all of them.
    """

    def __init__(self, *, limit: int) -> None:
        self.limit = int(limit)
        self.consecutive = 0
        self.skipped = 0

    def check(self, step: int, finite: bool) -> bool:
        """Record step ``step`` (0-based); returns ``finite``. Raises past ``limit`` consecutive non-finite steps."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.limit:
            raise TrainingError(
                f"step {step}: {self.consecutive} consecutive steps with a non-finite loss or gradient "
                f"(train.max_nonfinite={self.limit}); the run diverged: lower train.lr, set train.grad_clip, "
                "or train in fp32/bf16 instead of fp16"
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive, self.skipped = int(state["consecutive"]), int(state["skipped"])
