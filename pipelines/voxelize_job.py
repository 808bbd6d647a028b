"""``svrt-data voxelize``: a raw dataset + align log -> one svrt Zarr store, resumable, local or on Dask."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from pipelines.executors import run_tasks
from pipelines.plan import SequenceToWrite, VoxelizePlan, plan_voxelize
from svrt_data.align import read_align_log
from svrt_data.store.sources import SequenceSource, plan_sequence_sources
from svrt_data.store.writer import SequenceSummary, VoxelSettings, create_store, sequence_state, write_sequence
from svrt_errors import StoreError

__all__ = ["VoxelizeReport", "voxelize_dataset", "write_task"]


@dataclass
class VoxelizeReport:
    store: str
    plan: VoxelizePlan
    written: list[SequenceSummary] = field(default_factory=list)
    seconds: float = 0.0  # writing, after the cluster (if any) was up
    startup_seconds: float = 0.0
    dry_run: bool = False

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
    voxel = VoxelSettings(bins, mode, backend)
    voxel.as_attrs()  # validates the mode
    _check_backend(voxel)
    log = read_align_log(align_log)
    sources = plan_sequence_sources(raw_root, log, blur_dir=blur_dir, sharp_dir=sharp_dir, sequences=sequences)
    states = {}
    if out.exists() and not overwrite:
        states = {s.key: sequence_state(out, s.split, s.sequence) for s in sources}
    shapes = [SequenceToWrite(s.key, s.n_frames, s.rgb_shape, (s.geometry.height, s.geometry.width),
                              s.n_spike_frames, s.sharp_files is not None) for s in sources]
    plan = plan_voxelize(shapes, states, bins=bins, backend=backend, resume=resume, mode=mode)
    report = VoxelizeReport(str(out), plan, dry_run=dry_run)
    if dry_run:
        return report
    create_store(out, voxel, {"raw_root": str(raw_root.resolve()), "align_log": Path(align_log).name,
                              "align_log_sha256": _sha256(Path(align_log))}, overwrite=overwrite)
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
    return report
