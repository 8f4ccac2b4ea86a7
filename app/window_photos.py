"""The main window's photo commands: File > Place Photo..., drops on the canvas, and the
Photos dock (app.photo_placement), mixed into `MainWindow` (app.main_window).

It uses the window's session, canvas, undo stack, settings, status bar and `_error`.
Inverted placements go through the undo stack like every other edit; re-rolls and the
photo/reconstruction switch replace the edit in place (`ReplaceEditCommand`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog

from app.dialogs import choose_file
from app.history import EditCommand, ReplaceEditCommand
from app.photo_placement import PHOTO_FILTER, PhotoPanel, PhotoPlacer, is_photo_file
from engine.checkpoint import read_checkpoint
from engine.model import Discriminator

log = logging.getLogger(__name__)


class PhotoCommands:
    """Place Photo, drag-and-drop of photos, and the Photos dock (a mixin)."""

    def _build_photo_tools(self) -> None:
        """Create the placer, its dock and the Place Photo action (before menus are built)."""
        world = lambda: self.session.world  # noqa: E731 -- the session may swap worlds
        self._discriminators: dict[str, Discriminator | None] = {}
        self._discriminator_lock = threading.Lock()
        self.placer = PhotoPlacer(
            world,
            push_edit=lambda edit: self.undo_stack.push(EditCommand(world, edit)),
            replace_edit=lambda old, new, text: self.undo_stack.push(
                ReplaceEditCommand(world, old, new, text)
            ),
            undo=self.undo_stack.undo,
            discriminator=self._discriminator,
            parent=self,
        )
        self.photo_panel = PhotoPanel(self.placer, world)
        self.place_photo_action = QAction("Place &Photo…", self)
        self.place_photo_action.setShortcut(QKeySequence("Ctrl+Shift+P"))
        self.place_photo_action.setStatusTip(
            "Put a photo on the canvas and let the model continue it (Ctrl+Shift+P)"
        )
        self.place_photo_action.triggered.connect(self.place_photo_dialog)

    def _connect_photo_tools(self) -> None:
        placer = self.placer
        self.canvas.interaction = placer
        self.canvas.filesDropped.connect(self._files_dropped)
        placer.changed.connect(self.canvas.update)
        placer.failed.connect(lambda title, text: self._error(title, text, text))
        placer.message.connect(lambda text: self.statusBar().showMessage(text, 10_000))
        self.photo_panel.placeRequested.connect(self.place_photo_dialog)
        self.photo_panel.styleWanted.connect(self._add_photo_style)
        self.session.edited.connect(lambda _rect: self.photo_panel.refresh())

    def _photo_dock(self) -> QDockWidget:
        return self._dock("Photos", "photos", self.photo_panel, scrolls=True)

    def _add_photo_style(self, name: str, style) -> None:
        self.style_panel.add_style(name, style)
        self.styles_dock.show()
        self.styles_dock.raise_()
        self.statusBar().showMessage(f"Added {name} to the Styles dock: paint with it (B)", 8000)

    @Slot()
    def place_photo_dialog(self) -> QFileDialog:
        folder = self.settings.last_folder("photos") or str(Path.home())
        dialog = choose_file(self, "Place Photo", folder, PHOTO_FILTER, self.place_photo)
        self._dialog = dialog
        dialog.open()
        return dialog

    def place_photo(self, path: Path, centre: tuple[float, float] | None = None) -> None:
        """Load `path` in the background and float it over the canvas at `centre` (world
        px; default the middle of the view)."""
        self.settings.set_last_folder("photos", Path(path).parent)
        if centre is None:
            vp = self.canvas.viewport
            centre = (vp.center_x, vp.center_y)
        self.photo_dock.show()
        self.photo_dock.raise_()
        self.placer.load(Path(path), centre)

    def _files_dropped(self, paths: list[Path], x: float, y: float) -> None:
        photos = [p for p in paths if is_photo_file(p)]
        chosen = photos[0] if photos else paths[0]  # a non-photo gets the decoder's message
        if len(paths) > 1:
            self.statusBar().showMessage(f"Placing {chosen.name} (one photo at a time)", 8000)
        self.place_photo(chosen, (x, y))

    def _discriminator(self) -> Discriminator | None:
        """The model's discriminator for the perceptual loss, when its checkpoint has one
        (read on the inversion's thread, once per checkpoint)."""
        ref = self.session.model.ref
        if ref.kind != "file" or ref.path is None:
            return None
        key = str(ref.path)
        with self._discriminator_lock:
            if key not in self._discriminators:
                try:
                    device = self.session.world.device
                    found = read_checkpoint(ref.path, device=device, with_discriminator=True)
                    self._discriminators[key] = found.discriminator
                except Exception:  # the loss works without it
                    log.warning("could not read the discriminator of %s", key, exc_info=True)
                    self._discriminators[key] = None
            return self._discriminators[key]
