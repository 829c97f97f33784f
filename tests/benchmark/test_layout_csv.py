"""The benchmark's CSV files read the same with or without a byte-order mark (as spreadsheet
programs save them), and name the file when they are not UTF-8."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from deepssim.benchmark import read_audit_csv, read_pairs_csv
from deepssim.benchmark.judge import _train_groups

PAIRS = "real,synthetic,label,ssim\r\ntrain/a.png,synthetic/s.png,duplicate,0.91\r\ntrain/b.png,synthetic/s.png,different,0.2\r\n"
AUDIT = "synthetic,nearest_train,nearest_ssim,is_copy\ns.png,train/a.png,0.91,yes\n"


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_pairs_and_audit_tables(tmp_path: Path, bom: bytes) -> None:
    (tmp_path / "pairs.csv").write_bytes(bom + PAIRS.encode())
    (tmp_path / "audit.csv").write_bytes(bom + AUDIT.encode())
    (tmp_path / "train.csv").write_bytes(bom + b"train,group\ntrain/a.png,7\ntrain/b.png,\n")
    pairs = read_pairs_csv(tmp_path)
    assert [(p.real, p.synthetic, p.label, p.ssim) for p in pairs] == [
        ("train/a.png", "synthetic/s.png", "duplicate", 0.91), ("train/b.png", "synthetic/s.png", "different", 0.2)]
    audit = read_audit_csv(tmp_path)
    assert [(a.synthetic, a.nearest_train, a.nearest_ssim, a.is_copy) for a in audit] == [
        ("s.png", "train/a.png", 0.91, True)]
    assert _train_groups(tmp_path) == {"train/a.png": "7"}


def test_a_table_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text(PAIRS, encoding="utf-16")
    with pytest.raises(ValueError, match=r"pairs\.csv: not UTF-8 text"):
        read_pairs_csv(tmp_path)
    (tmp_path / "train.csv").write_bytes(b"train,group\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match=r"train\.csv: not UTF-8 text \(invalid start byte at byte 12\)"):
        _train_groups(tmp_path)
    (tmp_path / "audit.csv").write_bytes(codecs.BOM_UTF8 + b"synthetic,nearest\ns.png,a.png\n")
    with pytest.raises(ValueError, match=r"audit\.csv: missing column\(s\) nearest_train, nearest_ssim, is_copy; "
                                         r"found synthetic, nearest$"):
        read_audit_csv(tmp_path)


@pytest.mark.parametrize("column,row", [
    ("nearest_train", "s.png,../../etc/passwd,0.91,yes"),
    ("synthetic", "/etc/hostname,train/a.png,0.91,yes"),
    ("also_nearest", "s.png,train/a.png,0.91,yes,train/b.png;../x.png"),
])
def test_audit_table_paths_stay_inside_the_benchmark(tmp_path: Path, column: str, row: str) -> None:
    # The judge hashes the files audit.csv names: a path out of the folder is refused, named.
    (tmp_path / "audit.csv").write_text(f"synthetic,nearest_train,nearest_ssim,is_copy,also_nearest\n{row}\n")
    with pytest.raises(ValueError, match=rf"audit\.csv, line 2, column {column}: .* leads outside the root folder"):
        read_audit_csv(tmp_path)
