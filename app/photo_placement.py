"""Placing photos on the canvas: load, position and scale, invert in the background, then
accept, re-roll the surroundings or undo; and fill the gap between two placed photos.

The flow, driven by the Photos dock (`PhotoPanel`) and the canvas:

1. *Loading* (File > Place Photo... or a file dropped on the canvas): the file is decoded and
   validated on a worker thread (engine.photo); a bad file opens a dialog, nothing changes.
2. *Positioning*: the photo floats over the canvas, half transparent. Drag it with the
   left button, scale it with Ctrl+wheel or the dock's width box, Enter starts the
   inversion, Escape discards it.
3. *Inverting*: engine.inversion runs on a Python thread; its progress (step, loss,
   PSNR) reaches the dock through a queued signal, Cancel stops it within one step. The
   canvas keeps rendering and every other control stays usable.
4. *Result*: the placement is one undoable edit; the dock offers Accept, Re-roll
   Surroundings (a new continuation; replaces the edit in place, undoable) and Undo.

Placed photos are listed in the dock: pick one to show its original pixels (feathered) or
the model's reconstruction, or two to fill the gap between them.

Threads: `PhotoPlacer.shutdown` cancels an inversion and joins its thread.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QPointF, QRect, Qt, Signal, Slot
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.viewport import Viewport, snap
from engine.inversion import MAX_PLACEMENT_SIDE, InversionProgress, InversionSettings, invert_photo
from engine.model import Discriminator
from engine.photo import PHOTO_SUFFIXES, Photo, load_photo
from engine.placement import FillBetween, PhotoPlacement
from engine.tiles import Rect
from engine.world import World

log = logging.getLogger(__name__)

PHOTO_FILTER = "Photos (*.png *.jpg *.jpeg *.webp *.tif *.tiff);;All files (*)"
DEFAULT_PLACEMENT_SIDE = 256  # world pixels of the longer side when a photo is first placed
MIN_PLACEMENT_SIDE = 16
SCALE_STEP = 2**0.25  # Ctrl+wheel notch


def is_photo_file(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES


def initial_rect(photo: Photo, centre: tuple[float, float]) -> Rect:
    """The photo's first rectangle: longer side DEFAULT_PLACEMENT_SIDE (never upscaled more
    than 2x, never larger than the photo's own size needs), centred on `centre`."""
    w, h = photo.size
    side = min(DEFAULT_PLACEMENT_SIDE, max(MIN_PLACEMENT_SIDE, 2 * max(w, h)))
    return scaled_rect(Rect(round(centre[0]), round(centre[1]), 0, 0), w / h, side)


def scaled_rect(rect: Rect, aspect: float, longer: int) -> Rect:
    """A rectangle of aspect ratio w/h = `aspect` with longer side `longer`, centred on the
    centre of `rect`, clamped to MIN_PLACEMENT_SIDE..MAX_PLACEMENT_SIDE."""
    longer = max(MIN_PLACEMENT_SIDE, min(MAX_PLACEMENT_SIDE, int(longer)))
    if aspect >= 1:
        w, h = longer, max(1, round(longer / aspect))
    else:
        w, h = max(1, round(longer * aspect)), longer
    cx, cy = rect.x + rect.w / 2, rect.y + rect.h / 2
    return Rect(round(cx - w / 2), round(cy - h / 2), w, h)


@dataclass(frozen=True, slots=True)
class Pending:
    """A photo waiting to be inverted: the photo, its preview pixmap and where it sits."""

    photo: Photo
    pixmap: QPixmap
    rect: Rect  # world pixels


class PhotoPlacer(QObject):
    """The placement workflow's state (see the module docstring). Qt-side only: it asks the
    engine to invert and pushes edits through the callbacks it was built with.

    `push_edit(edit)` applies an edit as one undoable command; `replace_edit(old, new,
    text)` swaps one in place, undoably; `undo()` undoes the last command.
    """

    changed = Signal()  # state, pending rectangle or result changed (repaint, refresh dock)
    progressed = Signal(object)  # InversionProgress, on the UI thread
    failed = Signal(str, str)  # title, message: shown by the window as a dialog
    message = Signal(str)  # status-bar notes (notices of a loaded photo, results)
    _finished = Signal(object, object, object)  # world, placement or None, error or None
    _loaded = Signal(object, object, object)  # path, Photo or None, error or None

    def __init__(
        self,
        world: Callable[[], World],
        push_edit: Callable[[object], None],
        replace_edit: Callable[[object, object, str], None],
        undo: Callable[[], None],
        discriminator: Callable[[], Discriminator | None] = lambda: None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._world = world
        self._push = push_edit
        self._replace = replace_edit
        self._undo = undo
        self._discriminator = discriminator
        self.settings = InversionSettings()
        self.pending: Pending | None = None
        self.result: PhotoPlacement | None = None  # the last inversion's edit, until accepted
        self.last_progress: InversionProgress | None = None
        self._result_commands = 0  # undo commands since the result was placed
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._drag_from: QPointF | None = None
        self._closing = False
        self._finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self._loaded.connect(self._on_loaded, Qt.ConnectionType.QueuedConnection)

    # State ------------------------------------------------------------------------------

    @property
    def inverting(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def loading(self) -> bool:
        return self._loader is not None and self._loader.is_alive()

    # Loading ----------------------------------------------------------------------------

    def load(self, path: Path, centre: tuple[float, float]) -> None:
        """Decode `path` on a worker thread, then float it over the canvas at `centre`."""
        if self.inverting:
            self.failed.emit("Inversion Running", "Wait for the running inversion or cancel it.")
            return

        def work() -> None:
            try:
                photo = load_photo(path)
            except Exception as exc:  # errors travel as values (PhotoError has the message)
                if not self._closing:
                    self._loaded.emit((path, centre), None, exc)
                return
            if not self._closing:
                self._loaded.emit((path, centre), photo, None)

        self._loader = threading.Thread(target=work, name="load-photo")
        self._loader.start()

    def set_photo(self, photo: Photo, centre: tuple[float, float]) -> None:
        """Float `photo` over the canvas, centred on `centre` (world px)."""
        rgb = photo.rgb
        image = QImage(
            rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1], QImage.Format.Format_RGB888
        )
        self.pending = Pending(photo, QPixmap.fromImage(image.copy()), initial_rect(photo, centre))
        self.result = None
        self.last_progress = None
        for notice in photo.notices:
            self.message.emit(f"{photo.name}: {notice}")
        self.changed.emit()

    @Slot(object, object, object)
    def _on_loaded(self, where: tuple, photo: Photo | None, error: BaseException | None) -> None:
        path, centre = where
        if photo is None:
            self.failed.emit("Cannot Place This Photo", str(error))
            return
        self.set_photo(photo, centre)

    # Positioning ------------------------------------------------------------------------

    def move_to(self, rect: Rect) -> None:
        if self.pending is None or self.inverting:
            return
        self.pending = dataclasses.replace(self.pending, rect=rect)
        self.changed.emit()

    def move_by(self, dx: float, dy: float) -> None:
        if self.pending is not None:
            r = self.pending.rect
            self.move_to(Rect(round(r.x + dx), round(r.y + dy), r.w, r.h))

    def resize(self, longer: int) -> None:
        """Scale the pending photo to a longer side of `longer` world px, about its centre."""
        if self.pending is not None:
            w, h = self.pending.photo.size
            self.move_to(scaled_rect(self.pending.rect, w / h, longer))

    def scale_by(self, factor: float) -> None:
        if self.pending is not None:
            self.resize(round(max(self.pending.rect.w, self.pending.rect.h) * factor))

    def discard(self) -> None:
        if self.inverting:
            self.cancel()
        self.pending = None
        self.changed.emit()

    # Canvas interaction (Tool.PLACE) ----------------------------------------------------

    def press(self, world: tuple[float, float]) -> bool:
        """A left press at world point `world`: starts a drag inside the pending photo."""
        if self.pending is None or self.inverting:
            return False
        r = self.pending.rect
        if r.x <= world[0] < r.right and r.y <= world[1] < r.bottom:
            self._drag_from = QPointF(*world)
            return True
        return False

    def drag(self, world: tuple[float, float]) -> None:
        if self._drag_from is None:
            return
        dx, dy = world[0] - self._drag_from.x(), world[1] - self._drag_from.y()
        moved_x, moved_y = round(dx), round(dy)
        if moved_x or moved_y:
            self.move_by(moved_x, moved_y)
            self._drag_from = QPointF(self._drag_from.x() + moved_x, self._drag_from.y() + moved_y)

    def release(self) -> None:
        self._drag_from = None

    def wheel(self, steps: float, world: tuple[float, float]) -> bool:
        """Ctrl+wheel over the pending photo scales it; False when not over it."""
        if self.pending is None or self.inverting:
            return False
        r = self.pending.rect.grown(8)
        if not (r.x <= world[0] < r.right and r.y <= world[1] < r.bottom):
            return False
        self.scale_by(SCALE_STEP**steps)
        return True

    def key(self, key: int) -> bool:
        """Enter inverts, Escape discards (or cancels); False when the key is not for us."""
        if self.pending is None:
            return False
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self.inverting:
            return self.invert()
        if key == Qt.Key.Key_Escape:
            if self.inverting:
                self.cancel()
            else:
                self.discard()
            return True
        return False

    def paint(self, painter: QPainter, viewport: Viewport) -> None:
        """The pending photo over the canvas: half transparent, with a dashed frame."""
        if self.pending is None:
            return
        r = self.pending.rect
        x0, y0 = viewport.to_screen(r.x, r.y)
        x1, y1 = viewport.to_screen(r.right, r.bottom)
        target = QRect(snap(x0), snap(y0), max(1, snap(x1) - snap(x0)), max(1, snap(y1) - snap(y0)))
        painter.save()
        painter.setOpacity(0.35 if self.inverting else 0.6)
        painter.drawPixmap(target, self.pending.pixmap)
        painter.setOpacity(1.0)
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3))
        painter.drawRect(target.adjusted(0, 0, -1, -1))
        painter.setPen(QPen(QColor(120, 230, 255), 1, Qt.PenStyle.DashLine))
        painter.drawRect(target.adjusted(0, 0, -1, -1))
        painter.restore()

    # Inversion --------------------------------------------------------------------------

    def invert(self) -> bool:
        """Start inverting the pending photo in the background; False when there is none."""
        if self.pending is None or self.inverting:
            return False
        world, pending, settings = self._world(), self.pending, self.settings
        self._cancel.clear()
        self.last_progress = None

        def work() -> None:
            try:
                placement = invert_photo(
                    world,
                    pending.photo,
                    pending.rect,
                    settings=settings,
                    discriminator=self._discriminator(),
                    on_progress=self.progressed.emit,
                    should_stop=lambda: self._cancel.is_set() or self._closing,
                )
            except Exception as exc:  # errors travel as values
                log.debug("inversion failed", exc_info=True)
                if not self._closing:
                    self._finished.emit(world, None, exc)
                return
            if not self._closing:
                self._finished.emit(world, placement, None)

        self._thread = threading.Thread(target=work, name="invert-photo")
        self._thread.start()
        self.changed.emit()
        return True

    def cancel(self) -> None:
        """Stop the inversion after its current step; the world stays as it was."""
        self._cancel.set()

    @Slot(object, object, object)
    def _on_finished(
        self, world: World, placement: PhotoPlacement | None, error: BaseException | None
    ) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if error is not None:
            self.failed.emit("Inversion Failed", f"{type(error).__name__}: {error}")
        elif placement is None:
            self.message.emit("Inversion cancelled; nothing changed")
        elif world is not self._world():
            self.message.emit("The world changed during the inversion; place the photo again")
        else:
            self.pending = None
            self.result = placement
            self._push(placement)
            self._result_commands = 1
            self.message.emit(
                f"Placed {placement.name}: reconstruction {placement.psnr:.1f} dB PSNR"
            )
        self.changed.emit()

    # Result -----------------------------------------------------------------------------

    def accept(self) -> None:
        self.result = None
        self._result_commands = 0
        self.changed.emit()

    def reroll(self) -> PhotoPlacement | None:
        """A new continuation around the last result (one undoable step)."""
        if self.result is None or self.result not in self._world().edits:
            return None
        new = self.result.with_salt(1 + secrets.randbelow(2**31 - 1))
        self._replace(self.result, new, f"Re-roll around {new.name}")
        self.result = new
        self._result_commands += 1
        self.changed.emit()
        return new

    def undo_result(self) -> None:
        """Remove the last result: undo its placement and its re-rolls."""
        if self.result is None:
            return
        for _ in range(self._result_commands):
            self._undo()
        self.result = None
        self._result_commands = 0
        self.changed.emit()

    def show_photo(self, placement: PhotoPlacement, show: bool) -> PhotoPlacement:
        """Show the original pixels (feathered) or the model's reconstruction (undoable)."""
        new = placement.with_photo_shown(show)
        what = "Show photo" if show else "Show reconstruction"
        self._replace(placement, new, f"{what} of {placement.name}")
        if self.result is placement:
            self.result = new
            self._result_commands += 1
        self.changed.emit()
        return new

    def fill_between(self, a: PhotoPlacement, b: PhotoPlacement) -> FillBetween | None:
        """Fill the gap between two placed photos (undoable); a dialog explains a refusal."""
        try:
            edit = FillBetween.between(a, b, 1 + secrets.randbelow(2**31 - 1))
        except ValueError as exc:
            self.failed.emit("Cannot Fill Between", str(exc))
            return None
        self._push(edit)
        self.changed.emit()
        return edit

    def shutdown(self) -> None:
        """Cancel an inversion and join the worker threads (idempotent)."""
        self._closing = True
        self._cancel.set()
        for thread in (self._thread, self._loader):
            if thread is not None:
                thread.join()
        self._thread = self._loader = None


def placements(world: World) -> list[PhotoPlacement]:
    return [e for e in world.edits if isinstance(e, PhotoPlacement)]


class PhotoPanel(QWidget):
    """The Photos dock: the pending photo's size and position, the inversion's progress
    with Cancel, the result's Accept / Re-roll / Undo, and the list of placed photos."""

    placeRequested = Signal()
    styleWanted = Signal(str, object)  # name, engine.styles.Style: add it to the gallery

    def __init__(self, placer: PhotoPlacer, world: Callable[[], World], parent=None) -> None:
        super().__init__(parent)
        self.placer = placer
        self._world = world
        layout = QVBoxLayout(self)

        self.place_button = QPushButton("Place Photo…")
        self.place_button.setToolTip("Open a photo to continue in every direction (Ctrl+Shift+P)")
        self.place_button.clicked.connect(self.placeRequested)
        layout.addWidget(self.place_button)

        self.photo_label = QLabel()
        self.photo_label.setWordWrap(True)
        layout.addWidget(self.photo_label)
        form = QFormLayout()
        self.size_box = QSpinBox()
        self.size_box.setRange(MIN_PLACEMENT_SIDE, MAX_PLACEMENT_SIDE)
        self.size_box.setSuffix(" px")
        self.size_box.setToolTip("Longer side in world pixels (Ctrl+wheel on the photo)")
        self.size_box.valueChanged.connect(self._size_edited)
        form.addRow("Size", self.size_box)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(10, 5000)
        self.steps_box.setValue(placer.settings.steps)
        self.steps_box.setToolTip("Optimisation steps: more fit the photo more closely")
        self.steps_box.valueChanged.connect(self._steps_edited)
        form.addRow("Steps", self.steps_box)
        layout.addLayout(form)

        row = QHBoxLayout()
        self.invert_button = QPushButton("Invert")
        self.invert_button.setToolTip("Fit the model to the photo where it is (Enter)")
        self.invert_button.clicked.connect(placer.invert)
        self.discard_button = QPushButton("Discard")
        self.discard_button.clicked.connect(placer.discard)
        row.addWidget(self.invert_button)
        row.addWidget(self.discard_button)
        layout.addLayout(row)

        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(placer.cancel)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.cancel_button)

        row = QHBoxLayout()
        self.accept_button = QPushButton("Accept")
        self.accept_button.clicked.connect(placer.accept)
        self.reroll_button = QPushButton("Re-roll")
        self.reroll_button.setToolTip("Generate a new continuation around the photo")
        self.reroll_button.clicked.connect(placer.reroll)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(placer.undo_result)
        for button in (self.accept_button, self.reroll_button, self.undo_button):
            row.addWidget(button)
        layout.addLayout(row)

        layout.addWidget(QLabel("Placed photos"))
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.itemSelectionChanged.connect(self._update)
        layout.addWidget(self.list)
        self.show_photo_box = QCheckBox("Show the original photo (feathered)")
        self.show_photo_box.setToolTip("Off: show the model's reconstruction of the photo")
        self.show_photo_box.clicked.connect(self._show_photo_clicked)
        layout.addWidget(self.show_photo_box)
        self.style_button = QPushButton("Add Its Style to the Gallery")
        self.style_button.setToolTip("Paint with the photo's inverted style (Styles dock)")
        self.style_button.clicked.connect(self._style_clicked)
        layout.addWidget(self.style_button)
        self.fill_button = QPushButton("Fill Between")
        self.fill_button.setToolTip(
            "Select two photos: generate the gap so one flows into the other"
        )
        self.fill_button.clicked.connect(self._fill_clicked)
        layout.addWidget(self.fill_button)
        layout.addStretch(1)

        placer.changed.connect(self.refresh)
        placer.progressed.connect(self._progressed)
        self.refresh()

    # Views ------------------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        """Re-read the placer and the world's placements."""
        placer = self.placer
        pending = placer.pending
        if pending is not None:
            r = pending.rect
            self.photo_label.setText(
                f"{pending.photo.name}: {r.w} × {r.h} px at ({r.x:,}, {r.y:,}). Drag it on the "
                "canvas, Ctrl+wheel scales; Enter inverts, Escape discards."
            )
            self.size_box.blockSignals(True)
            self.size_box.setValue(max(r.w, r.h))
            self.size_box.blockSignals(False)
        elif placer.result is not None:
            self.photo_label.setText(
                f"{placer.result.name} is placed ({placer.result.psnr:.1f} dB). Accept it, "
                "re-roll its surroundings or undo."
            )
        else:
            self.photo_label.setText("Open a photo or drop one on the canvas.")
        inverting = placer.inverting
        for widget in (self.size_box, self.invert_button, self.discard_button):
            widget.setEnabled(pending is not None and not inverting)
        self.steps_box.setEnabled(not inverting)
        self.progress.setVisible(inverting)
        self.progress_label.setVisible(inverting or placer.last_progress is not None)
        self.cancel_button.setVisible(inverting)
        if inverting and placer.last_progress is None:
            self.progress.setRange(0, placer.settings.steps)
            self.progress.setValue(0)
            self.progress_label.setText("Starting…")
        has_result = placer.result is not None
        for button in (self.accept_button, self.reroll_button, self.undo_button):
            button.setEnabled(has_result and not inverting)
        self._fill_list()
        self._update()

    def _fill_list(self) -> None:
        selected = {id(item.data(Qt.ItemDataRole.UserRole)) for item in self.list.selectedItems()}
        self.list.blockSignals(True)
        self.list.clear()
        world = self._world()
        for p in placements(world):
            x, y, w, h = p.rect
            text = f"{p.name} — {w}×{h} at ({x:,}, {y:,})"
            if not p.fits(world.config):
                text += " — inverted with another model: hidden"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.list.addItem(item)
            item.setSelected(id(p) in selected)
        self.list.blockSignals(False)

    def selected(self) -> list[PhotoPlacement]:
        return [item.data(Qt.ItemDataRole.UserRole) for item in self.list.selectedItems()]

    @Slot()
    def _update(self) -> None:
        chosen = self.selected()
        self.show_photo_box.setEnabled(len(chosen) == 1)
        self.show_photo_box.setChecked(len(chosen) == 1 and chosen[0].show_photo)
        self.fill_button.setEnabled(len(chosen) == 2)
        self.style_button.setEnabled(len(chosen) == 1 and chosen[0].style is not None)

    @Slot(object)
    def _progressed(self, p: InversionProgress) -> None:
        self.placer.last_progress = p
        self.progress.setRange(0, p.steps)
        self.progress.setValue(p.step)
        self.progress_label.setText(
            f"Step {p.step} of {p.steps} · loss {p.loss:.4f} · {p.psnr:.1f} dB"
            f" · {p.elapsed_s:.0f} s"
        )

    # Edits ------------------------------------------------------------------------------

    def _size_edited(self, value: int) -> None:
        self.placer.resize(value)

    def _steps_edited(self, value: int) -> None:
        self.placer.settings = dataclasses.replace(self.placer.settings, steps=value)

    def _show_photo_clicked(self, checked: bool) -> None:
        chosen = self.selected()
        if len(chosen) == 1:
            self.select(self.placer.show_photo(chosen[0], checked))

    def select(self, placement: PhotoPlacement) -> None:
        """Select `placement` alone in the list of placed photos."""
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setSelected(item.data(Qt.ItemDataRole.UserRole) is placement)

    def _style_clicked(self) -> None:
        chosen = self.selected()
        if len(chosen) == 1 and chosen[0].style is not None:
            self.styleWanted.emit(f"Photo: {Path(chosen[0].name).stem}", chosen[0].style)

    def _fill_clicked(self) -> None:
        chosen = self.selected()
        if len(chosen) == 2:
            self.placer.fill_between(chosen[0], chosen[1])
