"""StyleGAN2 residual discriminator with InfinityGAN's auxiliary vertical-position head.

As in the paper's section 3.3 (auxiliary loss L_ar) and the authors' code: a from-RGB
1x1 conv, residual blocks that halve the resolution (blur [1, 3, 3, 1], stride-2 conv),
minibatch standard deviation, a padded 3x3 conv, then two heads on the flattened
features: the adversarial logit and the predicted coordinates (only the vertical one is
trained).

Legend: B batch, C channels, H/W pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from engine.model.config import ModelConfig
from engine.model.layers import Blur, EqualConv2d, EqualLinear, bias_lrelu


def blocks_for_patch(patch_size: int) -> int:
    """Residual blocks the official code uses for a patch: round(log2(size)) - 2."""
    return int(round(math.log2(patch_size))) - 2


def downsampled_size(size: int) -> int:
    """Side after one residual block: pad 2 + 4x4 blur (+1) then a valid stride-2 3x3 conv."""
    return (size + 1 - 3) // 2 + 1


class ConvAct(nn.Module):
    """Equalised conv + bias + leaky ReLU ('same' padding for odd kernels)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_ch, out_ch, kernel, padding=kernel // 2)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return bias_lrelu(self.conv(x), self.bias)


class ResBlock(nn.Module):
    """conv3x3 -> blur + stride-2 conv3x3, plus a blurred stride-2 1x1 skip; sum / sqrt 2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = ConvAct(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, stride=2)
        self.bias2 = nn.Parameter(torch.zeros(out_ch))
        self.skip = EqualConv2d(in_ch, out_ch, 1, stride=2)
        self.blur_conv = Blur([1, 3, 3, 1], padding=2)
        self.blur_skip = Blur([1, 3, 3, 1], padding=1)

    def forward(self, x: Tensor) -> Tensor:  # [B, Cin, H, W] -> [B, Cout, H', W']
        out = self.conv1(x)
        out = bias_lrelu(self.conv2(self.blur_conv(out)), self.bias2)
        skip = self.skip(self.blur_skip(x))
        return (out + skip) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Patch discriminator; forward returns (adversarial logit [B, 1], coordinates [B, 3])."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.disc_channels
        size = config.patch_size
        n_blocks = len(ch) - 1
        if n_blocks != blocks_for_patch(size):
            raise ValueError(
                f"disc_channels has {n_blocks} blocks but a {size}-px patch needs "
                f"{blocks_for_patch(size)}"
            )
        self.from_rgb = ConvAct(3, ch[0], 1)
        self.blocks = nn.ModuleList(ResBlock(a, b) for a, b in zip(ch[:-1], ch[1:], strict=True))
        for _ in range(n_blocks):
            size = downsampled_size(size)
        self.stddev_group = config.disc_stddev_group
        self.final_conv = ConvAct(ch[-1] + 1, config.disc_linear, 3)
        flat = config.disc_linear * size * size
        self.adversarial = nn.Sequential(
            EqualLinear(flat, config.disc_linear, activate=True), EqualLinear(config.disc_linear, 1)
        )
        self.coordinates = nn.Sequential(
            EqualLinear(flat, config.disc_linear, activate=True),
            EqualLinear(config.disc_linear, config.coord_dim),
        )

    def forward(self, image: Tensor, batches: int = 1) -> tuple[Tensor, Tensor]:
        """image [B, 3, P, P] -> logit [B, 1], coords [B, 3].

        `batches` > 1: the image holds that many equal batches one after the other (real
        and fake patches, say), judged in one pass; the minibatch-stddev statistics stay
        within each, so each batch's result is the one it would get alone.
        """
        h = self.from_rgb(image)
        for block in self.blocks:
            h = block(h)
        stddev = [minibatch_stddev(part, self.stddev_group) for part in h.chunk(batches)]
        h = torch.cat([h, *stddev] if batches == 1 else [h, torch.cat(stddev)], dim=1)
        flat = self.final_conv(h).flatten(1)
        return self.adversarial(flat), self.coordinates(flat)


def minibatch_stddev(h: Tensor, max_group: int) -> Tensor:
    """One feature map: the mean over channels and pixels of the std within each sample group.

    Groups take every (B / G)-th sample, G the largest divisor of B not above `max_group`
    (the official code's choice of G degenerates to the whole batch for B = 16).
    """
    b, c, hh, ww = h.shape
    group = max(g for g in range(1, min(max_group, b) + 1) if b % g == 0)
    stats = h.view(group, -1, c, hh, ww).float()
    std = torch.sqrt(stats.var(dim=0, unbiased=False) + 1e-8)  # [B/G, C, H, W]
    feature = std.mean(dim=[1, 2, 3]).to(h.dtype)  # [B/G]
    return feature.view(1, -1, 1, 1, 1).expand(group, -1, 1, hh, ww).reshape(b, 1, hh, ww)
