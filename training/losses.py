"""The paper's loss terms (INFINITYGAN.md section 6), each a small function of tensors.

Every function computes in float32 whatever the autocast dtype of its inputs, and returns
an *unweighted* scalar; the loop applies the weights and lazy-regularisation intervals.

Legend: B batch, P patch pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DIVERSITY_EPS = 1e-5  # as the official code


def d_logistic(real_logit: Tensor, fake_logit: Tensor) -> Tensor:
    """Non-saturating logistic D loss: softplus(-D(real)) + softplus(D(fake)), batch means."""
    return F.softplus(-real_logit.float()).mean() + F.softplus(fake_logit.float()).mean()


def g_nonsaturating(fake_logit: Tensor) -> Tensor:
    """Non-saturating G loss softplus(-D(fake)), batch mean."""
    return F.softplus(-fake_logit.float()).mean()


def vertical_position_l1(coords_pred: Tensor, labels: Tensor) -> Tensor:
    """Auxiliary L_ar: mean |predicted vertical - label| (only channel 0 is trained).

    coords_pred [B, 3], labels [B].
    """
    return (coords_pred[:, 0].float() - labels.float()).abs().mean()


def diversity_loss(z_l: Tensor, z_s: Tensor, mode: str = "paper") -> Tensor:
    """Mode-seeking loss over pairs (0, 1), (2, 3), ... that share z_g and coordinates.

    z_l [B, C, S, S] local latents, z_s [B, C, N, N] structure features.

    - "paper" (our decision 2): ratio = mean pair distance of z_s / mean pair distance of
      z_l (mean absolute differences), loss = 1 / (ratio + eps); minimising it pushes
      paired structures apart, as the paper intends. Finite for any finite input.
    - "official": the official angular variant, A(a, b) = 1 - arccos(cos_sim) / pi, a
      *similarity*; loss = 1 / (A_zs / A_zl + eps), with cos_sim clamped inside (-1, 1)
      so arccos never returns NaN.
    """
    if z_l.shape[0] % 2 or z_s.shape[0] != z_l.shape[0]:
        raise ValueError(f"diversity loss needs an even batch of pairs, got {z_l.shape[0]}")
    a_l, b_l = _pairs(z_l)
    a_s, b_s = _pairs(z_s)
    if mode == "paper":
        d_l = (a_l - b_l).abs().mean(dim=1).mean()
        d_s = (a_s - b_s).abs().mean(dim=1).mean()
        ratio = d_s / d_l.clamp_min(DIVERSITY_EPS)
    elif mode == "official":
        ratio = _angular_similarity(a_s, b_s).mean() / _angular_similarity(a_l, b_l).mean()
    else:
        raise ValueError(f"unknown diversity mode {mode!r}")
    return 1.0 / (ratio + DIVERSITY_EPS)


def _pairs(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even and odd samples, flattened and in float32: ([B/2, n], [B/2, n])."""
    flat = x.float().flatten(1)
    return flat[0::2], flat[1::2]


def _angular_similarity(a: Tensor, b: Tensor) -> Tensor:
    cos = F.cosine_similarity(a, b, dim=1).clamp(-1 + 1e-6, 1 - 1e-6)
    return 1 - torch.arccos(cos) / math.pi


def r1_penalty(real_logit: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): batch mean of the summed squared gradient of D(real) w.r.t. real.

    `real` must require grad and `real_logit` must depend on it; keeps the graph for the
    backward pass (create_graph).
    """
    (grad,) = torch.autograd.grad(real_logit.float().sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def path_lengths(images: Tensor, wplus: Tensor, generator: torch.Generator) -> Tensor:
    """Per-sample path lengths [B] of images [B, 3, H, W] w.r.t. their W+ [B, slots, D].

    As the official code: noise ~ N(0, 1) / sqrt(H W), grad of sum(images * noise) w.r.t.
    W+, length = sqrt(mean over (slots, D) of grad^2) (rosinality sums over D instead).
    """
    h, w = images.shape[-2:]
    noise = torch.randn(images.shape, generator=generator, device=generator.device)
    noise = noise.to(images.device, torch.float32) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((images.float() * noise).sum(), wplus, create_graph=True)
    return grad.float().pow(2).mean(dim=(1, 2)).sqrt()


def path_length_penalty(lengths: Tensor, mean: Tensor) -> Tensor:
    """mean((length - running mean)^2); `mean` is the EMA of lengths (no gradient)."""
    return (lengths - mean.detach()).pow(2).mean()
