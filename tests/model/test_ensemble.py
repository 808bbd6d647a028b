"""The test-time self-ensemble (``svrt_model.restore.ensemble``) against the loader's NumPy definition of the
eight views (``Dihedral.apply``), with a stand-in model that is not flip-invariant, and through the real
restore path with ``VRTSpike``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels.packed_bits import pack_bits, unpack_bits
from svrt_data.loader.clip_geometry import Dihedral
from svrt_errors import SvrtValueError
from svrt_model.errors import ModelInputError
from svrt_model.restore import SelfEnsemble, dihedral_views
from svrt_model.restore.ensemble import invert_view, view
from svrt_model.spike.inputs import RawSpikes


class Probe(torch.nn.Module):
    """Not equivariant: each output pixel depends on its position and on the spikes' row / column means;
    records what every forward received."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor | RawSpikes | None]] = []

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | RawSpikes | None) -> torch.Tensor:
        self.seen.append((rgb, spikes))
        h, w = rgb.shape[-2:]
        ramp = torch.arange(h * w, dtype=rgb.dtype).reshape(h, w) / (h * w)
        out = rgb * ramp + rgb.mean(-1, keepdim=True) ** 2
        if spikes is not None:
            s = unpack_bits(spikes.bits, spikes.width).float() if isinstance(spikes, RawSpikes) else spikes
            col = s.float().mean(dim=tuple(range(1, s.dim() - 1)))  # B, Ws: column means
            out = out + col[:, None, None, None, :1].expand_as(out) * 0.1
        return out


def _np_view(d: Dihedral, x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(d.apply(x.numpy(), x.dim() - 2, x.dim() - 1))


def test_views_are_the_loaders_dihedral_transforms():
    views = dihedral_views(8)
    assert len(set(views)) == 8 and views[0] == Dihedral()
    assert dihedral_views(2) == [Dihedral(), Dihedral(False, True, False)]  # identity, left-right
    assert not any(d.transpose for d in dihedral_views(4))
    x = torch.randn(2, 3, 5, 7)
    for d in views:
        np.testing.assert_array_equal(view(d, x).numpy(), _np_view(d, x))
        torch.testing.assert_close(invert_view(d, view(d, x)), x, rtol=0, atol=0)
    for bad in (0, 3, 16, True, "8"):
        with pytest.raises(SvrtValueError, match=r"one of \(1, 2, 4, 8\)"):
            dihedral_views(bad)


@pytest.mark.parametrize("kind", ["voxels", "raw", "none"])
def test_ensemble_is_the_mean_of_the_views_restored_back(kind):
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 3, 16, 24)
    planes = (torch.rand(2, 9, 8, 12) < 0.3).to(torch.uint8)  # B S Hs Ws: Ws not a multiple of 8
    ranges = torch.tensor([[0, 3], [3, 6], [6, 9]])[:, None].expand(2, 3, 1, 2).contiguous()  # B T K=1 2
    spikes = {"voxels": torch.rand(2, 3, 4, 8, 12), "raw": RawSpikes(pack_bits(planes), ranges, 12),
              "none": None}[kind]
    probe = Probe()
    out = SelfEnsemble(probe, 8)(rgb, spikes)
    assert len(probe.seen) == 8
    expected = np.zeros(rgb.shape, np.float64)
    for d, (got_rgb, got_spikes) in zip(dihedral_views(8), probe.seen, strict=True):
        np.testing.assert_array_equal(got_rgb.numpy(), _np_view(d, rgb))
        if kind == "voxels":
            np.testing.assert_array_equal(got_spikes.numpy(), _np_view(d, spikes))
        elif kind == "raw":
            np.testing.assert_array_equal(unpack_bits(got_spikes.bits, got_spikes.width).numpy(), _np_view(d, planes))
            assert got_spikes.ranges is ranges  # time is untouched
        else:
            assert got_spikes is None
        # the probe run by hand on the NumPy view, its output transformed back by NumPy
        y = Probe()(torch.from_numpy(_np_view(d, rgb)), got_spikes).numpy()
        back = np.swapaxes(y, -2, -1) if d.transpose else y
        back = np.flip(back, -1) if d.flip_x else back
        expected += np.flip(back, -2) if d.flip_y else back
    np.testing.assert_allclose(out.numpy(), expected / 8, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out, Probe()(rgb, spikes), atol=1e-3)  # the views matter: the probe is not equivariant


def test_an_equivariant_model_is_unchanged_and_bad_ratios_are_refused():
    rgb, spikes = torch.rand(1, 2, 3, 16, 24), torch.rand(1, 2, 4, 8, 12)

    class Pointwise(torch.nn.Module):  # flips and transpositions commute with it
        def forward(self, r: torch.Tensor, s: object) -> torch.Tensor:
            return r * 2 - 0.5

    model = Pointwise()
    pointwise = model.forward
    torch.testing.assert_close(SelfEnsemble(model, 8)(rgb, spikes), pointwise(rgb, spikes))
    with pytest.raises(ModelInputError, match=r"RGB 16x24 with spikes 8x24: use 4 views"):
        SelfEnsemble(model, 8)(rgb, torch.rand(1, 2, 4, 8, 24))
    torch.testing.assert_close(SelfEnsemble(model, 4)(rgb, torch.rand(1, 2, 4, 8, 24)), pointwise(rgb, None))


def test_vrtspike_through_the_restorer_reads_its_rules_and_averages_real_views(synth_store):
    """The wrapper keeps the model's input rules (``.vrt``) and runs VRTSpike on transposed whole frames."""
    import warnings

    from svrt_data.loader import SpikeDeblurDataset, collate_clips
    from svrt_data.loader.spike_transform import SpikeTransform
    from svrt_model import VRTSpike, svrt_tiny
    from svrt_model.errors import UntrainedSpyNetWarning
    from svrt_model.restore import Tile, input_rules, restore_clip

    torch.manual_seed(0)
    model = VRTSpike(svrt_tiny()).eval()
    ds = SpikeDeblurDataset(synth_store, "test", clip_len=2, mode="eval")
    batch = SpikeTransform(spike_input="voxels", log1p=True)(collate_clips([ds[0]]))
    rgb, spikes = batch["blur"], batch["spikes"]
    ens = SelfEnsemble(model, 8)
    assert input_rules(ens) == input_rules(model)
    tile = Tile(2, 0, 0, 0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedSpyNetWarning)
        got = restore_clip(ens, rgb, spikes, tile=tile, rules=input_rules(model))
        by_hand = sum(invert_view(d, restore_clip(model, view(d, rgb), view(d, spikes), tile=tile,
                                                  rules=input_rules(model))) for d in dihedral_views(8)) / 8
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-5)
