"""``deepssim.audit`` end to end on tiny images with a tiny random model, and the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deepssim import read_image
from deepssim.auditing import ReadOptions, SearchOptions, VerifyOptions, audit
from deepssim.auditing import candidates as audit_candidates
from deepssim.auditing import images as audit_images
from deepssim.auditing import rerank
from deepssim.auditing.options import VerifyGrid
from deepssim.model import ModelFolderError, load_model, score_pairs
from deepssim.readers import ReadError


def _smooth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    image = ndimage.gaussian_filter(rng.random(shape), 2.0)
    return (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    """8 training images (mixed sizes), 5 synthetic: a byte copy, a flipped copy, 3 new."""
    rng = np.random.default_rng(0)
    train, synth = tmp_path / "train", tmp_path / "synthetic"
    (train / "sub").mkdir(parents=True)
    synth.mkdir()
    for k in range(8):
        Image.fromarray(_smooth(rng, (40 + 2 * k, 36))).save(train / ("sub" if k % 2 else ".") / f"t{k}.png")
    shutil.copy(train / "t2.png", synth / "exact.png")
    Image.fromarray(np.asarray(Image.open(train / "t4.png"))[:, ::-1]).save(synth / "flipped.png")
    for k in range(3):
        Image.fromarray(_smooth(rng, (44, 44))).save(synth / f"new{k}.png")
    return train, synth


def test_audit_finds_the_exact_copy_and_fills_every_field(
    sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    result = audit(train, synth, tiny_model_dir, search=SearchOptions(top_k=3), device="cpu",
                   cache_dir=tmp_path / "cache", verify=0)
    assert result.synthetic_ids == ["exact.png", "flipped.png", "new0.png", "new1.png", "new2.png"]
    assert len(result.train_ids) == 8 and len(result.matches) == 5 * 3
    by_synth = {}
    for m in result.matches:
        by_synth.setdefault(m.synthetic, []).append(m)
    for rows in by_synth.values():
        assert [m.rank for m in rows] == [1, 2, 3]
        assert all(a.score >= b.score for a, b in zip(rows, rows[1:]))
    exact = by_synth["exact.png"][0]
    assert exact.train == "t2.png" and exact.score == 1.0 and exact.exact_copy and exact.label == "duplicate"
    assert not any(m.exact_copy for m in result.matches if m.synthetic != "exact.png")
    s = result.summary
    assert s["n_train"] == 8 and s["n_synthetic"] == 5 and s["exact_copies"] == 1
    assert sum(s["counts"].values()) == 5
    assert s["memorization_rate"] == pytest.approx(s["counts"]["duplicate"] / 5)
    lo, hi = s["memorization_rate_ci95"]
    assert 0.0 <= lo <= s["memorization_rate"] <= hi <= 1.0
    assert s["thresholds"] == {"different_max": 0.6, "duplicate_min": 0.85, "source": "model"}
    assert s["model"]["sha256"] == json.loads((tiny_model_dir / "config.json").read_text())["weights_sha256"]
    assert s["model"]["flip_search"] is False and s["model"]["scoring"] == "cosine"
    assert s["search"]["backend"] == "exact" and s["search"]["top_k"] == 3
    # The byte copy has the content of a training image: embedded once, then a cache hit.
    assert s["cache"]["misses"] == 12 and s["cache"]["hits"] == 1
    assert {"scan_s", "embed_s", "search_s", "total_s"} <= set(s["timings"])
    assert "t2.png" in [e["train"] for e in s["most_copied"]]
    # Every score is the cosine of the model's own embeddings of the two files.
    model = load_model(tiny_model_dir, device="cpu")
    for m in by_synth["new1.png"]:
        e = model.embed([read_image(synth / m.synthetic), read_image(train / m.train)])
        assert m.score == pytest.approx(float(e[0] @ e[1]), abs=1e-5)


def test_a_flip_search_model_finds_the_flipped_copy_and_caches_the_flips(
    sets: tuple[Path, Path], flip_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    first = audit(train, synth, flip_model_dir, search=SearchOptions(top_k=3), device="cpu",
                  cache_dir=tmp_path / "cache")
    best = {m.synthetic: m for m in first.matches if m.rank == 1}
    assert best["flipped.png"].train == "t4.png" and best["flipped.png"].score == pytest.approx(1.0, abs=1e-5)
    assert best["exact.png"].train == "t2.png" and best["exact.png"].exact_copy
    # 8 training images, 5 synthetic ones with four flips each (the byte copy's flips are new).
    assert first.summary["cache"]["misses"] == 13 and first.summary["cache"]["hits"] == 0
    assert first.summary["model"]["flip_search"]
    model = load_model(flip_model_dir, device="cpu")
    for m in first.matches:
        if m.synthetic == "new1.png":
            e = model.embed([read_image(train / m.train)])[0]
            flips = model.embed([read_image(synth / m.synthetic)], flips=True)[0]
            assert m.score == pytest.approx(float((flips @ e).max()), abs=1e-5)
    second = audit(train, synth, flip_model_dir, search=SearchOptions(top_k=3), device="cpu",
                   cache_dir=tmp_path / "cache")
    assert second.summary["cache"]["hits"] == 13 and second.summary["cache"]["misses"] == 0
    assert [(m.train, m.rank) for m in second.matches] == [(m.train, m.rank) for m in first.matches]
    np.testing.assert_allclose(second.best_scores, first.best_scores, atol=1e-6)


def test_a_joint_flips_model_audits_with_its_own_rule_and_shares_the_flip_cache(
    sets: tuple[Path, Path], flip_model_dir: Path, cross_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    result = audit(train, synth, cross_model_dir, search=SearchOptions(top_k=3), device="cpu",
                   cache_dir=tmp_path / "cache")
    assert result.summary["model"]["joint_flips"]
    best = {m.synthetic: m for m in result.matches if m.rank == 1}
    assert best["flipped.png"].train == "t4.png" and best["flipped.png"].score == pytest.approx(1.0, abs=1e-5)
    # 8 training and 5 synthetic images, each embedded with its four flips; the byte copy of
    # t2.png finds them in the cache, written by the training set.
    assert (result.summary["cache"]["misses"], result.summary["cache"]["hits"]) == (12, 1)
    model = load_model(cross_model_dir, device="cpu")
    for m in result.matches:
        want = score_pairs(model, [(read_image(train / m.train), read_image(synth / m.synthetic))])[0]
        assert m.score == pytest.approx(float(want), abs=1e-5)
    # The cache holds the network's embeddings of each flip, whatever the rule: a flip-search
    # audit with the same weights (the same checksum) finds every one it needs there.
    assert load_model(flip_model_dir, device="cpu").checksum == model.checksum
    again = audit(train, synth, flip_model_dir, search=SearchOptions(top_k=3), device="cpu",
                  cache_dir=tmp_path / "cache")
    assert again.summary["cache"]["hits"] == 13 and again.summary["cache"]["misses"] == 0


def test_a_cross_fitted_model_audits_with_its_own_rule(
    sets: tuple[Path, Path], cross_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    result = audit(train, synth, cross_model_dir, search=SearchOptions(top_k=3), device="cpu",
                   cache_dir=tmp_path / "cache")
    assert result.summary["model"]["cross_fit"]
    # 8 training images, 3 candidates: certain where the first scores at least the third's best flip.
    rescored = result.summary["search"]["rescored"]
    assert rescored["rule"] == "cross_fit" and rescored["synthetic_images"] == 5
    assert 1 <= rescored["top1_certain"] <= 5
    every = audit(train, synth, cross_model_dir, search=SearchOptions(top_k=8), device="cpu",
                  cache_dir=tmp_path / "cache")
    assert every.summary["search"]["rescored"]["top1_certain"] == 5  # every training image was a candidate
    best = {m.synthetic: m for m in result.matches if m.rank == 1}
    assert best["flipped.png"].train == "t4.png" and best["flipped.png"].score == pytest.approx(1.0, abs=1e-5)
    model = load_model(cross_model_dir, device="cpu")
    by_image: dict[str, list[float]] = {}
    for m in result.matches:
        want = score_pairs(model, [(read_image(train / m.train), read_image(synth / m.synthetic))])[0]
        assert m.score == pytest.approx(float(want), abs=1e-5)
        by_image.setdefault(m.synthetic, []).append(m.score)
    assert all(s == sorted(s, reverse=True) for s in by_image.values())  # ranked by that rule


def test_the_search_by_chunks_of_synthetic_images_equals_one_chunk(
    sets: tuple[Path, Path], cross_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The score's vectors of the synthetic images are made and searched a chunk at a time:
    chunks of 2 images give the matches and the summary's search entry of one chunk."""
    train, synth = sets
    common = {"search": SearchOptions(top_k=3), "device": "cpu", "cache_dir": tmp_path / "cache", "verify": 0}
    whole = audit(train, synth, cross_model_dir, **common)
    row = 4 * 4 * load_model(cross_model_dir, device="cpu").config["model"]["embedding_dim"]
    monkeypatch.setattr(audit_candidates, "QUERY_FLOATS", 2 * row)
    chunked = audit(train, synth, cross_model_dir, **common)
    assert [asdict(m) for m in chunked.matches] == [asdict(m) for m in whole.matches]
    keep = ("rescored", "missing_slots", "backend", "index")
    assert {k: chunked.summary["search"][k] for k in keep} == {k: whole.summary["search"][k] for k in keep}


def test_second_audit_reads_the_cache_and_gives_the_same_answer(
    sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    first = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=tmp_path / "cache")
    (synth / "more.png").write_bytes((train / "t6.png").read_bytes())
    second = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=tmp_path / "cache")
    # The new synthetic file has the content of a training image: a hit, not a miss.
    assert second.summary["cache"] == {"folder": first.summary["cache"]["folder"], "hits": 14,
                                       "misses": 0, "corrupt_shards": 0, "untrusted_shards": 0}
    old = {(m.synthetic, m.rank): (m.train, m.score) for m in first.matches}
    for m in second.matches:
        if m.synthetic != "more.png":
            assert old[(m.synthetic, m.rank)][0] == m.train
            assert old[(m.synthetic, m.rank)][1] == pytest.approx(m.score, abs=1e-6)
    nocache = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None)
    assert nocache.summary["cache"] is None
    np.testing.assert_allclose(nocache.best_scores, second.best_scores, atol=1e-5)


def test_a_forged_cache_entry_is_not_trusted_and_the_audit_equals_an_uncached_one(
    sets: tuple[Path, Path], flip_model_dir: Path, tmp_path: Path
) -> None:
    import hashlib

    from deepssim.auditing.cache import ContentHasher
    from deepssim.readers import ImageRef

    train, synth = sets
    cache = tmp_path / "cache"
    honest = audit(train, synth, flip_model_dir, device="cpu", cache_dir=cache)

    def holding(key: str) -> tuple[Path, dict[str, np.ndarray]]:
        (shard,) = [p for p in cache.rglob("shard-*.npz") if key in np.load(p)["keys"].tolist()]
        return shard, dict(np.load(shard))

    # Whoever can write the cache folder makes new0.png look like a copy of t5.png: all of its
    # flips get t5's embedding, and the shard's plain SHA-256 is recomputed to match.
    target = ContentHasher().key(ImageRef("new0.png", synth / "new0.png"))
    t5 = ContentHasher().key(ImageRef("sub/t5.png", train / "sub" / "t5.png"))
    shard, stored = holding(target)
    _, t5_stored = holding(t5)
    keys, emb = stored["keys"].tolist(), stored["emb"].copy()
    for k, key in enumerate(keys):
        if key.startswith(target):
            emb[k] = t5_stored["emb"][t5_stored["keys"].tolist().index(t5)]
    digest = hashlib.sha256("\n".join(keys).encode())
    digest.update(emb.tobytes())
    np.savez(shard, keys=np.array(keys), emb=emb, digest=np.array(digest.hexdigest()))

    cached = audit(train, synth, flip_model_dir, device="cpu", cache_dir=cache)
    uncached = audit(train, synth, flip_model_dir, device="cpu", cache_dir=None)
    assert cached.summary["cache"]["untrusted_shards"] == 1 and cached.summary["cache"]["corrupt_shards"] == 0
    # The synthetic shard held the 5 synthetic images (with their flips): all embedded again.
    assert (cached.summary["cache"]["hits"], cached.summary["cache"]["misses"]) == (8, 5)
    assert shard.exists()
    for result in (cached, honest):
        assert [(m.synthetic, m.rank, m.train, m.label) for m in result.matches] == \
            [(m.synthetic, m.rank, m.train, m.label) for m in uncached.matches]
        np.testing.assert_allclose([m.score for m in result.matches], [m.score for m in uncached.matches],
                                   atol=1e-5)
    best = next(m for m in cached.matches if m.synthetic == "new0.png")
    assert best.score < 0.99
    # What the MAC stops: the same forgery signed with the user's key is believed.
    from deepssim.auditing.cache import SHARD_FORMAT, load_cache_key, shard_mac

    for other in cache.rglob("shard-*.npz"):  # the honest entries written since go too
        if other != shard and target in np.load(other)["keys"].tolist():
            other.unlink()
    namespace = shard.parent.name
    mac = shard_mac(load_cache_key(cache), namespace, np.array(keys), emb)
    np.savez(shard, keys=np.array(keys), emb=emb, mac=np.array(mac), format=np.array(SHARD_FORMAT))
    forged = audit(train, synth, flip_model_dir, device="cpu", cache_dir=cache)
    best = next(m for m in forged.matches if m.synthetic == "new0.png")
    assert best.train == "sub/t5.png" and best.score == pytest.approx(1.0, abs=1e-5)
    assert forged.summary["cache"]["untrusted_shards"] == 0


def test_interrupted_audit_resumes_from_the_cache(
    sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, synth = sets
    monkeypatch.setattr(audit_images, "CHUNK", 3)
    from deepssim.model.api import DeepSSIMModel

    real_embed = DeepSSIMModel.embed
    calls = {"n": 0}

    def failing_embed(self, images, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C in the middle of the training set
        return real_embed(self, images, **kwargs)

    monkeypatch.setattr(DeepSSIMModel, "embed", failing_embed)
    with pytest.raises(KeyboardInterrupt):
        audit(train, synth, tiny_model_dir, device="cpu", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(DeepSSIMModel, "embed", real_embed)
    resumed = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=tmp_path / "cache")
    # Two chunks of 3 training images were cached before the stop; the byte copy of t2 (in them)
    # is a hit too.
    assert resumed.summary["cache"]["hits"] == 7


def test_thresholds_from_flags_and_calibration(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    everything = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, thresholds=(-1.0, -1.0), verify=0)
    assert everything.summary["counts"] == {"different": 0, "similar": 0, "duplicate": 5}
    assert everything.summary["memorization_rate"] == 1.0
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps({"thresholds": [0.999, 0.9999]}))
    strict = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, calibration=calib, verify=0)
    assert strict.summary["thresholds"]["source"] == "calibration"
    assert strict.summary["counts"]["duplicate"] >= 1  # the byte copy scores exactly 1


def test_bad_inputs_are_named(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReadError, match=r"empty.*no readable image.*synthetic set"):
        audit(train, empty, tiny_model_dir, device="cpu", cache_dir=None)
    with pytest.raises(ReadError, match="not found"):
        audit(tmp_path / "nope", synth, tiny_model_dir, device="cpu", cache_dir=None)
    with pytest.raises(ModelFolderError, match="not a deepssim model folder"):
        audit(train, synth, train, device="cpu", cache_dir=None)
    broken = synth / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ReadError, match="broken.png"):
        audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None)
    with pytest.raises(ReadError, match="broken.png"):
        audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, reading=ReadOptions(workers=3))
    skipped = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None,
                    reading=ReadOptions(skip_unreadable=True))
    assert skipped.summary["n_synthetic"] == 5
    assert len(skipped.summary["skipped_unreadable"]) == 1 and "broken.png" in skipped.summary["skipped_unreadable"][0]
    threads = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None,
                    reading=ReadOptions(skip_unreadable=True, workers=3))
    assert threads.summary["skipped_unreadable"] == skipped.summary["skipped_unreadable"]
    assert threads.matches == skipped.matches  # results do not depend on workers


def test_when_every_file_of_a_set_is_skipped_each_one_is_named_with_its_reason(
    sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    train, synth = sets
    skip = {"device": "cpu", "cache_dir": None, "reading": ReadOptions(skip_unreadable=True)}
    bad = tmp_path / "bad"
    bad.mkdir()
    for k in range(3):
        (bad / f"b{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (bad / "notes.txt").write_text("not an image")
    with pytest.raises(ReadError) as info:
        audit(train, bad, tiny_model_dir, **skip)
    assert str(info.value) == (
        f"{bad}: no readable image found; 3 unreadable file(s): "
        + "; ".join(f"{bad / f'b{k}.png'}: cannot open image: Truncated File Read" for k in range(3))
        + "; 1 file(s) of a type no reader takes: notes.txt (in the synthetic set)")
    # A long list: the first 10 named, then the count of the rest.
    for k in range(3, 25):
        (bad / f"b{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ReadError, match=r"25 unreadable file\(s\): .*b17.png: cannot open image: Truncated File "
                                        r"Read \(and 15 more\); 1 file\(s\) of a type") as info:
        audit(bad, synth, tiny_model_dir, **skip)
    assert str(info.value).count("Truncated File Read") == 10 and str(info.value).endswith("(in the training set)")
    # Without --skip-unreadable the message is the same: nothing in the set can be audited.
    with pytest.raises(ReadError, match=r"no readable image found; 25 unreadable file\(s\)"):
        audit(train, bad, tiny_model_dir, device="cpu", cache_dir=None)
    # Files that pass the scan (a valid header) and fail when read: each one named too.
    late = tmp_path / "late"
    late.mkdir()
    for name in ("x.png", "y.png"):
        data = (synth / "new0.png").read_bytes()
        (late / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError) as info:
        audit(train, late, tiny_model_dir, **skip)
    assert str(info.value) == (
        f"{late}: no readable image found; 2 unreadable file(s): "
        f"{late / 'x.png'}: corrupt or truncated image: image file is truncated; "
        f"{late / 'y.png'}: corrupt or truncated image: image file is truncated (in the synthetic set)")


def test_several_source_folders_get_prefixed_ids(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(synth / "new0.png", other / "x.png")
    result = audit(train, [synth, other], tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=20))
    assert "other/x.png" in result.synthetic_ids and "synthetic/new0.png" in result.synthetic_ids
    assert len(result.matches) == 6 * 8  # top_k larger than the training set: all of it


def test_save_writes_every_file(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=2))
    files = result.save(tmp_path / "out", max_pairs=3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "histogram.png", "matches.csv", "patients.csv", "report.html", "summary.json"]
    with open(files["matches"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["synthetic", "rank", "train", "score", "class", "exact_copy", "verified_ssim",
                            "p_value", "train_patient"]
    assert len(rows) == 10 and rows[0]["synthetic"] == "exact.png" and rows[0]["exact_copy"] == "true"
    summary = json.loads(files["summary"].read_text())
    assert summary["counts"] == result.summary["counts"] and "report_s" in summary["timings"]
    html = files["report"].read_text()
    assert "exact.png" in html and "t2.png" in html


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepssim", *args], capture_output=True, text=True, timeout=300)


def test_cli_audit_smoke(sets: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    train, synth = sets
    out = tmp_path / "out"
    done = run_cli("audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
                   "--out", str(out), "--device", "cpu", "--cache", str(tmp_path / "c"), "--json",
                   "--thresholds", "0.6,0.85", "--top-k", "2", "--workers", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_synthetic"] == 5 and summary["thresholds"]["source"] == "given"
    assert (out / "report.html").is_file() and (out / "matches.csv").is_file()
    plain = run_cli("audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
                    "--out", str(out), "--device", "cpu", "--no-cache", "--no-progress",
                    "--verify", "2", "--verify-size", "32", "--verify-max-shift", "1", "--verify-max", "3")
    assert plain.returncode == 0, plain.stderr
    assert "memorization rate" in plain.stdout and "report:" in plain.stdout
    verify = json.loads((out / "summary.json").read_text())["verify"]
    assert verify["grid"]["size"] == 32 and verify["grid"]["max_shift"] == 1 and verify["max"] == 3
    bad = run_cli("audit", "--train", str(train), "--synthetic", str(synth), "--model", str(train),
                  "--out", str(out), "--no-cache")
    assert bad.returncode == 2 and f"{train}: no config.json; not a deepssim model folder" in bad.stderr
    bad = run_cli("audit", "--train", str(train), "--synthetic", str(synth), "--model", str(tiny_model_dir),
                  "--out", str(out), "--no-cache", "--thresholds", "0.9,0.1")
    assert bad.returncode == 2 and "low <= high" in bad.stderr


def test_verification_reranks_and_decides(sets: tuple[Path, Path], tiny_model_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    train, synth = sets
    monkeypatch.setattr(rerank, "BLOCK", 8)  # all 8 candidates at once: no cascade
    # Thresholds that make every image suspicious, so every one is verified.
    result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=8), verify=8,
                   thresholds=(-1.0, -1.0))
    flipped = [m for m in result.matches if m.synthetic == "flipped.png"]
    # The random model cannot know the flipped image; verification finds its source anyway.
    assert flipped[0].train == "t4.png" and flipped[0].verified_ssim == pytest.approx(1.0, abs=1e-6)
    assert flipped[0].label == "duplicate"
    assert all(m.verified_ssim is not None for m in flipped)
    assert [m.verified_ssim for m in flipped] == sorted([m.verified_ssim for m in flipped], reverse=True)
    new = [m for m in result.matches if m.synthetic == "new0.png" and m.rank == 1][0]
    assert new.verified_ssim is not None and new.label == ("duplicate" if new.verified_ssim > 0.85 else
                                                         "similar" if new.verified_ssim > 0.6 else "different")
    assert result.summary["verify"]["synthetic_images"] == 4  # the byte copy needs no check
    assert result.summary["verify"]["pairs"] == 4 * 8
    assert result.summary["verify"]["thresholds"]["duplicate_min"] == 0.85


def test_verification_thresholds_can_be_set(sets: tuple[Path, Path], tiny_model_dir: Path) -> None:
    train, synth = sets
    result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=2),
                   thresholds=(-1.0, -1.0), verify=VerifyOptions(top=4, max=4, thresholds="0.2,0.3"))
    assert result.summary["verify"]["thresholds"]["duplicate_min"] == 0.3
    # Four candidates verified per image, two reported.
    assert result.summary["verify"]["pairs"] == 4 * 4
    assert {m.rank for m in result.matches} == {1, 2}
    for m in result.matches:
        if m.verified_ssim is not None and not m.exact_copy:
            assert m.label == ("duplicate" if m.verified_ssim > 0.3 else "similar" if m.verified_ssim > 0.2
                               else "different")


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, Path]:
    """Training: an image ``a.png``, five near-identical re-saves of it ``c1..c5`` (a cluster),
    two unrelated images; synthetic: a noisy copy of ``a.png``, closest to it of all."""
    rng = np.random.default_rng(3)
    train, synth = tmp_path / "ctrain", tmp_path / "csynth"
    train.mkdir()
    synth.mkdir()
    a = _smooth(rng, (48, 48)).astype(np.float64)
    noisy = lambda sigma: np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)  # noqa: E731
    Image.fromarray(a.astype(np.uint8)).save(train / "a.png")
    for k in range(1, 6):
        Image.fromarray(noisy(6.0)).save(train / f"c{k}.png")
    for k in (1, 2):
        Image.fromarray(_smooth(rng, (48, 48))).save(train / f"u{k}.png")
    Image.fromarray(noisy(2.0)).save(synth / "s.png")
    return train, synth


def _in_order(real, order):  # type: ignore[no-untyped-def]
    """``search_flips`` that returns the training images (scan order: a, c1..c5, u1, u2) in
    ``order``, each with its own score: a model that ranks the cluster's best member low
    (-1: a slot an approximate index left empty)."""
    def search(queries, base, k, **kwargs):  # type: ignore[no-untyped-def]
        found = real(queries, base, len(base), **kwargs)
        score = dict(zip(found.indices[0].tolist(), found.scores[0].tolist()))
        score[-1] = -np.inf
        pick = order[:k]
        return replace(found, indices=np.array([pick]), scores=np.array([[score[i] for i in pick]]))
    return search


def _noisy_copies(folder: Path, seed: int, n_train: int, n_copies: int, size: int, noise: float,
                  move: Callable[[int, np.ndarray], np.ndarray]) -> tuple[Path, Path]:
    """``n_train`` smooth training images and, of the first ``n_copies``, copies with noise of
    standard deviation ``noise * (k + 1)`` moved by ``move(k, noisy)``: near-copies whose
    verified SSIMs straddle the duplicate line."""
    rng = np.random.default_rng(seed)
    train, synth = folder / "train", folder / "synthetic"
    train.mkdir()
    synth.mkdir()
    sources = [_smooth(rng, (size, size)) for _ in range(n_train)]
    for k, image in enumerate(sources):
        Image.fromarray(image).save(train / f"t{k:02d}.png")
    for k in range(n_copies):
        noisy = sources[k].astype(np.float64) + rng.normal(0, noise * (k + 1), sources[k].shape)
        Image.fromarray(np.clip(move(k, noisy), 0, 255).astype(np.uint8)).save(synth / f"s{k}.png")
    return train, synth


def test_the_cascade_decides_as_verifying_every_candidate(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near-copies whose verified SSIMs straddle the duplicate line, their sources anywhere in
    a random model's ranking: verifying by blocks of 5 until a duplicate is found gives every
    image the class that verifying all 12 candidates gives, with fewer pairs."""
    train, synth = _noisy_copies(tmp_path, 3, 12, 8, 44, 4.0,
                                 lambda k, noisy: np.rot90(noisy, k % 4) if k % 2 else noisy[::-1])
    common = {"device": "cpu", "cache_dir": None, "search": SearchOptions(top_k=12), "thresholds": (-1.0, -1.0),
              "verify": VerifyOptions(top=12, grid=VerifyGrid(size=32))}
    cascade = audit(train, synth, tiny_model_dir, **common)
    monkeypatch.setattr(rerank, "BLOCK", 12)
    every = audit(train, synth, tiny_model_dir, **common)
    first = {m.synthetic: m for m in cascade.matches if m.rank == 1}
    full = {m.synthetic: m for m in every.matches if m.rank == 1}
    verified = sorted(m.verified_ssim for m in full.values())
    assert verified[0] < 0.85 < verified[-1]  # the cases straddle the line
    assert {s: m.label for s, m in first.items()} == {s: m.label for s, m in full.items()}
    assert cascade.summary["verify"]["pairs"] < every.summary["verify"]["pairs"] == 8 * 12


def test_an_audit_interrupted_while_verifying_resumes_to_the_same_outputs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of verification: the pairs verified before it are kept, the
    resumed audit verifies only the others, and its matches equal an audit that ran through
    (without a cache)."""
    train, synth = _noisy_copies(tmp_path, 5, 6, 6, 40, 6.0, lambda k, noisy: noisy[::-1])
    common = {"device": "cpu", "search": SearchOptions(top_k=4), "thresholds": (-1.0, -1.0),
              "verify": VerifyOptions(top=4, grid=VerifyGrid(size=32))}
    through = audit(train, synth, tiny_model_dir, cache_dir=None, **common)
    monkeypatch.setattr(rerank, "ROWS", 1)
    real_verify = rerank.verify_pairs
    calls = {"n": 0, "pairs": 0}

    def counting(pairs, grid):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        calls["pairs"] += len(pairs)
        return real_verify(pairs, grid)

    monkeypatch.setattr(rerank, "verify_pairs", counting)
    with pytest.raises(KeyboardInterrupt):
        audit(train, synth, tiny_model_dir, cache_dir=tmp_path / "cache", **common)
    kept = calls["pairs"]  # the pairs of three synthetic images, verified and kept
    assert kept >= 3
    calls.update(n=-10**9, pairs=0)
    resumed = audit(train, synth, tiny_model_dir, cache_dir=tmp_path / "cache", **common)
    total = through.summary["verify"]["pairs"]
    assert resumed.summary["verify"]["pairs"] == total and calls["pairs"] == total - kept
    assert resumed.summary["verify"]["pairs_kept_before"] == kept
    assert [asdict(m) for m in resumed.matches] == [asdict(m) for m in through.matches]
    calls["pairs"] = 0
    audit(train, synth, tiny_model_dir, cache_dir=tmp_path / "cache", **common)
    assert calls["pairs"] == 0  # a later audit of the same images verifies nothing again


def test_verification_looks_further_while_every_candidate_is_a_duplicate(
    cluster: tuple[Path, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, synth = cluster
    order = [1, 2, 3, 4, 0, 5, 6, 7]
    monkeypatch.setattr(audit_candidates, "search_flips", _in_order(audit_candidates.search_flips, order))
    common = {"device": "cpu", "cache_dir": None, "search": SearchOptions(top_k=3), "thresholds": (-1.0, -1.0)}
    # Candidates c1, c2 verify as duplicates, so c3, c4 are verified; duplicates again, so a, c5;
    # then u1, u2, which are not duplicates: the search stops at verify_max or there.
    deep = audit(train, synth, tiny_model_dir, verify=VerifyOptions(top=2, max=8), **common)
    first = deep.matches[0]
    assert first.train == "a.png" and first.label == "duplicate"
    verified = [m.verified_ssim for m in deep.matches]
    assert verified == sorted(verified, reverse=True) and min(verified) > 0.85
    assert deep.summary["verify"]["pairs"] == 8 and deep.summary["verify"]["extended"] == 1
    assert deep.summary["verify"]["max"] == 8
    deep.to_html(train.parent / "report.html")
    assert "up to 8 candidates where all verified as duplicates: 1 image(s)" in (train.parent / "report.html").read_text()
    # Stopped by verify_max after a and c5, and the same best match.
    six = audit(train, synth, tiny_model_dir, verify=VerifyOptions(top=2, max=6), **common)
    assert six.summary["verify"]["pairs"] == 6 and six.matches[0].train == "a.png"
    # Turned off: only c1 and c2 are verified, and the best of them is named.
    shallow = audit(train, synth, tiny_model_dir, verify=VerifyOptions(top=2, max=2), **common)
    assert shallow.matches[0].train in {"c1.png", "c2.png"}
    assert shallow.summary["verify"]["pairs"] == 2 and shallow.summary["verify"]["extended"] == 0
    assert shallow.matches[0].verified_ssim < first.verified_ssim
    with pytest.raises(ValueError, match=r"verify max \(1\) must be at least verify top \(2\)"):
        audit(train, synth, tiny_model_dir, verify=VerifyOptions(top=2, max=1), **common)


def test_a_block_left_empty_does_not_stop_the_deeper_verification(
    cluster: tuple[Path, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, synth = cluster
    # c1, c2 | two empty slots | c3, c4 | a, c5: the empty block is passed over.
    order = [1, 2, -1, -1, 3, 4, 0, 5]
    monkeypatch.setattr(audit_candidates, "search_flips", _in_order(audit_candidates.search_flips, order))
    result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=8),
                   thresholds=(-1.0, -1.0), verify=VerifyOptions(top=2, max=8))
    assert result.matches[0].train == "a.png"
    assert result.summary["verify"]["pairs"] == 6 and result.summary["verify"]["extended"] == 1
    assert [m.rank for m in result.matches] == list(range(1, 7))  # the empty slots are left out
    assert all(m.verified_ssim is not None and m.verified_ssim > 0.85 for m in result.matches)


def _with_missing_slots(real, blank):  # type: ignore[no-untyped-def]
    """``search_flips`` as an approximate index answers it: the ``blank`` slots found nothing."""
    def search(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)
        scores, indices = found.scores.copy(), found.indices.copy()
        scores[blank], indices[blank] = -np.inf, -1
        return replace(found, scores=scores, indices=indices, index="ivf")
    return search


def test_slots_an_approximate_index_left_empty_are_not_matches(
    sets: tuple[Path, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, synth = sets
    blank = np.zeros((5, 8), dtype=bool)
    blank[:, 6:] = True  # two slots of every image
    blank[0] = True  # exact.png: nothing found, but its byte-identical source is known
    blank[2, 1:] = True  # new0.png: only its best neighbour was found
    monkeypatch.setattr(audit_candidates, "search_flips", _with_missing_slots(audit_candidates.search_flips, blank))
    monkeypatch.setattr(rerank, "BLOCK", 8)  # all 8 candidates at once: no cascade
    result = audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=8), verify=8,
                   thresholds=(-1.0, -1.0))
    ranks: dict[str, list[int]] = {}
    for m in result.matches:
        ranks.setdefault(m.synthetic, []).append(m.rank)
        assert np.isfinite(m.score) and (m.verified_ssim is not None or m.synthetic == "exact.png")
    assert ranks["new0.png"] == [1] and ranks["new1.png"] == list(range(1, 7))
    # The byte copy's source is put first even where the search found nothing.
    assert ranks["exact.png"] == [1]
    assert result.matches[0].train == "t2.png" and result.matches[0].exact_copy
    assert result.summary["search"]["missing_slots"] == 5 * 8 - len(result.matches)
    assert result.summary["verify"]["pairs"] == 4 * 6 - 5  # only the slots that were found


def test_an_image_without_any_neighbour_is_an_error_that_names_it(
    sets: tuple[Path, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, synth = sets
    blank = np.zeros((5, 3), dtype=bool)
    blank[3] = True  # new1.png
    monkeypatch.setattr(audit_candidates, "search_flips", _with_missing_slots(audit_candidates.search_flips, blank))
    with pytest.raises(RuntimeError, match=r"no training neighbour for 1 synthetic image\(s\) \(new1.png\)"):
        audit(train, synth, tiny_model_dir, device="cpu", cache_dir=None, search=SearchOptions(top_k=3), verify=0)
