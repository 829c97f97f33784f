from __future__ import annotations

import numpy as np
import pytest

from deepssim.ldm.duplication import copy_counts, records


@pytest.mark.parametrize("level, lo, hi", [("none", 1, 1), ("low", 1, 4), ("high", 1, 14)])
def test_counts_are_in_the_levels_range_and_cover_it(level, lo, hi):
    counts = copy_counts(2000, level, seed=0)
    assert counts.min() == lo and counts.max() == hi
    assert set(np.unique(counts)) == set(range(lo, hi + 1))


def test_records_repeat_each_image_by_its_count_and_are_seeded():
    counts = copy_counts(50, "high", seed=1)
    recs = records(counts)
    assert len(recs) == counts.sum()
    assert np.array_equal(np.bincount(recs, minlength=50), counts)
    assert np.array_equal(counts, copy_counts(50, "high", seed=1))
    assert not np.array_equal(counts, copy_counts(50, "high", seed=2))
    with pytest.raises(ValueError, match="unknown duplication level"):
        copy_counts(5, "extreme", seed=0)
