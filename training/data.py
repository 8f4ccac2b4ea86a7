"""Training images: validated up front, decoded once, kept in memory, sampled as the paper does.

Preprocessing (INFINITYGAN.md section 6, `dataset.py` of the official code): each sample is
a square "full image" resized to `full_size`, randomly flipped left-right, from which a
`patch_size` patch is cut at a random pixel offset (ox, oy) in 0..full_size - patch_size.
The real patch's vertical label is oy / (full_size - patch_size) * 2 - 1, as in the
official code. The full image is the centre square of the photo (official), or, with
`scale_crops` (multi-scale augmentation for small datasets), a random square whose side
is 50-100% of the photo's short side, biased towards large.

Datasets here are small, so every image is decoded once and kept as a uint8 tensor: without
scale crops as its full image (centre square, Lanczos-resized to `full_size`, as the
official preprocessing), with scale crops downscaled to a short side of at most
2 x `full_size` (a 50% crop then still has full detail); a step then costs a few small
resizes at most.

Legend: B batch, F full_size, P patch_size, h/w stored image pixels.
"""

from __future__ import annotations

import logging
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from training.config import SMALL_DATASET

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"})
MIN_SCALE = 0.5  # smallest scale-crop side, as a fraction of the short side
# What decoding a broken, truncated or hostile file raises: such a file is skipped, not fatal.
UNREADABLE_IMAGE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class DatasetReport:
    """What a scan of the data folder found; `skipped` holds (file, reason)."""

    root: str
    usable: int
    short_sides: tuple[int, ...]  # of the usable images, as decoded
    skipped: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One paragraph for a log or the GUI."""
        text = f"{self.usable} usable images in {self.root}"
        if self.short_sides:
            sides = self.short_sides
            text += (
                f" (short side min {min(sides)}, median {int(statistics.median(sides))}, "
                f"max {max(sides)} px)"
            )
        if self.skipped:
            shown = "; ".join(f"{name}: {why}" for name, why in self.skipped[:10])
            more = f" and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            text += f"; skipped {len(self.skipped)}: {shown}{more}"
        return text


@dataclass
class ImageBank:
    """Decoded training images and the sampler that turns them into patches.

    `images` are uint8 [3, h, w] (on the CPU unless moved with `to`): [3, F, F] full
    images without scale crops, short side <= 2 F with them.
    """

    images: list[Tensor]
    full_size: int
    patch_size: int
    scale_crops: bool
    report: DatasetReport

    def __len__(self) -> int:
        return len(self.images)

    @property
    def name(self) -> str:
        return Path(self.report.root).name

    def to(self, device: torch.device) -> ImageBank:
        """The same bank with its images on `device`: crops and resizes then run there.

        On a GPU this takes the per-sample resizes off the CPU, which otherwise bound
        the training speed of small models. Random choices still come from the CPU
        generator, so the patches are the same ones on every device.
        """
        images = [image.to(device) for image in self.images]
        return ImageBank(images, self.full_size, self.patch_size, self.scale_crops, self.report)

    def full_image(self, index: int) -> Tensor:
        """The centre square of image `index` at full_size, float [3, F, F] in [-1, 1]."""
        image = self.images[index]
        h, w = image.shape[-2:]
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        return _resize_square(image[:, y : y + side, x : x + side], self.full_size)

    def sample_full(self, index: int, generator: torch.Generator) -> Tensor:
        """A training "full image" of image `index`: [3, F, F] in [-1, 1], not yet flipped."""
        if not self.scale_crops:
            return self.full_image(index)
        image = self.images[index]
        h, w = image.shape[-2:]
        short = min(h, w)
        u = torch.rand((), generator=generator).item()
        # side fraction 1 - 0.5 u^2: density grows towards 1 (large crops are likelier)
        side = max(1, round(short * (1.0 - (1.0 - MIN_SCALE) * u * u)))
        y = int(torch.randint(0, h - side + 1, (), generator=generator))
        x = int(torch.randint(0, w - side + 1, (), generator=generator))
        return _resize_square(image[:, y : y + side, x : x + side], self.full_size)

    def sample_patches(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`batch` real patches [B, 3, P, P] in [-1, 1] and their vertical labels [B] in [-1, 1].

        Every random choice is drawn from `generator` (a CPU generator), in a fixed order,
        so a seeded run samples the same patches on every device.
        """
        span = self.full_size - self.patch_size
        patches, labels = [], []
        for _ in range(batch):
            index = int(torch.randint(0, len(self.images), (), generator=generator))
            full = self.sample_full(index, generator)
            if torch.rand((), generator=generator).item() < 0.5:
                full = full.flip(-1)
            ox = int(torch.randint(0, span + 1, (), generator=generator))
            oy = int(torch.randint(0, span + 1, (), generator=generator))
            patches.append(full[:, oy : oy + self.patch_size, ox : ox + self.patch_size])
            labels.append(oy / span * 2 - 1 if span > 0 else 0.0)
        return torch.stack(patches), torch.tensor(labels, dtype=torch.float32)

    def reference_full_images(self, count: int, generator: torch.Generator) -> Tensor:
        """`count` centre-square full images [N, 3, F, F] (with replacement if needed)."""
        n = len(self.images)
        if count <= n:
            order = torch.randperm(n, generator=generator)[:count]
        else:
            order = torch.randint(0, n, (count,), generator=generator)
        return torch.stack([self.full_image(int(i)) for i in order])


def _resize_square(image: Tensor, size: int) -> Tensor:
    """uint8 [3, s, s] -> float [3, size, size] in [-1, 1] (antialiased bilinear)."""
    x = image.float().unsqueeze(0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return (x[0] / 127.5 - 1.0).clamp(-1.0, 1.0)


def find_image_files(root: Path) -> list[Path]:
    """Image files under `root`, recursively, in a stable (sorted) order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_images(
    root: str | Path,
    *,
    full_size: int,
    patch_size: int,
    scale_crops: bool | None = None,
    min_side: int | None = None,
) -> ImageBank:
    """Scan, validate and decode the images under `root`.

    Files that cannot be decoded, or whose short side is below `min_side` (default:
    `patch_size`), are skipped and listed in the report. `scale_crops` None picks the
    small-dataset default (on below 1,000 images). Raises FileNotFoundError if `root`
    does not exist, ValueError if it is not a folder or holds no usable image.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"data path {root} is not a folder")
    files = find_image_files(root)
    if not files:
        suffixes = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise ValueError(f"no image files ({suffixes}) found in {root} or its sub-folders")
    if scale_crops is None:
        scale_crops = len(files) < SMALL_DATASET
    min_side = patch_size if min_side is None else min_side
    stored_side = 2 * full_size if scale_crops else full_size  # square if not scale_crops
    images: list[Tensor] = []
    sides: list[int] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        name = str(path.relative_to(root))
        try:
            image, short = _decode(path, stored_side, square=not scale_crops)
        except UNREADABLE_IMAGE_ERRORS as exc:
            skipped.append((name, f"unreadable ({type(exc).__name__}: {exc})"))
            continue
        if short < min_side:
            skipped.append((name, f"too small (short side {short} px < {min_side} px)"))
            continue
        images.append(image)
        sides.append(short)
    report = DatasetReport(str(root), len(images), tuple(sides), tuple(skipped))
    if not images:
        raise ValueError(
            f"no usable image in {root}: {len(files)} files, all skipped — " + report.describe()
        )
    log.info("%s", report.describe())
    return ImageBank(images, full_size, patch_size, scale_crops, report)


def _decode(path: Path, stored_side: int, *, square: bool) -> tuple[Tensor, int]:
    """Decode to uint8 [3, h, w]; also the original short side.

    `square`: the centre square resized to `stored_side` (up or down); otherwise the whole
    image with its short side reduced to `stored_side` if it is longer.
    """
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # PIL warns about odd EXIF / palette data; we convert anyway
        with Image.open(path) as opened:
            original_short = min(opened.size)
            if opened.format == "JPEG":
                opened.draft("RGB", (stored_side, stored_side))  # fast reduced decode
            image = ImageOps.exif_transpose(opened)
            image.load()
            short = min(image.size)
            image = _to_rgb(image)
            if square:
                left, top = (image.width - short) // 2, (image.height - short) // 2
                image = image.crop((left, top, left + short, top + short))
                image = image.resize((stored_side, stored_side), Image.Resampling.LANCZOS)
            elif short > stored_side:
                scale = stored_side / short
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), original_short


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (16-bit and float TIFFs are rescaled, not clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")
