"""2D files through Pillow: every mode, real JPEGs, multi-page TIFF."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepssim.readers import ReadError, SliceSpec, read_image, read_slices, read_volume

RNG = np.random.default_rng(42)
U8 = RNG.integers(0, 256, size=(9, 11), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(9, 11), dtype=np.uint8)


def lum(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def _palette_image() -> tuple[Image.Image, np.ndarray]:
    palette = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
    img = Image.frombytes("P", (U8.shape[1], U8.shape[0]), U8.tobytes())
    img.putpalette(palette.ravel().tolist())
    return img, lum(palette[U8])


def _case(mode: str) -> tuple[Image.Image, np.ndarray]:
    """A generated image of `mode` and the float32 array the reader must return."""
    if mode == "L":
        return Image.fromarray(U8), U8.astype(np.float32)
    if mode == "I;16":
        values = RNG.integers(0, 65536, size=(9, 11), dtype=np.uint16)
        return Image.fromarray(values), values.astype(np.float32)
    if mode == "I":
        values = RNG.integers(-70000, 70000, size=(9, 11), dtype=np.int32)
        return Image.fromarray(values), values.astype(np.float32)
    if mode == "F":
        values = RNG.normal(size=(9, 11)).astype(np.float32)
        return Image.fromarray(values), values
    if mode == "LA":
        return Image.fromarray(np.dstack([U8, ALPHA])), U8.astype(np.float32)
    if mode == "RGB":
        return Image.fromarray(RGB8), lum(RGB8)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([RGB8, ALPHA])), lum(RGB8)
    if mode == "P":
        return _palette_image()
    if mode == "1":
        bits = U8 > 127
        return Image.fromarray(bits), np.where(bits, 255.0, 0.0).astype(np.float32)
    raise AssertionError(mode)


LOSSLESS = [
    ("png", m) for m in ("L", "I;16", "LA", "RGB", "RGBA", "P", "1")
] + [("tif", m) for m in ("L", "I;16", "I", "F", "RGB", "RGBA", "P", "1")] + [("bmp", m) for m in ("L", "RGB", "P", "1")]


@pytest.mark.parametrize(("suffix", "mode"), LOSSLESS)
def test_lossless_modes_give_float32_grey(tmp_path: Path, suffix: str, mode: str) -> None:
    img, expected = _case(mode)
    assert img.mode == mode
    path = tmp_path / f"img.{suffix}"
    img.save(path)
    got = read_image(path)
    assert got.dtype == np.float32 and got.shape == (9, 11)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_matches_pillow_decode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "img.jpeg"
    _case(mode)[0].save(path, quality=90)
    decoded = np.asarray(Image.open(path))
    expected = decoded.astype(np.float32) if mode == "L" else lum(decoded)
    np.testing.assert_array_equal(read_image(path), expected)


def test_sixteen_bit_png_keeps_full_precision(tmp_path: Path) -> None:
    values = np.array([[0, 1, 256, 257], [1000, 1001, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), values.astype(np.float32))


#: PNG colour type by channel count: grey, grey+alpha, RGB, RGBA.
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG of (H, W) or (H, W, C) pixels written by hand (Pillow cannot write
    16-bit colour or alpha)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixels = pixels.reshape(pixels.shape[:2] + (-1,))
    h, w, channels = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_colour_png_warns_about_precision(tmp_path: Path) -> None:
    rgb = (RGB8.astype(np.uint16) * 257).astype(np.uint16)
    _write_png16(tmp_path / "rgb16.png", rgb)
    with pytest.warns(UserWarning, match=r"rgb16\.png: 16-bit RGB PNG read at 8 bits"):
        image = read_image(tmp_path / "rgb16.png")
    assert image.shape == (9, 11)
    # Pillow keeps the high byte of each channel.
    np.testing.assert_allclose(image, lum(rgb >> 8), atol=1e-3)


def test_sixteen_bit_grey_alpha_png_warns_about_precision(tmp_path: Path) -> None:
    grey = RNG.integers(0, 65536, size=(9, 11), dtype=np.uint16)
    _write_png16(tmp_path / "la16.png", np.dstack([grey, ALPHA.astype(np.uint16) * 257]))
    with pytest.warns(UserWarning, match=r"la16\.png: 16-bit grey\+alpha PNG read at 8 bits"):
        image = read_image(tmp_path / "la16.png")
    np.testing.assert_allclose(image, (grey >> 8).astype(np.float32), atol=1e-3)


def test_sixteen_bit_grey_png_reads_without_warning(tmp_path: Path) -> None:
    grey = RNG.integers(0, 65536, size=(9, 11), dtype=np.uint16)
    _write_png16(tmp_path / "grey16.png", grey)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_image(tmp_path / "grey16.png"), grey.astype(np.float32))


def test_real_jpeg_mode_l(shared_data: Path) -> None:
    path = shared_data / "brain-tumor-mri/Training/glioma/Tr-gl_0121.jpg"
    with Image.open(path) as img:
        assert img.mode == "L"
        expected = np.asarray(img, dtype=np.float32)
    got = read_image(path)
    assert got.shape == (224, 224) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_real_jpeg_mode_rgb_is_float_luminance(shared_data: Path) -> None:
    # One of the 81 RGB files of the set whose channels really differ.
    path = shared_data / "brain-tumor-mri/Training/notumor/Tr-no_0883.jpg"
    with Image.open(path) as img:
        assert img.mode == "RGB"
        rgb = np.asarray(img).astype(np.float64)
        rounded = np.asarray(img.convert("L"), dtype=np.float32)
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    got = read_image(path)
    assert got.shape == (224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert not np.array_equal(got, rounded)  # not Pillow's 8-bit convert("L")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_luminance_of_grey_stored_as_rgb_is_the_value_itself(dtype: type) -> None:
    from deepssim.readers.pixels import luminance

    values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype).reshape(-1, 256)
    grey = np.repeat(values[..., None], 3, axis=-1)
    exact = (0.299 * grey[..., 0].astype(np.float64) + 0.587 * grey[..., 1].astype(np.float64)
             + 0.114 * grey[..., 2].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(luminance(grey), exact)  # the fast path, same values
    one_off = grey.copy()
    one_off[0, 1, 2] += 1  # one channel differs: the weighted sum
    assert luminance(one_off)[0, 1] == np.float32(0.299 * 1 + 0.587 * 1 + 0.114 * 2)


def test_multipage_tiff_is_a_stack(tmp_path: Path) -> None:
    pages = RNG.integers(0, 65536, size=(4, 5, 6), dtype=np.uint16)
    path = tmp_path / "stack.tiff"
    frames = [Image.fromarray(page) for page in pages]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    volume = read_volume(path)
    assert volume.shape == (4, 5, 6) and volume.dtype == np.float32
    np.testing.assert_array_equal(volume, pages.astype(np.float32))
    slices = read_slices(path, SliceSpec.parse("all"))
    assert [ref.id for ref, _ in slices] == [f"stack.tiff#axis0:{i}" for i in range(4)]
    np.testing.assert_array_equal(read_image(f"{path}#axis0:2"), pages[2].astype(np.float32))
    with pytest.raises(ReadError, match=r"3D volume.*#axis0:N"):
        read_image(path)


def test_2d_file_gives_one_slice_with_plain_id(tmp_path: Path) -> None:
    Image.fromarray(U8).save(tmp_path / "a.png")
    [(ref, image)] = read_slices(tmp_path / "a.png", SliceSpec.parse("all", skip_empty=True))
    assert (ref.id, ref.axis, ref.index, ref.member) == ("a.png", None, None, None)
    np.testing.assert_array_equal(image, U8.astype(np.float32))
