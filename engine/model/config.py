"""Typed model configuration and the three presets (`paper`, `lite`, `tiny`).

A `ModelConfig` travels as JSON inside every checkpoint and rebuilds the model
exactly; nothing about the architecture lives anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an InfinityGAN generator and discriminator.

    The texture synthesizer has one *stage* per entry of `texture_channels`: an
    upsampling 3x3 conv followed by a plain 3x3 conv, both padding-free, so a
    stage maps H -> 2H - 5 and a lattice cell covers 2**stages output pixels.
    """

    preset: str = "custom"
    global_dim: int = 512  # z_g, also the style (w) size
    local_dim: int = 256  # z_l channels per lattice cell = structure channels
    coord_dim: int = 3  # (tanh vertical, cos horizontal, sin horizontal)
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    structure_blocks: int = 4
    structure_kernel: int = 7  # feature unfolding window (2 * radius + 1)
    texture_channels: tuple[int, ...] = (512, 512, 512, 512)  # output channels per stage
    patch_cells: int = 11  # texture-synthesizer input cells of a training patch
    full_cells: int = 17  # texture-synthesizer input cells of a full training image
    coord_vertical_step: float = 0.3  # raw vertical coordinate per lattice cell
    coord_horizontal_period: float = 139.0  # lattice cells per horizontal period
    disc_channels: tuple[int, ...] = (256, 512, 512, 512, 512, 512)  # from-RGB, then per block
    disc_linear: int = 512
    disc_stddev_group: int = 4

    def __post_init__(self) -> None:
        problems = []
        if self.structure_kernel % 2 != 1:
            problems.append(f"structure_kernel must be odd, got {self.structure_kernel}")
        if len(self.texture_channels) < 1:
            problems.append("texture_channels needs at least one stage")
        if self.patch_cells < 5:
            problems.append(f"patch_cells must be >= 5, got {self.patch_cells}")
        if self.full_cells < self.patch_cells:
            problems.append("full_cells must be >= patch_cells")
        if len(self.disc_channels) < 2:
            problems.append("disc_channels needs the from-RGB width and at least one block")
        if any(c <= 0 for c in (*self.texture_channels, *self.disc_channels)):
            problems.append("channel widths must be positive")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    # Derived geometry ---------------------------------------------------------------

    @property
    def stages(self) -> int:
        """Number of upsampling stages of the texture synthesizer."""
        return len(self.texture_channels)

    @property
    def cell_px(self) -> int:
        """Output pixels per lattice cell (the tile stride unit)."""
        return 2**self.stages

    @property
    def structure_margin(self) -> int:
        """Lattice cells the structure synthesizer trims from each side."""
        return self.structure_blocks * (self.structure_kernel // 2)

    @property
    def texture_layers(self) -> int:
        return 2 * self.stages

    @property
    def style_slots(self) -> int:
        """Number of W+ slots: one per texture conv plus one for the last ToRGB."""
        return self.texture_layers + 1

    @property
    def patch_size(self) -> int:
        """Output pixels of a training patch."""
        return self.cell_px * self.patch_cells - 5 * (self.cell_px - 1)

    @property
    def full_size(self) -> int:
        """Output pixels of a full training image."""
        return self.cell_px * self.full_cells - 5 * (self.cell_px - 1)

    # Serialisation ------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"version": CONFIG_VERSION, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Rebuild a config; unknown keys or wrong types raise ValueError with the field name."""
        try:
            raw: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model config is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise ValueError("model config must be a JSON object")
        version = raw.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"model config version {version} is not supported")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"model config has unknown fields: {', '.join(unknown)}")
        defaults = cls()
        kwargs: dict[str, Any] = {
            name: _coerce(name, value, getattr(defaults, name)) for name, value in raw.items()
        }
        return cls(**kwargs)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`value` read from JSON, checked against the type of the field's default."""
    if isinstance(default, tuple):
        if isinstance(value, list) and all(type(v) is int for v in value):
            return tuple(value)
    elif isinstance(default, float):
        if type(value) in (int, float):
            return float(value)
    elif type(value) is type(default):
        return value
    raise ValueError(f"model config field {name!r} has the wrong type: {value!r}")


PRESETS: dict[str, ModelConfig] = {
    # The official 101-px InfinityGAN (configs/model/InfinityGAN.yaml): 36.36M G parameters.
    "paper": ModelConfig(preset="paper"),
    # Official 197-px patch / 389-px image geometry (5 stages, 32 px per cell), narrow
    # channels so a render costs <= 150 kFLOP per output pixel; the CPU preset.
    "lite": ModelConfig(
        preset="lite",
        global_dim=256,
        local_dim=32,
        texture_channels=(96, 96, 64, 48, 32),
        disc_channels=(32, 64, 128, 256, 256, 256, 256),
        disc_linear=256,
    ),
    # Same topology, three stages, a few channels: trains in seconds in tests.
    "tiny": ModelConfig(
        preset="tiny",
        global_dim=32,
        local_dim=16,
        mapping_layers=2,
        texture_channels=(32, 24, 16),
        disc_channels=(16, 32, 32, 32, 32),
        disc_linear=32,
    ),
}


def preset_config(name: str) -> ModelConfig:
    """The config of a named preset; ValueError lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
