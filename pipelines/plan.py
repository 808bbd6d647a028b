"""The pure plan of a voxelize job: which sequence goes to which task, and which shards each writes.

Nothing here touches the disk: inputs are sequence descriptions and the current state of each
sequence in the store; the output is a table. Every shard of a sequence's arrays lives under that
sequence's group, and each task owns whole sequences, so no two tasks ever write the same shard
(:meth:`VoxelizePlan.check_disjoint` proves it for any plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from svrt_data.store import layout as L
from svrt_errors import SvrtValueError

__all__ = ["SequenceShape", "ArrayWrite", "SequenceTask", "VoxelizePlan", "plan_voxelize"]


@dataclass(frozen=True)
class SequenceShape:
    """What the planner needs to know about one sequence."""

    key: str  # "split/sequence" (or "sequence")
    frames: int
    rgb_shape: tuple[int, int]
    spike_shape: tuple[int, int]
    spike_frames: int
    has_sharp: bool = True


@dataclass(frozen=True)
class ArrayWrite:
    path: str  # array path inside the store
    shape: tuple[int, ...]
    shard_shape: tuple[int, ...]

    @property
    def shard_grid(self) -> tuple[int, ...]:
        return tuple(max(1, math.ceil(s / c)) for s, c in zip(self.shape, self.shard_shape, strict=True))

    @property
    def n_shards(self) -> int:
        return math.prod(self.shard_grid)

    def shard_keys(self) -> set[tuple[str, tuple[int, ...]]]:
        grid = self.shard_grid
        keys = set()
        for flat in range(self.n_shards):
            idx = []
            for g in reversed(grid):
                flat, r = divmod(flat, g)
                idx.append(r)
            keys.add((self.path, tuple(reversed(idx))))
        return keys


@dataclass(frozen=True)
class SequenceTask:
    task_id: int
    key: str
    action: str  # "write" (absent) or "rebuild" (incomplete / not resumed)
    frames: int
    writes: tuple[ArrayWrite, ...]
    needs_gpu: bool


@dataclass(frozen=True)
class VoxelizePlan:
    tasks: tuple[SequenceTask, ...]
    skipped: tuple[str, ...]  # complete sequences left as they are

    def check_disjoint(self) -> None:
        seen: dict[tuple[str, tuple[int, ...]], int] = {}
        for t in self.tasks:
            for w in t.writes:
                for k in w.shard_keys():
                    if k in seen and seen[k] != t.task_id:
                        raise SvrtValueError(f"plan error: shard {k} written by tasks {seen[k]} and {t.task_id}")
                    seen[k] = t.task_id

    def table(self) -> list[tuple[int, str, str, int, int]]:
        """Rows ``(task, sequence, action, frames, shards)`` for printing and tests."""
        return [(t.task_id, t.key, t.action, t.frames, sum(w.n_shards for w in t.writes)) for t in self.tasks]


def _writes(seq: SequenceShape, bins: int) -> tuple[ArrayWrite, ...]:
    n, (h, w), (hs, ws) = seq.frames, seq.rgb_shape, seq.spike_shape
    shapes = {
        "blur": (n, h, w, 3),
        "spikes": (seq.spike_frames, hs, ws // 8),
        "windows": (n, 2),
        "voxels": (n, bins, hs, ws),
    }
    if seq.has_sharp:
        shapes["sharp"] = (n, h, w, 3)
    out = []
    for name in sorted(shapes):
        chunks, shards = L.chunking(name, shapes[name])
        out.append(ArrayWrite(f"{seq.key}/{name}", shapes[name], shards or chunks))
    return tuple(out)


def plan_voxelize(
    sequences: list[SequenceShape],
    states: dict[str, str],
    *,
    bins: int,
    backend: str,
    resume: bool = True,
) -> VoxelizePlan:
    """One task per sequence that needs writing.

    ``states[key]`` is ``"complete"``, ``"incomplete"`` or ``"absent"`` (missing keys: absent). With
    ``resume`` complete sequences are skipped; incomplete ones are always rebuilt from scratch.
    """
    tasks, skipped = [], []
    for seq in sequences:
        state = states.get(seq.key, "absent")
        if state not in ("complete", "incomplete", "absent"):
            raise SvrtValueError(f"unknown sequence state {state!r} for {seq.key}")
        if state == "complete" and resume:
            skipped.append(seq.key)
            continue
        action = "write" if state == "absent" else "rebuild"
        tasks.append(SequenceTask(len(tasks), seq.key, action, seq.frames, _writes(seq, bins), backend == "cupy"))
    plan = VoxelizePlan(tuple(tasks), tuple(skipped))
    plan.check_disjoint()
    return plan
