"""In-batch pairs with precomputed targets: the training inputs in fixed blocks, the reference
SSIM of every pair within a block computed once, and batches whose images share a block.

An SSIM computed during the step would cost every extra pair time in every step. Here the
targets of all pairs within a block come from one ``ssim_matrix`` per block before training
(about N x block_size pairs in all), and the batches are formed so that their sampled pairs'
first inputs lie in one block: all pairs between the batch's inputs of that block are then
free, both in embeddings and in targets.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..storage import atomic_write
from ..model.flips import FLIPS, flip_image
from ..refssim import ssim_matrix
from .pairs import CROSS_PREFIX

_FORMAT_VERSION = 1


@dataclass
class BlockTargets:
    """Reference SSIM within blocks of the inputs ``0..N-1`` of a PairSet's image stack.

    ``block[i]`` is input i's block and ``pos[i]`` its place in it; ``matrices[k]`` is the
    (n_k, n_k) SSIM matrix of block k's inputs, ``matrices[k][p, q] = ssim(x_p, x_q)`` (the
    data range of the first image, as everywhere). Built with ``flips``, ``flipped[k]`` is
    (3, n_k, n_k): ``flipped[k][c - 1, p, q] = ssim(x_p, flip_c(x_q))`` for the flip codes
    c = 1, 2, 3 of ``FLIPS``, the targets of inputs shown in different orientations.
    """

    block: np.ndarray
    pos: np.ndarray
    matrices: list[np.ndarray]
    flipped: list[np.ndarray] | None = None

    @classmethod
    def build(
        cls, inputs: np.ndarray, block_size: int, rng: np.random.Generator,
        device: str = "cpu", progress: bool = False, flips: bool = False,
    ) -> BlockTargets:
        """``N // block_size`` blocks of inputs drawn at random (at least one; all N when
        fewer), the remainder spread over them: ``block_size`` to ``2 * block_size - 1``
        inputs each."""
        n = len(inputs)
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        members = np.array_split(rng.permutation(n), max(1, n // block_size))
        block = np.empty(n, np.int64)
        pos = np.empty(n, np.int64)
        matrices, flipped = [], []
        views = list(inputs)
        bar = tqdm(members, desc="block targets", unit="block", disable=not progress, file=sys.stderr)
        for k, idx in enumerate(bar):
            block[idx] = k
            pos[idx] = np.arange(len(idx))
            chosen = [views[i] for i in idx]
            matrices.append(ssim_matrix(chosen, chosen, device=device, progress=False).astype(np.float32))
            if flips:
                flipped.append(np.stack([
                    ssim_matrix(chosen, [flip_image(v, code) for v in chosen],
                                device=device, progress=False).astype(np.float32)
                    for code in range(1, len(FLIPS))
                ]))
        return cls(block=block, pos=pos, matrices=matrices, flipped=flipped if flips else None)

    @property
    def n_inputs(self) -> int:
        return len(self.block)

    def _block_of(self, index: np.ndarray) -> np.ndarray:
        """Block of each image index; -1 for the images after the inputs (generated copies)."""
        n = self.n_inputs
        return np.where(index < n, self.block[np.minimum(index, n - 1)], -1)

    def target(self, i: np.ndarray, j: np.ndarray, relative: np.ndarray | None = None) -> np.ndarray:
        """SSIM of inputs (i[k], j[k]), each pair within one block; with ``relative``, of
        (i[k], j[k] flipped by code ``relative[k]``), which needs targets built with flips."""
        bi, bj = self.block[i], self.block[j]
        if np.any(bi != bj):
            raise ValueError("pairs across blocks have no precomputed target")
        if relative is not None and np.any(relative) and self.flipped is None:
            raise ValueError("these block targets were built without flips")
        out = np.empty(len(i), np.float32)
        for k in np.unique(bi):
            sel = bi == k
            p, q = self.pos[i[sel]], self.pos[j[sel]]
            out[sel] = self.matrices[k][p, q]
            if relative is not None and self.flipped is not None:
                code = relative[sel]
                moved = code > 0
                out[np.flatnonzero(sel)[moved]] = self.flipped[k][code[moved] - 1, p[moved], q[moved]]
        return out

    def batches(self, a: np.ndarray, b: np.ndarray, order: np.ndarray, batch_size: int,
                generator: torch.Generator) -> list[np.ndarray]:
        """The pairs ``order`` (a permutation of pair indices) cut into batches whose inputs
        share a block as far as possible: each pair goes with the block of its first side that
        is an input (a pair of two copies goes with a random block); each block's pairs are cut
        into full batches in ``order``'s order; the leftovers of all blocks fill the last
        batches. The batches come in a random order."""
        rand = torch.randint(0, len(self.matrices), (len(a),), generator=generator).numpy()
        block_a, block_b = self._block_of(a), self._block_of(b)
        key = np.where(block_a >= 0, block_a, np.where(block_b >= 0, block_b, rand))
        keyed = key[order]
        grouped = order[np.argsort(keyed, kind="stable")]
        sizes = np.bincount(keyed, minlength=len(self.matrices))
        out: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        start = 0
        for size in sizes:
            group = grouped[start : start + size]
            start += size
            full = (size // batch_size) * batch_size
            out += [group[s : s + batch_size] for s in range(0, full, batch_size)]
            rest.append(group[full:])
        leftover = np.concatenate(rest) if rest else np.empty(0, np.int64)
        out += [leftover[s : s + batch_size] for s in range(0, len(leftover), batch_size)]
        shuffle = torch.randperm(len(out), generator=generator).numpy()
        return [out[k] for k in shuffle]

    def pairs_in_batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (p, q), p < q, of a batch's images that are distinct inputs of one block.
        An input that fills several positions is in a pair from each of them."""
        blk = self._block_of(index)
        p, q = np.triu_indices(len(index), k=1)
        keep = (blk[p] >= 0) & (blk[p] == blk[q]) & (index[p] != index[q])
        return p[keep], q[keep]

    def save(self, path: str | os.PathLike[str]) -> None:
        """One .npz file, written atomically."""
        arrays = {f"m{k}": m for k, m in enumerate(self.matrices)}
        arrays.update({f"f{k}": m for k, m in enumerate(self.flipped or [])})
        atomic_write(Path(path), lambda fh: np.savez(fh, version=np.int64(_FORMAT_VERSION), block=self.block,
                                                     pos=self.pos, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BlockTargets:
        with np.load(path, allow_pickle=False) as data:
            if "version" not in data or int(data["version"]) != _FORMAT_VERSION or "block" not in data:
                raise ValueError(f"{path}: not a block-target file of format {_FORMAT_VERSION}")
            block, pos = data["block"], data["pos"]
            n = int(block.max()) + 1
            matrices = [data[f"m{k}"] for k in range(n)]
            flipped = [data[f"f{k}"] for k in range(n)] if "f0" in data else None
        return cls(block=block, pos=pos, matrices=matrices, flipped=flipped)


@dataclass
class CopyPartners:
    """Targets of near-copies against look-alikes of their sources, for in-batch pairs.

    The block targets pair clean inputs only, and the sampled pairs meet a near-copy with its
    own source or (``cross:`` pairs) with a random other input. A synthetic image is judged
    against the training images that look most like it, though, and a near-copy of one brain
    against a look-alike brain is a pair the network otherwise never trains on, and
    over-estimates where it is unbiased on the same look-alikes clean. Here every near-copy
    ``copy[m]`` of a (source, copy) pair gets as partners the ``k`` inputs of its source's
    block that look most like the source (highest SSIM in the block's matrix, the source
    itself excluded), ``partner[m]``, with ``target[m, r, j] = ssim(x_{partner[m, j]},
    flip_r(copy[m]))`` for the flip codes r of ``FLIPS`` (r = 0 only when built without
    flips). A batch holds a copy's partners when they are first inputs of its other pairs,
    which the block batches make likely; those pairs then cost no embedding.
    """

    copy: np.ndarray
    partner: np.ndarray
    target: np.ndarray
    n_inputs: int

    @classmethod
    def build(
        cls, images: np.ndarray, a: np.ndarray, b: np.ndarray, family: np.ndarray, blocks: BlockTargets,
        k: int, device: str = "cpu", progress: bool = False, flips: bool = False,
    ) -> CopyPartners:
        """From a PairSet's image stack and pairs (``a``, ``b``, ``family``) and the block
        targets of its inputs; ``k`` partners per copy (fewer when the smallest block has fewer
        other inputs)."""
        if k < 1:
            raise ValueError(f"copy partners need k >= 1, got {k}")
        n = blocks.n_inputs
        single = (a < n) & (b >= n) & ~np.char.startswith(family.astype(np.str_), CROSS_PREFIX)
        source, copy = a[single], b[single]
        order = np.argsort(copy, kind="stable")
        source, copy = source[order], copy[order]
        k = min(k, min(len(m) for m in blocks.matrices) - 1)
        members = [np.empty(len(m), np.int64) for m in blocks.matrices]
        for i in range(n):
            members[blocks.block[i]][blocks.pos[i]] = i
        codes = range(len(FLIPS)) if flips else range(1)
        partner = np.empty((len(copy), max(k, 0)), np.int64)
        target = np.empty((len(copy), len(codes), max(k, 0)), np.float32)
        if k < 1 or not len(copy):
            return cls(copy=copy, partner=partner, target=target, n_inputs=n)
        by_order = np.argsort(source, kind="stable")
        by_source = np.split(by_order, np.flatnonzero(np.diff(source[by_order])) + 1)
        for rows in tqdm(by_source, desc="copy partners", unit="source", disable=not progress, file=sys.stderr):
            s = int(source[rows[0]])
            row = blocks.matrices[blocks.block[s]][blocks.pos[s]].astype(np.float64)
            row[blocks.pos[s]] = -np.inf
            near = members[blocks.block[s]][np.argsort(-row, kind="stable")[:k]]
            views = [flip_image(images[int(c)], code) for c in copy[rows] for code in codes]
            values = ssim_matrix([images[int(j)] for j in near], views, device=device, progress=False)
            partner[rows] = near
            target[rows] = values.reshape(k, len(rows), len(codes)).transpose(1, 2, 0)
        return cls(copy=copy, partner=partner, target=target, n_inputs=n)

    def pairs_in_batch(
        self, index: np.ndarray, codes: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions (p, q) of a batch's images where q holds a copy and p one of its partners,
        and their targets in the relative flip of the two positions (``codes``: each
        position's flip code, or None). An image that fills several positions is in a pair
        from each of them."""
        held = np.flatnonzero(np.isin(index, self.copy))
        rows = np.searchsorted(self.copy, index[held])
        # (copy held, partner, position): the partner sits there. Partners are inputs, so a
        # copy's own position never matches.
        h, which, first = np.nonzero(self.partner[rows][:, :, None] == index[None, None, :])
        second = held[h]
        relative = np.zeros(len(first), np.int64) if codes is None else codes[first] ^ codes[second]
        if np.any(relative >= self.target.shape[1]):
            raise ValueError("these copy partners were built without flips")
        return first, second, self.target[rows[h], relative, which]

    def save(self, path: str | os.PathLike[str]) -> None:
        """One .npz file, written atomically."""
        atomic_write(Path(path), lambda fh: np.savez(
            fh, version=np.int64(_FORMAT_VERSION), copy=self.copy, partner=self.partner,
            target=self.target, n_inputs=np.int64(self.n_inputs)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CopyPartners:
        with np.load(path, allow_pickle=False) as data:
            if "version" not in data or int(data["version"]) != _FORMAT_VERSION or "partner" not in data:
                raise ValueError(f"{path}: not a copy-partner file of format {_FORMAT_VERSION}")
            return cls(copy=data["copy"], partner=data["partner"], target=data["target"],
                       n_inputs=int(data["n_inputs"]))
