"""load_official_checkpoint and SpyNet weight loading: strict loads and readable reports."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from svrt_model import VRT, load_official_checkpoint, tiny
from svrt_model.errors import CheckpointError, UntrainedSpyNetWarning


def _model(seed: int, **changes) -> VRT:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        return VRT(dataclasses.replace(tiny(), **changes))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("ckpt")
    state = _model(1).state_dict()
    torch.save({"params": state}, folder / "official.pth")
    torch.save(state, folder / "bare.pth")
    return folder / "official.pth", folder / "bare.pth", state


@pytest.mark.parametrize("which", [0, 1])
def test_loads_params_dict_and_bare_state_dict(saved, which: int) -> None:
    model = _model(2)
    assert not model.spynet.weights_loaded
    load_official_checkpoint(model, saved[which])
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[2][key]), key
    assert model.spynet.weights_loaded  # the checkpoint brought SpyNet: no untrained warning later


def test_mismatch_report_lists_missing_unexpected_and_shapes(tmp_path: Path, saved) -> None:
    state = dict(saved[2])
    state.pop("conv_last.bias")
    state.pop("stage1.linear1.weight")
    state["stage9.extra.weight"] = torch.zeros(1)
    state["conv_first.weight"] = torch.zeros(8, 27, 1, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save({"params": state}, path)
    model = _model(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(model, path)
    text = str(info.value)
    assert "missing from the file (2):\n    conv_last.bias\n    stage1.linear1.weight" in text
    assert "unexpected in the file (1):\n    stage9.extra.weight" in text
    assert "shape mismatch (1):\n    conv_first.weight: file (8, 27, 1, 3, 3) vs model (16, 27, 1, 3, 3)" in text
    assert "Build the model from the config the checkpoint was trained with" in text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_other_config_is_refused_with_many_keys(saved) -> None:
    with pytest.raises(CheckpointError, match=r"(?s)missing from the file \(\d+\):.*\.\.\. and \d+ more"):
        load_official_checkpoint(_model(4, depths=(4,) * 7 + (2,) * 5, embed_dims=(16,) * 7 + (24,) * 5,
                                        num_heads=(2,) * 12), saved[0])


def test_unreadable_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass the path of a local .pth file"):
        load_official_checkpoint(_model(5), tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read as a torch file"):
        load_official_checkpoint(_model(5), tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"expected \{'params': state_dict\} or a bare state_dict"):
        load_official_checkpoint(_model(5), tmp_path / "list.pth")


@pytest.mark.parametrize("layout", ["standalone", "vrt"])
def test_spynet_path_loads_local_weights(tmp_path: Path, layout: str) -> None:
    source = _model(6).spynet.state_dict()
    if layout == "standalone":  # spynet_sintel_final-3d2a1287.pth: {'params': basic_module.*}, no mean/std
        blob = {"params": {k: v for k, v in source.items() if k.startswith("basic_module.")}}
    else:
        blob = {"params": {f"spynet.{k}": v for k, v in source.items()}}
    path = tmp_path / "spynet.pth"
    torch.save(blob, path)
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedSpyNetWarning)
        model = VRT(dataclasses.replace(tiny(), spynet_path=str(path)))
        model.compute_flows(torch.rand(1, 2, 3, 64, 64))  # loaded: no untrained warning
    for key, value in model.spynet.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_spynet_path_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        VRT(dataclasses.replace(tiny(), spynet_path=str(tmp_path / "missing.pth")))
    torch.save({"params": {"basic_module.0.basic_module.0.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    report = r"(?s)does not fit SpyNet.*missing from the file \(59\).*shape mismatch \(1\)"
    with pytest.raises(CheckpointError, match=report):
        VRT(dataclasses.replace(tiny(), spynet_path=str(tmp_path / "bad.pth")))
