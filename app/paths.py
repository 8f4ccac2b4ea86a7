"""Where the application keeps user files (platformdirs), never next to the code. Qt-free.

- checkpoints: `user_data_path/checkpoints` (listed in the model picker; conversions go here)
- autosave: `user_state_path/autosave` (crash recovery)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from app.about import APP_NAME


@dataclass(frozen=True, slots=True)
class AppPaths:
    data_dir: Path
    state_dir: Path

    @classmethod
    def for_user(cls) -> AppPaths:
        return cls(
            platformdirs.user_data_path(APP_NAME, appauthor=False),
            platformdirs.user_state_path(APP_NAME, appauthor=False),
        )

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def autosave_dir(self) -> Path:
        return self.state_dir / "autosave"

    def user_checkpoints(self) -> list[Path]:
        """The `*.safetensors` files in the checkpoints folder, by name."""
        folder = self.checkpoints_dir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file())
