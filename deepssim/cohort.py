"""A small brain MRI cohort made from data that ships inside an installed package.

nilearn's wheel carries the MNI152 2009a T1 template and its grey- and white-matter maps
(1 mm, 197 x 233 x 189). Each "subject" of the cohort is the template seen through its own
smooth random deformation, head size, pose, contrast (T1-like or T2-like, from the tissue
maps) and intensity drift, sliced axially at subject-specific positions. Slices of one
subject share all of that, as real subjects' slices share their anatomy, so a benchmark
splits the cohort by subject (``sub-XX/`` in the file names).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
AXIAL_RANGE = (50, 135)
"""Axial template slices the cohort draws from (the cerebrum, above the skull base)."""
WARP_PIXELS = 7.0
"""Largest displacement of a subject's deformation (template pixels, 1 mm)."""
SUBJECT_GROUP = r"^(sub-\d+)/"
"""Regex that names a cohort image's subject (for ``build_benchmark(group_by=...)``)."""


def template_folder() -> Path:
    """Where the installed nilearn keeps its MNI152 files.

    Raises:
        FileNotFoundError: nilearn is missing or lacks the template files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo cohort needs nilearn's MNI152 template: pip install nilearn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: this nilearn installation lacks {', '.join(missing)}")
    return folder


def load_template() -> dict[str, np.ndarray]:
    """The T1 template and tissue maps as float32 arrays in [0, 1] (RAS, axis 2 axial)."""
    import nibabel

    folder = template_folder()
    out = {}
    for key, name in TEMPLATE_FILES.items():
        image = nibabel.as_closest_canonical(nibabel.load(folder / name))
        data = np.asarray(image.dataobj, dtype=np.float32)
        out[key] = data / max(float(data.max()), 1e-6)
    return out


def _smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells))
    field = ndimage.zoom(coarse, (shape[0] / cells, shape[1] / cells), order=3, mode="nearest")
    return field / max(float(np.abs(field).max()), 1e-9)


def _contrast(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A T1-like (white matter brightest) or T2-like (fluid brightest) slice."""
    head = ndimage.binary_fill_holes(t1 > 0.08)
    if kind == "t1":
        return t1 * rng.uniform(0.8, 1.2) + 0.15 * wm * rng.uniform(-0.5, 1.0)
    fluid = np.clip(head - gm - wm, 0.0, 1.0) * (t1 < 0.45)
    return (rng.uniform(0.9, 1.0) * fluid + rng.uniform(0.45, 0.6) * gm + rng.uniform(0.25, 0.35) * wm
            + 0.25 * t1 * (1 - gm - wm).clip(0, 1) * head)


def _subject_slices(
    template: dict[str, np.ndarray], n_slices: int, rng: np.random.Generator
) -> list[np.ndarray]:
    shape = template["t1"].shape[:2]
    warp = [_smooth_field(shape, 5, rng) * WARP_PIXELS for _ in range(2)]
    scale = rng.uniform(0.88, 1.12, size=2)
    angle = np.deg2rad(rng.uniform(-6, 6))
    rows, cols = np.indices(shape, dtype=np.float64)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    y, x = (rows - cy) / scale[0], (cols - cx) / scale[1]
    src_r = cy + np.cos(angle) * y - np.sin(angle) * x + warp[0]
    src_c = cx + np.sin(angle) * y + np.cos(angle) * x + warp[1]
    kind = rng.choice(["t1", "t2"])
    bias = np.exp(0.25 * _smooth_field(shape, 3, rng))
    lo, hi = AXIAL_RANGE
    positions = np.sort(rng.choice(np.arange(lo, hi), size=n_slices, replace=False))
    out = []
    for z in positions:
        planes = [ndimage.map_coordinates(template[k][:, :, z], [src_r, src_c], order=1, mode="constant")
                  for k in ("t1", "gm", "wm")]
        image = _contrast(*planes, kind, rng) * bias
        image = image + rng.normal(0.0, 0.01, size=shape)
        # Radiological display: anterior up, as a viewer shows an axial slice.
        out.append(np.rot90(np.clip(image, 0.0, None)).astype(np.float32))
    return out


def make_cohort(out: str | Path, n_subjects: int = 60, slices_per_subject: int = 8, seed: int = 0) -> Path:
    """Write ``out/sub-XX/slice-K.png`` (8-bit) for every subject and return ``out``."""
    if n_subjects < 1 or slices_per_subject < 1:
        raise ValueError("the cohort needs at least one subject and one slice per subject")
    rng = np.random.default_rng(seed)
    template = load_template()
    out = Path(out)
    for s in range(n_subjects):
        folder = out / f"sub-{s + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(_subject_slices(template, slices_per_subject, rng)):
            scaled = np.clip(255.0 * image / max(float(np.percentile(image, 99.8)), 1e-6), 0, 255)
            Image.fromarray(scaled.astype(np.uint8)).save(folder / f"slice-{k}.png")
    return out
