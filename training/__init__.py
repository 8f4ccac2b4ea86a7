"""Training of InfinityGAN models from a folder of images.

May import `engine.model` and `engine.checkpoint`; never imports Qt or `app`.

    from training import TrainConfig, default_train_config, train
    cfg = default_train_config("tiny", data_dir="photos", steps=1000, batch=8)
    latest = train(cfg, Path("runs/tiny"), on_progress=print)

Modules: `config` (TrainConfig), `data` (image folder -> patches), `sampling` (latents and
coordinates of fakes), `augment` (DiffAugment), `losses`, `loop` (`train`), `metrics`
(ScaleInv-SWD), `runfiles` (the run folder), `cli` (`infinity-canvas train`).
"""

from training.config import TrainConfig, default_train_config
from training.loop import Progress, train

__all__ = ["Progress", "TrainConfig", "default_train_config", "train"]
