"""Photos a user places on the canvas: decoded, validated and normalised, without Qt.

    photo = load_photo("beach.jpg")          # Photo; PhotoError with a clear message otherwise
    target, mask = photo.tensors(256, 192)   # [3, 192, 256] in [-1, 1], [1, 192, 256] in [0, 1]

Every file goes through one boundary, `load_photo` (or `decode_photo` for bytes). It reads
the header first and refuses empty, absurdly large or unsupported images before anything is
decoded, so a hostile header (a 60,000-pixel-wide PNG of a few bytes) costs nothing. Then:

- EXIF orientation is applied (a portrait photo from a phone stands upright);
- greyscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit keeps its top byte
  after rounding, not a clipped copy);
- alpha becomes a mask: transparent pixels are unknown to the inversion, not black;
- photos with a side above `MAX_SIDE` are downscaled (Lanczos) and a notice says so.

Legend: H/W pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

PHOTO_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"})
PHOTO_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "TIFF"})
MAX_SIDE = 4096  # larger photos are downscaled to this side (a placement is rarely bigger)
MAX_HEADER_SIDE = 50_000  # larger headers are refused before decoding
MAX_HEADER_PIXELS = 400_000_000
MAX_FILE_BYTES = 512 * 2**20

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)


class PhotoError(ValueError):
    """A file that cannot be used as a photo; the message is written for the user."""


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo: `rgb` uint8 [H, W, 3], `alpha` uint8 [H, W] or None (opaque).

    `original_size` is (w, h) as stored in the file after orientation; `notices` are things the
    user should be told (downscaled, alpha used as mask, ...).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    name: str = "photo"
    original_size: tuple[int, int] = (0, 0)
    notices: tuple[str, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]

    def resized(self, w: int, h: int) -> Photo:
        """The photo resampled to w x h pixels (Lanczos; box filter when shrinking a lot)."""
        if (w, h) == self.size:
            return self
        if w <= 0 or h <= 0:
            raise ValueError(f"a photo cannot be resized to {w} x {h}")
        rgb = np.asarray(Image.fromarray(self.rgb).resize((w, h), Image.Resampling.LANCZOS))
        alpha = None
        if self.alpha is not None:
            alpha = np.asarray(
                Image.fromarray(self.alpha).resize((w, h), Image.Resampling.BILINEAR)
            )
        return Photo(rgb, alpha, self.name, self.original_size, self.notices)

    def tensors(self, w: int, h: int) -> tuple[Tensor, Tensor]:
        """Target float [3, h, w] in [-1, 1] and mask float [1, h, w] in [0, 1] (1 = known)."""
        photo = self.resized(w, h)
        rgb = torch.from_numpy(np.array(photo.rgb)).permute(2, 0, 1).float()
        target = rgb / 127.5 - 1.0
        if photo.alpha is None:
            mask = torch.ones(1, h, w)
        else:
            mask = torch.from_numpy(np.array(photo.alpha)).float()[None] / 255.0
        return target, mask


def load_photo(path: str | Path, *, max_side: int = MAX_SIDE) -> Photo:
    """Read and validate a photo file; PhotoError says what is wrong, in the user's words."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PhotoError(f"{path.name}: no such file") from None
    except OSError as exc:
        raise PhotoError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise PhotoError(f"{path.name} is a folder, not a photo")
    if size == 0:
        raise PhotoError(f"{path.name} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise PhotoError(f"{path.name} is larger than {MAX_FILE_BYTES >> 20} MB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PhotoError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    return decode_photo(data, name=path.name, max_side=max_side)


def decode_photo(data: bytes, *, name: str = "photo", max_side: int = MAX_SIDE) -> Photo:
    """`load_photo` for bytes already in memory (drag-and-drop, tests)."""
    if not data:
        raise PhotoError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "?"
            if fmt not in PHOTO_FORMATS:
                raise PhotoError(f"{name} is a {fmt} image; use PNG, JPEG, WebP or TIFF") from None
            _check_header(image, name)
            image = _decoded(image, max_side)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError(
            f"{name} is not an image Infinity Canvas can read (PNG, JPEG, WebP, TIFF)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(f"{name} declares too many pixels to be opened safely") from None
    except _DECODE_ERRORS as exc:
        raise PhotoError(f"{name} is damaged or truncated and cannot be decoded ({exc})") from None
    return _normalised(image, name, max_side)


def _check_header(image: Image.Image, name: str) -> None:
    w, h = image.size
    if w <= 0 or h <= 0:
        raise PhotoError(f"{name} has no pixels ({w} x {h})")
    if max(w, h) > MAX_HEADER_SIDE or w * h > MAX_HEADER_PIXELS:
        raise PhotoError(
            f"{name} is {w:,} x {h:,} pixels; photos up to {MAX_HEADER_SIDE:,} pixels per side "
            f"and {MAX_HEADER_PIXELS // 1_000_000} megapixels can be placed"
        )


def _decoded(image: Image.Image, max_side: int) -> Image.Image:
    """Fully decoded and upright; JPEGs much larger than `max_side` decode at a reduced scale."""
    if image.format == "JPEG" and max(image.size) > 2 * max_side:
        image.draft("RGB", (max_side, max_side))
    image.load()
    upright = ImageOps.exif_transpose(image)
    return upright if upright is not None else image


def _normalised(image: Image.Image, name: str, max_side: int) -> Photo:
    notices: list[str] = []
    original = image.size
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        if alpha.min() == 255:
            alpha = None
        else:
            notices.append("transparent parts are treated as unknown and will be generated")
        image = rgba.convert("RGB")
    elif image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = Image.fromarray(_eight_bit_grey(np.asarray(image))).convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > max_side:
        factor = max_side / max(image.size)
        size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        if alpha is not None:
            alpha = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BILINEAR))
        notices.append(
            f"downscaled from {original[0]:,} x {original[1]:,} to {size[0]:,} x {size[1]:,} pixels"
        )
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return Photo(rgb, alpha, name, original, tuple(notices))


def _eight_bit_grey(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer or float greyscale -> uint8, scaled by the format's range."""
    v = values.astype(np.float64)
    if values.dtype.kind == "f":
        top = 1.0 if v.max() <= 1.0 else float(v.max())
    else:
        top = 65535.0 if v.max() > 255 or values.dtype.itemsize == 2 else 255.0
    return np.clip(np.round(v / top * 255.0), 0, 255).astype(np.uint8)
