"""In-batch pairs with precomputed targets: blocks, their SSIM, block-wise batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepssim.model.flips import FLIPS
from deepssim.refssim import ssim
from deepssim.training.blocks import BlockTargets, CopyPartners
from deepssim.training.pairs import CROSS_PREFIX


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.random((16, 24, 24)).astype(np.float32)
    base[8:] = base[:8] + 0.3 * rng.random((8, 24, 24)).astype(np.float32)  # some similar pairs
    return base


def test_blocks_cover_the_inputs_and_hold_the_reference_ssim(inputs: np.ndarray) -> None:
    blocks = BlockTargets.build(inputs, 5, np.random.default_rng(0))
    assert len(blocks.matrices) == 3  # 16 // 5, the remainder spread over the blocks
    assert sorted(len(m) for m in blocks.matrices) == [5, 5, 6]
    assert np.bincount(blocks.block).tolist() == [len(m) for m in blocks.matrices]
    for k in range(3):
        members = np.flatnonzero(blocks.block == k)
        assert sorted(blocks.pos[members].tolist()) == list(range(len(members)))
    i, j = np.triu_indices(16, k=1)
    same = blocks.block[i] == blocks.block[j]
    got = blocks.target(i[same], j[same])
    want = [ssim(inputs[a], inputs[b]) for a, b in zip(i[same], j[same])]
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="across blocks"):
        blocks.target(i[~same][:1], j[~same][:1])


def test_batches_partition_the_pairs_and_keep_blocks_together(inputs: np.ndarray) -> None:
    blocks = BlockTargets.build(inputs, 4, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    n_pairs = 200
    a = rng.integers(0, 16, n_pairs)
    b = rng.integers(0, 20, n_pairs)  # indices >= 16 are copies, not inputs
    a[:10] = 16 + rng.integers(0, 4, 10)  # copy-copy and copy-input pairs
    order = rng.permutation(n_pairs)
    a[10:15] = 16 + rng.integers(0, 4, 5)  # copy first, input second: grouped by the second
    b[10:15] = rng.integers(0, 16, 5)
    order = rng.permutation(n_pairs)
    batches = blocks.batches(a, b, order, 8, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n_pairs))
    assert len(batches) == -(-n_pairs // 8)  # full batches per block, then the leftovers
    key = [int(blocks.block[x]) if x < 16 else int(blocks.block[y]) if y < 16 else None for x, y in zip(a, b)]
    pure = [batch for batch in batches if len({key[k] for k in batch if key[k] is not None}) == 1]
    # At most one block's leftovers (< 8 pairs each) per mixed batch: 4 blocks, 25 batches.
    assert len(pure) >= len(batches) - 4 and len(pure) >= 20
    # Within a pure batch, pairs keep the order they had in ``order``.
    rank = np.argsort(order)
    assert all((np.diff(rank[batch]) > 0).all() for batch in pure)
    again = blocks.batches(a, b, order, 8, torch.Generator().manual_seed(0))
    assert all((x == y).all() for x, y in zip(batches, again))


def test_pairs_in_batch_are_distinct_inputs_of_one_block(inputs: np.ndarray) -> None:
    blocks = BlockTargets.build(inputs, 4, np.random.default_rng(0))
    # Hand-made blocks: {0, 1, 2, 3}, {4, ..., 7}, ...; inputs 0..15, copies from 16 on.
    blocks.block = np.arange(16) // 4
    blocks.pos = np.arange(16) % 4
    index = np.array([0, 1, 2, 0, 17, 5, 6, 9, 17, 3])
    p, q = blocks.pairs_in_batch(index)
    got = set(zip(p.tolist(), q.tolist()))
    # Block 0 at positions 0, 1, 2, 3, 9 (input 0 twice), block 1 at 5, 6, block 2 alone at 7;
    # the copy 17 (positions 4, 8) is in no pair, nor is input 0 with itself (0, 3).
    want = {(0, 1), (0, 2), (0, 9), (1, 2), (1, 3), (1, 9), (2, 3), (2, 9), (3, 9), (5, 6)}
    assert got == want


def test_save_load_round_trip_and_bad_file(inputs: np.ndarray, tmp_path: Path) -> None:
    blocks = BlockTargets.build(inputs, 5, np.random.default_rng(0))
    blocks.save(tmp_path / "b.npz")
    back = BlockTargets.load(tmp_path / "b.npz")
    assert (back.block == blocks.block).all() and (back.pos == blocks.pos).all()
    assert all((x == y).all() for x, y in zip(back.matrices, blocks.matrices))
    np.savez(tmp_path / "bad.npz", block=blocks.block)
    with pytest.raises(ValueError, match="bad.npz"):
        BlockTargets.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="block_size"):
        BlockTargets.build(inputs, 1, np.random.default_rng(0))


def test_blocks_with_flips_hold_the_ssim_of_every_relative_flip(inputs: np.ndarray, tmp_path: Path) -> None:
    blocks = BlockTargets.build(inputs, 5, np.random.default_rng(0), flips=True)
    i, j = np.triu_indices(16, k=1)
    same = blocks.block[i] == blocks.block[j]
    i, j = i[same], j[same]
    code = np.arange(len(i)) % 4
    want = [ssim(inputs[a], np.flip(inputs[b], FLIPS[c]).copy()) for a, b, c in zip(i, j, code)]
    np.testing.assert_allclose(blocks.target(i, j, code), want, atol=1e-6)
    np.testing.assert_array_equal(blocks.target(i, j, np.zeros_like(code)), blocks.target(i, j))
    # Flipping both sides alike leaves SSIM unchanged, so a code is all a pair needs.
    a, b = inputs[0].astype(np.float64), inputs[9].astype(np.float64)
    for c in range(4):
        for d in range(4):
            assert ssim(np.flip(a, FLIPS[c]).copy(), np.flip(b, FLIPS[d]).copy()) == pytest.approx(
                ssim(a, np.flip(b, FLIPS[c ^ d]).copy()), abs=1e-12)
    blocks.save(tmp_path / "f.npz")
    back = BlockTargets.load(tmp_path / "f.npz")
    assert back.flipped is not None and all((x == y).all() for x, y in zip(back.flipped, blocks.flipped or []))
    plain = BlockTargets.build(inputs, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="without flips"):
        plain.target(i, j, code)


def _with_copies(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs 0..15 and copies 16..21 with (source, copy) pairs, a cross pair, a copy pair."""
    rng = np.random.default_rng(5)
    sources = np.array([0, 0, 3, 9, 12, 5])
    copies = inputs[sources] + 0.2 * rng.random((6, 24, 24)).astype(np.float32)
    images = np.concatenate([inputs, copies])
    a = np.array([0, 0, 3, 9, 12, 5, 7, 1, 16])
    b = np.array([16, 17, 18, 19, 20, 21, 18, 2, 17])
    family = np.array(["noise", "blur", "noise", "mix", "blur", "noise", CROSS_PREFIX + "noise", "random",
                       "noise+blur"])
    return images, a, b, family


def test_copy_partners_are_the_sources_look_alikes_with_the_ssim_of_each_flip(
    inputs: np.ndarray, tmp_path: Path
) -> None:
    images, a, b, family = _with_copies(inputs)
    blocks = BlockTargets.build(inputs, 5, np.random.default_rng(0), flips=True)
    partners = CopyPartners.build(images, a, b, family, blocks, 3, flips=True)
    # Only the (source, copy) pairs: not the cross pair (7, 18), nor the copy pair (16, 17).
    assert partners.copy.tolist() == [16, 17, 18, 19, 20, 21]
    assert partners.partner.shape == (6, 3) and partners.target.shape == (6, 4, 3)
    for m, (copy, source) in enumerate(zip(partners.copy, [0, 0, 3, 9, 12, 5])):
        same = np.flatnonzero((blocks.block == blocks.block[source]) & (np.arange(16) != source))
        by_ssim = same[np.argsort([-ssim(inputs[source], inputs[j]) for j in same], kind="stable")]
        assert partners.partner[m].tolist() == by_ssim[:3].tolist()
        for r in range(4):
            want = [ssim(images[j], np.flip(images[copy], FLIPS[r]).copy()) for j in partners.partner[m]]
            np.testing.assert_allclose(partners.target[m, r], want, atol=1e-6)
    partners.save(tmp_path / "p.npz")
    back = CopyPartners.load(tmp_path / "p.npz")
    assert (back.copy == partners.copy).all() and (back.partner == partners.partner).all()
    assert (back.target == partners.target).all() and back.n_inputs == 16
    with pytest.raises(ValueError, match="p.npz"):
        BlockTargets.load(tmp_path / "p.npz")
    blocks.save(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="b.npz"):
        CopyPartners.load(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="k >= 1"):
        CopyPartners.build(images, a, b, family, blocks, 0)


def test_copy_partners_in_a_batch_take_the_target_of_the_relative_flip(inputs: np.ndarray) -> None:
    images, a, b, family = _with_copies(inputs)
    blocks = BlockTargets.build(inputs, 5, np.random.default_rng(0), flips=True)
    partners = CopyPartners.build(images, a, b, family, blocks, 3, flips=True)
    m = 2  # copy 18, of input 3
    near = partners.partner[m]
    # near[0] fills two positions (1 and 6), in different flips: a pair from each.
    index = np.array([3, near[0], 18, 7, near[2], 16, near[0]])
    codes = np.array([0, 1, 3, 2, 0, 1, 2])
    first, second, target = partners.pairs_in_batch(index, codes)
    got = sorted((int(p), int(q), float(t)) for p, q, t in zip(first, second, target))
    want = [(1, 2, partners.target[m, 1 ^ 3, 0]), (4, 2, partners.target[m, 0 ^ 3, 2]),
            (6, 2, partners.target[m, 2 ^ 3, 0])]
    # Copy 16 (of input 0) meets those of its partners the batch holds, in their flips.
    for j, x in enumerate(partners.partner[0]):
        want += [(int(p), 5, partners.target[0, codes[p] ^ 1, j]) for p in np.flatnonzero(index == x)]
    want = sorted((p, q, float(t)) for p, q, t in want)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # each pair once
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want])
    assert all(index[q] >= 16 and index[p] < 16 for p, q in zip(first, second))
    none = partners.pairs_in_batch(np.array([1, 2, 4]), None)
    assert all(len(x) == 0 for x in none)
    plain = CopyPartners.build(images, a, b, family, BlockTargets.build(inputs, 5, np.random.default_rng(0)), 3)
    assert plain.target.shape == (6, 1, 3)
    with pytest.raises(ValueError, match="without flips"):
        plain.pairs_in_batch(index, codes)
    np.testing.assert_array_equal(plain.pairs_in_batch(index, None)[2], partners.pairs_in_batch(index, None)[2])
