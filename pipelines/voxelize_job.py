"""``svrt-data voxelize``: a raw dataset + align log -> one svrt Zarr store, resumable, local or on Dask."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from pipelines.executors import check_scheduler, run_tasks
from pipelines.plan import SequenceToWrite, VoxelizePlan, plan_voxelize
from svrt_data.align import read_align_log
from svrt_data.store import layout as L
from svrt_data.store.owned import check_parent
from svrt_data.store.reader import node_attrs
from svrt_data.store.resume import sequence_status
from svrt_data.store.sources import SequenceSource, plan_sequence_sources
from svrt_data.store.writer import (
    SequenceSummary,
    VoxelSettings,
    create_store,
    finish_store,
    output_kind,
    replaceable_sequence,
    sequence_dir,
    write_sequence,
)
from svrt_errors import StoreError, StoreLayoutError

__all__ = ["VoxelizeReport", "voxelize_dataset", "write_task"]


@dataclass
class VoxelizeReport:
    store: str
    plan: VoxelizePlan
    written: list[SequenceSummary] = field(default_factory=list)
    seconds: float = 0.0  # writing, after the cluster (if any) was up
    startup_seconds: float = 0.0
    dry_run: bool = False
    rebuilt: dict[str, str] = field(default_factory=dict)  # key -> why a stored sequence is rebuilt
    cleaned: list[str] = field(default_factory=list)  # leftovers of killed runs that were cleaned up
    deleted: list[str] = field(default_factory=list)  # --overwrite: stored sequences this run did not write

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.written)

    @property
    def spike_frames(self) -> int:
        return sum(s.spike_frames for s in self.written)

    @property
    def bytes_in(self) -> int:
        return sum(s.bytes_in for s in self.written)

    @property
    def bytes_out(self) -> int:
        return sum(s.bytes_out for s in self.written)


def write_task(payload: tuple[str, SequenceSource, VoxelSettings]) -> SequenceSummary:
    """One task: write one sequence (module-level so Dask workers can import it)."""
    store, source, voxel = payload
    return write_sequence(store, source, voxel)


def _check_backend(voxel: VoxelSettings) -> None:
    """Fail now, not in a worker, when the backend is unknown or not installed; also compiles its kernel
    (voxelizing one tiny window), so a worker's first sequence does not pay for the JIT."""
    import numpy as np

    from svrt_data.voxelize import voxelize

    voxelize(np.zeros((voxel.bins, 1, 1), np.uint8), np.array([[0.0, float(voxel.bins)]]), bins=voxel.bins,
             mode=voxel.mode, backend=voxel.backend)


def _warm_worker(voxel: VoxelSettings) -> None:
    """Run on each Dask worker before its first task: import the writer's libraries, compile the kernel."""
    import PIL.Image  # noqa: F401
    import zarr  # noqa: F401

    import svrt_data.store.writer  # noqa: F401

    _check_backend(voxel)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def voxelize_dataset(
    raw_root: str | os.PathLike,
    align_log: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bins: int = 32,
    mode: str = "count",
    backend: str = "auto",
    overwrite: bool = False,
    resume: bool = True,
    sequences: list[str] | None = None,
    scheduler: str = "none",
    workers: int = 2,
    dry_run: bool = False,
    blur_dir: str = "blur",
    sharp_dir: str | None = "sharp",
    progress: bool = True,
) -> VoxelizeReport:
    """Validate every input, plan, then write the sequences that need it (see ``svrt-data voxelize --help``)."""
    raw_root, out = Path(raw_root), Path(out)
    check_scheduler(scheduler)
    voxel = VoxelSettings(bins, mode, backend)
    voxel.as_attrs()  # validates the mode
    _check_backend(voxel)
    log = read_align_log(align_log)
    sources = plan_sequence_sources(raw_root, log, blur_dir=blur_dir, sharp_dir=sharp_dir, sequences=sequences)
    kind = output_kind(out)  # refuses a file or a folder svrt did not write, before anything is written
    if kind == "absent":
        check_parent(out, "store")
    elif not overwrite:
        attrs, _ = node_attrs(out)
        L.check_layout_version(attrs or {}, str(out))  # an svrt store of another layout version
        have = (attrs or {})[L.ROOT_ATTR].get("voxel")
        if have != voxel.as_attrs():
            raise StoreLayoutError(f"{out} holds voxels {have}, but this run asks for {voxel.as_attrs()}; pass "
                                   "--overwrite to rebuild the store (sequence by sequence), or write to a new path")
    states, rebuilt = _states(out, kind, sources, voxel, overwrite=overwrite, resume=resume)
    shapes = [SequenceToWrite(s.key, s.n_frames, s.rgb_shape, (s.geometry.height, s.geometry.width),
                              s.n_spike_frames, s.sharp_files is not None) for s in sources]
    plan = plan_voxelize(shapes, states, bins=bins, backend=backend, resume=resume, mode=mode)
    report = VoxelizeReport(str(out), plan, dry_run=dry_run, rebuilt=rebuilt)
    if dry_run:
        return report
    source_attrs = {"raw_root": str(raw_root.resolve()), "align_log": Path(align_log).name,
                    "align_log_sha256": _sha256(Path(align_log))}
    report.cleaned = create_store(out, voxel, source_attrs, overwrite=overwrite)
    by_key = {s.key: s for s in sources}
    todo = [by_key[t.key] for t in plan.tasks]
    bar = tqdm(total=sum(s.n_frames for s in todo), unit="frame", desc="voxelize", disable=not progress)

    def done(i: int, summary: SequenceSummary) -> None:
        bar.update(summary.frames)
        bar.set_postfix_str(summary.key)

    timings: dict[str, float] = {}
    try:
        report.written = run_tasks(write_task, [(str(out), s, voxel) for s in todo],
                                   needs_gpu=[t.needs_gpu for t in plan.tasks], scheduler=scheduler,
                                   workers=workers, on_result=done, timings=timings,
                                   warmup=functools.partial(_warm_worker, voxel))
    finally:
        bar.close()
    report.seconds, report.startup_seconds = timings.get("run_s", 0.0), timings.get("startup_s", 0.0)
    if any(r is None for r in report.written):
        raise StoreError("internal: a task returned no summary")
    if overwrite:
        report.deleted = finish_store(out, voxel, source_attrs, keep={s.key for s in sources})
    return report


def _states(out: Path, kind: str, sources: list[SequenceSource], voxel: VoxelSettings, *, overwrite: bool,
            resume: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Plan states of the sequences (``complete``, ``incomplete``, ``absent``) and why stored ones are
    rebuilt; refuses sequence folders svrt did not write and, without ``overwrite``, sequences built from
    other inputs or settings (``stale``: rebuilding them would replace data made from something else)."""
    if kind in ("absent", "empty"):
        return {}, {}
    states, rebuilt, stale = {}, {}, []
    for s in sources:
        folder = sequence_dir(out, s.split, s.sequence)
        if overwrite:
            if folder.exists() and not replaceable_sequence(folder):
                raise StoreError(f"{folder} exists and is not an svrt sequence; refusing to replace it. Move it out "
                                 "of the store, or write to another store")
            states[s.key] = "incomplete" if folder.exists() else "absent"
            continue
        state, why = sequence_status(out, s, voxel)
        if state == "stale":
            stale.append(f"{s.key}: {why}")
        elif state == "rebuild":
            states[s.key], rebuilt[s.key] = "incomplete", why
        elif state in ("complete", "absent"):
            states[s.key] = state
            if state == "complete" and not resume:
                rebuilt[s.key] = "--no-resume"
        else:
            raise StoreError(f"internal: sequence state {state!r}")
    if stale:
        listing = "\n  ".join(stale[:10]) + (f"\n  ... and {len(stale) - 10} more" if len(stale) > 10 else "")
        raise StoreError(f"{out}: {len(stale)} stored sequence(s) were built from other inputs or settings than this "
                         f"run's:\n  {listing}\nKeeping them would mix sources. Pass --overwrite to rebuild them from "
                         "the current raw data (each old sequence stays until its replacement is complete), or "
                         "write to a new store")
    return states, rebuilt
