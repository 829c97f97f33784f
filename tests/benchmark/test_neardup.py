"""Near-duplicate grouping: the same image up to flips, rotation and contrast, not others."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepssim.benchmark.split import group_images
from deepssim.benchmark.neardup import near_duplicate_groups, near_duplicate_pairs


def _scan(seed: int, size: int = 64) -> np.ndarray:
    """A smooth blob-like image in [0, 1], different for each seed."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.normal(size=(size, size)), 4)
    yy, xx = np.mgrid[:size, :size] - size / 2
    image = image * (xx**2 + yy**2 < (0.45 * size) ** 2)
    return ((image - image.min()) / np.ptp(image)).astype(np.float32)


def _twins() -> list[np.ndarray]:
    a = _scan(0)
    mirrored = a[:, ::-1]
    turned = ndimage.rotate(a[::-1], 7, reshape=False, order=1, mode="nearest")
    contrast = a ** 1.4
    return [a, _scan(1), mirrored, _scan(2), turned, contrast, _scan(3)]


def test_twins_pair_up_and_others_do_not() -> None:
    pairs = {tuple(p) for p in near_duplicate_pairs(_twins()).tolist()}
    assert pairs == {(0, 2), (0, 4), (0, 5), (2, 4), (2, 5), (4, 5)}


def test_groups_are_connected_components() -> None:
    group = near_duplicate_groups(_twins())
    assert len(set(group[[0, 2, 4, 5]])) == 1
    assert len(set(group)) == 4


def test_threshold_and_trivial_inputs() -> None:
    assert len(near_duplicate_pairs(_twins(), threshold=0.999)) < 6
    assert near_duplicate_pairs([_scan(0)]).shape == (0, 2)


@pytest.mark.parametrize("near", [None, 0.97])
def test_builder_grouping_option(near: float | None) -> None:
    images = [(im * 60000).astype(np.uint16) for im in _twins()]
    group = group_images([f"{k}.png" for k in range(len(images))], images, None, near)
    assert bool(group[0] == group[2]) is (near is not None)
    assert len(set(group)) == (4 if near else 7)


def test_cli_flag_parses_numbers_and_off() -> None:
    from deepssim.cli import build_parser
    from deepssim.cli.bench import OFF

    parse = build_parser().parse_args
    base = ["benchmark", "build", "--images", "x", "--out", "y"]
    assert parse(base).near_duplicates is None  # the builder's default applies
    assert parse(base + ["--near-duplicates", "0.9"]).near_duplicates == 0.9
    assert parse(base + ["--near-duplicates", "off"]).near_duplicates == OFF
