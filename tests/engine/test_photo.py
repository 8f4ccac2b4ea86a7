"""Photo loading: every user file is validated, normalised to 8-bit RGB, or refused clearly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.photo import MAX_HEADER_SIDE, PhotoError, decode_photo, load_photo


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries a single tiny data chunk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def _noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def gradient(w: int = 40, h: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    photo = decode_photo(_encoded(Image.fromarray(gradient()), fmt), name=f"g.{fmt.lower()}")
    assert photo.rgb.shape == (24, 40, 3) and photo.rgb.dtype == np.uint8
    assert photo.alpha is None
    assert np.abs(photo.rgb.astype(int) - gradient()).mean() < 8


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(gradient(40, 24))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = decode_photo(_encoded(image, "JPEG", exif=exif.tobytes()))
    assert photo.size == (24, 40)


def test_alpha_becomes_a_mask_and_greyscale_16_bit_and_cmyk_become_rgb() -> None:
    rgba = np.dstack([gradient(), np.full((24, 40), 255, np.uint8)])
    rgba[:, :10, 3] = 0
    photo = decode_photo(_encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert photo.alpha is not None and photo.alpha[:, :10].max() == 0
    assert any("transparent" in n for n in photo.notices)
    _, mask = photo.tensors(40, 24)
    assert mask[0, :, :10].max() == 0 and mask[0, :, 20:].min() == 1

    grey16 = np.full((8, 8), 40000, np.uint16)
    photo = decode_photo(_encoded(Image.fromarray(grey16), "PNG"))
    assert photo.rgb.shape == (8, 8, 3) and abs(int(photo.rgb[0, 0, 0]) - 40000 / 257) <= 1

    cmyk = Image.new("CMYK", (8, 8), (0, 255, 0, 0))  # magenta
    photo = decode_photo(_encoded(cmyk, "JPEG"))
    assert photo.rgb[4, 4, 0] > 200 and photo.rgb[4, 4, 1] < 60


def test_very_large_photo_is_downscaled_with_a_notice() -> None:
    photo = decode_photo(_encoded(Image.fromarray(gradient(300, 100)), "PNG"), max_side=150)
    assert photo.size == (150, 50) and photo.original_size == (300, 100)
    assert any("downscaled" in n for n in photo.notices)


def test_tensors_are_in_minus_one_to_one() -> None:
    target, mask = decode_photo(_encoded(Image.fromarray(gradient()), "PNG")).tensors(20, 12)
    assert target.shape == (3, 12, 20) and mask.shape == (1, 12, 20)
    assert target.min() >= -1 and target.max() <= 1 and mask.min() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file, not a picture\n" * 4, "not an image"),
        (_png_header(60_000, 20), f"{MAX_HEADER_SIDE:,} pixels per side"),
        (_png_header(0, 20), "not an image"),
        (_encoded(Image.fromarray(_noise()), "PNG")[:2000], "truncated"),
        (_encoded(Image.fromarray(_noise()), "JPEG")[:2000], "truncated"),
        (_encoded(Image.fromarray(gradient()), "GIF"), "GIF"),
    ],
    ids=[
        "zero-size",
        "non-image",
        "huge-header",
        "zero-width",
        "truncated",
        "truncated-jpeg",
        "gif",
    ],
)
def test_bad_files_give_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(PhotoError, match=message):
        decode_photo(data, name="bad.png")


def test_load_photo_reports_missing_empty_and_folder(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="no such file"):
        load_photo(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(PhotoError, match="empty"):
        load_photo(tmp_path / "empty.png")
    with pytest.raises(PhotoError, match="folder"):
        load_photo(tmp_path)
    good = tmp_path / "good.webp"
    Image.fromarray(gradient()).save(good)
    assert load_photo(good).name == "good.webp"
