"""Every metric on tiny inputs with known answers; the registry; missing weights and packages."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepssim import load_model, score_pairs, ssim
from deepssim.evaluation import (
    MetricOptions,
    MetricUnavailable,
    MissingDependencyError,
    MissingWeightsError,
    create_metric,
    metric_names,
)
from deepssim.evaluation.metrics import metric_class

CPU = MetricOptions(device="cpu", num_threads=1)


def smooth(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random image in [10, 210], not symmetric under any flip."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), 3.0)
    return (field - field.min()) / (field.max() - field.min()) * 200 + 10


def noise(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size))


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    a = smooth(0)
    return {"a": a, "flipped": np.ascontiguousarray(a[:, ::-1]), "other": smooth(1),
            "noise1": noise(2), "noise2": noise(3),
            "noisy_copy": a + np.random.default_rng(5).normal(0, 5, a.shape)}


def _scores(name: str, images: dict[str, np.ndarray], pairs: list[tuple[str, str]],
            options: MetricOptions = CPU) -> np.ndarray:
    metric = create_metric(name, options)
    return metric.score([images[a] for a, _ in pairs], [images[b] for _, b in pairs])


def test_registry_lists_every_metric_in_table_order() -> None:
    assert metric_names() == ("deepssim", "ssim", "ssim-flip", "ms-ssim", "registered-ssim", "audit-ssim", "l2",
                              "correlation", "fsim", "dar", "sscd", "clip")
    scales = {n: metric_class(n).scale for n in metric_names()}
    assert [n for n, s in scales.items() if s == "ssim"] == ["deepssim", "ssim", "ssim-flip", "registered-ssim",
                                                             "audit-ssim"]
    assert create_metric("ssim").default_thresholds.pair == (0.60, 0.85)
    assert create_metric("l2").default_thresholds is None
    with pytest.raises(ValueError, match="unknown metric 'nope': use one of deepssim, ssim"):
        create_metric("nope")


def test_ssim_family_on_a_copy_a_flipped_copy_and_noise(images: dict[str, np.ndarray]) -> None:
    pairs = [("a", "a"), ("a", "flipped"), ("noise1", "noise2"), ("a", "other")]
    plain = _scores("ssim", images, pairs)
    flip = _scores("ssim-flip", images, pairs)
    registered = _scores("registered-ssim", images, pairs)
    expected = [ssim(images[a], images[b]) for a, b in pairs]
    np.testing.assert_allclose(plain, expected, atol=1e-12)
    assert plain[0] == pytest.approx(1.0, abs=1e-12)
    assert plain[1] < 0.1  # SSIM misses the flipped copy ...
    assert flip[1] == pytest.approx(1.0, abs=1e-12)  # ... the best flip finds it exactly
    assert registered[1] == pytest.approx(1.0, abs=1e-12)
    for values in (plain, flip, registered):
        assert values[0] == pytest.approx(1.0, abs=1e-12)
        assert abs(values[2]) < 0.1 and abs(values[3]) < 0.15
    # The flips can only help: ssim <= ssim-flip <= registered-ssim.
    assert np.all(plain <= flip + 1e-12) and np.all(flip <= registered + 1e-12)


def test_audit_ssim_is_the_verified_ssim_less_its_lean(images: dict[str, np.ndarray]) -> None:
    """``audit-ssim`` maps the verified SSIM by the correction fitted on the real images: a copy
    and a flipped copy stay at 1, unrelated images stay low, and the map is the audit's."""
    from deepssim.auditing.correction import obtain_correction
    from deepssim.auditing.options import VerifyGrid
    from deepssim.auditing.verify import verify_pairs

    pairs = [("a", "a"), ("a", "flipped"), ("noise1", "noise2"), ("a", "noisy_copy")]
    values = _scores("audit-ssim", images, pairs)
    assert values[0] == pytest.approx(1.0, abs=1e-9) and values[1] == pytest.approx(1.0, abs=1e-6)
    assert values[2] < 0.3
    reals = [images[a] for a, _ in pairs]
    distinct = list({id(r): r for r in reals}.values())
    correction, _ = obtain_correction(lambda i: distinct[i], len(distinct), [], VerifyGrid(), None, None)
    raw = verify_pairs([(images[a], images[b]) for a, b in pairs], VerifyGrid())
    np.testing.assert_allclose(values, correction(raw), atol=1e-12)


def test_l2_is_one_minus_the_rms_difference_in_unit_range() -> None:
    ramp = np.tile(np.linspace(0.0, 50.0, 16), (16, 1))
    inverted = 100.0 - 2 * ramp  # min-max scaled: 1 - u
    u = np.linspace(0.0, 1.0, 16)
    expected = 1.0 - np.sqrt(np.mean((2 * u - 1) ** 2))
    metric = create_metric("l2", CPU)
    np.testing.assert_allclose(metric.score([ramp, ramp, ramp], [ramp, 3 * ramp + 5, inverted]),
                               [1.0, 1.0, expected], atol=1e-12)


def test_correlation_is_pearson(images: dict[str, np.ndarray]) -> None:
    pairs = [("a", "a"), ("a", "flipped"), ("noise1", "noise2"), ("a", "noisy_copy")]
    values = _scores("correlation", images, pairs)
    expected = [np.corrcoef(images[a].ravel(), images[b].ravel())[0, 1] for a, b in pairs]
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert values[0] == pytest.approx(1.0) and abs(values[2]) < 0.1 and values[3] > 0.98
    inverted = create_metric("correlation", CPU).score([images["a"]], [-images["a"]])
    assert inverted[0] == pytest.approx(-1.0)


def test_ms_ssim_needs_97_px_and_is_one_for_a_copy() -> None:
    a, b = smooth(0, 128), smooth(1, 128)
    metric = create_metric("ms-ssim", CPU)
    values = metric.score([a, a, noise(2, 128), a], [a, np.ascontiguousarray(a[::-1]), noise(3, 128), b])
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert values[1] < 0.2 and values[2] < 0.2 and values[3] < 0.2
    # z-scored like the reference SSIM: a positive affine change of either image does not matter.
    np.testing.assert_allclose(metric.score([3 * a + 1], [b - 7]), values[3:], atol=1e-5)
    one_by_one = create_metric("ms-ssim", MetricOptions(device="cpu", batch_size=1))
    np.testing.assert_allclose(one_by_one.score([a, a], [a, b]), values[[0, 3]], atol=1e-6)
    with pytest.raises(MetricUnavailable, match="at least 97 px a side"):
        metric.score([smooth(0, 64)], [smooth(1, 64)])


def test_fsim_grayscale(images: dict[str, np.ndarray]) -> None:
    pairs = [("a", "a"), ("a", "noisy_copy"), ("a", "other"), ("other", "a"), ("a", "flipped")]
    values = _scores("fsim", images, pairs)
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[1] > 0.95 and values[2] < 0.8 and values[4] < 0.85
    assert values[2] == pytest.approx(values[3], abs=1e-6)  # symmetric
    metric = create_metric("fsim", MetricOptions(device="cpu", batch_size=2))
    np.testing.assert_allclose(metric.score([images["a"] * 3 + 7], [images["other"]]), values[2:3], atol=1e-6)


@pytest.mark.parametrize("flip_search", [False, True, "cross"])
def test_deepssim_metric_is_the_model_score(tiny_model_dir: Path, flip_model_dir: Path,
                                            cross_model_dir: Path, images: dict[str, np.ndarray],
                                            flip_search: bool | str) -> None:
    folder = {False: tiny_model_dir, True: flip_model_dir, "cross": cross_model_dir}[flip_search]
    metric = create_metric("deepssim", MetricOptions(model=folder, device="cpu"))
    a, b, c, f = images["a"], images["other"], images["noise1"], images["flipped"]
    values = metric.score([a, a, b, a], [a, c, c, f])
    model = load_model(folder, device="cpu")
    np.testing.assert_allclose(values, score_pairs(model, [(a, a), (a, c), (b, c), (a, f)]), atol=1e-6)
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    if flip_search:  # a flipped copy is a copy
        assert values[3] == pytest.approx(1.0, abs=1e-5)
    assert metric.default_thresholds is not None


def test_missing_weights_say_what_is_needed(tmp_path: Path, tiny_model_dir: Path) -> None:
    cases = {
        "deepssim": "needs a DeepSSIM model folder .*pass --model MODEL",
        "dar": "needs a model folder written by 'deepssim baseline train-dar': pass --weights",
        "sscd": "needs the SSCD TorchScript file .*sscd_disc_mixup.torchscript.pt.*pass --weights",
        "clip": "needs an open_clip checkpoint file for architecture ViT-B-16",
    }
    for name, message in cases.items():
        with pytest.raises(MissingWeightsError, match=message):
            create_metric(name, CPU)
    absent = tmp_path / "absent.pt"
    with pytest.raises(MissingWeightsError, match=f"but {absent} does not exist"):
        create_metric("sscd", MetricOptions(weights=absent))
    with pytest.raises(ValueError, match="not a Dar baseline model"):
        create_metric("dar", MetricOptions(weights=tiny_model_dir, device="cpu"))


class _TinyDescriptor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2).flatten(1)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_sscd_from_a_torchscript_file(tmp_path: Path, images: dict[str, np.ndarray]) -> None:
    torch.manual_seed(0)
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.script(_TinyDescriptor().eval()).save(str(path))
    with pytest.raises(MetricUnavailable, match="pass --trust-torchscript"):
        create_metric("sscd", MetricOptions(weights=path))
    options = MetricOptions(weights=path, trust_torchscript=True, device="cpu", batch_size=2)
    metric = create_metric("sscd", options)
    a, b = images["a"], images["other"]
    values = metric.score([a, a, b], [a, 5 * a + 3, a])
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[1] == pytest.approx(1.0, abs=1e-6)  # min-max scaled first
    assert values[2] < 0.999
    embedding = metric.embed([a])
    assert embedding.shape == (1, 32) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-6)
    one_by_one = create_metric("sscd", MetricOptions(weights=path, trust_torchscript=True,
                                                     device="cpu", batch_size=1))
    np.testing.assert_allclose(one_by_one.score([a, a, b], [a, 5 * a + 3, a]), values, atol=1e-6)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript model"):
        create_metric("sscd", MetricOptions(weights=bad, trust_torchscript=True, device="cpu"))


def test_clip_without_open_clip_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'deepssim\[clip\]'"):
        create_metric("clip", MetricOptions(weights=weights))


def test_clip_uses_open_clip_model_and_preprocessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     images: dict[str, np.ndarray]) -> None:
    calls: dict[str, object] = {"shapes": []}

    class FakeCLIP(torch.nn.Module):
        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            calls["shapes"].append(tuple(x.shape))  # type: ignore[attr-defined]
            return torch.nn.functional.avg_pool2d(x, 16).flatten(1)

    def create_model_and_transforms(arch: str, pretrained: str, device: torch.device):  # noqa: ANN202
        calls["arch"], calls["pretrained"] = arch, pretrained

        def preprocess(image):  # noqa: ANN001, ANN202 - a PIL image, like open_clip's transform
            calls["mode"] = image.mode
            return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

        return FakeCLIP(), None, preprocess

    monkeypatch.setitem(sys.modules, "open_clip", types.SimpleNamespace(
        create_model_and_transforms=create_model_and_transforms))
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"x")
    metric = create_metric("clip", MetricOptions(weights=weights, clip_arch="ViT-T", device="cpu"))
    a, b = images["a"], images["other"]
    values = metric.score([a, a], [a, b])
    assert calls["arch"] == "ViT-T" and calls["pretrained"] == str(weights) and calls["mode"] == "RGB"
    # Each distinct image is embedded once: a (real side), then a and b (synthetic side).
    assert calls["shapes"] == [(1, 3, 64, 64), (2, 3, 64, 64)]
    assert values[0] == pytest.approx(1.0, abs=1e-6) and values[1] < 1.0
