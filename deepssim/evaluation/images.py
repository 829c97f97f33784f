"""The images of a pair file, each read once per run and kept in memory.

Pair files name the same images many times (each synthetic image in several pairs, each
training image against several synthetic ones): ``ImageCache`` reads each path once with the
project's readers and hands out the same array object every time, so that metrics can also
reuse per-image work (statistics, embeddings) by object identity.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..readers import ReadError, read_image
from ..transforms.perturb import BENCHMARK_PERTURB, perturb_image
from .pairs import PairFile

MISSING_SHOWN = 10
"""Missing files named in the error message (the rest are counted)."""


class ImageCache:
    """Images of one root folder by relative path, read once (float32, 2D).

    ``perturbed(path)`` is the image after the benchmark protocol's perturbation (flips,
    rotation up to +-10 degrees, gamma 0.5..1.5, each with probability 0.8), drawn from a generator seeded
    by ``seed`` and the path: the same image is perturbed the same way in every pair and run.
    """

    def __init__(self, root: str | Path, *, seed: int = 0) -> None:
        self.root = Path(root)
        self.seed = seed
        self._images: dict[str, np.ndarray] = {}
        self._perturbed: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._images)

    def get(self, path: str) -> np.ndarray:
        """The image at ``root / path`` (read on first use)."""
        image = self._images.get(path)
        if image is None:
            image = np.asarray(read_image(self.root / path), dtype=np.float32)
            self._images[path] = image
        return image

    def perturbed(self, path: str) -> np.ndarray:
        """The image at ``root / path`` after the seeded benchmark perturbation."""
        image = self._perturbed.get(path)
        if image is None:
            digest = hashlib.sha256(f"{self.seed}:{path}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            image = perturb_image(self.get(path), BENCHMARK_PERTURB, rng)
            self._perturbed[path] = image
        return image

    def check_exist(self, paths: list[str], source: str | Path) -> None:
        """Raise ReadError naming the paths (of ``source``) that are not files under root."""
        missing = sorted({p for p in paths if p not in self._images
                          and not (self.root / p.split("#", 1)[0]).exists()})
        if missing:
            shown = ", ".join(missing[:MISSING_SHOWN]) + (" ..." if len(missing) > MISSING_SHOWN else "")
            raise ReadError(self.root, f"{len(missing)} image(s) named in {source} not found: {shown}")

    def load_pairs(self, pairs: PairFile, *, progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The real and synthetic image of every pair (synthetic ones perturbed when the pair
        file asks for it); each distinct path is one array object.

        Raises:
            ReadError: naming the missing files, or the first unreadable one.
        """
        self.check_exist([*pairs.real, *pairs.synthetic], pairs.path)
        todo = [p for p in dict.fromkeys([*pairs.real, *pairs.synthetic]) if p not in self._images]
        for path in tqdm(todo, desc="read images", unit="img", file=sys.stderr,
                         disable=not progress or len(todo) < 200):
            self.get(path)
        synthetic_of = self.perturbed if pairs.perturb_synthetic else self.get
        return [self.get(p) for p in pairs.real], [synthetic_of(p) for p in pairs.synthetic]
