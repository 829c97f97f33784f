"""SliceSpec: parsing, validation, selection, and the empty-slice rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.readers import ImageRef, SliceSpec
from deepssim.readers.base import Item
from deepssim.readers.registry import READERS
from deepssim.readers.slicing import refs_for


@pytest.mark.parametrize(
    ("text", "select", "indices"),
    [
        ("center", "center", [5]),
        (" CENTER ", "center", [5]),
        ("all", "all", list(range(11))),
        ("2:5", "2:5", [2, 3, 4]),
        ("::4", "::4", [0, 4, 8]),
        ("1:9:3", "1:9:3", [1, 4, 7]),
        ("-2:", "-2:", [9, 10]),
        ("7", "7", [7]),
        ("-1", "-1", [10]),
    ],
)
def test_parse_and_indices(text: str, select: str, indices: list[int]) -> None:
    spec = SliceSpec.parse(text, axis=1, skip_empty=True)
    assert (spec.select, spec.axis, spec.skip_empty, spec.empty_fraction) == (select, 1, True, 0.01)
    assert spec.indices(11) == indices


@pytest.mark.parametrize("text", ["middle", "", "1:2:3:4", "a:b", "::0", "1.5", "#3"])
def test_bad_text_is_a_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="bad slice selection"):
        SliceSpec.parse(text)


def test_bad_fields_rejected() -> None:
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        SliceSpec(axis=3)
    with pytest.raises(ValueError, match="empty_fraction"):
        SliceSpec(empty_fraction=1.5)
    with pytest.raises(ValueError, match="bad slice selection"):
        SliceSpec(select="half")
    with pytest.raises(IndexError, match="out of range"):
        SliceSpec.parse("11").indices(11)


def test_empty_rule_threshold_and_fraction() -> None:
    # 10 x 10 slices over background 0 and peak 100: foreground means > 2.
    volume = np.zeros((10, 10, 5), dtype=np.float32)
    volume[0, 0, 0] = 100.0  # 1 % of pixels: kept at the default 1 %
    volume[:, :, 1] = 2.0  # at the 2 % level, not above it: empty
    volume[:3, :, 2] = 2.5  # 30 % just above the level
    volume[:, :, 4] = 50.0
    reader = next(r for r in READERS if r.suffixes == (".npy",))
    item = Item(Path("v.npy"), None, volume.shape)
    refs = refs_for("v.npy", item, reader, SliceSpec(axis=2, select="all", skip_empty=True), volume)
    assert [ref.index for ref in refs] == [0, 2, 4]
    strict = SliceSpec(axis=2, select="all", skip_empty=True, empty_fraction=0.05)
    assert [ref.index for ref in refs_for("v.npy", item, reader, strict, volume)] == [2, 4]
    assert refs[0] == ImageRef("v.npy#axis2:0", Path("v.npy"), None, 2, 0)
