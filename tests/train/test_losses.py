"""Losses: Charbonnier by its formula; the VGG16 perceptual loss against a plain functional VGG pass over the
same torchvision-format weights file (random weights: nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from svrt_model.errors import CheckpointError, ModelConfigError, ModelInputError
from svrt_model.losses import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16_CONVS,
    CharbonnierLoss,
    DeblurLoss,
    VGGFeatures,
    VGGPerceptualLoss,
    charbonnier,
)


def _torchvision_vgg16_state(convs: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ``vgg16().features`` keys for the first ``convs`` convolutions, plus a
    classifier key (which the loss must ignore)."""
    g = torch.Generator().manual_seed(seed)
    state, index, width = {}, 0, 3
    for spec in VGG16_CONVS:
        if spec == "M":
            index += 1
            continue
        if convs == 0:
            break
        state[f"features.{index}.weight"] = torch.randn(spec, width, 3, 3, generator=g) * (2.0 / (9 * width)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(spec, generator=g) * 0.01
        width, index, convs = spec, index + 2, convs - 1
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save(_torchvision_vgg16_state(7), path)  # through relu3_3
    return path


def _reference_features(state: dict[str, torch.Tensor], x: torch.Tensor, last: int) -> dict[int, torch.Tensor]:
    """Slow, obvious VGG16: conv/ReLU/max-pool by index, from the state dict itself; every ReLU output kept."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean) / std
    out, index = {}, 0
    for spec in VGG16_CONVS:
        if index > last:
            break
        if spec == "M":
            x = F.max_pool2d(x, 2, 2)
            index += 1
            continue
        w, b = state[f"features.{index}.weight"].to(x.dtype), state[f"features.{index}.bias"].to(x.dtype)
        x = F.relu(F.conv2d(x, w, b, padding=1))
        out[index + 1] = x
        index += 2
    return out


def test_charbonnier_formula() -> None:
    x, y = torch.rand(2, 3, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 3, 8, 8, dtype=torch.float64)
    expected = torch.sqrt((x - y) ** 2 + 1e-6).mean()
    assert torch.equal(CharbonnierLoss()(x, y), expected)
    assert charbonnier(x, x, 0.5).item() == pytest.approx(0.5)
    with pytest.raises(ModelInputError, match="differ"):
        CharbonnierLoss()(x, y[:1])
    with pytest.raises(ModelConfigError, match="delta must be positive"):
        CharbonnierLoss(delta=0)


def test_vgg_loads_torchvision_keys_and_matches_functional_vgg(vgg_file: Path) -> None:
    state = torch.load(vgg_file, weights_only=True)
    feats = VGGFeatures(layers=("relu3_3", "relu1_2")).double()
    feats.load_weights(vgg_file)
    x = torch.rand(2, 3, 24, 32, dtype=torch.float64)
    got = feats(x)
    ref = _reference_features(state, x, 15)
    assert [g.shape for g in got] == [(2, 256, 6, 8), (2, 64, 24, 32)]
    torch.testing.assert_close(got[0], ref[15], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[1], ref[3], rtol=0, atol=1e-10)


def test_perceptual_loss_value_and_gradients(vgg_file: Path) -> None:
    state = torch.load(vgg_file, weights_only=True)
    loss = VGGPerceptualLoss(weights=vgg_file).double()
    out = torch.rand(2, 3, 3, 16, 16, dtype=torch.float64, requires_grad=True)  # B T 3 H W
    target = torch.rand(2, 3, 3, 16, 16, dtype=torch.float64)
    value = loss(out, target)
    ref = (_reference_features(state, out.detach().flatten(0, 1), 15)[15]
           - _reference_features(state, target.flatten(0, 1), 15)[15]).abs().mean()
    assert value.item() == pytest.approx(ref.item(), rel=1e-10)
    value.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    assert loss(target, target).item() == 0.0
    loss.train()
    assert not loss.vgg.training  # a measuring instrument stays in eval mode


def test_vgg_weight_errors(tmp_path: Path, vgg_file: Path) -> None:
    with pytest.raises(CheckpointError, match=r"do not exist; put torchvision's VGG16 .*vgg16-397923af\.pth"):
        VGGFeatures().load_weights(tmp_path / "nope.pth")
    short = tmp_path / "short.pth"
    torch.save(_torchvision_vgg16_state(4), short)  # stops before relu3_3's convolutions
    with pytest.raises(CheckpointError, match=r"missing \['features\.10\.weight'"):
        VGGFeatures().load_weights(short)
    VGGFeatures(layers=("relu2_2",)).load_weights(short)  # enough for relu2_2
    bad = tmp_path / "bad.pth"
    state = _torchvision_vgg16_state(7)
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight: file \(64, 1, 3, 3\) vs VGG16 \(64, 3, 3, 3\)"):
        VGGFeatures().load_weights(bad)
    with pytest.raises(ModelConfigError, match="unknown layers \\['relu9_9'\\]"):
        VGGFeatures(layers=("relu9_9",))


def test_deblur_loss_combines_terms_and_refuses_missing_weights(vgg_file: Path) -> None:
    out, target = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 2, 3, 16, 16)
    plain = DeblurLoss()(out, target)
    assert set(plain) == {"loss", "charbonnier"} and torch.equal(plain["loss"], plain["charbonnier"])
    both = DeblurLoss(charbonnier_weight=1.0, vgg_weight=0.1, vgg_weights=vgg_file)(out, target)
    assert both["loss"].item() == pytest.approx(both["charbonnier"].item() + 0.1 * both["vgg"].item(), rel=1e-6)
    with pytest.raises(CheckpointError, match=r"loss\.vgg=0\.1 needs VGG16 weights: .*loss\.vgg_weights=PATH"):
        DeblurLoss(vgg_weight=0.1)
