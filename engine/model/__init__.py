"""InfinityGAN in pure PyTorch: config, layers, generator, discriminator, geometry."""

from engine.model.config import PRESETS, ModelConfig, preset_config
from engine.model.coords import coordinate_grid
from engine.model.discriminator import Discriminator
from engine.model.generator import Generator

__all__ = [
    "PRESETS",
    "Discriminator",
    "Generator",
    "ModelConfig",
    "coordinate_grid",
    "preset_config",
]
