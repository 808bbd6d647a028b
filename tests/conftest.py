"""Shared test infrastructure.

- ``needs_cuda`` tests are skipped here, centrally, when no CUDA device is usable, unless
  ``FAIL_WITHOUT_CUDA=1`` (set on the GPU machine, where a skip would hide a broken path).
- ``shared_dir`` points at ``../shared`` beside the checkout (override with ``SVRT_SHARED``); tests
  that need it skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SVRT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "spike"


def cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        try:
            import torch

            return torch.cuda.is_available()
        except Exception:
            return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_available() or os.environ.get("FAIL_WITHOUT_CUDA") == "1":
        return
    skip = pytest.mark.skip(reason="needs CUDA (no usable GPU here; FAIL_WITHOUT_CUDA=1 turns this into a failure)")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the shared fixtures live beside the checkout)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is absent")
    return FIXTURES
