"""TrainConfig: the paper's optimiser settings, EMA schedule, JSON round trip, validation."""

from __future__ import annotations

import dataclasses

import pytest

from training.config import TrainConfig, default_train_config


def test_paper_defaults_are_the_official_optimiser_settings():
    cfg = default_train_config("paper")
    assert cfg.batch == 16 and cfg.r1_gamma == 10 and cfg.r1_every == 16 and cfg.path_every == 4
    assert cfg.g_lr == pytest.approx(0.0016)
    assert cfg.d_lr == pytest.approx(0.002 * 16 / 17)
    assert cfg.g_betas == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert cfg.d_betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert cfg.ema_rampup is None
    for step in (1, 10, 100_000):
        assert cfg.ema_decay(step) == pytest.approx(0.5 ** (32 / 10_000))


def test_small_presets_ramp_the_ema_up_to_the_paper_half_life():
    cfg = default_train_config("tiny")
    assert cfg.ema_decay(1) < 1e-3  # early on G_ema follows G closely
    assert cfg.ema_decay(20) == pytest.approx(0.5)  # half-life 0.05 x 20 steps = 1 step
    assert cfg.ema_decay(10**6) == pytest.approx(0.5 ** (32 / 10_000))


def test_augmentation_defaults_depend_on_the_dataset_size():
    cfg = default_train_config("tiny")
    assert cfg.uses_diff_augment(999) and cfg.uses_scale_crops(999)
    assert not cfg.uses_diff_augment(1000) and not cfg.uses_scale_crops(1000)
    off = dataclasses.replace(cfg, diff_augment=False)
    assert not off.uses_diff_augment(10)


def test_config_survives_a_json_round_trip_and_lists_resume_conflicts():
    cfg = default_train_config("tiny", data_dir="/data", steps=10, metric_scales=(1, 4, 16))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    other = dataclasses.replace(cfg, steps=20, device="cpu", batch=4, seed=3)
    assert other.differences(cfg) == ["batch", "seed"]


@pytest.mark.parametrize(
    "change", [{"batch": 3}, {"batch": 0}, {"diversity": "angular"}, {"r1_every": 0}]
)
def test_invalid_settings_are_refused_with_the_field_name(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        default_train_config("tiny", **change)
