"""`infinity-canvas train`: train a model from a folder of images, or `--evaluate` a checkpoint.

The options and their handling live in `training.cli` (shared with `python -m training`);
this module only registers them as a sub-command. Imported only when `train` is run, so
other sub-commands do not pay for torch.
"""

from __future__ import annotations

from training.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
