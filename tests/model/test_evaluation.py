"""evaluate_split and EvalReport: scores against scikit-image on the store's frames, the JSON contract, CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from svrt_data.loader.spike_transform import SpikeTransform
from svrt_data.store import open_store
from svrt_errors import StoreLayoutError
from svrt_model.restore import METRIC_KEYS, EvalReport, InputRules, SequenceScores, Tile, evaluate_split, restore_split
from tests.model.standin import IdentityModel, StencilModel

metrics = pytest.importorskip("skimage.metrics")

RULES = InputRules(frame_multiple=4, min_frames=2, size_multiple=8, min_size=(16, 16))
VOXELS = SpikeTransform(spike_input="voxels", log1p=False)


def sk_scores(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of two (H, W, 3) uint8 frames by scikit-image, configured as the field does."""
    return (metrics.peak_signal_noise_ratio(b, a, data_range=255),
            metrics.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255))


def test_identity_model_scores_equal_the_inputs_and_scikit_image(synth_store):
    report = evaluate_split(IdentityModel(), synth_store, "train", tile=None, transform=VOXELS, rules=RULES,
                            progress=False)
    store = open_store(synth_store)
    assert list(report.sequences) == [q for s, q in store.sequence_keys() if s == "train"]
    all_psnr = []
    for name, s in report.sequences.items():
        seq = store.sequence("train", name)
        blur, sharp = seq.blur[...], seq.sharp[...]
        expect = np.array([sk_scores(blur[i], sharp[i]) for i in range(len(blur))])
        np.testing.assert_allclose(s.psnr_input, expect[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(s.ssim_input, expect[:, 1], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(s.psnr_output, s.psnr_input)  # the output is the input, to the bit
        np.testing.assert_array_equal(s.ssim_output, s.ssim_input)
        assert s.means()["psnr_input"] == pytest.approx(expect[:, 0].mean(), abs=1e-9)
        all_psnr += list(expect[:, 0])
    assert report.frames == 14
    assert report.overall()["psnr_input"] == pytest.approx(np.mean(all_psnr), abs=1e-9)  # mean over all frames


def test_scores_measure_the_rounded_restored_frames(synth_store):
    model = StencilModel(radius=2)
    kw = dict(tile=Tile(frames=4, height=32, width=64, frame_overlap=2, overlap=8), transform=VOXELS, rules=RULES,
              progress=False)
    report = evaluate_split(model, synth_store, "test", **kw)
    (seq,) = restore_split(model, synth_store, "test", **kw)
    s = report.sequences[seq.name]
    out, sharp = seq.output.permute(0, 2, 3, 1).numpy(), seq.sharp.permute(0, 2, 3, 1).numpy()  # N H W 3
    expect = np.array([sk_scores(out[i], sharp[i]) for i in range(len(out))])
    np.testing.assert_allclose(s.psnr_output, expect[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.ssim_output, expect[:, 1], rtol=0, atol=1e-6)
    assert not np.array_equal(s.psnr_output, s.psnr_input)


def report_with(values: dict[str, list[float]]) -> EvalReport:
    arrays = {k: np.asarray(v, np.float64) for k, v in values.items()}
    n = len(next(iter(arrays.values())))
    return EvalReport({"A": SequenceScores(tuple(f"{i:06d}" for i in range(n)), **arrays)})


def test_json_contract_csv_and_table(tmp_path):
    a = SequenceScores(("f0", "f1"), np.array([20.0, 22.0]), np.array([30.0, 31.0]), np.array([0.5, 0.7]),
                       np.array([0.9, 0.95]))
    b = SequenceScores(("g0",), np.array([26.0]), np.array([33.0]), np.array([0.8]), np.array([0.99]))
    report = EvalReport({"SEQ_A": a, "SEQ_B": b})
    j = report.to_json()
    assert set(j) == {"overall", "sequences"}
    assert set(j["overall"]) == set(METRIC_KEYS)
    assert j["overall"]["psnr_input"] == pytest.approx((20 + 22 + 26) / 3)  # mean over frames, not sequences
    assert j["overall"]["ssim_output"] == pytest.approx((0.9 + 0.95 + 0.99) / 3)
    assert list(j["sequences"]) == ["SEQ_A", "SEQ_B"]
    assert j["sequences"]["SEQ_A"] == {"psnr_input": 21.0, "psnr_output": 30.5, "ssim_input": 0.6,
                                       "ssim_output": pytest.approx(0.925), "frames": 2}
    report.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(j))
    report.write_csv(tmp_path / "r.csv")
    rows = list(csv.reader((tmp_path / "r.csv").open()))
    assert rows[0] == ["sequence", "frame", *METRIC_KEYS]
    assert rows[1] == ["SEQ_A", "f0", "20.0", "30.0", "0.5", "0.9"]
    assert [r[:2] for r in rows[1:]] == [["SEQ_A", "f0"], ["SEQ_A", "f1"], ["SEQ_B", "g0"], ["SEQ_A", "mean"],
                                         ["SEQ_B", "mean"], ["overall", "mean"]]
    assert float(rows[-1][2]) == pytest.approx(j["overall"]["psnr_input"])
    table = report.table().splitlines()
    assert table[0].split() == ["sequence", "frames", "PSNR", "in", "PSNR", "out", "gain", "SSIM", "in", "SSIM", "out"]
    assert table[2].split() == ["SEQ_A", "2", "21.00", "30.50", "+9.50", "0.6000", "0.9250"]
    assert table[-1].split()[:5] == ["overall", "(mean", "of", "frames)", "3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temporary files left


def test_infinite_psnr_is_null_in_json_and_inf_elsewhere(tmp_path):
    report = report_with({"psnr_input": [np.inf, 30.0], "psnr_output": [40.0, 42.0], "ssim_input": [1.0, 0.9],
                          "ssim_output": [1.0, 1.0]})
    j = report.to_json()
    assert j["overall"]["psnr_input"] is None and j["sequences"]["A"]["psnr_input"] is None
    assert j["overall"]["psnr_output"] == 41.0
    report.write_json(tmp_path / "r.json")  # strict JSON: no Infinity token
    assert "Infinity" not in (tmp_path / "r.json").read_text()
    report.write_csv(tmp_path / "r.csv")
    assert "inf" in (tmp_path / "r.csv").read_text().splitlines()[1]
    assert " inf " in report.table()


def test_evaluation_needs_sharp_frames(synth_raw, tmp_path):
    from pipelines.voxelize_job import voxelize_dataset

    store = tmp_path / "nosharp.zarr"
    voxelize_dataset(synth_raw, synth_raw / "align.csv", store, bins=4, backend="numpy", progress=False,
                     sharp_dir=None, sequences=["test/SYN0002_07_00"])
    with pytest.raises(StoreLayoutError, match=r"evaluation needs sharp frames, but sequence\(s\) \['SYN0002_07_00'\] "
                                               r"of split 'test' have none.*svrt-model infer"):
        evaluate_split(IdentityModel(), store, "test", tile=None, transform=VOXELS, rules=RULES, progress=False)


class ConvIdentity(torch.nn.Module):
    """A 1x1 convolution that returns its input (up to its compute precision) and records that precision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.dtypes: list[torch.dtype] = []

    def forward(self, rgb: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(rgb.flatten(0, 1)).unflatten(0, rgb.shape[:2])  # (B T) 3 H W -> B T 3 H W
        self.dtypes.append(out.dtype)
        return out


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_evaluation_runs_in_the_chosen_precision(synth_store, precision, dtype):
    model = ConvIdentity()
    report = evaluate_split(model, synth_store, "test", tile=None, transform=VOXELS, rules=RULES,
                            precision=precision, device="cpu", progress=False)
    assert set(model.dtypes) == {dtype} and not torch.is_autocast_enabled("cpu")
    s = next(iter(report.sequences.values()))
    # bf16 keeps 8 significant bits: x / 255 comes back within half a level, so rounding restores it exactly
    np.testing.assert_array_equal(s.psnr_output, s.psnr_input)
