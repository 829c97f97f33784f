"""The embedding cache: hits, misses, corruption, merging, content keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepssim.auditing import cache as cache_mod
from deepssim.auditing.cache import ContentHasher, EmbeddingCache, default_cache_dir, model_key
from deepssim.readers import ImageRef


def _emb(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    key = model_key("abc", {"size": 32})
    cache = EmbeddingCache(tmp_path, key)
    assert len(cache) == 0 and "k0" not in cache
    cache.add(["k0", "k1", "k2"], _emb(3))
    reopened = EmbeddingCache(tmp_path, key)
    assert len(reopened) == 3 and "k1" in reopened
    np.testing.assert_array_equal(reopened.get(["k2", "k0"]), _emb(3)[[2, 0]])
    # Another model or another preprocessing never sees these entries.
    assert len(EmbeddingCache(tmp_path, model_key("abd", {"size": 32}))) == 0
    assert len(EmbeddingCache(tmp_path, model_key("abc", {"size": 64}))) == 0
    with pytest.raises(ValueError, match="checksum"):
        model_key("", {})


def test_corrupt_shards_are_detected_and_dropped(tmp_path: Path) -> None:
    key = model_key("abc", {})
    cache = EmbeddingCache(tmp_path, key)
    cache.add(["a", "b"], _emb(2, 1))
    cache.add(["c"], _emb(1, 2))
    shards = sorted(cache.folder.glob("shard-*.npz"))
    assert len(shards) == 2
    victim = next(s for s in shards if "c" in np.load(s)["keys"].tolist())
    raw = bytearray(victim.read_bytes())
    raw[-40:-30] = b"\xff" * 10  # damage the payload: a truncated or flipped write
    victim.write_bytes(bytes(raw))
    (cache.folder / "shard-truncated.npz").write_bytes(b"PK\x03\x04 not a zip")
    reopened = EmbeddingCache(tmp_path, key)
    assert sorted(Path(p).name for p in reopened.corrupt) == sorted([victim.name, "shard-truncated.npz"])
    assert "c" not in reopened and "a" in reopened and "b" in reopened
    assert not victim.exists()


def test_shards_are_merged_when_they_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "MERGE_AT", 4)
    cache = EmbeddingCache(tmp_path, model_key("abc", {}))
    emb = _emb(10, 3)
    for k in range(10):
        cache.add([f"k{k}"], emb[k:k + 1])
    assert len(list(cache.folder.glob("shard-*.npz"))) < 4
    reopened = EmbeddingCache(tmp_path, model_key("abc", {}))
    np.testing.assert_array_equal(reopened.get([f"k{k}" for k in range(10)]), emb)


def test_content_keys_follow_bytes_not_names(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    hasher = ContentHasher()
    key = hasher.key
    assert key(ImageRef("a.png", a)) == key(ImageRef("b.png", b)) != key(ImageRef("c.png", c))
    # Two slices of one volume are two images.
    assert key(ImageRef("a.png#axis2:1", a, axis=2, index=1)) != key(ImageRef("a.png#axis2:2", a, axis=2, index=2))
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"one")
    (series / "2.dcm").write_bytes(b"two")
    before = ContentHasher().key(ImageRef("series", series))
    (series / "2.dcm").write_bytes(b"changed")
    assert ContentHasher().key(ImageRef("series", series)) != before


def test_default_cache_dir_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSSIM_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DEEPSSIM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deepssim"
