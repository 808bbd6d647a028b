"""Executors: run a list of independent tasks in-process or on a dask.distributed cluster.

``scheduler``: ``"none"`` runs in this process; ``"local"`` starts a LocalCluster of ``workers``
single-threaded processes; anything else is the address of a running scheduler (``tcp://host:8786``),
e.g. one started by dask-jobqueue on SLURM or dask-kubernetes. Tasks that need a GPU are submitted
with ``resources={"GPU": 1}``, so they only run on workers started with ``--resources GPU=1``.
Results come back as tasks finish; a worker that dies mid-task has its task rerun elsewhere
(dask's ``allowed-failures``), which is safe because every task rebuilds its output from scratch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from svrt_errors import BackendUnavailableError, SvrtValueError

__all__ = ["run_tasks", "check_scheduler", "WORKER_MALLOC_TRIM"]

_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?[^\s:/]+(:\d{1,5})$|^[a-z][a-z0-9+.-]*://\[[0-9a-fA-F:]+\]:\d{1,5}$")


def check_scheduler(scheduler: object) -> str:
    """``"none"``, ``"local"`` or a scheduler address ``[scheme://]host:port``; raise otherwise (before any
    work starts)."""
    if isinstance(scheduler, str) and (scheduler in ("none", "local") or _ADDRESS.match(scheduler)):
        return scheduler
    raise SvrtValueError(f"--scheduler {scheduler!r} is neither 'none', 'local' nor a scheduler address such as "
                         "tcp://host:8786 (scheme optional, port required)")

MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
WORKER_MALLOC_TRIM = 1 << 27


def run_tasks(
    fn: Callable[[Any], Any],
    payloads: Sequence[Any],
    *,
    needs_gpu: Sequence[bool] | None = None,
    scheduler: str = "none",
    workers: int = 2,
    on_result: Callable[[int, Any], None] | None = None,
    timings: dict[str, float] | None = None,
    warmup: Callable[[], Any] | None = None,
) -> list[Any]:
    """Run ``fn(payload)`` for every payload; return results in payload order.

    ``on_result(index, result)`` is called as each task finishes (for progress bars). ``timings``, if
    given, receives ``startup_s`` (connecting to / starting the cluster) and ``run_s`` (the tasks).
    ``warmup()``, if given, runs once on every worker before any task (imports, JIT compilation), as
    part of the start-up.
    """
    check_scheduler(scheduler)
    timings = {} if timings is None else timings
    t_start = time.perf_counter()
    gpu = list(needs_gpu) if needs_gpu is not None else [False] * len(payloads)
    results: list[Any] = [None] * len(payloads)
    if scheduler == "none":
        timings["startup_s"] = 0.0
        for i, p in enumerate(payloads):
            results[i] = fn(p)
            if on_result:
                on_result(i, results[i])
        timings["run_s"] = time.perf_counter() - t_start
        return results
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise BackendUnavailableError(
            f"--scheduler {scheduler} needs dask.distributed; install it with `pip install \"svrt[cluster]\"`"
        ) from None
    cluster = None
    if scheduler == "local":
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SvrtValueError(f"--workers must be an integer >= 1, got {workers!r}")
        import dask

        resources = {"GPU": 1} if any(gpu) else None
        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it at all also switches
        # off glibc's dynamic mmap threshold, so every block over 128 KiB a task allocates is a fresh
        # mmap that page-faults again (zarr shard writes suffer most; benchmarks/RESULTS.md, Zarr store).
        # Our tasks' memory is bounded: keep blocks below 128 MiB on the heap.
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": str(WORKER_MALLOC_TRIM) for k in MALLOC_ENV}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, resources=resources,
                                   dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        if warmup is not None:
            client.run(warmup)
        timings["startup_s"] = time.perf_counter() - t_start
        t_run = time.perf_counter()
        futures = {}
        for i, p in enumerate(payloads):
            fut = client.submit(fn, p, pure=False, key=f"svrt-task-{i}",
                                resources={"GPU": 1} if gpu[i] else None)
            futures[fut] = i
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result:
                on_result(i, results[i])
        timings["run_s"] = time.perf_counter() - t_run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
