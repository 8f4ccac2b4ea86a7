"""Invert a photo in its place in the world: the latents that make the model draw it there.

As in the paper's outpainting by GAN inversion (Lin et al. 2022, section 4.3 and the
appendix; INFINITYGAN.md section 7): the coordinates are fixed by where the photo sits, and
the local latents z_l under the photo, the per-layer noise, the global latent z_g (read
raw by the structure synthesizer) and a W+ style (one w per texture layer, bypassing the
mapping net) are optimised so that the generated window matches the photo. Our loss is
weight-free (INFINITYGAN.md "Our decisions" 4): MSE plus an L1 Laplacian-pyramid term, plus
the discriminator's features as a perceptual term when the checkpoint has one; the
StyleGAN2 noise regulariser and a prior keeping z_l and z_g near unit scale.

    placement = invert_photo(world, photo, Rect(0, -128, 256, 256),
                             on_progress=lambda p: ..., should_stop=lambda: False)

The world is only read: the result is a `PhotoPlacement` edit for the caller to apply.

Legend: C local latent channels, Hc/Wc lattice cells, Dg style size, S W+ slots,
H/W pixels of the window's output, h/w pixels of the photo rectangle.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from engine.edits import PackedTensor
from engine.model import Discriminator
from engine.model.geometry import window_covering
from engine.photo import Photo
from engine.placement import PhotoPlacement
from engine.tiles import Rect
from engine.world import World

log = logging.getLogger(__name__)

MAX_PLACEMENT_SIDE = 2048  # world pixels: larger rectangles would not fit an optimiser on a CPU


@dataclass(frozen=True)
class InversionSettings:
    """Optimiser settings. The defaults are tuned so that a 256 x 256 photo inverts in well
    under a minute on a 2-core CPU with the `lite` preset (and in seconds on a GPU)."""

    steps: int = 100
    lr_structure: float = 0.1  # z_l and z_g (the structure synthesizer's inputs)
    lr_texture: float = 0.1  # W+ and noise (the texture synthesizer's inputs)
    optimise_style: bool = True  # also fit z_g and W+ (False keeps the world's style)
    mse_weight: float = 1.0
    pyramid_weight: float = 1.0
    pyramid_levels: int = 4
    feature_weight: float = 0.05  # discriminator features, when there is a discriminator
    noise_reg_weight: float = 1.0
    prior_weight: float = 0.01  # z_l and z_g near unit scale
    style_prior_weight: float = 0.05  # W+ near the model's styles (see `style_statistics`)
    perturbation: float = 0.05  # decaying random push on z_l / W+ early on (escapes plateaus)
    seed: int = 0  # the perturbation's random stream

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"inversion needs at least one step, got {self.steps}")
        if self.lr_structure <= 0 or self.lr_texture <= 0:
            raise ValueError("learning rates must be positive")


@dataclass(frozen=True, slots=True)
class InversionProgress:
    step: int  # 1-based
    steps: int
    loss: float
    psnr: float  # dB of the current reconstruction over the known pixels
    elapsed_s: float


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), over the pixels where `mask` > 0."""
    diff = (a.float() - b.float()).clamp(-2, 2) ** 2
    if mask is not None:
        m = mask.expand_as(diff)
        mse = (diff * m).sum() / m.sum().clamp(min=1e-8)
    else:
        mse = diff.mean()
    return float(10 * torch.log10(4 / mse.clamp(min=1e-12)))


def clipped_difference(rgb: Tensor, target: Tensor) -> Tensor:
    """rgb - target, where a saturated target pixel (at -1 or 1) only asks the output to be
    at least as far out: the displayed image clamps, so 3.0 shows exactly like 1.0."""
    high, low = target >= 1 - 1e-3, target <= -1 + 1e-3
    diff = rgb - target
    return torch.where(high, diff.clamp(max=0), torch.where(low, diff.clamp(min=0), diff))


def laplacian_pyramid_l1(diff: Tensor, levels: int) -> Tensor:
    """Mean L1 of every band of the Laplacian pyramid of `diff` [B, 3, H, W], summed.

    The pyramid is linear, so the pyramid of the difference equals the difference of pyramids.
    """
    total = diff.new_zeros(())
    current = diff
    for _ in range(levels):
        if min(current.shape[-2:]) < 4:
            break
        low = F.avg_pool2d(current, 2, ceil_mode=True)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        total = total + (current - up).abs().mean()
        current = low
    return total + current.abs().mean()


def noise_regulariser(noise: Tensor) -> Tensor:
    """StyleGAN2's noise regulariser: squared autocorrelation at shift 1, over an octave pyramid."""
    total = noise.new_zeros(())
    n = noise[None, None] if noise.ndim == 2 else noise
    while min(n.shape[-2:]) >= 8:
        total = total + (n * n.roll(1, dims=-1)).mean() ** 2 + (n * n.roll(1, dims=-2)).mean() ** 2
        n = F.avg_pool2d(n, 2) * 2  # keeps unit variance for white noise
    return total


def _features(discriminator: Discriminator, image: Tensor, blocks: int = 2) -> list[Tensor]:
    h = discriminator.from_rgb(image)
    out = [h]
    for block in list(discriminator.blocks)[:blocks]:
        if min(h.shape[-2:]) < 8:
            break
        h = block(h)
        out.append(h)
    return out


STYLE_SAMPLES = 2048  # mapped random z_g that estimate the spread of the model's styles


@torch.no_grad()
def style_statistics(world: World) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation [Dg] of w over random global latents (a fixed draw).

    W+ is optimised as an offset from the world's style in units of this spread, with a
    Gaussian prior on the offset: a diagonal form of the paper's Mahalanobis prior on W+.
    Without it, the optimiser moves w far outside what the mapping network produces, and the
    unconstrained surroundings of the photo render in garish colours.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(STYLE_SAMPLES, world.config.global_dim, generator=generator)
    w = world.generator.mapping(z.to(world.device))  # [N, Dg]
    return w.mean(0), w.std(0).clamp(min=1e-6)


def _lr_factor(t: float) -> float:
    """Learning-rate schedule over progress t in [0, 1): 5% linear ramp-up, 25% cosine ramp-down."""
    ramp_down = min(1.0, (1.0 - t) / 0.25)
    ramp_down = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
    return ramp_down * min(1.0, t / 0.05 + 1e-3)


def invert_photo(
    world: World,
    photo: Photo,
    rect: Rect | tuple[int, int, int, int],
    *,
    settings: InversionSettings | None = None,
    discriminator: Discriminator | None = None,
    on_progress: Callable[[InversionProgress], None] = lambda p: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PhotoPlacement | None:
    """Invert `photo` resized to world pixels `rect`; None when `should_stop` said stop.

    The world is not changed. `should_stop` is polled before every step (a step of a 256 x
    256 `lite` inversion takes a fraction of a second on a CPU), `on_progress` is called after
    every step. Raises ValueError for a rectangle that is empty or too large.
    """
    settings = settings or InversionSettings()
    rect = Rect.of(rect)
    if rect.w <= 0 or rect.h <= 0:
        raise ValueError("the photo's rectangle is empty")
    if max(rect.w, rect.h) > MAX_PLACEMENT_SIDE:
        raise ValueError(
            f"a placed photo may be at most {MAX_PLACEMENT_SIDE} world pixels per side, "
            f"got {rect.w} x {rect.h}; scale it down"
        )
    cfg, device = world.config, world.device
    stages, m = cfg.stages, cfg.structure_margin
    window = window_covering(rect.as_tuple(), stages, stages)
    ox, oy, _, _ = window.output_rect(stages, stages)
    cx, cy = rect.x - ox, rect.y - oy  # the photo inside the window's output
    target, mask = photo.tensors(rect.w, rect.h)
    target, mask = target.to(device)[None], mask.to(device)[None]  # [1, 3, h, w], [1, 1, h, w]

    with torch.no_grad():
        # [1, C, Hc, Wc] and per layer [1, 1, H_l, W_l]
        z_l0, noises0 = world._random_inputs([window], stages, world.edits)
        coords = world._coordinates([window])  # [1, 3, Hc, Wc]
    z_l = z_l0.clone().requires_grad_(True)
    noises = [n.clone().requires_grad_(True) for n in noises0]
    z_g = world.z_g.clone().requires_grad_(settings.optimise_style)  # [1, Dg]
    w_start = world.w[:, None].expand(-1, cfg.style_slots, -1)  # [1, S, Dg]
    w_mean, w_std = style_statistics(world)  # [Dg] each
    # W+ = w_start + w_std * w_offset: the offset is in units of the styles' spread.
    w_offset = torch.zeros_like(w_start).requires_grad_(settings.optimise_style)  # [1, S, Dg]
    structure_vars = [z_l] + ([z_g] if settings.optimise_style else [])
    texture_vars = noises + ([w_offset] if settings.optimise_style else [])
    opt_s = torch.optim.Adam(structure_vars, lr=settings.lr_structure, betas=(0.9, 0.999))
    opt_t = torch.optim.Adam(texture_vars, lr=settings.lr_texture, betas=(0.9, 0.999))
    rng = torch.Generator(device="cpu").manual_seed(settings.seed)
    target_features = None
    if discriminator is not None and settings.feature_weight > 0:
        discriminator.requires_grad_(False)
        with torch.no_grad():
            target_features = _features(discriminator, target * mask)

    autocast = (
        torch.autocast(device.type, dtype=world.dtype)
        if world.dtype != torch.float32
        else contextlib.nullcontext()
    )
    start = time.perf_counter()
    current_psnr = 0.0
    for step in range(settings.steps):
        if should_stop():
            log.info("inversion cancelled after %d of %d steps", step, settings.steps)
            return None
        t = step / settings.steps
        for opt, lr in ((opt_s, settings.lr_structure), (opt_t, settings.lr_texture)):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(t)
        push = settings.perturbation * max(0.0, 1 - t / 0.75) ** 2
        z_in = z_l + push * torch.randn(z_l.shape, generator=rng).to(device)
        w_plus = w_start + w_std * w_offset
        w_in = w_plus
        if settings.optimise_style:
            w_in = w_plus + push * w_std * torch.randn(w_plus.shape, generator=rng).to(device)
        with autocast:
            rgb = world.generator.synthesize(z_g, w_in, z_in, coords, noises)
        rgb = rgb.float()[:, :, cy : cy + rect.h, cx : cx + rect.w]  # [1, 3, h, w]
        diff = clipped_difference(rgb, target) * mask
        loss = settings.mse_weight * diff.pow(2).mean() / mask.mean().clamp(min=1e-3)
        loss = loss + settings.pyramid_weight * laplacian_pyramid_l1(diff, settings.pyramid_levels)
        if target_features is not None:
            assert discriminator is not None
            for got, want in zip(
                _features(discriminator, rgb * mask), target_features, strict=False
            ):
                loss = loss + settings.feature_weight * (got - want).pow(2).mean()
        loss = loss + settings.noise_reg_weight * sum(noise_regulariser(n[0, 0]) for n in noises)
        loss = loss + settings.prior_weight * (z_l.pow(2).mean() - 1).pow(2)
        if settings.optimise_style:
            loss = loss + settings.prior_weight * (z_g.pow(2).mean() - 1).pow(2)
            distance = (w_plus - w_mean) / w_std  # [1, S, Dg], about unit normal for a model's w
            loss = loss + settings.style_prior_weight * distance.pow(2).mean()
        opt_s.zero_grad(set_to_none=True)
        opt_t.zero_grad(set_to_none=True)
        loss.backward()
        opt_s.step()
        opt_t.step()
        with torch.no_grad():
            for n in noises:  # keep the noise white: zero mean, unit variance
                n.sub_(n.mean()).div_(n.std().clamp(min=1e-6))
            current_psnr = psnr(rgb.detach().clamp(-1, 1), target, mask)
        on_progress(
            InversionProgress(
                step + 1,
                settings.steps,
                float(loss.detach()),
                current_psnr,
                time.perf_counter() - start,
            )
        )

    log.info(
        "inverted %s at %s in %d steps, %.1f s, PSNR %.2f dB",
        photo.name,
        rect.as_tuple(),
        settings.steps,
        time.perf_counter() - start,
        current_psnr,
    )
    lx, ly, lw, lh = window.latent_rect(m)
    rects = window.noise_rects(stages)
    return PhotoPlacement(
        name=photo.name,
        rect=rect.as_tuple(),
        cell_px=cfg.cell_px,
        latent_cells=(lx, ly, lw, lh),
        latents=PackedTensor.pack(z_l[0]),
        noise_origins=tuple((r[0], r[1]) for r in rects),
        noises=tuple(PackedTensor.pack(n[0, 0]) for n in noises),
        z_g=PackedTensor.pack(z_g[0]) if settings.optimise_style else None,
        w_plus=PackedTensor.pack(w_plus.detach()[0]) if settings.optimise_style else None,
        photo_png=photo_png(photo, rect.w, rect.h),
        psnr=current_psnr,
    )


def photo_png(photo: Photo, w: int, h: int) -> bytes:
    """The photo resized to w x h as PNG bytes (RGBA when it has transparency)."""
    resized = photo.resized(w, h)
    if resized.alpha is not None:
        image = Image.fromarray(np.dstack([resized.rgb, resized.alpha]), "RGBA")
    else:
        image = Image.fromarray(resized.rgb)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()
