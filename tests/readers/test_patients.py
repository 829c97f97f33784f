"""What the readers know of patients: the DICOM PatientID from the header, BIDS subjects and
scans in ids, and the user's grouping expression."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from deepssim.readers import SliceSpec, resolve_id, scan
from deepssim.readers.patients import bids_subject, compile_group_by, group_key, scan_name


def test_the_dicom_patient_id_comes_with_every_image_of_a_scan(tmp_path: Path, write_dicom) -> None:
    rng = np.random.default_rng(0)
    for k in range(3):  # a 3-slice series of patient P-1
        write_dicom(tmp_path / "a" / "series" / f"{k}.dcm", rng.integers(0, 900, (6, 6), dtype=np.uint16),
                    series_uid="1.2.3", position=(0.0, 0.0, float(k)), instance=k + 1, PatientID=" P-1 ")
    write_dicom(tmp_path / "b" / "one.dcm", rng.integers(0, 900, (6, 6), dtype=np.uint16), PatientID="P-2")
    write_dicom(tmp_path / "c" / "anon.dcm", rng.integers(0, 900, (6, 6), dtype=np.uint16), PatientID="")
    write_dicom(tmp_path / "d" / "none.dcm", rng.integers(0, 900, (6, 6), dtype=np.uint16))
    found = scan(tmp_path, SliceSpec(select="all"))
    assert {r.id: r.patient for r in found.refs} == {
        "a/series#axis2:0": "P-1", "a/series#axis2:1": "P-1", "a/series#axis2:2": "P-1",
        "b/one.dcm": "P-2", "c/anon.dcm": None, "d/none.dcm": None}
    assert resolve_id(tmp_path, "a/series#axis2:1").patient == "P-1"
    assert resolve_id(tmp_path, "b/one.dcm").patient == "P-2"
    # The patient is no part of an image's identity.
    ref = found.refs[0]
    assert ref == type(ref)(ref.id, ref.path, ref.member, ref.axis, ref.index)


def test_bids_subjects_are_folders_or_file_name_prefixes() -> None:
    assert bids_subject("sub-01/anat/sub-01_T1w.nii.gz#axis2:85") == "sub-01"
    assert bids_subject("ds/sub-A7b/ses-2/anat/x.nii.gz") == "sub-A7b"
    assert bids_subject("sub-02_T1w.nii.gz") == "sub-02"
    assert bids_subject("train/sub-03/x.png") == "sub-03"
    for no in ("patient7/slice_012.png", "mysub-01/x.png", "sub-/x.png", "sub-01.png", "a/xsub-01_T1w.nii"):
        assert bids_subject(no) is None, no


def test_a_scan_is_a_nifti_or_dicom_volume_not_a_stack(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3), np.eye(4)),
             tmp_path / "vol.nii.gz")
    np.save(tmp_path / "stack.npy", np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5))
    refs = {r.id: r for r in scan(tmp_path, SliceSpec(select="all")).refs}
    assert scan_name("vol.nii.gz#axis2:1", refs["vol.nii.gz#axis2:1"]) == "vol.nii.gz"
    assert scan_name("train/vol.nii.gz#axis2:1", refs["vol.nii.gz#axis2:1"]) == "train/vol.nii.gz"
    assert scan_name("stack.npy#axis0:2", refs["stack.npy#axis0:2"]) == "stack.npy#axis0:2"


def test_the_grouping_expression_is_checked_in_one_line() -> None:
    pattern = compile_group_by(r"^(patient\d+)/")
    assert group_key(pattern, "patient7/slice_012.png") == "patient7"
    assert group_key(pattern, "other/x.png") is None
    with pytest.raises(ValueError, match=r"^--group-by: '\(sub' is not a valid regular expression: missing \)"):
        compile_group_by("(sub")
    with pytest.raises(ValueError, match=r"^--group-by: 'sub-\[0-9\]\+' has no group; put the part"):
        compile_group_by("sub-[0-9]+")
    assert group_key(re.compile("sub-[0-9]+"), "x/sub-12/y") == "sub-12"  # the benchmark's use: the match
