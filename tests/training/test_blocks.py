"""In-batch pairs with precomputed targets: blocks, their SSIM, block-wise batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepssim.refssim import ssim
from deepssim.training.blocks import BlockTargets


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
    batches = blocks.batches(a, b, order, 8, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n_pairs))
    pure = 0
    for batch in batches:
        keys = {int(blocks.block[x]) for x in a[batch] if x < 16}
        pure += len(keys) <= 1
    assert pure >= len(batches) - 4  # only the leftover batches mix blocks
    again = blocks.batches(a, b, order, 8, torch.Generator().manual_seed(0))
    assert all((x == y).all() for x, y in zip(batches, again))


def test_pairs_in_batch_are_distinct_inputs_of_one_block(inputs: np.ndarray) -> None:
    blocks = BlockTargets.build(inputs, 4, np.random.default_rng(0))
    index = np.array([0, 1, 2, 3, 0, 17, 5, 9, 12, 13])
    p, q = blocks.pairs_in_batch(index)
    assert (p < q).all() and (index[p] != index[q]).all() and (index[p] < 16).all() and (index[q] < 16).all()
    assert (blocks.block[index[p]] == blocks.block[index[q]]).all()
    want = {(x, y) for x in range(10) for y in range(x + 1, 10)
            if index[x] < 16 and index[y] < 16 and index[x] != index[y]
            and blocks.block[index[x]] == blocks.block[index[y]]}
    assert set(zip(p.tolist(), q.tolist())) == want


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
