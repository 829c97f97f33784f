"""MONAI is the ``ldm`` extra: deepssim works without it, and the case study names the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from deepssim.cli import main

MESSAGE = "the LDM case study needs MONAI: pip install 'deepssim[ldm]'"

# An import hook that makes ``import monai`` (and its submodules) fail as if it were not installed.
BLOCK_MONAI = textwrap.dedent("""
    import importlib.abc, sys

    class NoMonai(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "monai" or name.startswith("monai."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoMonai())
""")


@pytest.fixture
def no_monai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "monai", None)  # ``import monai`` now raises ImportError


@pytest.mark.parametrize("argv", [
    ["ldm", "train-vae", "images", "--out", "vae"],
    ["ldm", "train", "images", "--vae", "vae", "--out", "ldm"],
    ["ldm", "sample", "ldm", "--out", "samples", "--n", "2"],
    ["case-study", "--images", "images", "--out", "study"],
])
def test_cli_names_the_extra(no_monai, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    command = " ".join(argv[:2] if argv[0] == "ldm" else argv[:1])
    assert err == f"deepssim {command}: error: {MESSAGE}\n" and out == ""
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_api_names_the_extra(no_monai, tmp_path, image_dir):
    from deepssim.ldm import case_study, load_ldm, load_vae, preset, sample, train_ldm, train_vae

    calls = [
        lambda: train_vae([image_dir], tmp_path / "vae", preset("small")),
        lambda: load_vae(tmp_path / "vae"),
        lambda: train_ldm([image_dir], tmp_path / "vae", tmp_path / "ldm"),
        lambda: load_ldm(tmp_path / "ldm"),
        lambda: sample(tmp_path / "ldm", tmp_path / "samples", n=2),
        lambda: case_study([image_dir], tmp_path / "study"),
    ]
    for call in calls:
        with pytest.raises(ImportError, match=r"^the LDM case study needs MONAI: pip install 'deepssim\[ldm\]'$"):
            call()
    assert [p.name for p in tmp_path.iterdir()] == ["images"]  # nothing written


def test_settings_need_no_monai(no_monai):
    from deepssim.ldm import LEVELS, PRESETS, CaseStudyConfig, copy_counts, preset

    assert preset("small", image_size=32).image_size == 32 and "paper" in PRESETS
    assert len(copy_counts(5, "high", 0)) == 5 and "none" in LEVELS
    assert CaseStudyConfig(n_train=10).n_train == 10


def test_deepssim_imports_and_runs_without_monai(tmp_path):
    script = BLOCK_MONAI + textwrap.dedent("""
        import sys
        import deepssim, deepssim.auditing, deepssim.training, deepssim.evaluation, deepssim.benchmark
        from deepssim.cli import main

        assert "monai" not in sys.modules
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert "monai" not in sys.modules
        sys.exit(main(["ldm", "sample", "nowhere", "--out", "samples", "--n", "1"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert "usage: deepssim" in done.stdout and "case-study" in done.stdout
    assert done.stderr == f"deepssim ldm sample: error: {MESSAGE}\n"
