"""Batch jobs as pure plans plus executors (in-process, or any dask.distributed scheduler).

After pangeo's rechunker: :mod:`pipelines.plan` decides what each task writes and can be tested as a
table; :mod:`pipelines.executors` only runs a plan; :mod:`pipelines.voxelize_job` ties them to the store.
"""
