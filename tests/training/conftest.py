"""Shared fixtures of the training tests: a toy landscape dataset and a fast `tiny` config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.config import TrainConfig, default_train_config


def write_landscapes(
    root: Path, count: int = 12, size: tuple[int, int] = (96, 80), seed: int = 0
) -> Path:
    """`count` synthetic landscapes: gradient sky, noisy ground, a random horizon line."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        horizon = int(h * rng.uniform(0.35, 0.65))
        y = np.arange(h)[:, None, None]
        sky = np.array([90.0, 140.0, 230.0]) * (0.6 + 0.4 * y / h) + np.zeros((h, w, 3))
        ground = np.array([70.0, 120.0, 50.0]) * rng.uniform(0.7, 1.3) + rng.normal(
            0, 20, (h, w, 3)
        )
        image = np.where(y < horizon, sky, ground)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"land_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def landscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_landscapes(tmp_path_factory.mktemp("landscapes"))


def tiny_config(data_dir: Path, **overrides) -> TrainConfig:
    """`tiny` model, batch 2, every regulariser due every other step, nothing written unasked."""
    settings = dict(
        data_dir=str(data_dir),
        steps=4,
        batch=2,
        log_every=1,
        sample_every=0,
        checkpoint_every=0,
        metric_every=0,
        metric_images=4,
        sample_count=2,
        r1_every=2,
        path_every=2,
        snapshot_every=1,
    )
    settings.update(overrides)
    return default_train_config("tiny", **settings)
