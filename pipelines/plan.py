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
from svrt_errors import StoreLayoutError, SvrtValueError

__all__ = ["SequenceToWrite", "ArrayWrite", "SequenceTask", "VoxelizePlan", "plan_voxelize"]


@dataclass(frozen=True)
class SequenceToWrite:
    """A sequence a voxelize job may write: its key and sizes, known from the raw dataset before any write."""

    key: str  # "split/sequence" (or "sequence")
    frames: int
    rgb_shape: tuple[int, int]
    spike_shape: tuple[int, int]
    spike_frames: int
    has_sharp: bool = True

    def geometry(self, bins: int, mode: str = "count") -> L.SequenceGeometry:
        """Its sizes as the store layout takes them."""
        return L.SequenceGeometry(self.frames, self.rgb_shape, self.spike_shape, self.spike_frames, bins, mode,
                                  self.has_sharp)


def __getattr__(name: str) -> object:
    if name == "SequenceShape":  # the old name, kept for one release
        import warnings

        warnings.warn("pipelines.plan.SequenceShape is deprecated and will be removed in the next release; use "
                      "pipelines.plan.SequenceToWrite", DeprecationWarning, stacklevel=2)
        return SequenceToWrite
    raise AttributeError(f"module 'pipelines.plan' has no attribute {name!r}")


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


def _writes(seq: SequenceToWrite, bins: int, mode: str) -> tuple[ArrayWrite, ...]:
    """Every array the sequence's task writes, with the shard shape each writer owns (from the layout)."""
    try:
        arrays = L.sequence_arrays(seq.geometry(bins, mode))
    except StoreLayoutError as exc:
        raise StoreLayoutError(f"{seq.key}: {exc}") from None
    return tuple(ArrayWrite(f"{seq.key}/{name}", a.shape, a.write_block) for name, a in sorted(arrays.items()))


def plan_voxelize(
    sequences: list[SequenceToWrite],
    states: dict[str, str],
    *,
    bins: int,
    backend: str,
    resume: bool = True,
    mode: str = "count",
) -> VoxelizePlan:
    """One task per sequence that needs writing.

    ``states[key]`` is ``"complete"``, ``"incomplete"`` or ``"absent"`` (missing keys: absent). With
    ``resume`` complete sequences are skipped; incomplete ones are always rebuilt from scratch. Array
    shapes and shards come from :func:`svrt_data.store.layout.sequence_arrays` (``bins`` voxel bins of
    ``mode``); a sequence the layout cannot hold raises :class:`StoreLayoutError` naming it.
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
        tasks.append(SequenceTask(len(tasks), seq.key, action, seq.frames, _writes(seq, bins, mode),
                                  backend == "cupy"))
    plan = VoxelizePlan(tuple(tasks), tuple(skipped))
    plan.check_disjoint()
    return plan
