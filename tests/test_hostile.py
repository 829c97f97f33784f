"""Hostile and damaged files given to every command, run as a subprocess the way users run it:
each must end with exit code 2 and one line on stderr, ``deepssim COMMAND: error: ...``, that
names the file, never with a traceback."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RNG = np.random.default_rng(0)


def _png(shape: tuple[int, int] = (40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((RNG.random(shape) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((RNG.random((40, 40)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _nifti() -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(RNG.random((16, 16, 8)).astype(np.float32), np.eye(4))
    return image.to_bytes()


def _dicom() -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = (RNG.random((32, 32)) * 1000).astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, image=RNG.random((16, 16)))
    return buffer.getvalue()


def _object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _bomb_npz() -> bytes:
    """An .npz whose member declares a 40000 x 40000 float32 array (6.4 GB) and holds 16 MB
    of zeros, compressed to a few kB."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (40000, 40000), }"
    header = header + " " * (118 - len(header)) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("image.npy", "w", force_zip64=True) as fh:
            fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
            for _ in range(16):
                fh.write(bytes(1 << 20))
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


HOSTILE: dict[str, Callable[[], bytes]] = {
    "empty.png": lambda: b"",
    "empty.jpg": lambda: b"",
    "empty.tif": lambda: b"",
    "empty.nii.gz": lambda: b"",
    "empty.dcm": lambda: b"",
    "empty.npy": lambda: b"",
    "empty.npz": lambda: b"",
    "truncated.png": lambda: _half(_png()),
    "header-only.png": lambda: _png()[:33],
    "truncated.jpg": lambda: _half(_jpeg()),
    "truncated.nii.gz": lambda: _half(_nifti()),
    "truncated.nii": lambda: _nifti()[:400],
    "truncated.dcm": lambda: _dicom()[:-1000],
    "truncated.npz": lambda: _half(_npz()),
    "random.png": lambda: RNG.bytes(500),
    "random.nii": lambda: RNG.bytes(400),
    "random.dcm": lambda: RNG.bytes(400),
    "random.npz": lambda: RNG.bytes(300),
    "pickled.npy": _object_npy,
    "bomb.npz": _bomb_npz,
}
"""Files a reader must refuse, by name."""
LATIN1_NAME = b"caf\xe9.png"
"""A readable PNG whose name is not UTF-8 (ids, reports and CSV files are UTF-8 text)."""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hostile file or folder per case, each in a folder of its own beside readable images,
    plus one folder with all of them."""
    root = tmp_path_factory.mktemp("hostile")
    good = root / "good"
    good.mkdir()
    for k in range(4):
        (good / f"g{k}.png").write_bytes(_png())
    every = root / "all"
    every.mkdir()
    for name, make in HOSTILE.items():
        data = make()
        (every / name).write_bytes(data)
        case = root / "cases" / name
        case.mkdir(parents=True)
        (case / name).write_bytes(data)
    (every / "folder.png").mkdir()
    (root / "cases" / "folder.png" / "folder.png").mkdir(parents=True)
    case = root / "cases" / "latin1"
    case.mkdir()
    (case / "g0.png").write_bytes(_png())
    with open(os.path.join(os.fsencode(case), LATIN1_NAME), "wb") as fh:
        fh.write(_png())
    return root


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", "-q", *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def refused(done: subprocess.CompletedProcess[str], command: str, *named: str) -> str:
    """The one error line of a refused command, checked to name ``named``."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"deepssim {command}: error: "), done.stderr
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


CASES = sorted([*HOSTILE, "folder.png"])


@pytest.mark.parametrize("name", CASES)
def test_ssim_refuses_each_hostile_file(hostile: Path, name: str) -> None:
    refused(run("ssim", hostile / "cases" / name / name, hostile / "good" / "g0.png"), "ssim", name)


def _all_named(line: str) -> None:
    """A folder's error lists its unreadable files (the first ten, then a count)."""
    assert sum(name in line for name in [*HOSTILE, "folder.png"]) >= 10, line


def test_embed_refuses_a_hostile_folder_naming_the_files(hostile: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npz"
    _all_named(refused(run("embed", tiny_model_dir, "--images", hostile / "all", "--out", out, "--device", "cpu"),
                       "embed", str(hostile / "all")))
    refused(run("embed", tiny_model_dir, "--images", hostile / "cases" / "latin1", "--out", out, "--device", "cpu"),
            "embed", "caf\\xe9.png", "not valid UTF-8")
    assert not out.exists()


def test_audit_refuses_hostile_synthetic_images(hostile: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    argv = ["--model", tiny_model_dir, "--out", tmp_path / "audit", "--no-cache", "--device", "cpu", "--no-progress"]
    _all_named(refused(run("audit", "--train", hostile / "good", "--synthetic", hostile / "all", *argv),
                       "audit", "in the synthetic set"))
    refused(run("audit", "--train", hostile / "cases" / "latin1", "--synthetic", hostile / "good", *argv),
            "audit", "caf\\xe9.png", "in the training set")


def test_train_and_benchmark_refuse_a_hostile_folder(hostile: Path, tmp_path: Path) -> None:
    _all_named(refused(run("train", hostile / "all", "--out", tmp_path / "model", "--no-progress"), "train"))
    _all_named(refused(run("benchmark", "build", "--images", hostile / "all", "--out", tmp_path / "bench",
                           "--no-progress"), "benchmark build"))
    assert not (tmp_path / "bench").exists()


def test_score_and_evaluate_refuse_pairs_of_hostile_images(hostile: Path, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    for folder in ("train", "synthetic", "synthetic_clean"):
        (bench / folder).mkdir(parents=True)
    shutil.copy(hostile / "good" / "g0.png", bench / "train" / "g0.png")
    shutil.copy(hostile / "good" / "g1.png", bench / "synthetic_clean" / "s.png")
    (bench / "synthetic" / "s.png").write_bytes(HOSTILE["truncated.png"]())
    (bench / "pairs.csv").write_text("real,synthetic,label\ntrain/g0.png,synthetic/s.png,duplicate\n")
    named = str(bench / "synthetic" / "s.png")
    refused(run("score", tiny_model_dir, "--pairs", bench / "pairs.csv", "--root", bench, "--device", "cpu"),
            "score", named)
    refused(run("evaluate", "--pairs", bench / "pairs.csv", "--metric", "ssim", "--condition", "perturbed",
                "--no-progress"), "evaluate", named)
    refused(run("evaluate", "--pairs", bench, "--metric", "deepssim", "--model", tiny_model_dir,
                "--condition", "perturbed", "--device", "cpu", "--no-progress"), "evaluate", named)


def test_every_model_command_refuses_a_damaged_model_folder(hostile: Path, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = model / "config.json"
    config.write_text('{"format": "deepssim-model",')  # cut short
    good = hostile / "good"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("real,synthetic\ng0.png,g1.png\n")
    commands = {
        "embed": ["embed", model, "--images", good, "--out", tmp_path / "e.npz"],
        "score": ["score", model, "--pairs", pairs, "--root", good],
        "audit": ["audit", "--train", good, "--synthetic", good, "--model", model, "--out", tmp_path / "a",
                  "--no-cache", "--no-progress"],
        "train": ["train", good, "--out", tmp_path / "t", "--init", model, "--no-progress"],
    }
    for command, argv in commands.items():
        assert "not valid JSON" in refused(run(*argv), command, str(config))


class _Code:
    """A pickle that would run a shell command if unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo hostile > /dev/null",))


def test_train_refuses_hostile_resume_states_and_pretrained_files(hostile: Path, tmp_path: Path) -> None:
    # Every kind of damaged or hostile torch file: tests/model/test_torchfile.py; here, the command.
    import torch

    whole, code = tmp_path / "whole.pt", tmp_path / "code.pt"
    torch.save({"network": {"w": torch.ones(64)}}, whole)
    torch.save({"network": _Code()}, code)
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_state.pt").write_bytes(_half(whole.read_bytes()))
    line = refused(run("train", hostile / "good", "--out", out, "--resume", "--no-progress"), "train",
                   str(out / "train_state.pt"), "not a readable resume state")
    shutil.copy(code, out / "train_state.pt")
    line = refused(run("train", hostile / "good", "--out", out, "--resume", "--no-progress"), "train",
                   str(out / "train_state.pt"), "refused", "posix.system")
    assert "weights_only" not in line
    line = refused(run("train", hostile / "good", "--out", tmp_path / "p", "--backbone", "resnet18",
                       "--pretrained", code, "--no-progress"), "train", str(code), "refused", "posix.system")
    assert "weights_only" not in line
    refused(run("train", hostile / "good", "--out", tmp_path / "p", "--backbone", "resnet18",
                "--pretrained", whole, "--no-progress"), "train", str(whole), "not a weights file")
    assert not (tmp_path / "p").exists()  # refused before any work
