"""Optimisation pieces: the schedule's values, AdamW groups and the frozen warm-up, the EMA, the guard."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from svrt_model.errors import TrainingError
from svrt_model.train.optim import (
    ModelEMA,
    NonFiniteGuard,
    build_optimizer,
    build_scheduler,
    lr_factor,
    set_frozen,
)


class Standin(nn.Module):
    """Names like VRT's: a flow network and a deformable alignment beside ordinary layers."""

    def __init__(self) -> None:
        super().__init__()
        self.spynet = nn.Linear(3, 3)
        self.stage1 = nn.ModuleDict({"pa_deform": nn.Linear(3, 3), "linear": nn.Linear(3, 3)})
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage1["linear"](self.stage1["pa_deform"](self.spynet(x)))


def test_lr_factor_warmup_then_cosine() -> None:
    kw = {"steps": 11, "warmup_steps": 2, "schedule": "cosine", "min_ratio": 0.1}
    assert [lr_factor(s, **kw) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, **kw) == 1.0  # first step after warm-up: the peak
    assert lr_factor(10, **kw) == pytest.approx(0.1)  # last step: the floor
    assert lr_factor(6, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    values = [lr_factor(s, **kw) for s in range(2, 11)]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True))
    assert lr_factor(50, **kw) == pytest.approx(0.1)  # past the end (a shortened run) stays at the floor
    assert lr_factor(7, steps=11, warmup_steps=0, schedule="constant", min_ratio=0.0) == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_factor(0, steps=2, warmup_steps=0, schedule="linear", min_ratio=0.0)


def test_groups_frozen_warmup_and_schedule_state() -> None:
    torch.manual_seed(0)
    model = Standin()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99), fix_keys=("spynet", "deform"),
                          fix_lr_mul=0.25)
    sched = build_scheduler(opt, steps=10, warmup_steps=0, schedule="cosine", lr=1e-2, min_lr=1e-4)
    fixed = {id(p) for p in [*model.spynet.parameters(), *model.stage1["pa_deform"].parameters()]}
    assert [g["name"] for g in opt.param_groups] == ["main", "fixed"]
    assert {id(p) for p in opt.param_groups[1]["params"]} == fixed
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 2.5e-3]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_frozen(opt, True)
    model(torch.randn(4, 3)).square().sum().backward()
    assert all(p.grad is None for p in model.spynet.parameters()) and model.stage1["linear"].weight.grad is not None
    opt.step()
    sched.step()
    for n, p in model.named_parameters():
        frozen = "spynet" in n or "deform" in n
        assert torch.equal(p, before[n]) == frozen, n
    assert all(id(p) not in fixed for p in opt.state)  # no moments, no weight decay for frozen parameters
    set_frozen(opt, False)
    assert all(p.requires_grad for p in model.parameters())
    ratio = opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"]
    assert ratio == pytest.approx(0.25) and opt.param_groups[0]["lr"] < 1e-2
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)  # checkpoints hold plain values only
    sched2 = build_scheduler(build_optimizer(Standin(), lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99)), steps=10,
                             warmup_steps=0, schedule="cosine", lr=1e-2, min_lr=1e-4)
    sched2.load_state_dict(loaded["sched"])
    assert sched2.last_epoch == 1


def test_no_fix_keys_means_one_group() -> None:
    opt = build_optimizer(Standin(), lr=1.0, weight_decay=0.0, betas=(0.9, 0.99))
    assert [g["name"] for g in opt.param_groups] == ["main"]


def test_ema_follows_its_formula() -> None:
    model = Standin()
    ema = ModelEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.count.fill_(7)
    ema.update(model)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(ema.state_dict()[k], 0.9 * start[k] + 0.1 * v, rtol=0, atol=1e-6)
    assert ema.state_dict()["count"].item() == 7
    other = ModelEMA(Standin(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.state_dict()[k], v) for k, v in ema.state_dict().items())
    with pytest.raises(TrainingError, match="keys differ"):
        other.load_state_dict({"x": torch.zeros(1)})


def test_guard_skips_then_stops() -> None:
    guard = NonFiniteGuard(limit=3)
    assert guard.check(0, True) and not guard.check(1, False) and not guard.check(2, False)
    assert guard.check(3, True) and guard.consecutive == 0 and guard.skipped == 2
    guard.check(4, False)
    guard.check(5, False)
    with pytest.raises(TrainingError, match=r"step 6: 3 consecutive steps with a non-finite loss or gradient"):
        guard.check(6, False)
