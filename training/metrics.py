"""Weight-free quality metric: multi-scale sliced Wasserstein distance (SWD) and ScaleInv-SWD.

SWD as in Karras et al., "Progressive Growing of GANs" (ICLR 2018), section 5 and their
`sliced_wasserstein.py`, written here from the description: each image is split into a
Laplacian pyramid (5x5 binomial filter, down to 16 px); at every level, 7x7x3 neighbourhoods
at random positions (128 per image) are descriptors; each set of descriptors is normalised
per colour channel; the distance between the real and the generated set is the mean over
512 random unit directions (4 x 128) of the 1-D Wasserstein-1 distance of the projections
(sorted values). Reported x 1e3, as ProGAN does; lower is better; a set against itself
with the same descriptor positions is exactly 0.

ScaleInv (DESIGN.md section 8, after the paper's ScaleInv FID): images generated at s x the
training full-image size, resized down to it, compared with real full images.

Keys of `evaluate_generator`: `swd_patch` (training patches vs real patches), `swd_1x`,
`swd_4x`, `swd_16x` (full images, as requested by `scales`), and `swd` (mean over levels
of `swd_1x`, the headline number).

Legend: N images, M descriptors, L pyramid levels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.checkpoint import read_checkpoint
from engine.model import Generator
from engine.world import World
from training.data import ImageBank, load_images
from training.sampling import render_fakes, sample_fakes

MIN_LEVEL_SIZE = 16
NEIGHBOURHOOD = 7
DESCRIPTORS_PER_IMAGE = 128
DIRECTION_REPEATS = 4
DIRECTIONS_PER_REPEAT = 128


def _gaussian(x: Tensor) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :]) / 256.0
    return k[None, None].expand(x.shape[1], 1, 5, 5)


def _pyr_down(x: Tensor) -> Tensor:
    blurred = F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), _gaussian(x), groups=x.shape[1])
    return blurred[..., ::2, ::2]


def _pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x * 4.0
    up = F.conv2d(F.pad(up, [2, 2, 2, 2], mode="reflect"), _gaussian(x), groups=c)
    return up[..., : size[0], : size[1]]


def laplacian_pyramid(images: Tensor, min_size: int = MIN_LEVEL_SIZE) -> list[Tensor]:
    """Band-pass levels, finest first, ending with the low-pass residual: [N, 3, H_l, W_l] each."""
    levels, current = [], images.float()
    while True:
        h, w = current.shape[-2:]
        if min(-(-h // 2), -(-w // 2)) < min_size:
            levels.append(current)
            return levels
        down = _pyr_down(current)
        levels.append(current - _pyr_up(down, (h, w)))
        current = down


def _descriptors(level: Tensor, per_image: int, generator: torch.Generator) -> Tensor:
    """Random 7x7 neighbourhoods of one level, channel-normalised: [N * per_image, 7 * 7 * 3]."""
    n, c, h, w = level.shape
    k = NEIGHBOURHOOD
    ys = torch.randint(0, h - k + 1, (n, per_image), generator=generator).to(level.device)
    xs = torch.randint(0, w - k + 1, (n, per_image), generator=generator).to(level.device)
    offs = torch.arange(k, device=level.device)
    rows = (ys[..., None] + offs)[:, :, :, None]  # [N, K, 7, 1]
    cols = (xs[..., None] + offs)[:, :, None, :]  # [N, K, 1, 7]
    batch = torch.arange(n, device=level.device)[:, None, None, None]
    desc = level[batch, :, rows, cols]  # [N, K, 7, 7, C]
    desc = desc.reshape(-1, k, k, c)
    desc = desc - desc.mean(dim=(0, 1, 2), keepdim=True)
    desc = desc / desc.std(dim=(0, 1, 2), keepdim=True).clamp_min(1e-8)
    return desc.reshape(desc.shape[0], -1)


def _sliced_wasserstein(a: Tensor, b: Tensor, generator: torch.Generator) -> float:
    """Mean 1-D Wasserstein-1 distance of a [M, d] and b [M, d] over random unit directions."""
    results = []
    for _ in range(DIRECTION_REPEATS):
        dirs = torch.randn(a.shape[1], DIRECTIONS_PER_REPEAT, generator=generator).to(a.device)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa = torch.sort(a @ dirs, dim=0).values
        pb = torch.sort(b @ dirs, dim=0).values
        results.append((pa - pb).abs().mean())
    return float(torch.stack(results).mean())


def sliced_wasserstein_distance(
    real: Tensor,
    fake: Tensor,
    *,
    seed: int = 0,
    descriptors_per_image: int = DESCRIPTORS_PER_IMAGE,
) -> list[float]:
    """SWD x 1e3 per pyramid level (finest first) between two image sets [N, 3, H, W] in [-1, 1].

    Both sets must have the same image size; if they differ in count, the larger
    descriptor set is subsampled. The same `seed` draws the same neighbourhood positions
    for both sets when they have the same shape.
    """
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"image sets differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    out = []
    for level, (lr, lf) in enumerate(
        zip(laplacian_pyramid(real), laplacian_pyramid(fake), strict=True)
    ):
        da = _descriptors(lr, descriptors_per_image, torch.Generator().manual_seed(seed + level))
        db = _descriptors(lf, descriptors_per_image, torch.Generator().manual_seed(seed + level))
        m = min(da.shape[0], db.shape[0])
        pick = torch.Generator().manual_seed(seed + 1000 + level)
        if da.shape[0] > m:
            da = da[torch.randperm(da.shape[0], generator=pick)[:m].to(da.device)]
        if db.shape[0] > m:
            db = db[torch.randperm(db.shape[0], generator=pick)[:m].to(db.device)]
        directions = torch.Generator().manual_seed(seed + 2000 + level)
        out.append(_sliced_wasserstein(da, db, directions) * 1e3)
    return out


@torch.no_grad()
def generated_patches(generator: Generator, count: int, seed: int, *, chunk: int = 16) -> Tensor:
    """`count` patches of the training distribution, without style mixing (as at test time).

    Returns [N, 3, P, P] on the CPU.
    """
    rng = torch.Generator(device=generator.device).manual_seed(seed)
    out = []
    for i in range(0, count, chunk):
        n = min(chunk, count - i)
        fakes = sample_fakes(generator.config, n, rng, mixing=0.0, paired=False)
        rgb, _, _ = render_fakes(generator, fakes)
        out.append(rgb.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def generated_full_images(generator: Generator, count: int, scale: int, seed: int) -> Tensor:
    """`count` images generated at `scale` x full_size, resized to full_size: [N, 3, F, F] (CPU).

    Image i is the square of side scale x F centred on the horizon (y = 0) of the world with
    seed `seed + i`, at a random horizontal position: rendered tile by tile by engine.World,
    so memory stays bounded at any scale (a 16x image of the `lite` model is 6224 px wide).
    """
    full = generator.config.full_size
    side = full * scale
    period_px = generator.config.coord_horizontal_period * generator.config.cell_px
    rng = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        x = int(torch.randint(0, max(1, round(period_px)), (), generator=rng))
        world = World(generator, seed=seed + i, precision="fp32")
        rgb = world.render((x - side // 2, -(side // 2), side, side))  # [side, side, 3] uint8
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        if scale > 1:
            image = F.interpolate(
                image, size=(full, full), mode="bilinear", antialias=True, align_corners=False
            )
        out.append(image)
    return torch.cat(out).clamp(-1, 1)


def evaluate_generator(
    generator: Generator,
    bank: ImageBank,
    *,
    images: int = 64,
    scales: tuple[int, ...] = (1, 4),
    seed: int = 0,
) -> dict[str, float]:
    """ScaleInv-SWD of `generator` against `bank` (fixed seeds: comparable across steps)."""
    was_training = generator.training
    generator.eval()
    try:
        data_rng = torch.Generator().manual_seed(seed)
        real_patches, _ = bank.sample_patches(images, data_rng)
        fake_patches = generated_patches(generator, images, seed + 1)
        results = {
            "swd_patch": _mean(sliced_wasserstein_distance(real_patches, fake_patches, seed=seed))
        }
        real_full = bank.reference_full_images(images, data_rng)
        for scale in scales:
            fake_full = generated_full_images(generator, images, scale, seed + 10 + scale)
            levels = sliced_wasserstein_distance(real_full, fake_full, seed=seed)
            results[f"swd_{scale}x"] = _mean(levels)
        if "swd_1x" in results:
            results["swd"] = results["swd_1x"]
        return results
    finally:
        generator.train(was_training)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    *,
    images: int = 64,
    scales: tuple[int, ...] = (1, 4),
    device: str = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """ScaleInv-SWD of any checkpoint against a folder of images (centre crops, no augmentation)."""
    generator = read_checkpoint(checkpoint, device=device).generator
    config = generator.config
    bank = load_images(
        data_dir, full_size=config.full_size, patch_size=config.patch_size, scale_crops=False
    )
    return evaluate_generator(generator, bank, images=images, scales=scales, seed=seed)
