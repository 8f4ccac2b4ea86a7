"""The InfinityGAN generator: mapping network, structure synthesizer G_S, texture synthesizer G_T.

As in Lin et al., "InfinityGAN: Towards Infinite-Pixel Image Synthesis" (ICLR 2022),
section 3 and appendix, and the authors' code (read for facts, not copied). Everything
random (latents, coordinates, noise) is an input, so a caller decides where each
value comes from -- that is what lets the engine address randomness by world position.

Legend: B batch (b = 1 or B for styles shared by a batch), Dg global latent size,
C local latent channels, Hc/Wc lattice cells, m structure margin, H/W pixels,
K styles blended per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.model.config import ModelConfig
from engine.model.geometry import level_size
from engine.model.layers import (
    LRELU_GAIN,
    EqualLinear,
    SpatialStyle,
    StyledConv,
    ToRGB,
    center_crop,
    pixel_norm,
)


@dataclass(frozen=True, eq=False)
class StyleBlend:
    """K styles blended per pixel over a batch of windows: the paper's fused generation
    (INFINITYGAN.md section 7), with every layer's blend given at that layer's own pixels.

    G_S is modulated by the raw global latents blended per cell, G_T's convs and ToRGBs by
    the W+ blended per pixel (modulation is affine in the style, so this equals
    modulating with the blended style). Weights are >= 0 and sum to 1 over K everywhere.
    """

    z_g: Tensor  # [K, Dg] raw global latents (G_S)
    w_plus: Tensor  # [K, slots, Dg] (G_T)
    structure_weights: tuple[Tensor, ...]  # blocks + 1 maps [B, K, h, w]: block inputs, then z_s
    texture_weights: tuple[Tensor, ...]  # per texture conv run [B, K, H_l, W_l], at its output


class MappingNetwork(nn.Module):
    """z_g -> w: pixel norm, then an MLP with lr multiplier (only G_T uses w)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.global_dim
        self.layers = nn.ModuleList(
            EqualLinear(d, d, lr_mul=config.mapping_lr_mul, activate=True)
            for _ in range(config.mapping_layers)
        )

    def forward(self, z_g: Tensor) -> Tensor:  # [b, Dg] -> [b, Dg]
        x = pixel_norm(z_g)
        for layer in self.layers:
            x = layer(x)
        return x


class StructureSynthesizer(nn.Module):
    """G_S: padding-free modulated k x k convs over z_l and coordinates, styled by raw z_g.

    A k x k conv over the lattice is the paper's "feature unfolding" (a k x k neighbourhood
    concatenation followed by a linear map). Each block trims k // 2 cells per side.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.local_dim
        self.blocks = nn.ModuleList(
            StyledConv(
                c + config.coord_dim, c, config.structure_kernel, config.global_dim, noise=False
            )
            for _ in range(config.structure_blocks)
        )

    def forward(self, z_g: Tensor | StyleBlend, z_l: Tensor, coords: Tensor) -> Tensor:
        # z_g [b, Dg] or a StyleBlend, z_l [B, C, Hc, Wc], coords [B, 3, Hc, Wc]
        # -> z_s [B, C, Hc - 2m, Wc - 2m]
        if coords.shape[-2:] != z_l.shape[-2:]:
            raise ValueError(f"coords {tuple(coords.shape)} must cover z_l {tuple(z_l.shape)}")
        h = z_l
        for i, block in enumerate(self.blocks):
            style: Tensor | SpatialStyle = z_g
            if isinstance(z_g, StyleBlend):
                maps = z_g.structure_weights
                style = SpatialStyle(z_g.z_g, maps[i], maps[i + 1])
            h = block(torch.cat([h, center_crop(coords, h.shape[-2:]).to(h.dtype)], dim=1), style)
        return h


class TextureSynthesizer(nn.Module):
    """G_T: padding-free StyleGAN2 synthesis starting from z_s instead of a constant.

    Stage s = (upsampling conv, plain conv, ToRGB). Style slots as in the official code:
    conv i reads W+ slot i, the ToRGB after conv i reads slot min(i + 2, slots - 1).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.global_dim
        self.slots = config.style_slots
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        # Activations leave out their sqrt(2) gain; the layer reading them folds it in.
        in_ch, in_gain = config.local_dim, 1.0
        for out_ch in config.texture_channels:
            kwargs = {"output_gain": False}
            self.convs.append(
                StyledConv(in_ch, out_ch, 3, d, upsample=True, input_gain=in_gain, **kwargs)
            )
            self.convs.append(StyledConv(out_ch, out_ch, 3, d, input_gain=LRELU_GAIN, **kwargs))
            self.to_rgbs.append(ToRGB(out_ch, d, input_gain=LRELU_GAIN))
            in_ch, in_gain = out_ch, LRELU_GAIN

    def forward(
        self,
        z_s: Tensor,
        w: Tensor | StyleBlend,
        noises: list[Tensor] | None,
        levels: int | None = None,
    ) -> Tensor:
        # z_s [B, C, N, N'], w [b, Dg] or W+ [b, slots, Dg] or a StyleBlend,
        # noises: one [B, 1, H_l, W_l] per conv run (None: no noise) -> rgb [B, 3, H, W]
        levels = len(self.to_rgbs) if levels is None else levels
        if not 1 <= levels <= len(self.to_rgbs):
            raise ValueError(f"levels must be in 1..{len(self.to_rgbs)}, got {levels}")
        if noises is not None and len(noises) < 2 * levels:
            raise ValueError(f"need {2 * levels} noise maps, got {len(noises)}")
        if isinstance(w, StyleBlend) and len(w.texture_weights) < 2 * levels:
            raise ValueError(f"need {2 * levels} texture style maps, got {len(w.texture_weights)}")
        h, rgb = z_s.contiguous(memory_format=torch.channels_last), None  # faster convs on CPU
        for stage in range(levels):
            for i in (2 * stage, 2 * stage + 1):
                h = self.convs[i](h, self._style(w, i), None if noises is None else noises[i])
            rgb = self.to_rgbs[stage](h, self._style(w, min(i + 2, self.slots - 1), i), rgb)
        assert rgb is not None
        return rgb

    def _style(
        self, w: Tensor | StyleBlend, slot: int, at: int | None = None
    ) -> Tensor | SpatialStyle:
        """The style of W+ `slot` for texture conv `slot` (or for the ToRGB after conv `at`)."""
        if not isinstance(w, StyleBlend):
            return w if w.ndim == 2 else w[:, slot]  # [b, Dg]
        if at is not None:  # a ToRGB: a 1 x 1 conv at the pixels of conv `at`'s output
            return SpatialStyle(w.w_plus[:, slot], w.texture_weights[at], w.texture_weights[at])
        before = w.texture_weights[slot - 1] if slot else w.structure_weights[-1]
        return SpatialStyle(w.w_plus[:, slot], before, w.texture_weights[slot])


class Generator(nn.Module):
    """InfinityGAN generator; `config` rebuilds it (see engine.checkpoint)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.structure = StructureSynthesizer(config)
        self.texture = TextureSynthesizer(config)

    def forward(
        self, z_g: Tensor, z_l: Tensor, coords: Tensor, noises: list[Tensor] | None
    ) -> Tensor:
        """Render full-resolution RGB.

        z_g [b, Dg] (b = 1 shares one style across the batch), z_l [B, C, Hc, Wc],
        coords [B, 3, Hc, Wc], noises: one [B, 1, H_l, W_l] per texture conv (or None for
        none) -> [B, 3, H, W] roughly in [-1, 1], H = level_size(Hc - 2m, stages).
        """
        return self.synthesize(z_g, self.mapping(z_g), z_l, coords, noises)

    def synthesize(
        self,
        z_g: Tensor | StyleBlend,
        w: Tensor | StyleBlend,
        z_l: Tensor,
        coords: Tensor,
        noises: list[Tensor] | None,
        levels: int | None = None,
    ) -> Tensor:
        """Render from an already mapped style `w` ([b, Dg] or W+ [b, slots, Dg]).

        `levels` < stages stops after that texture stage and returns its RGB (the
        level-of-detail preview, 2**levels pixels per cell). Passing the same `StyleBlend`
        as `z_g` and `w` blends several styles per pixel (see `StyleBlend`).
        """
        z_s = self.structure(z_g, z_l, coords)  # [B, C, N, N']
        rgb = self.texture(z_s, w, noises, levels)
        levels = self.config.stages if levels is None else levels
        expected = tuple(level_size(n, levels) for n in z_s.shape[-2:])
        assert rgb.shape[-2:] == expected, (rgb.shape, expected)
        return rgb

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
