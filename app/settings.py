"""Persistent preferences (QSettings): recent files, device, cache size, brush, window layout."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from app.about import APP_NAME, ORGANIZATION

MAX_RECENT = 10
DEFAULT_CACHE_MB = 512
BRUSH_KEYS = ("radius", "softness", "opacity")


class Settings:
    """Typed access to QSettings. Tests pass a QSettings on a temporary ini file."""

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store if store is not None else QSettings(ORGANIZATION, APP_NAME)

    # Recent files -----------------------------------------------------------------------

    def recent(self, kind: str) -> list[Path]:
        """Recent `projects` or `checkpoints`, newest first."""
        value = self.store.value(f"recent/{kind}", [])
        if isinstance(value, str):  # QSettings returns a lone string for one-element lists
            value = [value]
        return [Path(v) for v in value or [] if v]

    def add_recent(self, kind: str, path: Path) -> None:
        path = Path(path).absolute()
        items = [p for p in self.recent(kind) if p != path]
        self.store.setValue(f"recent/{kind}", [str(p) for p in [path, *items][:MAX_RECENT]])

    def clear_recent(self, kind: str) -> None:
        self.store.remove(f"recent/{kind}")

    # Preferences ------------------------------------------------------------------------

    @property
    def device(self) -> str:
        return str(self.store.value("world/device", "auto"))

    @device.setter
    def device(self, name: str) -> None:
        self.store.setValue("world/device", name)

    @property
    def cache_mb(self) -> int:
        try:
            return max(16, int(self.store.value("world/cache_mb", DEFAULT_CACHE_MB)))
        except (TypeError, ValueError):
            return DEFAULT_CACHE_MB

    @cache_mb.setter
    def cache_mb(self, mb: int) -> None:
        self.store.setValue("world/cache_mb", int(mb))

    @property
    def brush(self) -> tuple[int, int, int]:
        """Brush radius (world px), softness and opacity (percent) as last used."""
        defaults = (64, 50, 100)
        try:
            values = [
                int(self.store.value(f"brush/{k}", d))
                for k, d in zip(BRUSH_KEYS, defaults, strict=True)
            ]
        except (TypeError, ValueError):
            return defaults
        return values[0], values[1], values[2]

    @brush.setter
    def brush(self, values: tuple[int, int, int]) -> None:
        for key, value in zip(BRUSH_KEYS, values, strict=True):
            self.store.setValue(f"brush/{key}", int(value))

    def last_folder(self, kind: str) -> str:
        return str(self.store.value(f"folders/{kind}", ""))

    def set_last_folder(self, kind: str, folder: Path) -> None:
        self.store.setValue(f"folders/{kind}", str(folder))

    # Window layout ----------------------------------------------------------------------

    def window_layout(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry = self.store.value("window/geometry")
        state = self.store.value("window/state")
        return (
            geometry if isinstance(geometry, QByteArray) else None,
            state if isinstance(state, QByteArray) else None,
        )

    def set_window_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        self.store.setValue("window/geometry", geometry)
        self.store.setValue("window/state", state)

    # Sessions (crash recovery) ----------------------------------------------------------

    @property
    def last_clean_exit(self) -> float:
        try:
            return float(self.store.value("session/clean_exit", 0.0))
        except (TypeError, ValueError):
            return 0.0

    def mark_clean_exit(self) -> None:
        self.store.setValue("session/clean_exit", time.time())

    def sync(self) -> None:
        self.store.sync()
