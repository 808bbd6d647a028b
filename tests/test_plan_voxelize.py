"""``plan_voxelize`` as a table: inputs and the exact plan they give (pure; nothing touches the disk)."""

from __future__ import annotations

import pytest

from pipelines.plan import ArrayWrite, SequenceTask, SequenceToWrite, VoxelizePlan, plan_voxelize
from svrt_errors import StoreLayoutError, SvrtValueError

SMALL = SequenceToWrite("train/a", frames=5, rgb_shape=(64, 128), spike_shape=(32, 64), spike_frames=280)
GOPRO = SequenceToWrite("train/b", frames=20, rgb_shape=(720, 1280), spike_shape=(360, 640), spike_frames=8800,
                        has_sharp=False)
DONE = SequenceToWrite("test/c", frames=3, rgb_shape=(64, 128), spike_shape=(32, 64), spike_frames=150)

# the writes of each sequence at K=8: every array, with the shard (or chunk) its writer owns
SMALL_WRITES = (
    ArrayWrite("train/a/blur", (5, 64, 128, 3), (5, 64, 128, 3)),
    ArrayWrite("train/a/sharp", (5, 64, 128, 3), (5, 64, 128, 3)),
    ArrayWrite("train/a/spikes", (280, 32, 8), (512, 32, 8)),
    ArrayWrite("train/a/voxels", (5, 8, 32, 64), (5, 8, 32, 64)),
    ArrayWrite("train/a/windows", (5, 2), (5, 2)),
)
GOPRO_WRITES = (
    ArrayWrite("train/b/blur", (20, 720, 1280, 3), (8, 768, 1280, 3)),  # 3 shards along frames
    ArrayWrite("train/b/spikes", (8800, 360, 80), (1024, 384, 80)),  # 9 shards
    ArrayWrite("train/b/voxels", (20, 8, 360, 640), (8, 8, 384, 640)),  # 3 shards
    ArrayWrite("train/b/windows", (20, 2), (20, 2)),
)
DONE_WRITES = (
    ArrayWrite("test/c/blur", (3, 64, 128, 3), (3, 64, 128, 3)),
    ArrayWrite("test/c/sharp", (3, 64, 128, 3), (3, 64, 128, 3)),
    ArrayWrite("test/c/spikes", (150, 32, 8), (256, 32, 8)),
    ArrayWrite("test/c/voxels", (3, 8, 32, 64), (3, 8, 32, 64)),
    ArrayWrite("test/c/windows", (3, 2), (3, 2)),
)

CASES = [
    # (name, sequences, states, backend, resume, expected plan)
    ("fresh store: every sequence written, in order",
     [SMALL, GOPRO], {}, "numba", True,
     VoxelizePlan((SequenceTask(0, "train/a", "write", 5, SMALL_WRITES, False),
                   SequenceTask(1, "train/b", "write", 20, GOPRO_WRITES, False)), ())),
    ("resume: complete skipped, incomplete rebuilt, absent written; cupy tasks need the GPU",
     [SMALL, GOPRO, DONE], {"train/a": "incomplete", "test/c": "complete"}, "cupy", True,
     VoxelizePlan((SequenceTask(0, "train/a", "rebuild", 5, SMALL_WRITES, True),
                   SequenceTask(1, "train/b", "write", 20, GOPRO_WRITES, True)), ("test/c",))),
    ("no resume: complete sequences are rebuilt too",
     [DONE, SMALL], {"test/c": "complete", "train/a": "absent"}, "auto", False,
     VoxelizePlan((SequenceTask(0, "test/c", "rebuild", 3, DONE_WRITES, False),
                   SequenceTask(1, "train/a", "write", 5, SMALL_WRITES, False)), ())),
    ("everything complete: nothing to do",
     [SMALL, DONE], {"train/a": "complete", "test/c": "complete"}, "numpy", True,
     VoxelizePlan((), ("train/a", "test/c"))),
    ("no sequences", [], {}, "numba", True, VoxelizePlan((), ())),
]


@pytest.mark.parametrize("name, sequences, states, backend, resume, expected", CASES, ids=[c[0] for c in CASES])
def test_plan_table(name, sequences, states, backend, resume, expected) -> None:
    plan = plan_voxelize(sequences, states, bins=8, backend=backend, resume=resume)
    assert plan == expected
    assert plan.table() == [(t.task_id, t.key, t.action, t.frames, sum(w.n_shards for w in t.writes))
                            for t in expected.tasks]


def test_shard_counts() -> None:
    plan = plan_voxelize([SMALL, GOPRO], {}, bins=8, backend="numba")
    assert plan.table() == [(0, "train/a", "write", 5, 5), (1, "train/b", "write", 20, 3 + 9 + 3 + 1)]
    assert GOPRO_WRITES[1].shard_grid == (9, 1, 1)
    assert GOPRO_WRITES[1].shard_keys() == {("train/b/spikes", (i, 0, 0)) for i in range(9)}


def test_mode_changes_dtypes_not_shards() -> None:
    count = plan_voxelize([GOPRO], {}, bins=8, backend="numba")
    linear = plan_voxelize([GOPRO], {}, bins=8, backend="numba", mode="linear")
    assert count == linear


@pytest.mark.parametrize("sequences, states, error, message", [
    ([SMALL], {"train/a": "half"}, SvrtValueError, r"unknown sequence state 'half' for train/a"),
    ([SMALL, SMALL], {}, SvrtValueError, r"plan error: shard \('train/a/blur', \(0, 0, 0, 0\)\) written by tasks 0 "
                                         r"and 1"),
    ([SequenceToWrite("train/odd", 3, (16, 24), (8, 12), 120)], {}, StoreLayoutError,
     r"train/odd: sequence geometry: spike width 12 is not a multiple of 8"),
    ([SMALL], {}, StoreLayoutError, r"voxel mode must be 'count' or 'linear', got 'max'"),
])
def test_plan_refuses(sequences, states, error, message) -> None:
    mode = "max" if "voxel mode" in message else "count"
    with pytest.raises(error, match=message):
        plan_voxelize(sequences, states, bins=8, backend="numba", mode=mode)


def test_old_name_warns() -> None:
    import pipelines.plan as plan

    with pytest.warns(DeprecationWarning, match="use pipelines.plan.SequenceToWrite"):
        assert plan.SequenceShape is SequenceToWrite
