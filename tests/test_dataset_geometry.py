"""Clip geometry and the clip plan: pure functions, checked against plain NumPy and as tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from svrt_data.loader.clip_geometry import AxisScale, Dihedral, flip_packed_x, shift_packed, transpose_packed
from svrt_data.loader.clip_plan import ClipPlan, ClipSource
from svrt_errors import SvrtValueError

ALL = [Dihedral(*map(bool, c)) for c in itertools.product((0, 1), repeat=3)]


def _pack(bits):
    return np.packbits(bits, axis=-1, bitorder="little")


def _unpack(packed):
    return np.unpackbits(packed, axis=-1, bitorder="little")


@pytest.mark.parametrize("d", ALL, ids=lambda d: "".join(map(str, d.code)))
def test_dihedral_write_view_and_packed_match_the_reference(d):
    rng = np.random.default_rng(sum(d.code) + 4 * d.transpose)
    x = rng.integers(0, 2, (3, 16, 24), dtype=np.uint8)
    if d.transpose:
        x = x[:, :, :16]  # packed transposition needs square multiples of 8 here
    want = d.apply(x, 1, 2)
    out = np.empty(want.shape, np.uint8)
    view = d.write_view(out, 1, 2)
    assert view.shape == x.shape
    view[...] = x
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(_unpack(d.apply_packed(_pack(x))), want)
    assert d.source_shape(4, 6) == ((6, 4) if d.transpose else (4, 6))


def test_the_eight_transforms_are_distinct_and_keep_time_and_bins():
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)  # T K H W
    images = {d.apply(x, 2, 3).tobytes() for d in ALL}
    assert len(images) == 8
    for d in ALL:
        y = d.apply(x, 2, 3)
        # every (t, k) plane is a transform of the same plane: time and bins never mix
        for t, k in itertools.product(range(2), range(3)):
            assert sorted(y[t, k].ravel()) == sorted(x[t, k].ravel())


@pytest.mark.parametrize("shape", [(1, 8, 8), (5, 24, 16), (2, 3, 40, 8)])
def test_packed_transpose_and_flip(shape):
    rng = np.random.default_rng(len(shape))
    x = rng.integers(0, 2, shape, dtype=np.uint8)
    np.testing.assert_array_equal(_unpack(transpose_packed(_pack(x))), np.swapaxes(x, -1, -2))
    np.testing.assert_array_equal(_unpack(flip_packed_x(_pack(x))), x[..., ::-1])
    with pytest.raises(SvrtValueError, match="must be a multiple of 8"):
        transpose_packed(np.zeros((4, 2), np.uint8))


def test_shift_packed_every_bit_offset():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, (4, 5, 48), dtype=np.uint8)
    p = _pack(x)
    for bit in range(8):
        for n in (1, 3, 5):
            np.testing.assert_array_equal(_unpack(shift_packed(p, bit, n)), x[..., bit : bit + 8 * n])
    with pytest.raises(SvrtValueError, match="bit must be in 0..7"):
        shift_packed(p, 8, 1)


@pytest.mark.parametrize(
    ("rgb", "spike", "step", "maps"),
    [
        (720, 360, 2, {0: 0, 256: 128, 2: 1}),
        (360, 360, 1, {5: 5}),
        (96, 40, 12, {12: 5, 24: 10}),
        (250, 400, 5, {5: 8}),
    ],
)
def test_axis_scale_grid(rgb, spike, step, maps):
    sc = AxisScale(rgb, spike)
    assert sc.step == step
    for value, want in maps.items():
        assert sc.on_grid(value) and sc.to_spike(value) == want
    assert not sc.on_grid(step + 1) or step == 1
    if step > 1:
        with pytest.raises(SvrtValueError, match=f"not on the {step}-pixel scale grid"):
            sc.to_spike(step + 1)


def _seq(key="a", n=20, rgb=(64, 96), spike=(32, 48), windows=None):
    return ClipSource(key, n, rgb, spike, windows)


# (n_frames, clip_len, stride, mode, jitter) -> table rows (first start, last start)
PLAN_TABLE = [
    (20, 5, 5, "train", True, [(0, 4), (5, 9), (10, 14), (15, 15)]),
    (20, 5, 5, "train", False, [(0, 0), (5, 5), (10, 10), (15, 15)]),
    (12, 5, 3, "train", True, [(0, 2), (3, 5), (6, 7)]),
    (5, 5, 5, "train", True, [(0, 0)]),
    (20, 5, 5, "eval", False, [(0, 0), (5, 5), (10, 10), (15, 15)]),
    (12, 5, 5, "eval", False, [(0, 0), (5, 5), (7, 7)]),
    (12, 5, 2, "eval", False, [(0, 0), (2, 2), (4, 4), (6, 6), (7, 7)]),
]


@pytest.mark.parametrize(("n", "t", "stride", "mode", "jitter", "rows"), PLAN_TABLE)
def test_plan_tables(n, t, stride, mode, jitter, rows):
    plan = ClipPlan([_seq(n=n)], clip_len=t, stride=stride, crop=(32, 32), mode=mode,
                    augment="none" if mode == "eval" else "dihedral", seed=0, jitter=jitter)
    assert [tuple(r[1:]) for r in plan.table] == rows
    if mode == "eval":
        assert (plan.coverage()[0] >= 1).all()
        assert plan.table[-1, 1] + t == n  # the last clip ends at the last frame
    for i, (lo, hi) in enumerate(rows):
        for epoch in range(4):
            assert lo <= plan.spec(i, epoch).start <= hi


def test_specs_are_deterministic_on_the_grid_and_in_bounds():
    seqs = [_seq("a", 20, (64, 96), (32, 48)), _seq("b", 9, (80, 80), (40, 40))]
    plan = ClipPlan(seqs, clip_len=4, stride=2, crop=(32, 48), mode="train", augment="dihedral", seed=3)
    again = ClipPlan(seqs, clip_len=4, stride=2, crop=(32, 48), mode="train", augment="dihedral", seed=3)
    other = ClipPlan(seqs, clip_len=4, stride=2, crop=(32, 48), mode="train", augment="dihedral", seed=4)
    seen = set()
    for epoch in range(6):
        for i in range(len(plan)):
            s = plan.spec(i, epoch)
            assert s == again.spec(i, epoch)
            h, w = seqs[s.seq].rgb_shape
            y0, x0, rh, rw = s.box
            assert (rh, rw) == ((48, 32) if s.dihedral.transpose else (32, 48))
            assert y0 % 2 == 0 and x0 % 2 == 0 and y0 + rh <= h and x0 + rw <= w
            assert s.spike_box == (y0 // 2, x0 // 2, rh // 2, rw // 2)
            assert s.out_shape == (32, 48) and s.spike_out_shape == (16, 24)
            seen.add(s.dihedral)
    assert seen == set(ALL)  # every transform happens
    assert any(plan.spec(i, 0) != other.spec(i, 0) for i in range(len(plan)))
    assert plan.spec(-1, 0) == plan.spec(len(plan) - 1, 0)
    with pytest.raises(IndexError, match="out of range"):
        plan.spec(len(plan), 0)


def test_eval_crop_is_centred_on_the_grid():
    plan = ClipPlan([_seq("a", 6, (70, 100), (35, 50))], clip_len=3, stride=3, crop=(32, 32), mode="eval",
                    augment="none", seed=0)
    s = plan.spec(0)
    assert s.box == (18, 34, 32, 32) and s.dihedral == Dihedral()
    assert s.spike_box == (9, 17, 16, 16)


def test_raw_spike_ranges_and_their_maximum():
    w = np.array([[0, 10], [10, 20.5], [20.5, 30], [30, 45], [45, 50]], np.float64)
    plan = ClipPlan([_seq(n=5, windows=w)], clip_len=2, stride=1, crop=(32, 32), mode="eval", augment="none",
                    seed=0, raw_spikes=True)
    assert [plan.spec(i).spike_range for i in range(len(plan))] == [(0, 21), (10, 30), (20, 45), (30, 50)]
    assert plan.max_spike_frames == 25


# (kwargs, sequence, message)
ERRORS = [
    ({"clip_len": 30}, _seq(n=20), r"sequence a: clip_len=30 is longer than its 20 frames; use clip_len <= 20"),
    ({"crop": (128, 32)}, _seq(), r"crop 128x32 is larger than its 64x96 frames"),
    ({"crop": (33, 32)}, _seq(), r"crop height 33 does not map to whole spike pixels .*32/64.*multiple of 2, e.g. 32"),
    ({"crop": (30, 30), "augment": "flips"}, _seq(rgb=(96, 120), spike=(40, 48)),
     r"crop height 30 does not map .*multiple of 12, e.g. 24"),
    ({"crop": (24, 24), "augment": "flips"}, _seq(rgb=(96, 120), spike=(40, 48)),
     r"crop width 24 does not map to whole spike pixels \(spike/RGB scale 48/120 = 2/5\); use a multiple of 5"),
    ({"crop": None}, _seq(), r"full 64x96 frames cannot be transposed"),
    ({"crop": (32, 80)}, _seq(), r"crop 32x80 transposed \(80x32\) does not fit its 64x96 frames"),
    ({"crop": (32, 32)}, _seq(rgb=(64, 96), spike=(32, 32)), r"transposing needs the same spike/RGB scale"),
    ({"crop": (24, 24), "raw_spikes": True}, _seq(windows=np.zeros((20, 2))), r"spike crop height and width must be "
     r"multiples of 8; crop 24x24 gives spike crop 12x12"),
    ({"mode": "eval", "augment": "flips"}, _seq(), r"evaluation is deterministic"),
    ({"augment": "rot90"}, _seq(), r"augment must be one of"),
]


@pytest.mark.parametrize(("kwargs", "seq", "message"), ERRORS)
def test_plan_errors(kwargs, seq, message):
    args = {"clip_len": 5, "stride": 5, "crop": (32, 32), "mode": "train", "augment": "dihedral", "seed": 0}
    args.update(kwargs)
    with pytest.raises(SvrtValueError, match=message):
        ClipPlan([seq], **args)
