"""Shared fixtures: the real data in ../shared/data (read in place, never copied)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def cache_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedding cache's key file of every test (and of the commands tests run), made on
    first use in a private temporary folder: tests never touch the user's own key."""
    path = tmp_path_factory.mktemp("config") / "cache.key"
    before = os.environ.get("DEEPSSIM_KEY_FILE")
    os.environ["DEEPSSIM_KEY_FILE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("DEEPSSIM_KEY_FILE", None)
    else:
        os.environ["DEEPSSIM_KEY_FILE"] = before


@pytest.fixture(autouse=True)
def small_verify_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Audits that verify fit their correction on 40 near-copies, not hundreds: tests check the
    path, and ``tests/auditing/test_correction.py`` the fit itself."""
    monkeypatch.setattr("deepssim.auditing.correction.PAIRS", 40)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or skip when this checkout has none beside it."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found: the real-data tests need ../shared/data")
    return DATA


@pytest.fixture(scope="session")
def brain_slices_64(shared_data: Path) -> np.ndarray:
    """40 real slices from all four folders of the brain MRI set, resized to 64 x 64, float32."""
    from PIL import Image

    files = sorted((shared_data / "brain-tumor-mri" / "Training").glob("*/*.jpg"))[::140][:40]
    assert len(files) == 40
    return np.stack([
        np.asarray(Image.open(f).convert("L").resize((64, 64), Image.BILINEAR), dtype=np.float32)
        for f in files
    ])


def _blobs(seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.zeros((size, size))
    for _ in range(4):
        cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (255 * image / image.max()).astype(np.uint8)


@pytest.fixture(scope="session")
def blobs() -> Callable[..., np.ndarray]:
    """``blobs(seed, size=40)``: a smooth uint8 image of four Gaussian blobs, one per seed
    (distinct enough for tiny trainings to split and learn from)."""
    return _blobs


def _tiny_model(folder: Path, *, smooth_stats: bool = False, **options: object) -> Path:
    """A random 'small' embedder (width 8, 16-d) at 32 px saved as a model folder. Its
    BatchNorm statistics come from a few batches of noise, or with ``smooth_stats`` are the
    exact averages over smooth random images, which makes its embeddings of such images
    differ clearly (with noise statistics they are all nearly the same vector)."""
    import torch
    from scipy import ndimage

    from deepssim.model import Embedder, ModelConfig, Preprocess, save_model

    torch.manual_seed(0)
    net = Embedder(ModelConfig(backbone="small", width=8, embedding_dim=16, **options))  # type: ignore[arg-type]
    preprocess = Preprocess(size=32)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for module in net.modules():
            if smooth_stats and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average
        for _ in range(10 if smooth_stats else 3):
            if smooth_stats:
                smooth = [ndimage.gaussian_filter(rng.random((32, 32)), 2.0) for _ in range(16)]
                net(preprocess.normalize(torch.from_numpy(np.stack(smooth).astype(np.float32))))
            else:
                net(torch.randn(8, 3, 32, 32))
    save_model(folder, net.eval(), preprocess, {"preset": "test"})
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 'small' embedder (width 8, 16-d) at 32 px, saved as a model folder."""
    return _tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def flip_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedder scored by the best flip (the best cosine over the second image's flips),
    whose embeddings of smooth images depend on their orientation."""
    return _tiny_model(tmp_path_factory.mktemp("flip-model"), smooth_stats=True, scoring="best-flip")


@pytest.fixture(scope="session")
def cross_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``flip_model_dir``'s network scored by cross-fitted joint flips (each cosine the mean
    over the four flips of both images, the relative flip cross-fitted: ``flips.cross_fitted``)."""
    return _tiny_model(tmp_path_factory.mktemp("cross-model"), smooth_stats=True, scoring="cross-fit")
