"""The embedding cache: hits, misses, corruption, merging, content keys, tamper evidence, the key file."""

from __future__ import annotations

import os
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


# --------------------------------------------------------------------------- tamper evidence


def _old_format_shard(path: Path, keys: list[str], emb: np.ndarray) -> None:
    """A shard as the previous format wrote it: a plain SHA-256 anyone can recompute."""
    import hashlib

    digest = hashlib.sha256("\n".join(keys).encode())
    digest.update(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
    np.savez(path, keys=np.array(keys, dtype=str), emb=emb.astype(np.float32), digest=np.array(digest.hexdigest()))


def test_an_edited_shard_with_a_recomputed_checksum_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = model_key("abc", {})
    cache = EmbeddingCache(tmp_path, key)
    cache.add(["a", "b"], _emb(2, 1))
    (shard,) = cache.folder.glob("shard-*.npz")
    stored = dict(np.load(shard))
    # The forger swaps b's embedding for another one and keeps (or drops) the MAC.
    forged = stored["emb"].copy()
    forged[1] = _emb(1, 9)[0]
    np.savez(shard, keys=stored["keys"], emb=forged, mac=stored["mac"], format=stored["format"])
    _old_format_shard(cache.folder / "shard-forged-plain.npz", ["a", "b"], forged)
    with caplog.at_level("WARNING"):
        reopened = EmbeddingCache(tmp_path, key)
    assert len(reopened) == 0 and "b" not in reopened
    assert sorted(Path(p).name for p in reopened.untrusted) == sorted([shard.name, "shard-forged-plain.npz"])
    assert reopened.corrupt == []
    assert shard.exists() and (cache.folder / "shard-forged-plain.npz").exists()  # reported, never deleted
    assert "1 embedding cache shard(s) of the previous cache format" in caplog.text
    assert "1 embedding cache shard(s) not trusted" in caplog.text


def test_shards_of_the_previous_format_are_embedded_again_once(tmp_path: Path) -> None:
    key = model_key("abc", {})
    folder = tmp_path / "embeddings" / key
    folder.mkdir(parents=True)
    _old_format_shard(folder / "shard-old.npz", ["a", "b"], _emb(2, 1))
    first = EmbeddingCache(tmp_path, key)
    assert len(first) == 0 and [Path(p).name for p in first.untrusted] == ["shard-old.npz"]
    first.add(["a", "b"], _emb(2, 1))  # what the audit does with the images it embeds again
    second = EmbeddingCache(tmp_path, key)
    assert len(second) == 2 and [Path(p).name for p in second.untrusted] == ["shard-old.npz"]
    np.testing.assert_array_equal(second.get(["a", "b"]), _emb(2, 1))


def test_two_users_sharing_a_cache_folder_do_not_trust_each_other(tmp_path: Path) -> None:
    key = model_key("abc", {})
    alice, bob = b"a" * 32, b"b" * 32
    EmbeddingCache(tmp_path, key, secret=alice).add(["x", "y"], _emb(2, 1))
    seen_by_bob = EmbeddingCache(tmp_path, key, secret=bob)
    assert len(seen_by_bob) == 0 and len(seen_by_bob.untrusted) == 1
    seen_by_bob.add(["x"], _emb(1, 5))
    seen_by_alice = EmbeddingCache(tmp_path, key, secret=alice)
    assert len(seen_by_alice) == 2 and len(seen_by_alice.untrusted) == 1
    np.testing.assert_array_equal(seen_by_alice.get(["x", "y"]), _emb(2, 1))
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, key, secret=bob).get(["x"]), _emb(1, 5))
    assert len(list((tmp_path / "embeddings" / key).glob("shard-*.npz"))) == 2  # nobody deleted anything


def test_a_shard_moved_to_another_models_folder_is_not_trusted(tmp_path: Path) -> None:
    one, other = model_key("abc", {}), model_key("abd", {})
    EmbeddingCache(tmp_path, one).add(["x"], _emb(1))
    (shard,) = (tmp_path / "embeddings" / one).glob("shard-*.npz")
    (tmp_path / "embeddings" / other).mkdir(parents=True)
    shard_copy = tmp_path / "embeddings" / other / shard.name
    shard_copy.write_bytes(shard.read_bytes())
    moved = EmbeddingCache(tmp_path, other)
    assert len(moved) == 0 and moved.untrusted == [str(shard_copy)]


def test_hostile_shards_are_corrupt_without_being_loaded(tmp_path: Path) -> None:
    import io
    import zipfile

    key = model_key("abc", {})
    folder = tmp_path / "embeddings" / key
    folder.mkdir(parents=True)
    # An .npy header that declares 10^12 floats in a file of a few bytes.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(folder / "shard-huge.npz", "w") as archive:
        archive.writestr("emb.npy", header.getvalue() + b"\0" * 16)
        archive.writestr("keys.npy", header.getvalue())
    np.savez_compressed(folder / "shard-compressed.npz", keys=np.array(["k"]), emb=_emb(1))
    np.savez(folder / "shard-objects.npz", keys=np.array([{"a": 1}], dtype=object), emb=_emb(1))
    (folder / "shard-text.npz").write_bytes(b"not a zip at all")
    cache = EmbeddingCache(tmp_path, key)
    assert sorted(Path(p).name for p in cache.corrupt) == ["shard-compressed.npz", "shard-huge.npz",
                                                          "shard-objects.npz", "shard-text.npz"]
    assert len(cache) == 0 and not any(folder.iterdir())


def test_a_cache_that_cannot_be_written_warns_and_keeps_the_entries_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", refuse)
    cache = EmbeddingCache(tmp_path, model_key("abc", {}))
    with caplog.at_level("WARNING"):
        cache.add(["a"], _emb(1))
        cache.add(["b"], _emb(1, 2))
    assert "a" in cache and "b" in cache
    assert caplog.text.count("cannot write the embedding cache") == 1


# --------------------------------------------------------------------------- the key file


def test_the_key_file_is_made_private_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config" / "deepssim" / "cache.key"
    monkeypatch.setenv("DEEPSSIM_KEY_FILE", str(path))
    assert cache_mod.default_key_file() == path
    secret = cache_mod.load_cache_key(tmp_path / "cache")
    assert len(secret) == 32 and path.read_bytes() == secret
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert cache_mod.load_cache_key(tmp_path / "cache") == secret  # made once, then read
    assert [p.name for p in path.parent.iterdir()] == ["cache.key"]  # no temporary file left
    monkeypatch.delenv("DEEPSSIM_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_key_file() == tmp_path / "xdg" / "deepssim" / "cache.key"


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.key"
    path.write_bytes(b"k" * 32)
    for mode in (0o644, 0o640, 0o602):
        path.chmod(mode)
        with pytest.raises(cache_mod.CacheKeyError, match=rf"read or written by others \(mode {mode:o}\); "
                                                         rf"make it private with: chmod 600 {path}"):
            cache_mod.load_cache_key(tmp_path / "cache", path)
    path.chmod(0o600)
    assert cache_mod.load_cache_key(tmp_path / "cache", path) == b"k" * 32


def test_a_key_file_inside_the_cache_folder_or_too_short_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(cache_mod.CacheKeyError, match="lies inside the cache folder"):
        cache_mod.load_cache_key(cache, cache / "keys" / "cache.key")
    assert not cache.exists()  # refused before it is made
    # Through a symlink too.
    cache.mkdir()
    (tmp_path / "link").symlink_to(cache)
    with pytest.raises(cache_mod.CacheKeyError, match="lies inside the cache folder"):
        cache_mod.load_cache_key(cache, tmp_path / "link" / "cache.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"12345")
    short.chmod(0o600)
    with pytest.raises(cache_mod.CacheKeyError, match="has 5 bytes, fewer than 16"):
        cache_mod.load_cache_key(cache, short)
    with pytest.raises(cache_mod.CacheKeyError, match="is not a file"):
        cache_mod.load_cache_key(cache, tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file away")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.key"
    path.write_bytes(b"k" * 32)
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(cache_mod.CacheKeyError, match="belongs to another user"):
        cache_mod.load_cache_key(tmp_path / "cache", path)


def test_a_key_file_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    with pytest.raises(cache_mod.CacheKeyError, match=r"plain/cache.key: cannot make the cache key .*DEEPSSIM_KEY_FILE"):
        cache_mod.load_cache_key(tmp_path / "cache", tmp_path / "plain" / "cache.key")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_shard_that_is_not_a_regular_file_does_not_block(tmp_path: Path) -> None:
    key = model_key("abc", {})
    folder = tmp_path / "embeddings" / key
    folder.mkdir(parents=True)
    os.mkfifo(folder / "shard-pipe.npz")
    (folder / "shard-folder.npz").mkdir()
    cache = EmbeddingCache(tmp_path, key)
    assert sorted(Path(p).name for p in cache.corrupt) == ["shard-folder.npz", "shard-pipe.npz"]
    assert len(cache) == 0


def test_a_cache_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("")
    with pytest.raises(NotADirectoryError, match="cache: the embedding cache is a file, not a folder"):
        EmbeddingCache(tmp_path / "cache", model_key("abc", {}))


def test_a_cache_opened_for_some_keys_holds_only_those_and_loses_nothing_when_it_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit holds only its own images' entries, whatever else the folder keeps; the shards
    it writes are merged among themselves, and every other entry stays on disk."""
    key = model_key("abc", {})
    full = EmbeddingCache(tmp_path, key)
    full.add(["a", "b"], _emb(2, 1))
    full.add(["c"], _emb(1, 2))
    monkeypatch.setattr(cache_mod, "MERGE_AT", 3)
    some = EmbeddingCache(tmp_path, key, wanted={"a", "x0", "x1", "x2"})
    assert len(some) == 1 and "a" in some and "b" not in some
    np.testing.assert_array_equal(some.get(["a"]), _emb(2, 1)[:1])
    for k in range(3):  # the third write merges the three shards written here, and only them
        some.add([f"x{k}"], _emb(1, 10 + k))
    assert len(list(some.folder.glob("shard-*.npz"))) == 3
    again = EmbeddingCache(tmp_path, key)
    assert len(again) == 6
    np.testing.assert_array_equal(again.get(["b", "c", "x2"]), np.concatenate([_emb(2, 1)[1:], _emb(1, 2), _emb(1, 12)]))
