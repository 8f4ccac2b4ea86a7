"""Latents and coordinates of fakes: the official vertical sampling, pairs, labels, mixing."""

from __future__ import annotations

import math

import pytest
import torch

from engine.checkpoint import random_generator
from engine.model import preset_config
from training.sampling import (
    sample_fakes,
    training_rows,
    vertical_band_cells,
    vertical_offsets,
    wplus_styles,
)


def test_paper_vertical_sampling_reproduces_the_official_grid():
    config = preset_config("paper")
    assert vertical_band_cells(config) == 20
    assert vertical_offsets(config) == 10
    rows = training_rows(torch.arange(10, dtype=torch.float64), config)  # offsets 0..9
    assert rows.shape == (10, 35)
    raw = rows * config.coord_vertical_step
    m, ts = config.structure_margin, config.patch_cells
    texture = raw[:, m : m + ts]
    assert texture.min().item() == pytest.approx(-3.0)
    assert texture.max().item() == pytest.approx(2.7)
    assert raw.min().item() == pytest.approx(-6.6)  # official 45-row grid, rows 0..43
    assert raw.max().item() == pytest.approx(6.3)
    torch.testing.assert_close(raw[:, 1] - raw[:, 0], torch.full((10,), 0.3, dtype=torch.float64))


@pytest.mark.parametrize("preset", ["tiny", "lite", "paper"])
def test_every_preset_samples_ten_offsets_of_its_patch(preset):
    config = preset_config(preset)
    assert vertical_offsets(config) == vertical_band_cells(config) - config.patch_cells + 1 == 10


def test_pairs_share_global_latent_and_coordinates_but_not_local_latents():
    config = preset_config("tiny")
    fakes = sample_fakes(config, 6, torch.Generator().manual_seed(0), mixing=0.9)
    s = config.patch_cells + 2 * config.structure_margin
    assert fakes.z_l.shape == (6, config.local_dim, s, s)
    assert fakes.coords.shape == (6, 3, s, s)
    for a in range(0, 6, 2):
        for t in (fakes.z_g, fakes.z_mix, fakes.crossover, fakes.coords, fakes.labels):
            assert torch.equal(t[a], t[a + 1])
        assert not torch.equal(fakes.z_l[a], fakes.z_l[a + 1])
        assert not torch.equal(fakes.noises[-1][a], fakes.noises[-1][a + 1])
    assert not torch.equal(fakes.coords[0], fakes.coords[2])


def test_fake_label_is_the_jittered_position_of_the_coordinates_used():
    config = preset_config("tiny")
    fakes = sample_fakes(config, 64, torch.Generator().manual_seed(1), mixing=0.9, paired=False)
    m = config.structure_margin
    first_texture_row = fakes.coords[:, 0, m, 0].double().atanh() / config.coord_vertical_step
    offset = first_texture_row + vertical_band_cells(config) / 2
    torch.testing.assert_close(
        fakes.labels.double(), offset / (vertical_offsets(config) - 1) * 2 - 1, atol=1e-4, rtol=0
    )
    assert offset.min() >= -0.5 and offset.max() <= vertical_offsets(config) - 0.5
    assert not torch.allclose(offset, offset.round())  # jittered by up to half a step


def test_cos_and_sin_arguments_are_jittered_independently_by_at_most_half_a_cell():
    config = preset_config("tiny")
    fakes = sample_fakes(config, 32, torch.Generator().manual_seed(2), mixing=0.0, paired=False)
    cos, sin = fakes.coords[:, 1, 0, 0].double(), fakes.coords[:, 2, 0, 0].double()
    radius = torch.sqrt(cos**2 + sin**2)
    assert (radius - 1).abs().max() > 1e-4  # not one common angle
    cell = 2 * math.pi / config.coord_horizontal_period
    assert (radius - 1).abs().max() < cell  # but the two angles differ by less than a cell


def test_style_mixing_switches_to_the_second_style_at_the_crossover_slot():
    config = preset_config("tiny")
    generator = random_generator(config)
    fakes = sample_fakes(config, 8, torch.Generator().manual_seed(3), mixing=1.0, paired=False)
    with torch.no_grad():
        wplus = wplus_styles(generator, fakes)
        w1, w2 = generator.mapping(fakes.z_g), generator.mapping(fakes.z_mix)
    assert wplus.shape == (8, config.style_slots, config.global_dim)
    assert ((fakes.crossover >= 1) & (fakes.crossover < config.style_slots)).all()
    for i, cross in enumerate(fakes.crossover.tolist()):
        torch.testing.assert_close(wplus[i, :cross], w1[i].expand(cross, -1))
        torch.testing.assert_close(wplus[i, cross:], w2[i].expand(config.style_slots - cross, -1))
    no_mix = sample_fakes(config, 4, torch.Generator().manual_seed(3), mixing=0.0, paired=False)
    assert (no_mix.crossover == config.style_slots).all()
