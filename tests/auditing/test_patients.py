"""Leaked patients: the patient of every training image by each rule, the counts, the
bootstrap interval, the report's section, and the command end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deepssim.auditing.patients import (
    BOOTSTRAP_REPLICATES, Patients, assign_patients, leaked_interval, patient_rows, patients_at_risk,
    patients_section, patients_summary,
)
from deepssim.cli import main
from deepssim.readers import SliceSpec, scan


def _ids_refs(root: Path, slices: str = "center") -> tuple[list[str], list]:
    found = scan(root, SliceSpec(select=slices))
    return [r.id for r in found.refs], found.refs


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = ndimage.gaussian_filter(np.random.default_rng(seed).random((24, 24)), 2.0)
    Image.fromarray((255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)).save(path)


def _dicom(path: Path, patient: str | None, seed: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "MR"
    if patient is not None:
        ds.PatientID = patient
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 999, (8, 8)).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_a_regex_names_patients_and_unmatched_images_count_alone(tmp_path: Path) -> None:
    for k, name in enumerate(["patient7/slice_012.png", "patient7/slice_013.png", "patient8/a.png",
                              "stray.png"]):
        _png(tmp_path / name, k)
    ids, refs = _ids_refs(tmp_path)
    p = assign_patients(ids, refs, r"^(patient\d+)/")
    assert (p.rule, p.group_by) == ("regex", r"^(patient\d+)/")
    assert p.names == ["patient7", "patient7", "patient8", "stray.png"] and p.unmatched == [3]
    assert assign_patients(ids, refs, "none") == Patients("image", None, ids, [])
    with pytest.raises(ValueError, match="has no group"):
        assign_patients(ids, refs, "patient")


def test_dicom_patient_ids_are_the_default(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    # Two folders of one patient, one of another; ten files in all, one without PatientID.
    for k in range(9):
        _dicom(tmp_path / f"visit{k % 3}" / f"im{k}.dcm", "P-A" if k % 3 < 2 else "P-B", k)
    _dicom(tmp_path / "visit9" / "anon.dcm", None, 9)
    ids, refs = _ids_refs(tmp_path)
    p = assign_patients(ids, refs, None)
    assert p.rule == "dicom" and sorted(set(p.names)) == ["P-A", "P-B", "visit9/anon.dcm"]
    assert [p.names[k] for k in p.unmatched] == ["visit9/anon.dcm"]
    assert p.names.count("P-A") == 6 and p.names.count("P-B") == 3
    # With the PatientID on fewer than 90% of the images, the rule falls back (here: per image).
    assert assign_patients(ids[-5:], refs[-5:], None).rule == "image"


def test_bids_subjects_are_the_default_and_volumes_count_per_scan(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    bids, plain = tmp_path / "bids", tmp_path / "plain"
    volume = np.random.default_rng(0).random((6, 6, 4)).astype(np.float32)
    for name in ["sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
                 "sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_T2w.nii.gz"]:
        (bids / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), bids / name)
    ids, refs = _ids_refs(bids, "all")
    p = assign_patients(ids, refs, None)
    assert p.rule == "bids" and len(ids) == 16 and p.unmatched == []
    assert {n: p.names.count(n) for n in set(p.names)} == {"sub-01": 8, "sub-02": 4, "sub-03": 4}
    # Without subject names the slices of one volume are one patient; 2D files are one each.
    for k in range(3):
        plain.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), plain / f"scan{k}.nii.gz")
    _png(plain / "extra.png", 0)
    ids, refs = _ids_refs(plain, "all")
    p = assign_patients(ids, refs, None)
    assert p.rule == "scan" and len(ids) == 13
    assert sorted(set(p.names)) == ["extra.png", "scan0.nii.gz", "scan1.nii.gz", "scan2.nii.gz"]
    assert assign_patients(ids, refs, "none").names == ids


def test_counts_table_and_summary() -> None:
    # 6 training images of 4 patients; 7 synthetic images, 4 of them copies.
    p = Patients("regex", "^(p.)/", ["pa", "pa", "pa", "pb", "pc", "pd"], [])
    best_train = np.array([0, 1, 0, 3, 2, 5, 4])
    labels = np.array(["duplicate", "duplicate", "similar", "duplicate", "duplicate", "different", "similar"])
    scores = np.array([0.95, 0.90, 0.70, 0.99, 0.88, 0.10, 0.65])
    synthetic = [f"s{k}" for k in range(7)]
    rows = patient_rows(p, best_train, labels, scores, synthetic)
    assert [(r.patient, r.train_images, r.copies, r.train_images_copied) for r in rows] == [
        ("pa", 3, 3, 3), ("pb", 1, 1, 1), ("pc", 1, 0, 0), ("pd", 1, 0, 0)]
    assert rows[0].synthetic == ("s0", "s1", "s4") and rows[0].max_score == 0.95
    assert rows[0].to_row() == {"patient": "pa", "train_images": "3", "copies": "3", "copy_rate": "0.428571",
                                "train_images_copied": "3", "max_score": "0.950000",
                                "most_similar_synthetic": "s0"}
    assert rows[2].to_row()["max_score"] == "" and rows[2].to_row()["most_similar_synthetic"] == ""
    s = patients_summary(p, rows, 7)
    assert s["rule"] == "regex" and s["n_train_patients"] == 4 and s["n_leaked"] == 2
    assert s["leaked_fraction"] == 0.5
    assert s["n_leaked_ci95"] == [1, 4] and s["leaked_fraction_ci95"] == [0.25, 1.0]
    assert s["patients_at_risk"] == 2.0 and s["patients_at_risk_ci95"] == [2, 2]  # 3 and 1 copies: none once
    assert s["copies_per_patient"] == {"mean": 1.0, "mean_leaked": 2.0, "max": 3}
    assert [e["patient"] for e in s["most_copied"]] == ["pa", "pb"]
    assert s["most_copied"][0] == {"patient": "pa", "copies": 3, "train_images_copied": 3, "train_images": 3,
                                   "max_score": 0.95, "synthetic": ["s0", "s1", "s4"]}
    assert s["interval"]["replicates"] == BOOTSTRAP_REPLICATES
    assert s["interval"]["copied_once"] == 1 and s["interval"]["copied_twice"] == 0
    json.dumps(s)  # plain JSON


def test_the_interval_of_the_expected_count_exact_values_and_deterministic() -> None:
    # 40 patients copied once each and 5 copied 10 times each, among 1,000 synthetic images: the
    # singletons say many patients at risk are unseen, so the interval is wide, and it is not the
    # bootstrap's narrow spread around the 63% of distinct images a resample holds.
    copied = np.concatenate([np.arange(40), np.repeat(np.arange(40, 45), 10)])
    assert leaked_interval(copied, 1000, 200) == (35, 57)
    assert leaked_interval(copied, 1000, 200, seed=1) == (35, 57)
    assert leaked_interval(np.array([0, 0, 0, 1]), 7, 4) == (1, 4)
    assert leaked_interval(np.repeat(np.arange(3), 30), 90, 3) == (3, 3)  # every image copies: no doubt
    # Without copies the top is the Wilson bound of the copies (3.84 of 50 images, 2 of 2).
    assert leaked_interval(np.zeros(0, dtype=np.int64), 50, 10) == (0, 4)
    assert leaked_interval(np.zeros(0, dtype=np.int64), 2, 10) == (0, 2)
    assert leaked_interval(np.zeros(0, dtype=np.int64), 0, 10) == (0, 0)
    assert leaked_interval(np.arange(10), 10, 10) == (8, 10)  # kept within the patients there are
    # The draws are split into blocks without changing the result.
    from deepssim.auditing import patients as module

    small = module._DRAWS_PER_BLOCK
    try:
        module._DRAWS_PER_BLOCK = 7
        assert leaked_interval(copied, 1000, 200) == (35, 57)
    finally:
        module._DRAWS_PER_BLOCK = small


def test_the_assemblage_spreads_the_unseen_mass_evenly() -> None:
    from deepssim.auditing.patients import _assemblage

    probs = _assemblage(np.array([1, 1, 1, 2, 2]), 100)
    assert len(probs) == 22 and probs.sum() == pytest.approx(1.0)  # 5 seen, 17 unseen (Chao1's top)
    assert probs[0] == probs[2] and probs[3] > probs[0] > probs[5] and np.all(probs[5:] == probs[5])
    assert _assemblage(np.array([3, 3]), 100).tolist() == [0.5, 0.5]  # no singletons: nothing unseen


def test_patients_at_risk_is_chao1_with_its_log_normal_interval() -> None:
    # f1 = 3, f2 = 1 of 5 copies: 4 + (4/5) 3^2 / 2 = 7.6, variance 33.84, K = 9.22.
    assert patients_at_risk(np.array([0, 1, 2, 3, 3]), 100) == pytest.approx((7.6, 4, 38))
    # f2 = 0: the bias-corrected form, (1/2) 2 (2 - 1) / 2 = 0.5 unseen.
    assert patients_at_risk(np.array([0, 1]), 100) == (2.5, 2, 9)
    assert patients_at_risk(np.array([0, 0, 1, 1]), 100) == (2.0, 2, 2)  # nobody copied once
    assert patients_at_risk(np.zeros(0, dtype=np.int64), 100) == (0.0, 0, 0)
    assert patients_at_risk(np.arange(40), 20 + 40) == (60.0, 60, 60)  # kept within the patients


def test_the_intervals_cover_the_truth_in_a_seeded_simulation() -> None:
    # 150 of 1,000 patients at risk, a release of 1,000 images copying 8% of the time.
    rng = np.random.default_rng(3)
    expected = 150 * (1 - (1 - 0.08 / 150) ** 1000)
    covered = at_risk = 0
    for _ in range(40):
        copied = rng.integers(0, 150, size=rng.binomial(1000, 0.08))
        lo, hi = leaked_interval(copied, 1000, 1000, replicates=300, seed=int(rng.integers(1 << 30)))
        covered += lo <= expected <= hi
        _, r_lo, r_hi = patients_at_risk(copied, 1000)
        at_risk += r_lo <= 150 <= r_hi
    assert covered >= 36 and at_risk >= 34


def test_the_report_section_says_the_rule_and_escapes_names() -> None:
    p = Patients("regex", "^(<b>)/", ["<script>x</script>", "q"], [1])
    rows = patient_rows(p, np.array([0]), np.array(["duplicate"]), np.array([0.9]), ["<i>s</i>"])
    html = patients_section({"patients": patients_summary(p, rows, 1)})
    assert "<b>1</b> of 2 training patients leaked (50.0%" in html
    assert "leaks 1 – 1 patients on average" in html and "about 1 (95% interval 1 – 1, Chao1" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "&lt;i&gt;s&lt;/i&gt;" in html and "<script>" not in html
    assert "<code>^(&lt;b&gt;)/</code>" in html and "1 training image(s) matched no patient" in html
    bids = patients_section({"patients": {"rule": "bids", "n_leaked": 0}})
    assert "the BIDS subject (sub-&lt;label&gt;) in each training path" in bids
    assert patients_section({}) == ""
    assert "No patient was copied" in patients_section({"patients": {"rule": "image", "n_leaked": 0}})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True, text=True, timeout=300)


def test_cli_counts_leaked_patients_end_to_end(flip_model_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    train, synth = tmp_path / "train", tmp_path / "synthetic"
    for k in range(6):  # three patients of two images each
        _png(train / f"pat{k // 2}" / f"im{k}.png", k)
    for k in (0, 1, 4):  # copies of both images of pat0 and one of pat2
        (synth / f"copy{k}.png").parent.mkdir(parents=True, exist_ok=True)
        (synth / f"copy{k}.png").write_bytes((train / f"pat{k // 2}" / f"im{k}.png").read_bytes())
    _png(synth / "new.png", 99)
    out = tmp_path / "out"
    code = main(["audit", "--train", str(train), "--synthetic", str(synth), "--model", str(flip_model_dir),
                   "--out", str(out), "--device", "cpu", "--no-cache", "--no-progress", "--top-k", "2",
                   "--thresholds", "0.6,0.99", "--report-pairs", "0", "--group-by", "^(pat[0-9])/"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "duplicate 3," in printed.out and ("patients leaked: 2 of 3 (66.7%; expected in a release of this "
                                              "size: 95% CI 0-3; at risk: about 2, 95% CI 2-3)") in printed.out
    s = json.loads((out / "summary.json").read_text())["patients"]
    assert s["rule"] == "regex" and s["group_by"] == "^(pat[0-9])/" and s["n_train_patients"] == 3
    assert s["n_leaked"] == 2 and s["n_leaked_ci95"] == [0, 3]
    assert s["patients_at_risk"] == 2.3 and s["patients_at_risk_ci95"] == [2, 3]
    assert [(e["patient"], e["copies"], e["train_images_copied"]) for e in s["most_copied"]] == [
        ("pat0", 2, 2), ("pat2", 1, 1)]
    with open(out / "patients.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["patient"], r["train_images"], r["copies"]) for r in rows] == [
        ("pat0", "2", "2"), ("pat2", "2", "1"), ("pat1", "2", "0")]
    with open(out / "matches.csv", newline="") as fh:
        matches = list(csv.DictReader(fh))
    assert {(m["train"], m["train_patient"]) for m in matches} <= {(f"pat{k // 2}/im{k}.png", f"pat{k // 2}")
                                                                   for k in range(6)}
    first = {m["synthetic"]: m for m in matches if m["rank"] == "1"}
    assert first["copy4.png"]["train_patient"] == "pat2" and first["copy4.png"]["class"] == "duplicate"
    html = (out / "report.html").read_text()
    assert "<h2>Leaked patients</h2>" in html and "Patients leaked" in html
    bad = run_cli("audit", "--train", str(train), "--synthetic", str(synth), "--model", str(flip_model_dir),
                  "--out", str(tmp_path / "out2"), "--group-by", "(pat")
    assert bad.returncode == 2 and not (tmp_path / "out2").exists()
    lines = bad.stderr.strip().splitlines()
    assert lines[-1].startswith("deepssim audit: error: argument --group-by: '(pat' is not a valid regular "
                                "expression: missing )")
