"""The scoring rules: one named rule per model, read from the settings of older model files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepssim.model import ModelConfig, ModelFolderError, Preprocess, load_model
from deepssim.model.scoring import RULES, SCORINGS, rule, scoring_from_flags, scoring_of


def test_the_rules_and_what_each_needs() -> None:
    assert SCORINGS == ("cosine", "best-flip", "cross-fit")
    sides = {name: (r.real_flips, r.synthetic_flips, r.joint, r.search, r.cross_fit, r.trains_with_flips)
             for name, r in RULES.items()}
    assert sides == {"cosine": (False, False, False, False, False, True),
                     "best-flip": (False, True, False, True, False, False),
                     "cross-fit": (True, True, True, True, True, False)}
    assert ModelConfig().scoring == "cosine"
    with pytest.raises(ValueError, match="unknown scoring 'joint': use one of cosine, best-flip, cross-fit"):
        ModelConfig(scoring="joint")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown scoring"):
        rule("best_flip")


def test_the_boolean_flags_of_older_settings_read_as_their_rule() -> None:
    assert scoring_from_flags({}) == "cosine"
    assert scoring_from_flags({"flip_search": True, "joint_flips": False, "cross_fit": False,
                               "flip_symmetric": False}) == "best-flip"
    assert scoring_from_flags({"flip_search": True, "joint_flips": True, "cross_fit": True}) == "cross-fit"
    assert scoring_of({"scoring": "best-flip", "backbone": "small"}) == "best-flip"
    assert scoring_of({}) == "cosine"  # a TorchScript model records no model settings
    for flags, named in (({"joint_flips": True}, "joint_flips"),
                         ({"flip_search": True, "joint_flips": True}, "flip_search, joint_flips"),
                         ({"flip_symmetric": True}, "flip_symmetric")):
        with pytest.raises(ValueError, match=f"the scoring settings {named} are not a supported scoring "
                                             "rule .*train the model again"):
            scoring_from_flags(flags)


def test_model_settings_written_with_the_flags_load() -> None:
    old = {"backbone": "small", "pooling": "local", "embedding_dim": 1024, "hidden_dim": 512, "dropout": 0.0,
           "gem_p": 3.0, "flip_symmetric": False, "flip_search": True, "joint_flips": True, "cross_fit": True,
           "frozen_stages": 0, "width": 32, "grid": 8, "dilate_last": True, "stem": "pool", "pretrained": None}
    config = ModelConfig.from_dict(old)
    assert config == ModelConfig(backbone="small", pooling="local", embedding_dim=1024, dropout=0.0, width=32,
                                 grid=8, dilate_last=True, scoring="cross-fit")
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert "flip_search" not in config.to_dict() and config.to_dict()["scoring"] == "cross-fit"
    with pytest.raises(ValueError, match="flip_search, joint_flips are not a supported scoring rule"):
        ModelConfig.from_dict({**old, "cross_fit": False})
    with pytest.raises(ValueError, match="stem 'unshuffle'.*train the model again"):
        ModelConfig.from_dict({**old, "stem": "unshuffle"})
    with pytest.raises(ValueError, match="pooling 'grid': .*train the model again"):
        ModelConfig.from_dict({**old, "pooling": "grid"})
    assert Preprocess.from_dict({"size": 64, "resize_policy": "pad", "intensity": "rank", "channels": 3,
                                 "network_size": None}) == Preprocess(size=64, resize_policy="pad", intensity="rank")
    with pytest.raises(ValueError, match="network_size 32: .*train the model again"):
        Preprocess.from_dict({"size": 64, "network_size": 32})


def test_a_model_folder_written_with_the_flags_loads_with_its_rule(cross_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(cross_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model"]["scoring"]
    config["model"].update(flip_symmetric=False, flip_search=True, joint_flips=True, cross_fit=True, stem="pool")
    config["preprocess"]["network_size"] = None
    (folder / "config.json").write_text(json.dumps(config))
    old, new = load_model(folder, device="cpu"), load_model(cross_model_dir, device="cpu")
    assert old.scoring == new.scoring == "cross-fit"
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(3)]
    np.testing.assert_array_equal(old.pair_scores(old.embed_real(images), old.embed_synthetic(images[::-1])),
                                  new.pair_scores(new.embed_real(images), new.embed_synthetic(images[::-1])))
    config["model"]["cross_fit"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="config.json: the scoring settings flip_search, joint_flips"):
        load_model(folder, device="cpu")


def test_the_rule_of_a_loaded_model_can_be_changed_to_another_rule(cross_model_dir: Path) -> None:
    model = load_model(cross_model_dir, device="cpu")
    model.scoring = "best-flip"
    assert (model.flip_search, model.joint_flips, model.cross_fit) == (True, False, False)
    assert (model.real_flips, model.synthetic_flips) == (False, True)
    with pytest.raises(ValueError, match="unknown scoring"):
        model.scoring = "joint"
    assert model.scoring == "best-flip"


def test_the_command_offers_the_models_choices() -> None:
    from deepssim.cli import model as command
    from deepssim.model.network import BACKBONES, POOLINGS

    assert (command.SCORINGS, command.POOLINGS, command.BACKBONES) == (SCORINGS, POOLINGS, BACKBONES)
