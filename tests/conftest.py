"""Shared fixtures. Tests that need ../shared/data use `data_root` and skip without it."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgemon.evaluate.common import default_data_root

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "sample-signals"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if root is None:
        pytest.skip("real data not present: set EDGEMON_DATA or put shared/data beside the repo")
    return root


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES
