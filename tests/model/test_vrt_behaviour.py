"""VRT behaviour on CPU: the encoder hook, gradient checkpointing, input and flow validation, the
untrained-SpyNet warning, frame sizes that need padding."""

from __future__ import annotations

import warnings

import pytest
import torch

from svrt_model import VRT, tiny
from svrt_model.errors import ModelConfigError, ModelInputError, UntrainedSpyNetWarning
from tests.model.golden import micro_model


def _frames(t: int = 3, h: int = 64, w: int = 64, seed: int = 1, b: int = 1) -> torch.Tensor:
    return torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def model() -> VRT:
    return micro_model().eval()


def test_identity_hook_changes_nothing_and_sees_encoder_stages(model: VRT) -> None:
    x = _frames()
    seen = []

    def hook(stage: int, feats: torch.Tensor) -> torch.Tensor:
        seen.append((stage, tuple(feats.shape)))
        return feats

    with torch.no_grad():
        plain = model(x)
        hooked = model(x, encoder_hook=hook)
    assert torch.equal(plain, hooked)
    assert seen == [(1, (1, 16, 3, 64, 64)), (2, (1, 16, 3, 32, 32)), (3, (1, 16, 3, 16, 16)), (4, (1, 16, 3, 8, 8))]


def test_hook_change_propagates_to_next_stage_skips_and_gradients(model: VRT) -> None:
    x = _frames()
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.stage3.register_forward_pre_hook(lambda _m, args: seen.__setitem__("stage3_in", args[0])),
        model.stage6.register_forward_hook(lambda _m, _a, out: seen.__setitem__("stage6_out", out)),
        model.stage7.register_forward_pre_hook(lambda _m, args: seen.__setitem__("stage7_in", args[0])),
    ]

    def double_stage2(stage: int, feats: torch.Tensor) -> torch.Tensor:
        if stage == 2:
            seen["x2"] = feats.permute(0, 2, 3, 4, 1).clone()  # B C T H W -> the internal B T H W C
            return feats * 2.0
        return feats

    try:
        with torch.no_grad():
            plain = model(x)
            changed = model(x, encoder_hook=double_stage2)
    finally:
        for h in hooks:
            h.remove()
    # the hooked tensor feeds the next stage AND the decoder skip (stage 7 input = stage 6 output + x2)
    torch.testing.assert_close(seen["stage3_in"], 2.0 * seen["x2"])
    torch.testing.assert_close(seen["stage7_in"] - seen["stage6_out"], 2.0 * seen["x2"])
    assert not torch.allclose(changed, plain)
    # A learnable scale in the hook receives a gradient: the hook is inside the graph.
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    out = model(x, encoder_hook=lambda s, f: f * scale if s == 4 else f)
    out.sum().backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0


def test_hook_must_keep_the_shape(model: VRT) -> None:
    with pytest.raises(ModelInputError, match=r"encoder_hook\(stage=1\) returned \(1, 16, 3, 64, 32\)"):
        with torch.no_grad():
            model(_frames(), encoder_hook=lambda s, f: f[..., :32])


@pytest.mark.parametrize("policy", ["all", "official", "ffn+align", "attn", "ffn+align-full"])
def test_checkpointing_changes_nothing(policy: str) -> None:
    model = micro_model(drop_path_rate=0.3).train()  # stochastic depth on: recomputation must replay it
    x = _frames(t=2, seed=2)
    results = []
    for p in ("none", policy):
        model.set_grad_checkpointing(p)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        out = model(x)
        (out * out.detach().cos()).sum().backward()
        results.append((out.detach(), [q.grad.clone() for q in model.parameters() if q.grad is not None]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert len(grads_a) == len(grads_b) > 100
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_align_parts_checkpoint_the_chosen_stages(model: VRT) -> None:
    model.set_grad_checkpointing("ffn+align-full")
    assert [getattr(model, f"stage{i}").checkpoint_align for i in range(1, 8)] == [True] + [False] * 5 + [True]
    model.set_grad_checkpointing("attn+align1")
    assert [getattr(model, f"stage{i}").checkpoint_align for i in range(1, 8)] == [True] + [False] * 6
    model.set_grad_checkpointing("align")
    assert all(getattr(model, f"stage{i}").checkpoint_align for i in range(1, 8))
    model.set_grad_checkpointing("none")


def test_switches_refuse_unknown_names(model: VRT) -> None:
    with pytest.raises(ModelConfigError, match="unknown policy 'everything'"):
        model.set_grad_checkpointing("everything")
    with pytest.raises(ModelConfigError, match="unknown impl 'cudnn'"):
        model.set_attention("cudnn")
    with pytest.raises(ModelConfigError, match="unknown parts 'mlp'"):
        model.compile_blocks("mlp")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 3, 64, 64), r"at least 2 frames \(T >= 2\)"),
        ((1, 3, 3, 60, 64), r"frame size 60x64 is not supported"),
        ((1, 3, 3, 56, 64), r"frame size 56x64 is not supported.*at least 64x64"),
        ((1, 3, 4, 64, 64), r"expected frames \(B, T, 3, H, W\)"),
        ((3, 3, 64, 64), r"expected frames"),
    ],
)
def test_bad_frames_are_refused(model: VRT, shape: tuple, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        model(torch.rand(shape, dtype=torch.float64))


def test_given_flows_are_checked_and_used(model: VRT) -> None:
    x = _frames(t=3)
    with torch.no_grad():
        backward, forward = model.compute_flows(x)
        assert [tuple(f.shape) for f in backward] == [(1, 2, 2, 64 // 2**i, 64 // 2**i) for i in range(4)]
        assert torch.equal(model(x, flows=(backward, forward)), model(x))
        moved = model(x, flows=([f + 1.5 for f in backward], forward))
    assert not torch.allclose(moved, model(x).detach())
    bad = r"flows_forward\[2\] has shape \(1, 2, 2, 8, 8\), expected \(1, 2, 2, 16, 16\)"
    with pytest.raises(ModelInputError, match=bad):
        model(x, flows=(backward, forward[:2] + [forward[3], forward[3]]))
    with pytest.raises(ModelInputError, match="must be a list of 4 tensors"):
        model(x, flows=(backward[:3], forward))


def test_untrained_spynet_warns_once() -> None:
    model = VRT(tiny()).double().eval()
    x = _frames(t=2)
    with pytest.warns(UntrainedSpyNetWarning, match="flows start untrained"):
        model.compute_flows(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedSpyNetWarning)
        model.compute_flows(x)  # warned already


@pytest.mark.parametrize(("t", "h", "w"), [(5, 64, 64), (2, 72, 88)])
def test_sizes_that_need_padding_run_and_paths_agree(model: VRT, t: int, h: int, w: int) -> None:
    """T=5 with a temporal window of 3 pads frames to 6; 72x88 pads stage 4 (9x11) to 16x16."""
    x = _frames(t=t, h=h, w=w, seed=3)
    with torch.no_grad():
        model.set_attention("plain")
        ref = model(x)
        model.set_attention("fused")
        out = model(x)
        model.set_attention("flex")
        flex = model(x)
        model.set_attention("fused")
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flex, ref, rtol=1e-10, atol=1e-10)
