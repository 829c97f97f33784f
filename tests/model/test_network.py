"""The embedder: shapes, norms, local pooling, freezing; every backbone builds."""

from __future__ import annotations

import pytest
import torch

from deepssim.model import BACKBONES, Embedder, ModelConfig


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("pooling", ["avg", "gem", "local"])
def test_every_backbone_and_pooling_gives_unit_embeddings(backbone: str, pooling: str) -> None:
    torch.manual_seed(0)
    net = Embedder(ModelConfig(backbone=backbone, pooling=pooling, embedding_dim=16, width=8)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_eval_embeddings_do_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    net = Embedder(ModelConfig(backbone="small", width=8)).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[2:4], net(x[2:4]), atol=1e-5, rtol=0)


def _last_map(net: Embedder, x: torch.Tensor) -> torch.Tensor:
    """The last stage's map, computed stage by stage here (not by the code under test)."""
    x = net.stem(x)
    for stage in net.stages:
        x = stage(x)
    return x


def test_local_pooling_scores_the_mean_of_the_cells_cosines() -> None:
    """cos(a, b) = mean over the grid cells of the cosine of the head's outputs for that cell."""
    torch.manual_seed(0)
    net = Embedder(ModelConfig(backbone="small", width=8, pooling="local", grid=2,
                               embedding_dim=32, dropout=0.0)).eval()
    a, b = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        score = (net(a) * net(b)).sum(dim=1)
        maps = [torch.nn.functional.adaptive_avg_pool2d(_last_map(net, x), 2) for x in (a, b)]
        cells = [torch.nn.functional.cosine_similarity(net.head(maps[0][:, :, i, j]),
                                                       net.head(maps[1][:, :, i, j]), dim=1)
                 for i in range(2) for j in range(2)]
    assert net.head[-1].out_features == 8
    torch.testing.assert_close(score, torch.stack(cells).mean(dim=0), atol=1e-5, rtol=0)
    # Batch-independent like the others, in evaluation mode.
    with torch.no_grad():
        torch.testing.assert_close(net(a)[1:2], net(a[1:2]), atol=1e-5, rtol=0)


def test_frozen_stages_have_no_gradients() -> None:
    net = Embedder(ModelConfig(backbone="resnet18", frozen_stages=2))
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.stages[1].parameters())
    assert all(p.requires_grad for p in net.stages[2].parameters())


def test_bad_configs_and_missing_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        ModelConfig(backbone="vit")
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a multiple of 16"):
        ModelConfig(pooling="local", grid=4, embedding_dim=100)
    with pytest.raises(ValueError, match="grid must be at least 1"):
        ModelConfig(pooling="local", grid=0)
    with pytest.raises(ValueError, match="no pretrained weights"):
        Embedder(ModelConfig(backbone="small", pretrained="imagenet"))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        Embedder(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "none.pth")))


def test_local_pretrained_file_is_loaded(tmp_path) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    net = Embedder(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "r18.safetensors")))
    torch.testing.assert_close(net.stem[0].weight, source.conv1.weight)
    torch.testing.assert_close(net.stages[3][1].conv2.weight, source.layer4[1].conv2.weight)


@pytest.mark.parametrize("backbone", ["small", "resnet50"])
def test_dilated_last_stage_keeps_the_resolution_of_the_one_before(backbone: str) -> None:
    torch.manual_seed(0)
    plain, dilated = (Embedder(ModelConfig(backbone=backbone, width=8, dilate_last=d)).eval() for d in (False, True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        sizes = [[m.shape[-1] for m in net.stage_maps(x)] for net in (plain, dilated)]
    assert sizes[0][3] == sizes[0][2] // 2  # 2 x 2 at 64 px
    assert sizes[1][3] == sizes[1][2] == 2 * sizes[0][3]
    # The same weights either way: only strides and dilations differ.
    assert [p.shape for p in plain.parameters()] == [p.shape for p in dilated.parameters()]


def test_dilated_local_pooling_uses_the_finer_map() -> None:
    """grid 4 on a 64 px input: each cell is one position of the dilated 4 x 4 last stage."""
    torch.manual_seed(0)
    net = Embedder(ModelConfig(backbone="small", width=8, pooling="local", grid=4, embedding_dim=64,
                               dilate_last=True, dropout=0.0)).eval()
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = [_last_map(net, x) for x in (a, b)]
        assert maps[0].shape[-2:] == (4, 4)
        cells = [torch.nn.functional.cosine_similarity(net.head(maps[0][:, :, i, j]),
                                                       net.head(maps[1][:, :, i, j]), dim=1)
                 for i in range(4) for j in range(4)]
        torch.testing.assert_close((net(a) * net(b)).sum(dim=1), torch.stack(cells).mean(dim=0),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_tiny"])
def test_backbones_that_cannot_dilate_are_refused(backbone: str) -> None:
    with pytest.raises(ValueError, match="cannot dilate"):
        ModelConfig(backbone=backbone, dilate_last=True)


def test_map_side_is_the_last_stage_side_and_changes_nothing() -> None:
    net = Embedder(ModelConfig(backbone="small", width=8))
    dilated = Embedder(ModelConfig(backbone="small", width=8, dilate_last=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert (net.map_side(128), dilated.map_side(128), net.map_side(64)) == (4, 8, 2)
    assert net.training  # the mode is restored
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])


@pytest.mark.parametrize(("settings", "message"), [
    ({"width": 0}, "width must be at least 1, got 0"),
    ({"embedding_dim": -16}, "embedding_dim must be at least 1, got -16"),
    ({"hidden_dim": 0}, "hidden_dim must be at least 1, got 0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"gem_p": 0.0}, "gem_p must be > 0, got 0.0"),
    ({"backbone": "small", "pretrained": "imagenet"}, "the 'small' backbone has no pretrained weights"),
])
def test_settings_that_build_no_network_are_refused_when_made(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**settings)
