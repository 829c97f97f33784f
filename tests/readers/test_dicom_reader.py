"""DICOM: the real BRAINIX series, generated series, rescale, and DICOM-specific errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.readers import ReadError, SliceSpec, read_image, read_slices, read_volume, resolve_id, scan

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

BRAINIX = "volumes/brainix"


@pytest.mark.parametrize(("series", "nifti", "size"), [("dicom-t1", "T1", 512), ("dicom-flair", "FLAIR", 288)])
def test_brainix_series_order_and_nifti_match(shared_data: Path, series: str, nifti: str, size: int) -> None:
    folder = shared_data / BRAINIX / series
    volume = read_volume(folder)
    assert volume.shape == (size, size, 22) and volume.dtype == np.float32
    # Instance 1 is the top slice: ascending position along the normal reverses the files.
    for k in (0, 11, 21):
        ds = pydicom.dcmread(folder / f"IM-0001-{22 - k:04d}.dcm")
        assert "RescaleSlope" not in ds  # stored values are the real values here
        np.testing.assert_array_equal(volume[:, :, k], ds.pixel_array.astype(np.float32))
    # The NIfTI export of the same series, in RAS, is the DICOM slice transposed and
    # flipped in both in-plane axes (DICOM rows run anterior->posterior, columns R->L).
    canonical = read_volume(shared_data / BRAINIX / "nifti" / f"{nifti}.nii.gz")
    np.testing.assert_array_equal(volume, canonical[::-1, ::-1, :].transpose(1, 0, 2))


def test_brainix_scan_ids(shared_data: Path) -> None:
    result = scan(shared_data / BRAINIX, SliceSpec.parse("::10"))
    assert not result.errors
    dicom_ids = [ref.id for ref in result.refs if ref.id.startswith("dicom-")]
    assert dicom_ids == [f"dicom-{s}#axis2:{i}" for s in ("flair", "t1") for i in (0, 10, 20)]


def test_generated_series_shuffled_and_suffixless(dicom_series: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, expected = dicom_series
    (folder / "README").write_text("not an image")
    np.testing.assert_array_equal(read_volume(folder), expected)
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert [ref.id for ref in result.refs] == [f"patient1/series3#axis2:{i}" for i in range(5)]
    assert result.ignored == ["patient1/series3/README"] and not result.errors
    assert read_image(folder / "IM0005").shape == (6, 7)  # a suffix-less file on its own


def test_instance_number_orders_without_positions(tmp_path: Path, write_dicom) -> None:
    slices = np.arange(3 * 2 * 2, dtype=np.uint16).reshape(3, 2, 2)
    for name, k in [("x.dcm", 2), ("y.dcm", 0), ("z.dcm", 1)]:
        write_dicom(tmp_path / name, slices[k], position=None, orientation=None, instance=k + 1)
    np.testing.assert_array_equal(read_volume(tmp_path), np.moveaxis(slices, 0, 2))


def test_rescale_slope_and_intercept(tmp_path: Path, write_dicom) -> None:
    stored = np.array([[0, 1, 50], [100, 1000, -20]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2, intercept=-100)
    np.testing.assert_array_equal(read_image(path), stored * 2.0 - 100.0)
    for k in range(2):
        write_dicom(tmp_path / "s" / f"{k}.dcm", stored + k, position=(0, 0, k), slope=2, intercept=-100)
    np.testing.assert_array_equal(read_volume(tmp_path / "s")[:, :, 1], (stored + 1) * 2.0 - 100.0)


def test_monochrome1_is_inverted_so_that_bright_is_high(tmp_path: Path, write_dicom) -> None:
    stored = np.array([[0, 10, 20], [30, 40, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(read_image(path), -stored.astype(np.float32))


def test_lone_file_and_multi_series_folder(tmp_path: Path, write_dicom) -> None:
    image = np.full((4, 4), 7, dtype=np.uint16)
    write_dicom(tmp_path / "single" / "only.dcm", image)
    folder = tmp_path / "mixed"
    for uid, base in [("1.2.3.9", 0), ("1.2.3.10", 100)]:
        for k in range(3):
            write_dicom(folder / f"{uid}-{k}.dcm", image + base + k, series_uid=uid, position=(0, 0, k))
    write_dicom(folder / "scout.dcm", image, series_uid="1.2.3.77")
    result = scan(tmp_path)
    assert [ref.id for ref in result.refs] == [
        "mixed/1.2.3.10#axis2:1",
        "mixed/1.2.3.9#axis2:1",
        "mixed/scout.dcm",
        "single/only.dcm",
    ]
    assert result.refs[0].member == "1.2.3.10" and result.refs[0].path == folder
    np.testing.assert_array_equal(read_volume(folder / "1.2.3.10")[:, :, 2], image + 102.0)
    np.testing.assert_array_equal(read_image(tmp_path / "single" / "only.dcm"), image)
    with pytest.raises(ReadError, match=r"folder holds 2 multi-file DICOM series"):
        read_volume(folder)
    for ref in result.refs:
        assert resolve_id(tmp_path, ref.id) == ref


def test_multiframe_file_is_a_volume(tmp_path: Path, write_dicom) -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = write_dicom(tmp_path / "cine.dcm", frames)
    np.testing.assert_array_equal(read_volume(path), np.moveaxis(frames, 0, 2))
    assert [ref.id for ref, _ in read_slices(path)] == ["cine.dcm#axis2:1"]


def test_repeated_positions_are_a_4d_error(tmp_path: Path, write_dicom) -> None:
    for k in range(4):  # two echoes at each of two positions
        write_dicom(tmp_path / f"{k}.dcm", np.zeros((2, 2), np.uint16), position=(0, 0, k // 2), instance=k)
    with pytest.raises(ReadError, match=r"4 files share 2 distinct slice positions: a 4D series"):
        read_volume(tmp_path)
    assert len(scan(tmp_path).errors) == 1


def test_compressed_without_decoder_names_package(tmp_path: Path, write_dicom) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_dicom(
        tmp_path / "jls.dcm",
        np.zeros((4, 4), np.uint16),
        transfer_syntax=JPEGLSLossless,
        encapsulated=b"\xff\xd8\xff\xf7 not really JPEG-LS",
    )
    with pytest.raises(ReadError, match=r"compressed \(JPEG-LS Lossless.*install one of: .*pylibjpeg") as info:
        read_image(path)
    assert info.value.path == path


def test_non_image_dicom_is_ignored_by_scan(dicom_series: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory (DICOMDIR)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    result = scan(tmp_path)
    assert result.ignored == ["DICOMDIR"] and not result.errors
    assert [ref.id for ref in result.refs] == ["patient1/series3#axis2:2"]
    with pytest.raises(ReadError, match=r"DICOMDIR: DICOM file has no pixel data \(not an image\)"):
        read_image(tmp_path / "DICOMDIR")


def test_corrupt_file_beside_a_series(dicom_series: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, expected = dicom_series
    (folder / "broken.dcm").write_text("not DICOM")
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert [error.path for error in result.errors] == [folder / "broken.dcm"]
    assert "not a readable DICOM file" in result.errors[0].reason
    assert len(result.refs) == 5
    for ref, image in result.load():
        assert resolve_id(tmp_path, ref.id) == ref
        np.testing.assert_array_equal(image, expected[:, :, ref.index])
