"""The built-in example: the SSIM engine on a brain MRI that ships inside nibabel.

It needs no user data and no network: nibabel's wheel carries a small T1-weighted brain
volume (``tests/data/anatomical.nii``, 33 x 41 x 25 voxels of 2 mm). Its axial slices play a
training set; a flipped, rotated, re-contrasted slice plays a memorized copy that plain SSIM
misses and registered SSIM recovers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .readers import read_volume
from .refssim import register, registered_ssim, resolve_device, ssim, ssim_matrix

DEMO_SIZE = 128


def builtin_volume_path() -> Path:
    """Path of the example brain volume shipped with nibabel."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the example volume is missing from this nibabel installation"
        )
    return path


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return ndimage.zoom(image, (size / image.shape[0], size / image.shape[1]), order=1)


def perturbed_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy as a memorizing generator might emit it: gamma, a flip and a small rotation."""
    lo, hi = float(image.min()), float(image.max())
    unit = (image - lo) / (hi - lo)
    gamma = rng.uniform(0.6, 1.4)
    out = unit**gamma
    out = out[:, ::-1]
    return ndimage.rotate(out, rng.uniform(-10, 10), reshape=False, order=1, mode="nearest")


def run_demo(device: str = "auto", seed: int = 0, out: Any = print) -> dict[str, Any]:
    """Run the example, print what it finds, and return the figures as a dict."""
    path = builtin_volume_path()
    volume = read_volume(path)
    slices = [_resize(volume[:, :, k], DEMO_SIZE) for k in range(volume.shape[2])]
    k = len(slices) // 2
    copy = perturbed_copy(slices[k], np.random.default_rng(seed))
    dev = resolve_device(device)

    out(f"deepssim demo: {path.name} from nibabel, {len(slices)} axial slices "
        f"resized to {DEMO_SIZE} x {DEMO_SIZE}")
    same = ssim(slices[k], slices[k])
    neighbour = ssim(slices[k], slices[k + 1])
    plain = ssim(slices[k], copy)
    t0 = time.perf_counter()
    alignment = register(slices[k], copy, device=dev)
    t_reg = time.perf_counter() - t0
    out(f"  ssim(slice {k}, slice {k})                    = {same:.4f}")
    out(f"  ssim(slice {k}, slice {k + 1})                    = {neighbour:.4f}  (neighbouring slice)")
    out(f"  ssim(slice {k}, perturbed copy of slice {k})  = {plain:.4f}  (plain SSIM misses the copy)")
    out(f"  registered_ssim(same pair)                 = {alignment.score:.4f}  "
        f"(flip axis0 {alignment.flip[0]}, axis1 {alignment.flip[1]}, rotate "
        f"{alignment.angle:+.0f} deg, shift {alignment.shift}; "
        f"{t_reg * 1e3:.0f} ms)")

    candidates = slices + [copy]
    ssim_matrix(slices[:2], candidates[:2], device=dev, progress=False)  # compile / warm up
    t0 = time.perf_counter()
    matrix = ssim_matrix(slices, candidates, device=dev, progress=False)
    t_mat = time.perf_counter() - t0
    n_pairs = matrix.size
    out(f"  ssim_matrix {len(slices)} x {len(candidates)} on {dev.type}: {n_pairs} pairs in "
        f"{t_mat * 1e3:.1f} ms ({n_pairs / t_mat:,.0f} pairs/s)")
    best = int(np.argmax(matrix[:, -1]))
    t0 = time.perf_counter()
    registered = np.array([registered_ssim(s, copy, device=dev) for s in slices])
    t_all = time.perf_counter() - t0
    best_registered = int(np.argmax(registered))
    out(f"  nearest slice to the copy: plain SSIM says slice {best} ({matrix[best, -1]:.4f}), "
        f"registered SSIM says slice {best_registered} ({registered[best_registered]:.4f}; "
        f"{len(slices)} registrations in {t_all:.1f} s)")
    out(f"  the copy was made from slice {k}: "
        f"{'found' if best_registered == k else 'NOT found'} by registered SSIM")
    return {
        "volume": str(path),
        "n_slices": len(slices),
        "size": DEMO_SIZE,
        "ssim_same": same,
        "ssim_neighbour": neighbour,
        "ssim_copy": plain,
        "registered_ssim_copy": alignment.score,
        "alignment": {"flip": list(alignment.flip), "angle_deg": alignment.angle,
                      "shift_px": list(alignment.shift)},
        "nearest_by_ssim": best,
        "nearest_by_registered_ssim": best_registered,
        "copy_source": k,
        "matrix_pairs": n_pairs,
        "matrix_pairs_per_second": n_pairs / t_mat,
        "device": dev.type,
    }
