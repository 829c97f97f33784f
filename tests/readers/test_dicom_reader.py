"""DICOM: the real BRAINIX series, generated series, rescale, and DICOM-specific errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.readers import ReadError, SliceSpec, read_image, read_slices, read_volume, resolve_id, scan

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

BRAINIX = "volumes/brainix"


def axial_ras(stored: np.ndarray) -> np.ndarray:
    """A standard axial DICOM slice (IOP 1,0,0,0,1,0: rows run posterior, columns
    left) in RAS: transposed, then flipped in both axes."""
    return np.ascontiguousarray(stored.T[::-1, ::-1], dtype=np.float32)


@pytest.mark.parametrize(("series", "nifti", "size"), [("dicom-t1", "T1", 512), ("dicom-flair", "FLAIR", 288)])
def test_brainix_series_equals_nifti_in_ras(shared_data: Path, series: str, nifti: str, size: int) -> None:
    folder = shared_data / BRAINIX / series
    volume = read_volume(folder)
    assert volume.shape == (size, size, 22) and volume.dtype == np.float32
    # The NIfTI export of the same series, read in closest-canonical RAS, is identical.
    np.testing.assert_array_equal(volume, read_volume(shared_data / BRAINIX / "nifti" / f"{nifti}.nii.gz"))
    # Instance 1 is the top slice: slices ascend inferior -> superior, the reverse of the files.
    for k in (0, 11, 21):
        file = folder / f"IM-0001-{22 - k:04d}.dcm"
        ds = pydicom.dcmread(file)
        assert "RescaleSlope" not in ds  # stored values are the real values here
        np.testing.assert_array_equal(volume[:, :, k], axial_ras(ds.pixel_array))
        np.testing.assert_array_equal(read_image(file), volume[:, :, k])  # a lone file agrees


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
    # A suffix-less file on its own (slice 4) equals that slice of the series.
    np.testing.assert_array_equal(read_image(folder / "IM0005"), expected[:, :, 4])


def test_instance_number_orders_without_positions(tmp_path: Path, write_dicom) -> None:
    slices = np.arange(3 * 2 * 2, dtype=np.uint16).reshape(3, 2, 2)
    for name, k in [("x.dcm", 2), ("y.dcm", 0), ("z.dcm", 1)]:
        write_dicom(tmp_path / name, slices[k], position=None, orientation=None, instance=k + 1)
    np.testing.assert_array_equal(read_volume(tmp_path), np.moveaxis(slices, 0, 2))


def test_rescale_slope_and_intercept(tmp_path: Path, write_dicom) -> None:
    stored = np.array([[0, 1, 50], [100, 1000, -20]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2, intercept=-100)
    np.testing.assert_array_equal(read_image(path), axial_ras(stored * 2.0 - 100.0))
    for k in range(2):
        write_dicom(tmp_path / "s" / f"{k}.dcm", stored + k, position=(0, 0, k), slope=2, intercept=-100)
    np.testing.assert_array_equal(read_volume(tmp_path / "s")[:, :, 1], axial_ras((stored + 1) * 2.0 - 100.0))


def test_monochrome1_is_inverted_so_that_bright_is_high(tmp_path: Path, write_dicom) -> None:
    stored = np.array([[0, 10, 20], [30, 40, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(read_image(path), -axial_ras(stored))


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


def test_multiframe_file_is_a_volume_in_stored_layout(tmp_path: Path, write_dicom) -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = write_dicom(tmp_path / "cine.dcm", frames)  # top-level orientation tags are not used
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


@pytest.mark.parametrize("damage", ["garbage", "truncated header"])
def test_unreadable_file_fails_the_series(dicom_series: tuple[Path, np.ndarray], tmp_path: Path, damage: str) -> None:
    folder, _ = dicom_series
    bad = folder / "d.dcm"
    if damage == "garbage":
        bad.write_text("not DICOM")
    else:  # pydicom parses a cut header silently, without Rows
        bad.write_bytes(bad.read_bytes()[:520])
    named = r"series3: cannot read 1 DICOM file\(s\) of the folder: d\.dcm \("
    with pytest.raises(ReadError, match=named):
        read_volume(folder)
    result = scan(tmp_path, SliceSpec.parse("all"))
    assert not result.refs
    assert [error.path for error in result.errors] == [folder, bad]
    with pytest.raises(ReadError, match=named):
        resolve_id(tmp_path, "patient1/series3#axis2:0")


def test_lone_file_beside_a_broken_one_still_reads(tmp_path: Path, write_dicom) -> None:
    path = write_dicom(tmp_path / "only.dcm", np.ones((3, 3), np.uint16))
    (tmp_path / "broken.dcm").write_text("not DICOM")
    result = scan(tmp_path)
    assert [ref.path for ref in result.refs] == [path]
    assert [error.path for error in result.errors] == [tmp_path / "broken.dcm"]


def test_missing_file_mid_series_warns(dicom_series: tuple[Path, np.ndarray]) -> None:
    folder, expected = dicom_series
    (folder / "a.dcm").unlink()  # slice 2 of 5
    with pytest.warns(UserWarning, match=r"series3: slice spacing is not uniform .*file may be missing"):
        volume = read_volume(folder)
    np.testing.assert_array_equal(volume, expected[:, :, [0, 1, 3, 4]])


def test_sagittal_series_slices_along_axis_0(tmp_path: Path, write_dicom) -> None:
    # Rows run inferior (column cosine 0,0,-1), columns posterior (row cosine 0,1,0),
    # slices from left to right: in RAS axis 0 is the slice axis, axes 1 and 2 flip.
    stored = np.random.default_rng(5).integers(0, 1000, size=(4, 5, 3), dtype=np.uint16)
    folder = tmp_path / "sag"
    for k in (2, 0, 1):
        write_dicom(folder / f"{k}.dcm", stored[:, :, k], position=(10.0 - 2 * k, 0, 0), orientation=(0, 1, 0, 0, 0, -1))
    expected = stored.transpose(2, 1, 0)[:, ::-1, ::-1].astype(np.float32)
    np.testing.assert_array_equal(read_volume(folder), expected)
    np.testing.assert_array_equal(read_image(folder / "1.dcm"), expected[1])  # a lone slice: (y, z)
    result = scan(tmp_path, SliceSpec.parse("all"))  # axis 2 means axial, as for NIfTI
    assert [ref.id for ref in result.refs] == [f"sag#axis2:{i}" for i in range(4)]
    for ref, image in result.load():
        assert resolve_id(tmp_path, ref.id) == ref
        np.testing.assert_array_equal(image, expected[:, :, ref.index])


def test_any_suffix_with_dicm_marker_is_dicom(dicom_series: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, expected = dicom_series
    siemens = tmp_path / "siemens"
    siemens.mkdir()
    for k, file in enumerate(sorted(folder.iterdir())):
        file.rename(siemens / f"{k + 1}.IMA")
    (siemens / "notes.txt").write_text("not DICOM, no marker")
    np.testing.assert_array_equal(read_volume(siemens), expected)
    assert read_image(siemens / "1.IMA").shape == (7, 6)
    result = scan(tmp_path, SliceSpec.parse("0"))
    assert [ref.id for ref in result.refs] == ["siemens#axis2:0"] and result.ignored == ["siemens/notes.txt"]


def test_scan_of_a_series_folder_names_it(dicom_series: tuple[Path, np.ndarray]) -> None:
    folder, expected = dicom_series
    result = scan(folder, SliceSpec.parse("all"))
    assert result.root == folder.parent and not result.errors
    assert [ref.id for ref in result.refs] == [f"series3#axis2:{i}" for i in range(5)]
    for ref, image in result.load():
        assert resolve_id(result.root, ref.id) == ref
        np.testing.assert_array_equal(image, expected[:, :, ref.index])
