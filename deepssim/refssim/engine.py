"""The reference SSIM, for one pair, a batch of pairs, or every pair of two sets.

The reference is the DeepSSIM paper's ground truth: each image z-scored on its own, then
scikit-image ``structural_similarity`` with its defaults (7 x 7 uniform window, K1 = 0.01,
K2 = 0.03, sample covariance) and ``data_range`` = max - min of the first (z-scored) image.
Values equal scikit-image's to ~1e-13 (tests hold them to 1e-6).

Volumes: with ``ndim=3`` every function takes 3D volumes instead, a single volume being a
(D, H, W) array and a stack of them (N, D, H, W); the reference is then scikit-image on the
whole z-scored volumes (a 7 x 7 x 7 window, sample covariance over its 343 voxels, 3 voxels
cropped from every face). The dimension is a keyword, not read from the shapes, because a
3D array is ambiguous: an (N, H, W) stack of images, one (D, H, W) volume, or an RGB image.
The default ``ndim=2`` keeps every 2D call as it is.

Defined behaviour where scikit-image gives NaN: a constant image z-scores to zeros; if the
first image is constant, the range of the second is used; two constant images score 1.0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
from tqdm.auto import tqdm

from . import _cpu3d
from ._cpu import compute_stats, cpu_threads, indexed_pairs_cpu, matrix_cpu, raw_pairs_cpu
from ._stats import ImageStats, check_image, check_ndim, check_pair

if TYPE_CHECKING:  # torch is imported only when a torch device or backend is used
    import torch

    from ._torch import TorchStats

Device = Union[Literal["auto", "cpu", "cuda"], str, "torch.device"]
Backend = Literal["auto", "numba", "torch"]
Images = Union[np.ndarray, Sequence[np.ndarray]]
Ndim = Literal[2, 3]
BACKENDS = ("auto", "numba", "torch")

DEFAULT_MAX_MEMORY = 512 * 2**20
"""Bytes of per-image statistics held at once by ``ssim_matrix`` / ``ssim_pairs``."""
PAIRS_BLOCK = 1024
"""Pairs per block in ``ssim_pairs`` (bounds the stacked copies of the input)."""
PROGRESS_MIN_PAIRS = 200_000
"""With ``progress=None``, a progress bar is shown from this many pairs on."""


def resolve_device(device: Device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; asking for CUDA without one is an error."""
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
    return dev


class _Runner:
    """Runs blocks of pairs on one device with one backend."""

    def __init__(self, device: Device, backend: Backend, num_threads: int | None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        # The numba backend needs no torch: it is imported only to resolve other devices.
        self.device: torch.device | None = None
        if backend == "torch" or (backend == "auto" and device != "cpu"):
            self.device = resolve_device(device)
        elif device not in ("auto", "cpu") and resolve_device(device).type != "cpu":
            raise ValueError("the numba backend runs on the CPU only")
        if backend == "auto":
            cuda = self.device is not None and self.device.type == "cuda"
            backend = "torch" if cuda else "numba"
        self.backend = backend
        self.num_threads = num_threads

    def stats(self, images: list[np.ndarray]) -> ImageStats | TorchStats:
        stack = np.stack(images)
        with cpu_threads(self.num_threads):
            stats = _cpu3d.compute_stats(stack) if stack.ndim == 4 else compute_stats(stack)
        if self.backend == "torch":
            from ._torch import TorchStats

            return TorchStats(stats, self.device)
        return stats

    def indexed_pairs(
        self, a: list[np.ndarray], b: list[np.ndarray], ia: np.ndarray, ib: np.ndarray
    ) -> np.ndarray:
        """SSIM of ``(a[ia[k]], b[ib[k]])`` for checked same-size images."""
        if self.backend == "torch":
            from ._torch import pairs_torch

            return pairs_torch(self.stats(a), self.stats(b), ia, ib, self.device)
        with cpu_threads(self.num_threads):
            if a[0].ndim == 3:
                # Volumes do not fit a core's cache, so per-pair statistics would gain
                # nothing over computing each volume's once.
                sa, sb = _cpu3d.compute_stats(np.stack(a)), _cpu3d.compute_stats(np.stack(b))
                return _cpu3d.indexed_pairs_cpu(sa, sb, ia, ib)
            if len(a) + len(b) < len(ia):
                # Images are reused across pairs: compute their statistics once.
                sa, sb = compute_stats(np.stack(a)), compute_stats(np.stack(b))
                return indexed_pairs_cpu(sa, sb, ia, ib)
            return raw_pairs_cpu(np.stack(a), np.stack(b), ia, ib)

    def matrix(self, a: ImageStats | TorchStats, b: ImageStats | TorchStats) -> np.ndarray:
        """SSIM of every pair of two blocks of statistics, (len(a), len(b))."""
        if self.backend == "torch":
            from ._torch import pairs_torch

            ia, ib = np.meshgrid(np.arange(len(a.z)), np.arange(len(b.z)), indexing="ij")
            return pairs_torch(a, b, ia.ravel(), ib.ravel(), self.device).reshape(ia.shape)
        assert isinstance(a, ImageStats) and isinstance(b, ImageStats)
        with cpu_threads(self.num_threads):
            return _cpu3d.matrix_cpu(a, b) if a.z.ndim == 4 else matrix_cpu(a, b)


def _as_list(images: Images, name: str, ndim: int = 2) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if ndim == 3:
            if images.ndim == 3:
                raise ValueError(
                    f"{name}: got one volume of shape {images.shape}; "
                    "pass a list of volumes or an (N, D, H, W) stack"
                )
            if images.ndim != 4:
                raise ValueError(
                    f"{name}: expected a list of 3D volumes or an (N, D, H, W) stack, "
                    f"got a {images.ndim}D array of shape {images.shape}"
                )
            return list(images)
        if images.ndim == 2:
            raise ValueError(
                f"{name}: got one 2D image of shape {images.shape}; "
                "pass a list of images or an (N, H, W) stack"
            )
        if images.ndim != 3:
            hint = "; for volumes pass ndim=3" if images.ndim == 4 else ""
            raise ValueError(f"{name}: expected a list of 2D images or an (N, H, W) stack{hint}")
        return list(images)
    return [np.asarray(im) for im in images]


def _common_shape(images: list[np.ndarray], name: str, ndim: int = 2) -> tuple[int, ...]:
    """The one size of a set; the first image is fully checked, the rest by shape here and
    by value when their block is processed."""
    if not images:
        raise ValueError(f"{name}: empty set of images")
    first = check_image(images[0], f"{name}[0]", ndim)
    for k, im in enumerate(images):
        if im.shape != first.shape:
            raise ValueError(
                f"{name}[{k}]: shape {im.shape} differs from {name}[0] {first.shape}; "
                "all images of a set must have one size (resize them first)"
            )
    return first.shape


def _checked(images: list[np.ndarray], start: int, name: str, ndim: int = 2) -> list[np.ndarray]:
    return [check_image(im, f"{name}[{start + k}]", ndim) for k, im in enumerate(images)]


def _unique(
    images: list[np.ndarray], idx: list[int], name: str, ndim: int = 2
) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct image objects among ``images[idx]`` (checked) and each pair's index into
    them: callers often pass the same array in many pairs, and its statistics are reused."""
    position: dict[int, int] = {}
    unique: list[np.ndarray] = []
    index = np.empty(len(idx), dtype=np.int64)
    for n, k in enumerate(idx):
        key = id(images[k])
        if key not in position:
            position[key] = len(unique)
            unique.append(check_image(images[k], f"{name}[{k}]", ndim))
        index[n] = position[key]
    return unique, index


def _pair_blocks(
    la: list[np.ndarray], lb: list[np.ndarray], members: list[int], max_images: int
) -> list[list[int]]:
    """``members`` cut into blocks of at most PAIRS_BLOCK pairs whose distinct images number
    at most ``max_images``: pairs that reuse images share a block, and their statistics."""
    blocks: list[list[int]] = []
    block: list[int] = []
    seen: set[tuple[str, int]] = set()
    for k in members:
        new = {("a", id(la[k])), ("b", id(lb[k]))} - seen
        if block and (len(block) == PAIRS_BLOCK or len(seen) + len(new) > max_images):
            blocks.append(block)
            block, seen = [], set()
            new = {("a", id(la[k])), ("b", id(lb[k]))}
        block.append(k)
        seen |= new
    blocks.append(block)
    return blocks


def _progress(total: int, progress: bool | None, desc: str) -> tqdm:
    show = total >= PROGRESS_MIN_PAIRS if progress is None else progress
    return tqdm(total=total, unit="pair", desc=desc, disable=not show, file=sys.stderr,
                unit_scale=True, dynamic_ncols=True)


def ssim(a: np.ndarray, b: np.ndarray, *, ndim: Ndim = 2) -> float:
    """Reference SSIM of two 2D images of one size, or with ``ndim=3`` of two (D, H, W)
    volumes of one size (CPU).

    Raises:
        ValueError: empty, not ``ndim``-dimensional, NaN / inf, smaller than the window
            (7 x 7, or 7 x 7 x 7) along an axis, or differently sized input.
    """
    a64, b64 = check_pair(a, b, ndim)
    return float(ssim_pairs([a64], [b64], device="cpu", progress=False, ndim=ndim)[0])


def ssim_pairs(
    a: Images,
    b: Images,
    *,
    device: Device = "auto",
    num_threads: int | None = None,
    progress: bool | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    backend: Backend = "auto",
    ndim: Ndim = 2,
) -> np.ndarray:
    """Reference SSIM of each pair ``(a[k], b[k])``.

    Pairs may differ in size from one another; the two images of a pair may not. When the
    same array object appears in several pairs its statistics are computed once.

    Args:
        a: first images, a list or an (N, H, W) stack (each pair's ``data_range`` comes
            from these); with ``ndim=3`` volumes, a list or an (N, D, H, W) stack.
        b: second images, as many as ``a``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        num_threads: CPU threads (default: all cores).
        progress: show a progress bar on stderr (default: for long runs only).
        max_memory: bytes of image statistics held at once.
        backend: ``numba`` (CPU) or ``torch`` (CUDA or CPU); ``auto`` picks by device.
        ndim: 2 for images, 3 for volumes (see the module docstring).

    Returns:
        float64 array of shape (len(a),).
    """
    ndim = check_ndim(ndim)  # type: ignore[assignment]
    la, lb = _as_list(a, "a", ndim), _as_list(b, "b", ndim)
    if len(la) != len(lb):
        raise ValueError(f"ssim_pairs needs as many a as b images, got {len(la)} and {len(lb)}")
    if not la:
        raise ValueError("ssim_pairs: no pairs given")
    for k, (x, y) in enumerate(zip(la, lb)):
        if x.shape != y.shape:
            raise ValueError(
                f"pair {k}: shape mismatch, a[{k}] is {x.shape} and b[{k}] is {y.shape}; "
                "SSIM compares images of one size"
            )
    runner = _Runner(device, backend, num_threads)
    out = np.empty(len(la), dtype=np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(la):
        groups.setdefault(x.shape, []).append(k)
    with _progress(len(la), progress, "ssim pairs") as bar:
        for shape, members in groups.items():
            check_image(la[members[0]], f"a[{members[0]}]", ndim)  # shape errors before sizing
            per_image = ImageStats.bytes_per_image(shape)
            for idx in _pair_blocks(la, lb, members, max(2, max_memory // per_image)):
                ua, ia = _unique(la, idx, "a", ndim)
                ub, ib = _unique(lb, idx, "b", ndim)
                out[idx] = runner.indexed_pairs(ua, ub, ia, ib)
                bar.update(len(idx))
    return out


def ssim_against(
    a: np.ndarray,
    images: Images,
    *,
    device: Device = "auto",
    num_threads: int | None = None,
    backend: Backend = "auto",
    ndim: Ndim = 2,
) -> np.ndarray:
    """Reference SSIM of one image ``a`` against each of ``images`` (all of ``a``'s size);
    with ``ndim=3``, of one volume against volumes.

    The query-against-many case (a registration search, one synthetic image against a set);
    memory stays at one block of images.
    """
    ndim = check_ndim(ndim)  # type: ignore[assignment]
    a64 = check_image(a, "a", ndim)
    items = _as_list(images, "images", ndim)
    shape = _common_shape(items, "images", ndim)
    if shape != a64.shape:
        raise ValueError(f"shape mismatch: a is {a64.shape}, images are {shape}")
    return ssim_against_checked(
        a64, items, device=device, num_threads=num_threads, backend=backend, ndim=ndim,
        check=True,
    )


def ssim_against_checked(
    a: np.ndarray,
    images: list[np.ndarray],
    *,
    device: Device = "auto",
    num_threads: int | None = None,
    backend: Backend = "auto",
    ndim: Ndim = 2,
    check: bool = False,
) -> np.ndarray:
    """``ssim_against`` for callers whose images are known good: float64 ``a`` and
    ``images`` of its shape, finite (a registration search's moved copies of a checked
    image). The per-image checks cost as much as the SSIM of a volume; ``check`` keeps them."""
    runner = _Runner(device, backend, num_threads)
    out = np.empty(len(images), dtype=np.float64)
    step = PAIRS_BLOCK
    if ndim == 3:  # volumes: bound the block's statistics too
        step = max(1, min(step, DEFAULT_MAX_MEMORY // ImageStats.bytes_per_image(a.shape)))
    for s in range(0, len(images), step):
        block = images[s : s + step]
        if check:
            block = _checked(block, s, "images", ndim)
        ib = np.arange(len(block))
        out[s : s + len(block)] = runner.indexed_pairs([a], block, np.zeros_like(ib), ib)
    return out


def ssim_matrix(
    a: Images,
    b: Images,
    *,
    device: Device = "auto",
    num_threads: int | None = None,
    progress: bool | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    backend: Backend = "auto",
    ndim: Ndim = 2,
) -> np.ndarray:
    """Reference SSIM of every pair ``(a[i], b[j])``: an (N, M) float64 matrix.

    Per-image statistics are computed once per block and reused for all pairs of the block;
    blocks are sized so that at most ``max_memory`` bytes of statistics are held at once.
    All images of ``a`` and ``b`` must have one size. With ``ndim=3``, ``a`` and ``b`` are
    volumes (lists of (D, H, W) arrays or (N, D, H, W) stacks), each volume's mean and
    variance maps computed once for all its pairs. Arguments as in ``ssim_pairs``.
    """
    ndim = check_ndim(ndim)  # type: ignore[assignment]
    la, lb = _as_list(a, "a", ndim), _as_list(b, "b", ndim)
    shape = _common_shape(la, "a", ndim)
    shape_b = _common_shape(lb, "b", ndim)
    if shape != shape_b:
        raise ValueError(f"shape mismatch: images of a are {shape}, of b {shape_b}")
    runner = _Runner(device, backend, num_threads)
    n, m = len(la), len(lb)
    out = np.empty((n, m), dtype=np.float64)
    budget = max(2, max_memory // ImageStats.bytes_per_image(shape))
    # Keep all of b resident when it fits in half the budget; otherwise tile both sides.
    block_b = m if m <= budget // 2 else max(1, budget // 2)
    block_a = max(1, budget - block_b)
    with _progress(n * m, progress, "ssim matrix") as bar:
        resident_b = runner.stats(_checked(lb, 0, "b", ndim)) if block_b == m else None
        for i0 in range(0, n, block_a):
            sa = runner.stats(_checked(la[i0 : i0 + block_a], i0, "a", ndim))
            for j0 in range(0, m, block_b):
                sb = resident_b if resident_b is not None else runner.stats(_checked(lb[j0 : j0 + block_b], j0, "b", ndim))
                na, nb = len(sa.z), len(sb.z)
                out[i0 : i0 + na, j0 : j0 + nb] = runner.matrix(sa, sb)
                bar.update(na * nb)
    return out
