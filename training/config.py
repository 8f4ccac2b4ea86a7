"""`TrainConfig`: everything a training run needs, frozen, saved as `config.json` in the run.

Optimiser and regularisation defaults are the paper's (INFINITYGAN.md section 6): Adam with
StyleGAN2's lazy-regularisation correction of learning rate and beta2, R1 gamma 10 every
16 D steps, path length weight 2 every 4 G steps on half the batch, diversity and
vertical-position losses with weight 1, style mixing 0.9.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from engine.model import ModelConfig, preset_config

TRAIN_CONFIG_VERSION = 1
SMALL_DATASET = 1000  # below this many images, augmentation is on by default
DIVERSITY_MODES = ("paper", "official")

# Fields that may change when a run is resumed: they do not change what is learned.
RESUMABLE_OVERRIDES = frozenset(
    {
        "steps",
        "device",
        "data_dir",
        "mixed_precision",
        "compile",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "metric_every",
        "metric_images",
        "metric_scales",
        "sample_count",
        "keep_checkpoints",
        "snapshot_every",
    }
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `model` rebuilds G and D; the rest drives the loop.

    EMA: the paper's per-step decay 0.5 ** (32 / 10000) (`ema_half_life_steps` = 312.5)
    whatever the batch. This is StyleGAN2-ADA's rule "half-life = batch x 10/32 kimg",
    i.e. the half-life *in images* scales with batch / 32 while the half-life in steps
    stays fixed, so the small batches of `tiny`/`lite` average over as many steps as the
    paper. `ema_rampup` (ADA) additionally caps the half-life at `ema_rampup x steps done`,
    so that short runs on small data have a useful EMA early; it is on for `tiny` and
    `lite` (see `default_train_config`), off for `paper` (the official code has none).
    """

    model: ModelConfig = field(default_factory=lambda: preset_config("lite"))
    data_dir: str = ""
    steps: int = 100_000  # total iterations (D step + G step), counted across resumes
    batch: int = 16  # per process; even, as the diversity loss works on pairs
    seed: int = 0
    init_from: str = ""  # checkpoint whose G_ema (and D, if stored) start the run; "" = random
    device: str = "auto"
    mixed_precision: bool | None = None  # None: bf16 autocast + channels_last on CUDA only
    # torch.compile the forward passes of the plain D and G steps; None: on CUDA only
    compile: bool | None = None

    lr: float = 0.002  # before the lazy-regularisation correction
    adam_beta2: float = 0.99  # before the lazy-regularisation correction
    r1_gamma: float = 10.0
    r1_every: int = 16
    path_weight: float = 2.0
    path_every: int = 4
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    coord_weight: float = 1.0
    diversity_weight: float = 1.0
    diversity: str = "paper"  # "paper" (our decision 2) or "official" (angular, clamped)
    style_mixing: float = 0.9
    ema_half_life_steps: float = 10_000 / 32
    ema_rampup: float | None = None

    diff_augment: bool | None = None  # None: on below SMALL_DATASET images
    scale_crops: bool | None = None  # None: on below SMALL_DATASET images

    log_every: int = 10
    sample_every: int = 1000
    checkpoint_every: int = 5000
    metric_every: int = 5000  # 0: never during training
    metric_images: int = 64
    metric_scales: tuple[int, ...] = (1, 4)
    sample_count: int = 8
    keep_checkpoints: int = 5  # step checkpoints kept (latest.safetensors always); 0 = all
    snapshot_every: int = 100  # in-memory rollback point for the NaN guard

    def __post_init__(self) -> None:
        problems = []
        if self.batch < 2 or self.batch % 2:
            problems.append(
                f"batch must be even and >= 2 (pairs for the diversity loss), got {self.batch}"
            )
        if self.steps < 0:
            problems.append(f"steps must be >= 0, got {self.steps}")
        for name in ("r1_every", "path_every", "path_batch_shrink", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("sample_every", "checkpoint_every", "metric_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.snapshot_every < 1:
            problems.append("snapshot_every must be >= 1")
        if self.diversity not in DIVERSITY_MODES:
            problems.append(f"diversity must be one of {DIVERSITY_MODES}, got {self.diversity!r}")
        if not 0.0 <= self.style_mixing <= 1.0:
            problems.append("style_mixing must be a probability")
        if self.metric_images < 2 or self.sample_count < 1:
            problems.append("metric_images must be >= 2 and sample_count >= 1")
        if any(s < 1 for s in self.metric_scales):
            problems.append("metric_scales must be positive integers")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    # Derived optimiser settings ------------------------------------------------------

    def lazy_ratio(self, every: int) -> float:
        """StyleGAN2's correction for a regulariser applied every `every` steps."""
        return every / (every + 1)

    @property
    def g_lr(self) -> float:
        return self.lr * self.lazy_ratio(self.path_every)  # 0.0016 for the paper

    @property
    def d_lr(self) -> float:
        return self.lr * self.lazy_ratio(self.r1_every)  # 0.00188 for the paper

    @property
    def g_betas(self) -> tuple[float, float]:
        return (0.0, self.adam_beta2 ** self.lazy_ratio(self.path_every))

    @property
    def d_betas(self) -> tuple[float, float]:
        return (0.0, self.adam_beta2 ** self.lazy_ratio(self.r1_every))

    def ema_decay(self, steps_done: int) -> float:
        """G_ema decay for the update after `steps_done` completed steps (1-based)."""
        half_life = self.ema_half_life_steps
        if self.ema_rampup is not None:
            half_life = min(half_life, self.ema_rampup * steps_done)
        return 0.5 ** (1.0 / max(half_life, 1e-8))

    def uses_diff_augment(self, image_count: int) -> bool:
        return image_count < SMALL_DATASET if self.diff_augment is None else self.diff_augment

    def uses_scale_crops(self, image_count: int) -> bool:
        return image_count < SMALL_DATASET if self.scale_crops is None else self.scale_crops

    # Serialisation ------------------------------------------------------------------

    def to_json(self) -> str:
        train = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"
        }
        train["metric_scales"] = list(self.metric_scales)
        document = {
            "version": TRAIN_CONFIG_VERSION,
            "train": train,
            "model": json.loads(self.model.to_json()),
        }
        return json.dumps(document, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Rebuild from `to_json` output; ValueError names what is wrong."""
        try:
            raw = json.loads(text)
            version = raw.get("version")
            train: dict[str, Any] = dict(raw["train"])
            model = ModelConfig.from_json(json.dumps(raw["model"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"training config is unreadable ({exc})") from exc
        if version != TRAIN_CONFIG_VERSION:
            raise ValueError(f"training config version {version} is not supported")
        known = {f.name for f in dataclasses.fields(cls)} - {"model"}
        unknown = sorted(set(train) - known)
        if unknown:
            raise ValueError(f"training config has unknown fields: {', '.join(unknown)}")
        if "metric_scales" in train:
            train["metric_scales"] = tuple(train["metric_scales"])
        return cls(model=model, **train)

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ from `other`, except those a resume may change."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in RESUMABLE_OVERRIDES and getattr(self, f.name) != getattr(other, f.name)
        ]


def default_train_config(preset: str, **overrides: Any) -> TrainConfig:
    """The defaults for a model preset: paper-exact for `paper`, EMA ramp-up for the others."""
    model = preset_config(preset)
    defaults: dict[str, Any] = {"model": model}
    if preset != "paper":
        defaults["ema_rampup"] = 0.05
    defaults.update(overrides)
    return TrainConfig(**defaults)
