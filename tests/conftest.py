"""Shared fixtures: the real data in ../shared/data (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or skip when this checkout has none beside it."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found: the real-data tests need ../shared/data")
    return DATA
