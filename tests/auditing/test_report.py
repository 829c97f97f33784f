"""The audit report: histogram PNG and the self-contained HTML file."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deepssim.auditing.gallery import GalleryPair
from deepssim.auditing.report import render_report, write_report

HOSTILE = "<script>alert(1)</script>\"q'&amp.png"
PNG_URI = re.compile(r'data:image/png;base64,([A-Za-z0-9+/=]+)')


def _smooth(seed: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth random image without flip symmetry, float32 like the readers give."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 3).astype(np.float32) * 1000


def _summary(**extra: object) -> dict:
    summary = {
        "deepssim_version": "0.1.0", "created": "2026-11-28T04:50:00Z",
        "n_train": 1000, "n_synthetic": 500, "train_sources": ["data/train"],
        "synthetic_sources": ["gen/"],
        "counts": {"duplicate": 40, "similar": 60, "different": 400},
        "memorization_rate": 0.08, "memorization_rate_ci95": [0.059, 0.107],
        "n_train_copied": 35,
        "most_copied": [{"train": HOSTILE, "n_copies": 3, "max_score": 0.97}],
        "exact_copies": 2,
        "thresholds": {"different_max": 0.60, "duplicate_min": 0.85, "source": "model"},
        "model": {"path": "models/fast", "sha256": "ab12cd34ef56" + "0" * 52, "preset": "fast"},
        "search": {"backend": "exact", "index": "flat", "top_k": 5, "recall": None},
        "cache": {"hits": 900, "misses": 600, "folder": "/root/.cache/deepssim"},
        "skipped_unreadable": ["x/broken.png: not an image"],
        "timings": {"scan_s": 1.2, "embed_s": 30.1, "search_s": 0.4, "total_s": 37.0},
        "versions": {"deepssim": "0.1.0", "torch": "2.14.1"},
    }
    summary.update(extra)
    return summary


def _scores() -> np.ndarray:
    return np.random.default_rng(0).beta(4, 3, 500)


def _pairs() -> list[GalleryPair]:
    a = _smooth(1)
    return [
        # A left-right flipped copy, as the synthetic image, at a different size and scale.
        GalleryPair("gen/flip.png", "train/a.png", 0.97, "duplicate",
                    ndimage.zoom(a[:, ::-1], 1.5, order=1) * 0.01 + 5, a, rank=1),
        GalleryPair(HOSTILE, "train/b&c.png", 0.7, "similar", _smooth(2), _smooth(3), rank=2),
    ]


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_report_is_self_contained_with_counts_rows_and_images(tmp_path: Path) -> None:
    out = write_report(tmp_path / "r.html", _summary(), _scores(), _pairs())
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert 'src="http' not in text and "<link" not in text and "url(" not in text
    for shown in ("500", "1,000", ">40<", ">60<", ">400<", "8.0%", "5.9%", "10.7%", ">35<",
                  "ab12cd34ef56", "models/fast", "exact", "from model", "37.0 s",
                  "x/broken.png: not an image"):
        assert shown in text, shown
    body = text.split('<table id=gallery', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr data-i=") == 2
    uris = PNG_URI.findall(text)
    assert len(uris) == 1 + 1 + 2 * 3  # histogram, colour scale, 3 images per pair
    for uri in uris:
        _png(base64.b64decode(uri))
    thumb = _png(base64.b64decode(PNG_URI.findall(body)[0]))
    assert max(thumb.size) == 144


def test_flipped_copy_alignment_is_found() -> None:
    text = render_report(_summary(), _scores(), _pairs()[:1])
    caption = re.search(r"<div class=cap>(.*?)</div>", text).group(1)
    assert "flip left-right" in caption
    assert "rotation +0°" in caption and "shift (+0, +0) px" in caption
    ssim = float(re.search(r"registered SSIM <b>([0-9.]+)", caption).group(1))
    assert ssim > 0.99  # the 1.5x zoom + resize back leaves only interpolation error
    # The difference image of an aligned copy is almost black (near 0 on the fixed scale).
    diff = _png(base64.b64decode(PNG_URI.findall(text)[-1])).convert("L")
    assert np.asarray(diff).mean() < 40


def test_hostile_ids_are_escaped_everywhere() -> None:
    summary = _summary(train_sources=[HOSTILE], model={"path": HOSTILE, "sha256": '"><b>'},
                       thresholds={"different_max": 0.6, "duplicate_min": 0.85,
                                   "source": "<i>x</i>"})
    text = render_report(summary, _scores(), _pairs())
    assert "<script>alert" not in text
    assert "<i>x</i>" not in text and '"><b>' not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;q&#x27;&amp;amp.png" in text
    # Outside the one inline script of the report itself, no <script> tag at all.
    assert text.count("<script>") == 1
    assert 'data-synthetic="&lt;script&gt;' in text


def _run_details(text: str) -> str:
    return text.split("<h2>Run</h2>", 1)[1].split("</table>", 1)[0]


def test_run_details_read_as_sentences_not_python_dicts() -> None:
    summary = _summary(
        model={"path": "models/fast", "sha256": "ab12cd34ef56" + "0" * 52, "preset": "fast",
               "preprocess": {"size": 128}, "device": "cpu", "scoring": "cross-fit", "flip_search": True,
               "joint_flips": True, "cross_fit": True},
        search={"backend": "faiss", "index": "ivf", "top_k": 5, "device": "cpu", "recall": 0.9731,
                "rescored": {"rule": "cross_fit", "top1_certain": 58, "synthetic_images": 60},
                "missing_slots": 3},
        verify={"top": 3, "max": 12, "extended": 2, "synthetic_images": 14, "pairs": 46,
                "thresholds": {"different_max": 0.6, "duplicate_min": 0.85, "source": "reference"},
                "grid": {"max_angle": 10.0, "angle_step": 5.0, "max_gamma": 2.0, "gamma_steps": 5,
                         "size": 128, "max_shift": 2}},
        cache={"folder": "/cache", "hits": 1, "misses": 600, "corrupt_shards": 0})
    details = _run_details(render_report(summary, _scores(), []))
    for dict_text in ("{", "}", "'", "&#x27;", "None", "rescored", "top1_certain", "missing_slots"):
        assert dict_text not in details, dict_text
    for sentence in (
        "approximate search with a FAISS ivf index on the CPU, top 5 (measured recall@5 0.973)",
        "re-ranked by the cross-fitted flip score: the first match is certainly the best for 58 of 60 images",
        "3 candidate slots left empty by the approximate index",
        "the best 3 candidates of each of 14 suspicious images (score above 0.6) re-scored by the "
        "reference SSIM (46 pairs; up to 12 candidates where all verified as duplicates: 2 image(s))",
        "shifts up to ±2 px", "both images at 128 x 128 px",
        "scored by the mean cosine over the four flips of both images, at the cross-fitted relative flip",
        "1 image found in the cache, 600 embedded",
        "scan 1.2 s · embedding 30.1 s · search 0.4 s · total 37.0 s",
    ):
        assert sentence in details, sentence
    plain = _run_details(render_report(_summary(search={"backend": "exact", "index": "flat", "top_k": 5,
                                                        "device": "cuda:0", "recall": None}), _scores(), []))
    assert "exact search on the GPU (cuda:0), top 5</td>" in plain


def test_shards_left_out_of_the_cache_are_said() -> None:
    cache = {"folder": "/cache", "hits": 3, "misses": 7, "corrupt_shards": 1, "untrusted_shards": 2}
    details = _run_details(render_report(_summary(cache=cache), _scores(), []))
    assert ("3 images found in the cache, 7 embedded · <code>/cache</code> · 1 corrupt shard left out · "
            "2 untrusted shards (another key, edited, or an older format) left out") in details


def test_zero_pairs_and_a_sparse_summary() -> None:
    text = render_report({"n_synthetic": 3}, np.array([0.1, 0.2, 0.3]), [])
    assert "No suspicious pairs" in text
    assert "<table id=gallery" not in text
    assert "Suspicious pairs (0)" in text


def test_a_pair_that_cannot_be_aligned_gets_a_message() -> None:
    tiny = GalleryPair("s.png", "t.png", 0.9, "duplicate", np.ones((4, 4), np.float32),
                       np.ones((4, 4), np.float32))
    text = render_report(_summary(), _scores(), [tiny])
    assert "cannot show this pair" in text and "smaller than the 7x7" in text


CHROMIUM = shutil.which("chromium")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_renders_in_chromium(tmp_path: Path) -> None:
    # 30 pairs: two pages of 25, so only the pager script can write "page 1 of 2".
    a, b = _smooth(4, (32, 32)), _smooth(5, (32, 32))
    pairs = [GalleryPair(f"gen/{i:02d}.png", "t.png", 0.9 - i / 100, "similar", a, b)
             for i in range(29)] + _pairs()[1:]
    report = write_report(tmp_path / "report.html", _summary(), _scores(), pairs)
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280) and pixels.var() > 0
    dom = _chromium("--dump-dom", report.as_uri()).stdout
    assert "page 1 of 2 (30 pairs)" in dom  # written by the pager script only
    assert len(re.findall(r"<tr [^>]*hidden", dom)) == 5  # page 1 shows 25 of the 30 rows
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert" not in dom


def test_sorting_in_chromium(tmp_path: Path) -> None:
    a = _smooth(6, (32, 32))
    scores = [0.7, 0.95, 0.61, 0.8]
    pairs = [GalleryPair(f"gen/{name}.png", "t.png", s, "similar", a, a)
             for name, s in zip("cadb", scores)]  # a 0.95 > b 0.8 > c 0.7 > d 0.61
    text = render_report(_summary(), _scores(), pairs)
    # Click a header, then record the row order where --dump-dom can read it.
    probe = """<script>
    function order(){return [].map.call(document.querySelectorAll("#gallery tbody tr"),
      function(r){return r.dataset.synthetic;}).join(" ");}
    function click(k){document.querySelector("th[data-sort="+k+"]").click();}
    var seen=[];click("score");seen.push(order());click("score");seen.push(order());
    click("synthetic");seen.push(order());document.body.dataset.seen=seen.join("|");
    </script></body>"""
    page = tmp_path / "probe.html"
    page.write_text(text.replace("</body>", probe), encoding="utf-8")
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    seen = re.search(r'data-seen="([^"]*)"', dom).group(1).split("|")
    assert seen == ["gen/a.png gen/b.png gen/c.png gen/d.png",  # score, high first
                    "gen/d.png gen/c.png gen/b.png gen/a.png",  # score again: low first
                    "gen/a.png gen/b.png gen/c.png gen/d.png"]  # synthetic id, A-Z
