"""The InfinityGAN generator: mapping network, structure synthesizer G_S, texture synthesizer G_T.

As in Lin et al., "InfinityGAN: Towards Infinite-Pixel Image Synthesis" (ICLR 2022),
section 3 and appendix, and the authors' code (read for facts, not copied). Everything
random (latents, coordinates, noise) is an input, so a caller decides where each
value comes from -- that is what lets the engine address randomness by world position.

Legend: B batch (b = 1 or B for styles shared by a batch), Dg global latent size,
C local latent channels, Hc/Wc lattice cells, m structure margin, H/W pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.model.config import ModelConfig
from engine.model.geometry import level_size
from engine.model.layers import (
    LRELU_GAIN,
    EqualLinear,
    StyledConv,
    ToRGB,
    center_crop,
    pixel_norm,
)


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

    def forward(self, z_g: Tensor, z_l: Tensor, coords: Tensor) -> Tensor:
        # z_g [b, Dg], z_l [B, C, Hc, Wc], coords [B, 3, Hc, Wc] -> z_s [B, C, Hc - 2m, Wc - 2m]
        if coords.shape[-2:] != z_l.shape[-2:]:
            raise ValueError(f"coords {tuple(coords.shape)} must cover z_l {tuple(z_l.shape)}")
        h = z_l
        for block in self.blocks:
            h = block(torch.cat([h, center_crop(coords, h.shape[-2:]).to(h.dtype)], dim=1), z_g)
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
        self, z_s: Tensor, w: Tensor, noises: list[Tensor] | None, levels: int | None = None
    ) -> Tensor:
        # z_s [B, C, N, N'], w [b, Dg] or W+ [b, slots, Dg],
        # noises: one [B, 1, H_l, W_l] per conv run (None: no noise) -> rgb [B, 3, H, W]
        levels = len(self.to_rgbs) if levels is None else levels
        if not 1 <= levels <= len(self.to_rgbs):
            raise ValueError(f"levels must be in 1..{len(self.to_rgbs)}, got {levels}")
        if noises is not None and len(noises) < 2 * levels:
            raise ValueError(f"need {2 * levels} noise maps, got {len(noises)}")
        styles = w.unsqueeze(1).expand(-1, self.slots, -1) if w.ndim == 2 else w  # [b, slots, Dg]
        h, rgb = z_s.contiguous(memory_format=torch.channels_last), None  # faster convs on CPU
        for stage in range(levels):
            for i in (2 * stage, 2 * stage + 1):
                h = self.convs[i](h, styles[:, i], None if noises is None else noises[i])
            rgb = self.to_rgbs[stage](h, styles[:, min(i + 2, self.slots - 1)], rgb)
        assert rgb is not None
        return rgb


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
        z_g: Tensor,
        w: Tensor,
        z_l: Tensor,
        coords: Tensor,
        noises: list[Tensor] | None,
        levels: int | None = None,
    ) -> Tensor:
        """Render from an already mapped style `w` ([b, Dg] or W+ [b, slots, Dg]).

        `levels` < stages stops after that texture stage and returns its RGB (the
        level-of-detail preview, 2**levels pixels per cell).
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
