"""Loss terms: values, NaN safety, and the direction the diversity loss pushes."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    d_logistic,
    diversity_loss,
    g_nonsaturating,
    path_length_penalty,
    path_lengths,
    r1_penalty,
    vertical_position_l1,
)


def test_adversarial_losses_at_zero_logits():
    zero = torch.zeros(4, 1)
    assert d_logistic(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating(zero).item() == pytest.approx(math.log(2))


def test_vertical_loss_uses_only_the_vertical_channel():
    pred = torch.tensor([[0.5, 9.0, -9.0], [-0.5, 9.0, 9.0]])
    assert vertical_position_l1(pred, torch.tensor([0.0, 0.0])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_diversity_loss_is_finite_even_for_identical_pairs(mode):
    z_l = torch.randn(4, 3, 9, 9)
    z_s = torch.randn(2, 3, 5, 5).repeat_interleave(2, dim=0)  # pairs collapsed
    loss = diversity_loss(z_l, z_s.requires_grad_(), mode)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()


def test_paper_diversity_loss_pushes_paired_structures_apart():
    torch.manual_seed(0)
    z_l = torch.randn(4, 3, 9, 9)
    z_s = (torch.randn(4, 3, 5, 5) * 0.1).requires_grad_()
    before = (z_s[0::2] - z_s[1::2]).abs().mean().item()
    optimizer = torch.optim.SGD([z_s], lr=1e-3)
    for _ in range(5):
        optimizer.zero_grad()
        diversity_loss(z_l, z_s, "paper").backward()
        optimizer.step()
    assert (z_s[0::2] - z_s[1::2]).abs().mean().item() > before


def test_diversity_loss_refuses_an_odd_batch():
    with pytest.raises(ValueError, match="pairs"):
        diversity_loss(torch.randn(3, 2, 4, 4), torch.randn(3, 2, 2, 2))


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    weight = torch.randn(3 * 4 * 4)
    real = torch.randn(5, 3, 4, 4, requires_grad=True)
    logit = real.flatten(1) @ weight
    assert r1_penalty(logit, real).item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-5)


def test_path_length_is_per_sample_and_penalty_vanishes_at_the_mean():
    wplus = torch.randn(3, 5, 8, requires_grad=True)
    images = (wplus.sum(dim=(1, 2))[:, None, None, None] * torch.ones(3, 3, 6, 6)).contiguous()
    lengths = path_lengths(images, wplus, torch.Generator().manual_seed(0))
    assert lengths.shape == (3,) and (lengths > 0).all()
    assert path_length_penalty(lengths, lengths.mean()).item() == pytest.approx(
        lengths.var(unbiased=False).item(), rel=1e-5
    )
