"""What the commands write: every output checked before any work, never inside an input, an
audit folder replaced whole or not at all."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim import storage
from deepssim.auditing import audit
from deepssim.auditing import api as audit_api
from deepssim.auditing import report as audit_report
from deepssim.auditing.result import OUTPUT_FILES, check_audit_folder
from deepssim.cli import main
from deepssim.storage import OutputError, check_output_file, check_output_folder, replacing_folder

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    """4 training and 3 synthetic PNGs (one synthetic a byte copy)."""
    rng = np.random.default_rng(0)
    train, synth = tmp_path / "train", tmp_path / "synthetic"
    train.mkdir()
    synth.mkdir()
    for k in range(4):
        Image.fromarray((rng.random((36, 36)) * 255).astype(np.uint8)).save(train / f"t{k}.png")
    for k in range(2):
        Image.fromarray((rng.random((36, 36)) * 255).astype(np.uint8)).save(synth / f"s{k}.png")
    (synth / "copy.png").write_bytes((train / "t1.png").read_bytes())
    return train, synth


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def _audit(images: tuple[Path, Path], model: Path, thresholds: tuple[float, float]):  # type: ignore[no-untyped-def]
    return audit(*images, model, device="cpu", cache_dir=None, thresholds=thresholds, verify=0)


# --------------------------------------------------------------------------- one complete audit


def test_a_save_replaces_all_four_files(images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _audit(images, tiny_model_dir, (-1.0, -1.0)).save(out)
    before, siblings = _contents(out), _siblings(out)
    assert sorted(before) == sorted(OUTPUT_FILES.values())
    files = _audit(images, tiny_model_dir, (2.0, 2.0)).save(out)
    after = _contents(out)
    assert sorted(after) == sorted(before) and all(after[name] != before[name] for name in before)
    assert files == {kind: out / name for kind, name in OUTPUT_FILES.items()}
    # Thresholds no score reaches: only the byte copy is still a duplicate.
    assert json.loads(after["summary.json"])["counts"] == {"different": 2, "similar": 0, "duplicate": 1}
    with open(out / "matches.csv", newline="") as fh:
        assert {row["synthetic"]: row["class"] for row in csv.DictReader(fh) if row["rank"] == "1"}["copy.png"] == "duplicate"
    assert _siblings(out) == siblings  # no temporary folder left beside it


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_save_that_fails_in_the_report_leaves_the_previous_audit(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    exchange: bool,
) -> None:
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    _audit(images, tiny_model_dir, (-1.0, -1.0)).save(out)
    before, siblings = _contents(out), _siblings(out)

    def full_disk(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_text("<html>half a rep")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_report, "write_report", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        _audit(images, tiny_model_dir, (2.0, 2.0)).save(out)
    assert _contents(out) == before and _siblings(out) == siblings
    monkeypatch.undo()
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    _audit(images, tiny_model_dir, (2.0, 2.0)).save(out)
    assert all(_contents(out)[name] != before[name] for name in before) and _siblings(out) == siblings


def test_a_failed_swap_puts_the_previous_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old")
    monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    real_rename = storage._rename

    def failing(src: Path, dst: Path) -> None:
        if Path(dst) == out and Path(src).name.endswith(".tmp"):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(storage, "_rename", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with replacing_folder(out) as tmp:
            (tmp / "summary.json").write_text("new")
    assert _contents(out) == {"summary.json": b"old"} and _siblings(out) == ["out"]


def test_the_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not storage._exchange(a, b):
        pytest.skip("this system cannot exchange two paths (renameat2)")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_a_new_output_folder_and_its_parents_are_made(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "deeper" / "out"
    _audit(images, tiny_model_dir, (0.6, 0.85)).save(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_an_output_folder_given_through_a_link_is_replaced_behind_the_link(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    real = tmp_path / "results" / "audit"
    real.mkdir(parents=True)
    (real / "summary.json").write_text("{}")
    (tmp_path / "link").symlink_to(real)
    _audit(images, tiny_model_dir, (0.6, 0.85)).save(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real
    assert sorted(p.name for p in real.iterdir()) == sorted(OUTPUT_FILES.values())
    assert sorted(p.name for p in real.parent.iterdir()) == ["audit"]
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputError, match=f"dangling: is a link to {tmp_path / 'gone'}, which does not exist"):
        check_audit_folder(tmp_path / "dangling")


def test_an_output_folder_with_other_files_is_refused_and_left_alone(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "matches.csv").write_text("an earlier audit's")
    (out / "notes.txt").write_text("mine")
    (out / "zz").mkdir()
    result = _audit(images, tiny_model_dir, (0.6, 0.85))
    with pytest.raises(OutputError, match=r"out: holds 'notes.txt' and 1 other\(s\), not among the files written "
                                          r"here \(histogram.png, matches.csv, patients.csv, report.html, summary.json, thresholds.json\)"):
        result.save(out)
    (out / "zz").rmdir()
    (out / "zz").write_text("")  # a file, not a folder, but still not an output
    with pytest.raises(OutputError, match="holds 'notes.txt' and 1 other"):
        result.save(out)
    (out / "zz").unlink()
    (out / "notes.txt").unlink()
    (out / "report.html").mkdir()  # an output's name, but a folder
    with pytest.raises(OutputError, match="holds 'report.html',"):
        result.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["matches.csv", "report.html"]
    assert (out / "matches.csv").read_text() == "an earlier audit's"


# --------------------------------------------------------------------------- never inside an input


def test_an_output_folder_inside_or_holding_an_input_is_refused(images: tuple[Path, Path], tmp_path: Path) -> None:
    train, synth = images
    sources = [train, synth]
    with pytest.raises(OutputError, match=f"lies inside the input folder {synth}"):
        check_audit_folder(synth / "audit", sources)
    with pytest.raises(OutputError, match=f"is the input {train}"):
        check_audit_folder(train, sources)
    with pytest.raises(OutputError, match=f"the input {train} lies inside the output folder"):
        check_audit_folder(tmp_path, sources)
    # Symlinks are resolved: a link to the synthetic folder, or an input given through one.
    (tmp_path / "link").symlink_to(synth)
    with pytest.raises(OutputError, match="lies inside the input folder"):
        check_audit_folder(tmp_path / "link" / "audit", sources)
    with pytest.raises(OutputError, match="lies inside the input folder"):
        check_audit_folder(synth / "audit", [tmp_path / "link"])
    # A single synthetic file is an input too.
    with pytest.raises(OutputError, match="lies inside the output folder"):
        check_audit_folder(synth, [synth / "copy.png"])
    # The cache would be swapped away with the folder.
    with pytest.raises(OutputError, match="the embedding cache .* lies inside it"):
        check_audit_folder(tmp_path / "out", sources, cache=tmp_path / "out" / "cache")
    assert check_audit_folder(tmp_path / "out", sources, cache=tmp_path / "cache") == tmp_path / "out"
    assert not (tmp_path / "out").exists()  # a check writes nothing


def test_save_refuses_a_folder_inside_the_audited_images(
    images: tuple[Path, Path], tiny_model_dir: Path
) -> None:
    train, synth = images
    result = _audit(images, tiny_model_dir, (0.6, 0.85))
    with pytest.raises(OutputError, match="lies inside the input folder"):
        result.save(synth / "audit")
    assert sorted(p.name for p in synth.iterdir()) == ["copy.png", "s0.png", "s1.png"]


# --------------------------------------------------------------------------- checks of one output


def test_check_output_file(tmp_path: Path) -> None:
    made = check_output_file(tmp_path / "a" / "b" / "out.csv")
    assert made == tmp_path / "a" / "b" / "out.csv" and made.parent.is_dir() and not made.exists()
    with pytest.raises(OutputError, match=f"{tmp_path}: is a folder; give the name of a file"):
        check_output_file(tmp_path)
    (tmp_path / "plain").write_text("")
    with pytest.raises(OutputError, match=f"{tmp_path / 'plain'} is a file, not a folder"):
        check_output_file(tmp_path / "plain" / "out.csv")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic\n")
    with pytest.raises(OutputError, match=f"the output file is the input {pairs}"):
        check_output_file(pairs, inputs=[pairs])
    with pytest.raises(OutputError, match="lies inside the input folder"):
        check_output_file(tmp_path / "a" / "emb.npz", inputs=[tmp_path / "a"])
    assert check_output_file(tmp_path / "pairs2.csv", inputs=[pairs]) == tmp_path / "pairs2.csv"


def test_check_output_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="file: exists and is not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "file" / "sub")
    assert check_output_folder(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(ROOT, reason="root may write in any folder")
def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match=f"cannot write in {locked} \\(permission denied\\)"):
            check_output_file(locked / "sub" / "out.csv")
        with pytest.raises(OutputError, match="permission denied"):
            check_output_folder(locked)
        with pytest.raises(OutputError, match="permission denied"):
            check_audit_folder(locked / "audit")
        assert not (locked / "sub").exists()
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- every command, before any work


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    command = " ".join(argv[:2] if argv[0] in ("benchmark", "baseline", "ldm") else argv[:1])
    assert err.startswith(f"deepssim {command}: error: ") and err.count("\n") == 1, err
    return err


def test_audit_checks_its_output_folder_before_any_work(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, synth = images

    def no_work(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the audit ran")

    monkeypatch.setattr(audit_api, "audit", no_work)
    common = ["audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
              "--no-cache", "--out"]
    (tmp_path / "file").write_text("")
    assert "file: exists and is not a folder" in _fails(capsys, [*common, str(tmp_path / "file")])
    assert "lies inside the input folder" in _fails(capsys, [*common, str(synth / "audit")])
    assert f"the input {train} lies inside the output folder" in _fails(capsys, [*common, str(tmp_path)])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    assert "holds 'thesis.tex'" in _fails(capsys, [*common, str(tmp_path / "mine")])
    cache = ["audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
             "--cache", str(tmp_path / "out" / "cache"), "--out", str(tmp_path / "out")]
    assert "the embedding cache" in _fails(capsys, cache)
    assert (tmp_path / "mine" / "thesis.tex").exists() and not (tmp_path / "out").exists()


def test_every_command_checks_its_outputs_first(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, synth = images
    file = tmp_path / "file.txt"
    file.write_text("")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic,label\n")
    not_folder = f"{file}: exists and is not a folder"
    cases = [
        (["train", str(train), "--out", str(file)], not_folder),
        (["train", str(train), "--out", str(train / "model")], "lies inside the input folder"),
        (["embed", str(tiny_model_dir), "--images", str(train), "--out", str(tmp_path)], "is a folder"),
        (["embed", str(tiny_model_dir), "--images", str(train), "--out", str(train / "e.npz")],
         "lies inside the input folder"),
        (["score", str(tiny_model_dir), "--pairs", str(pairs), "--root", str(tmp_path), "--out", str(tmp_path)],
         "is a folder"),
        (["score", str(tiny_model_dir), "--pairs", str(pairs), "--root", str(tmp_path), "--out", str(pairs)],
         f"the output file is the input {pairs}"),
        (["benchmark", "build", "--images", str(train), "--out", str(file)], not_folder),
        (["benchmark", "build", "--images", str(train), "--out", str(tmp_path)], "lies inside the output folder"),
        (["benchmark", "from-samples", "--train", str(train), "--synthetic", str(synth), "--out",
          str(synth / "bench")], "lies inside the input folder"),
        (["evaluate", "--pairs", str(pairs), "--metric", "ssim", "--calibrate", str(pairs),
          "--save-calibration", str(tmp_path)], "is a folder"),
        (["evaluate", "--pairs", str(pairs), "--metric", "ssim", "--calibrate", str(pairs),
          "--save-calibration", str(pairs)], f"the output file is the input {pairs}"),
        (["evaluate", "--pairs", str(pairs), "--metric", "ssim", "--save-calibration", str(tmp_path / "c.json")],
         "--save-calibration needs --calibrate"),
        (["evaluate", "--pairs", str(pairs), "--metric", "ssim,l2", "--calibrate", str(pairs),
          "--save-calibration", str(file)], not_folder),
        (["evaluate", "--pairs", str(pairs), "--all", "--plots", str(file)], not_folder),
        (["baseline", "train-dar", "--images", str(train), "--out", str(file)], not_folder),
        (["ldm", "train-vae", str(train), "--out", str(file)], not_folder),
        (["ldm", "train", str(train), "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "vae" / "ldm")],
         "lies inside the input folder"),
        (["ldm", "sample", str(tmp_path), "--out", str(file), "--n", "2"], not_folder),
        (["case-study", "--images", str(train), "--out", str(train / "study")], "lies inside the input folder"),
    ]
    for argv, message in cases:
        assert message in _fails(capsys, argv), argv
    # Nothing was written anywhere.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "pairs.csv", "synthetic", "train"]
    assert sorted(p.name for p in train.iterdir()) == ["t0.png", "t1.png", "t2.png", "t3.png"]
    assert file.read_text() == "" and pairs.read_text() == "real,synthetic,label\n"


def test_a_missing_folder_of_an_output_file_is_made(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic\ntrain/t0.png,synthetic/s0.png\n")
    out = tmp_path / "new" / "sub" / "scores.csv"
    assert main(["score", str(tiny_model_dir), "--pairs", str(pairs), "--root", str(tmp_path), "--out", str(out),
                 "--device", "cpu"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["real"], r["synthetic"]) for r in rows] == [("train/t0.png", "synthetic/s0.png")]


def test_a_key_file_readable_by_others_stops_the_audit_before_reading_images(
    images: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, synth = images
    key = tmp_path / "shared.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    monkeypatch.setenv("DEEPSSIM_KEY_FILE", str(key))

    def no_scan(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("images were read")

    monkeypatch.setattr(audit_api, "collect", no_scan)
    err = _fails(capsys, ["audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
                          "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert f"{key}: the cache key can be read or written by others (mode 644); make it private with: " \
           f"chmod 600 {key}" in err
    assert not (tmp_path / "out").exists()
