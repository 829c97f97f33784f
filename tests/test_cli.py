"""The ``deepssim`` command, run as a subprocess the way users run it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim import ssim
from deepssim.auditing import ReadOptions, SearchOptions, VerifyGrid, VerifyOptions
from deepssim.cli import build_parser, main
from deepssim.cli.types import Number


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepssim", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def two_pngs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a = (rng.random((40, 48)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    pa, pb = tmp_path / "a.png", tmp_path / "b b.png"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    return pa, pb


def test_ssim_prints_the_value(two_pngs: tuple[Path, Path]) -> None:
    pa, pb = two_pngs
    want = ssim(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    done = run_cli("ssim", str(pa), str(pb))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == pytest.approx(want, abs=1e-6)


def test_ssim_json_and_registered(two_pngs: tuple[Path, Path], tmp_path: Path) -> None:
    pa, _ = two_pngs
    flipped = tmp_path / "flipped.png"
    Image.fromarray(np.asarray(Image.open(pa))[::-1].copy()).save(flipped)
    done = run_cli("ssim", str(pa), str(flipped), "--registered", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shape"] == [40, 48]
    assert result["ssim"] < 0.5
    assert result["registered_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert result["alignment"] == {
        "flip_axis0": True, "flip_axis1": False, "angle_deg": 0.0, "shift_px": [0, 0]
    }


def test_ssim_on_volume_slice_ids(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).random((20, 24, 10)).astype(np.float32)
    np.save(tmp_path / "vol.npy", volume)
    a, b = f"{tmp_path}/vol.npy#axis2:3", f"{tmp_path}/vol.npy#axis2:4"
    done = run_cli("ssim", a, b, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ssim"] == pytest.approx(
        ssim(volume[:, :, 3], volume[:, :, 4]), abs=1e-6
    )


def test_errors_name_the_file_and_exit_2(two_pngs: tuple[Path, Path], tmp_path: Path) -> None:
    pa, _ = two_pngs
    missing = tmp_path / "missing.png"
    done = run_cli("ssim", str(pa), str(missing))
    assert done.returncode == 2
    assert "missing.png" in done.stderr
    assert done.stdout == ""
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(small)
    done = run_cli("ssim", str(pa), str(small))
    assert done.returncode == 2
    assert "one size" in done.stderr and "small.png" in done.stderr
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tiny)
    done = run_cli("ssim", str(tiny), str(tiny))
    assert done.returncode == 2
    assert f"{tiny}: image of shape (5, 5) is smaller than the 7x7 SSIM window" in done.stderr


def test_demo_command_is_there() -> None:
    done = run_cli("demo", "--help")
    assert done.returncode == 0 and "--train-minutes" in done.stdout


def _flags(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    """Every (command words, flag action) of ``parser`` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, (*words, name))
        elif action.option_strings:
            yield words, action


NUMERIC = [(words, action) for words, action in _flags(build_parser())
           if isinstance(action.type, Number) or action.type in (int, float)]


def _bad_values(kind: Number) -> list[str]:
    """Values a flag of type ``kind`` must refuse: past each bound, not a number, not finite,
    a fraction for an integer."""
    step = 1 if kind.kind is int else 0.5
    bad = ["abc", "", "inf", "nan" if kind.kind is float else "1.5"]
    if kind.low is not None:
        bad.append(str(kind.low if kind.low_open else kind.kind(kind.low - step)))
    if kind.high is not None:
        bad.append(str(kind.high if kind.high_open else kind.kind(kind.high + step)))
    return bad


def test_every_numeric_flag_has_a_checked_type() -> None:
    assert len(NUMERIC) > 80  # every command's numbers, read from the parser itself
    plain = [(" ".join(words), action.option_strings[0]) for words, action in NUMERIC
             if not isinstance(action.type, Number)]
    assert plain == []


@pytest.mark.parametrize(("words", "action"), NUMERIC,
                         ids=[f"{' '.join(w)} {a.option_strings[-1]}" for w, a in NUMERIC])
def test_every_numeric_flag_refuses_bad_values(words: tuple[str, ...], action: argparse.Action,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    flag = action.option_strings[-1]
    for value in _bad_values(action.type):
        with pytest.raises(SystemExit) as stopped:
            main([*words, f"{flag}={value}"])
        assert stopped.value.code == 2, (flag, value)
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith(f"deepssim {' '.join(words)}: error: argument {'/'.join(action.option_strings)}: must be "), err
        assert err.endswith((f"got {value}", f"got {value!r}")), err
    if action.default is not None:  # the default is a value the flag takes
        assert action.type(str(action.default)) == action.default


def test_numeric_flag_messages(capsys: pytest.CaptureFixture[str]) -> None:
    done = run_cli("audit", "--train", "t", "--synthetic", "s", "--model", "m", "--out", "o", "--verify", "-3")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == "deepssim audit: error: argument --verify: must be an integer >= 0, got -3"
    for argv, message in [
        (["embed", "m", "--images", "i", "--out", "o", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
        (["audit", "--report-pairs", "-1"], "argument --report-pairs: must be an integer >= 0, got -1"),
        (["train", "i", "--out", "o", "--lr", "nan"], "argument --lr: must be a number > 0 (finite), got nan"),
        (["train", "i", "--out", "o", "--flip-pairs", "1.5"], "argument --flip-pairs: must be a number >= 0 and <= 1, got 1.5"),
        (["train", "i", "--out", "o", "--image-size", "8"], "argument --image-size: must be an integer >= 16, got 8"),
        (["train", "i", "--out", "o", "--seed", "-1"], "argument --seed: must be an integer >= 0 and <= 4294967295, got -1"),
        (["score", "m", "--batch-size", "99999999999"], "argument --batch-size: must be an integer >= 1 and <= 2147483647, got 99999999999"),
        (["evaluate", "--thresholds", "0.9,0.1"], "argument --thresholds: thresholds must be finite with low <= high, got 0.9, 0.1"),
        (["audit", "--verify-thresholds", "high"], "argument --verify-thresholds: expected two numbers LOW,HIGH (e.g. 0.60,0.85), got 'high'"),
        (["benchmark", "build", "--near-duplicates", "1"], "argument --near-duplicates: must be a number > -1 and < 1 or 'off', got 1"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(f": error: {message}"), argv


def test_audit_flag_bounds_are_the_options_bounds() -> None:
    """The audit's flags refuse exactly what its option objects refuse (the bounds are read
    from one place, ``deepssim.auditing.options``)."""
    flags = {a.option_strings[-1]: a for words, a in NUMERIC if words == ("audit",)}
    build = {
        "--top-k": lambda v: SearchOptions(top_k=v),
        "--batch-size": lambda v: ReadOptions(batch_size=v),
        "--verify": lambda v: VerifyOptions(top=v),
        "--verify-size": lambda v: VerifyGrid(size=v),
        "--verify-max-shift": lambda v: VerifyGrid(max_shift=v),
        "--workers": lambda v: ReadOptions(workers=v),
    }
    for flag, make in build.items():
        low = int(flags[flag].type.low)
        assert flags[flag].type(str(low)) == low
        make(low)  # the lowest value the flag takes, the options take
        with pytest.raises(argparse.ArgumentTypeError):
            flags[flag].type(str(low - 1))
        with pytest.raises(ValueError):
            make(low - 1)


def test_debug_shows_the_traceback_and_other_errors_stay_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.png")
    assert main(["ssim", missing, missing]) == 2
    assert capsys.readouterr().err == f"deepssim ssim: error: {missing}: file not found\n"
    with pytest.raises(ValueError, match="file not found"):
        main(["--debug", "ssim", missing, missing])

    def unforeseen(args: argparse.Namespace) -> int:
        raise KeyError("a failure\nover two lines")

    monkeypatch.setattr("deepssim.cli.basic._cmd_ssim", unforeseen)
    assert main(["ssim", missing, missing]) == 2
    assert capsys.readouterr().err == ("deepssim ssim: error: KeyError: 'a failure\\nover two lines' "
                                       "(run with --debug for the traceback)\n")
    with pytest.raises(KeyError):
        main(["--debug", "ssim", missing, missing])


# Runs the command line with a hook that sends this process SIGINT (Ctrl-C) at a set point.
INTERRUPTED = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal would: a runner may ignore SIGINT
import {module} as hooked
original = hooked.{name}
calls = []

def interrupting(*args, **kwargs):
    calls.append(1)
    if len(calls) == {at} and {before}:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    result = original(*args, **kwargs)
    if len(calls) == {at} and not {before}:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    return result

hooked.{name} = interrupting
from deepssim.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _interrupted(module: str, name: str, at: int, *argv: str, before: bool = True) -> subprocess.CompletedProcess[str]:
    script = INTERRUPTED.format(module=module, name=name, at=at, before=before)
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)


def _noise_pngs(folder: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(n):
        Image.fromarray((rng.random((36, 36)) * 255).astype(np.uint8)).save(folder / f"{k}.png")
    return folder


def test_ctrl_c_during_an_audit_keeps_the_embedded_images(tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synthetic = _noise_pngs(tmp_path / "train", 8, 0), _noise_pngs(tmp_path / "synthetic", 6, 1)
    argv = ["audit", "--train", str(train), "--synthetic", str(synthetic), "--model", str(tiny_model_dir),
            "--out", str(tmp_path / "audit"), "--cache", str(tmp_path / "cache"), "--device", "cpu",
            "--no-progress", "--json"]
    # SIGINT as the synthetic images start: the training images are embedded and cached.
    done = _interrupted("deepssim.auditing.images", "embed_set", 2, *argv)
    assert done.returncode == 130 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "deepssim audit: interrupted; the cache keeps the images embedded and the pairs verified so far: "
        "run the same command again to continue from them")
    again = run_cli(*argv)
    assert again.returncode == 0, again.stderr
    cache = json.loads(again.stdout)["cache"]
    assert (cache["hits"], cache["misses"]) == (8, 6)


def test_ctrl_c_during_training_says_how_to_resume(tmp_path: Path) -> None:
    images = _noise_pngs(tmp_path / "images", 24, 2)
    out = tmp_path / "model"
    argv = ["-q", "train", str(images), "--out", str(out), "--preset", "paper", "--backbone", "small",
            "--pretrained", "none", "--image-size", "32", "--epochs", "3", "--n-train-pairs", "32",
            "--n-val-pairs", "16", "--batch-size", "16", "--device", "cpu", "--no-progress", "--json"]
    # SIGINT right after the first epoch's state is saved.
    done = _interrupted("deepssim.training.trainer", "save_state", 1, *argv, before=False)
    assert done.returncode == 130 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"deepssim train: interrupted; {out / 'train_state.pt'} holds the state after the last finished "
        "epoch: run the same command with --resume to continue from it"]
    resumed = run_cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["stopped_by"] == "epochs"
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3  # the three epochs validated


def test_ctrl_c_before_an_output_file_is_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    images = _noise_pngs(tmp_path / "images", 3, 3)
    out = tmp_path / "emb.npz"
    done = _interrupted("deepssim.model.files", "embed_folder", 1, "embed", str(tiny_model_dir),
                        "--images", str(images), "--out", str(out), "--device", "cpu")
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"deepssim embed: interrupted; {out} was not written (it is written whole at the end): run the "
        "same command again")
    assert not out.exists()


def test_bounds_written_out_for_the_command_line_are_the_models() -> None:
    # The command line names these bounds without importing torch; they must stay the model's.
    from deepssim.cli import model as command
    from deepssim.model.preprocess import MIN_SIZE
    from deepssim.training import PRESETS
    from deepssim.training.config import MIN_IN_BATCH_BLOCK

    assert (command.MIN_SIZE, command.MIN_IN_BATCH_BLOCK) == (MIN_SIZE, MIN_IN_BATCH_BLOCK)
    assert sorted(command.PRESET_NAMES) == sorted(PRESETS)
