"""The Styles dock: the style gallery (with thumbnails) and the brush settings.

The panel shows a `StyleGallery` and emits what the user asked for; it changes its own
gallery (add random, add from seed, duplicate, rename, delete) and says so with
`galleryChanged`. Given the window's undo stack, each change is a `GalleryCommand` on it,
undone and redone like an edit of the world. Thumbnails are rendered by the main window
off the UI thread and handed in with `set_thumbnail`. The selected entry is the style the
brush paints; the base style (always first) erases.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.gallery import BASE_ID, GalleryEntry, StyleGallery
from engine.styles import Style

THUMB_SIZE = QSize(96, 48)
MAX_SEED = 2**31 - 1
ID_ROLE = Qt.ItemDataRole.UserRole


@dataclass(frozen=True, slots=True)
class BrushSettings:
    radius: float  # world pixels
    softness: float  # 0..1
    opacity: float  # 0 < opacity <= 1


class StylePanel(QWidget):
    galleryChanged = Signal(object)  # StyleGallery, after a change made in the panel
    thumbnailsWanted = Signal(object)  # list[GalleryEntry] without an up-to-date thumbnail
    brushChanged = Signal(object)  # BrushSettings
    selectionChanged = Signal(int)  # entry id

    def __init__(
        self, parent: QWidget | None = None, *, undo_stack: QUndoStack | None = None
    ) -> None:
        super().__init__(parent)
        self._undo_stack = undo_stack  # gallery changes become undoable commands on it
        self._gallery = StyleGallery()
        # by (entry id, style): an id freed by a delete may come back with another style
        self._thumbs: dict[tuple[int, Style | None], QPixmap] = {}
        self.seed_for_duplicate = 0  # the world's seed (the window keeps it current)
        layout = QVBoxLayout(self)

        self.list = QListWidget()
        self.list.setIconSize(THUMB_SIZE)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.list.setMinimumHeight(3 * (THUMB_SIZE.height() + 8))
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemChanged.connect(self._item_edited)
        layout.addWidget(self.list, 1)

        buttons = QGridLayout()
        self.random_button = QPushButton("Add random")
        self.random_button.setToolTip("Add a style drawn at random")
        self.random_button.clicked.connect(self.add_random)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, MAX_SEED)
        self.seed_box.setToolTip("The style of the world with this seed")
        self.from_seed_button = QPushButton("Add from seed")
        self.from_seed_button.setToolTip("Add the style of the world with the seed on the left")
        self.from_seed_button.clicked.connect(lambda: self.add_from_seed(self.seed_box.value()))
        self.duplicate_button = QPushButton("Duplicate")
        self.duplicate_button.setToolTip("Add a copy of the selected style")
        self.duplicate_button.clicked.connect(lambda: self.duplicate_selected())
        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("Rename the selected style (or double-click it, or F2)")
        self.rename_button.clicked.connect(self._start_rename)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip(
            "Remove the selected style from the gallery (painted strokes stay as they are)"
        )
        self.delete_button.clicked.connect(self.delete_selected)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_box, 1)
        seed_row.addWidget(self.from_seed_button)
        buttons.addWidget(self.random_button, 0, 0)
        buttons.addLayout(seed_row, 0, 1, 1, 2)
        buttons.addWidget(self.duplicate_button, 1, 0)
        buttons.addWidget(self.rename_button, 1, 1)
        buttons.addWidget(self.delete_button, 1, 2)
        layout.addLayout(buttons)

        brush = QGroupBox("Brush (B)")
        form = QFormLayout(brush)
        self.radius_box = QSpinBox()
        self.radius_box.setRange(2, 20_000)
        self.radius_box.setValue(64)
        self.radius_box.setSuffix(" px")
        self.radius_box.setToolTip("Brush radius in world pixels ([ and ] change it)")
        self.softness_box = QSpinBox()
        self.softness_box.setRange(0, 100)
        self.softness_box.setValue(50)
        self.softness_box.setSuffix(" %")
        self.softness_box.setToolTip("How much of the radius fades out (0: a hard edge)")
        self.opacity_box = QSpinBox()
        self.opacity_box.setRange(1, 100)
        self.opacity_box.setValue(100)
        self.opacity_box.setSuffix(" %")
        self.opacity_box.setToolTip("How strongly a stroke replaces the styles under it")
        for box in (self.radius_box, self.softness_box, self.opacity_box):
            box.valueChanged.connect(lambda _=0: self.brushChanged.emit(self.brush))
        form.addRow("Radius", self.radius_box)
        form.addRow("Softness", self.softness_box)
        form.addRow("Opacity", self.opacity_box)
        layout.addWidget(brush)

        self._fill()

    # Values -----------------------------------------------------------------------------

    @property
    def gallery(self) -> StyleGallery:
        return self._gallery

    @property
    def brush(self) -> BrushSettings:
        return BrushSettings(
            float(self.radius_box.value()),
            self.softness_box.value() / 100,
            self.opacity_box.value() / 100,
        )

    def current_entry(self) -> GalleryEntry:
        item = self.list.currentItem()
        entry_id = BASE_ID if item is None else int(item.data(ID_ROLE))
        return self._gallery.get(entry_id)

    def set_gallery(self, gallery: StyleGallery) -> None:
        """Show `gallery` (a project was opened); no galleryChanged."""
        self._gallery = gallery
        self._thumbs = {k: v for k, v in self._thumbs.items() if k[0] == BASE_ID}
        self._fill()

    def select(self, entry_id: int) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(ID_ROLE) == entry_id:
                self.list.setCurrentRow(row)
                return

    def set_brush_percent(self, radius: int, softness: int, opacity: int) -> None:
        """Show brush settings (radius in world px, softness and opacity in percent); the
        boxes clamp values out of range."""
        self.radius_box.setValue(radius)
        self.softness_box.setValue(softness)
        self.opacity_box.setValue(opacity)

    def brush_percent(self) -> tuple[int, int, int]:
        return self.radius_box.value(), self.softness_box.value(), self.opacity_box.value()

    def scale_radius(self, factor: float) -> None:
        self.radius_box.setValue(round(self.radius_box.value() * factor))

    def set_thumbnail(self, entry: GalleryEntry, image: QImage) -> None:
        pixmap = QPixmap.fromImage(image).scaled(
            THUMB_SIZE,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self._thumbs[entry.id, entry.style] = pixmap
        item = self._item(entry.id)
        if item is not None and self.has_thumbnail(entry.id):
            item.setIcon(QIcon(pixmap))

    def invalidate_thumbnails(self, *, base_only: bool = False) -> None:
        """Thumbnails are out of date (new seed: base only; new model: all)."""
        if base_only:
            self._thumbs.pop((BASE_ID, None), None)
        else:
            self._thumbs.clear()
        self._fill()

    def has_thumbnail(self, entry_id: int) -> bool:
        """Whether the entry `entry_id` of the gallery shown has its thumbnail."""
        try:
            return (entry_id, self._gallery.get(entry_id).style) in self._thumbs
        except KeyError:
            return False

    # Gallery commands -------------------------------------------------------------------

    @Slot()
    def add_random(self) -> GalleryEntry:
        gallery, entry = self._gallery.add_random()
        self._changed(gallery, entry.id, f"Add style {entry.name}")
        return entry

    def add_from_seed(self, seed: int) -> GalleryEntry:
        gallery, entry = self._gallery.add_from_seed(seed)
        self._changed(gallery, entry.id, f"Add style {entry.name}")
        return entry

    def add_style(self, name: str, style: Style) -> GalleryEntry:
        """Add an explicit style (a placed photo's inverted style) and select it."""
        gallery, entry = self._gallery.add(name, style)
        self._changed(gallery, entry.id, f"Add style {entry.name}")
        return entry

    def duplicate_selected(self, world_seed: int | None = None) -> GalleryEntry:
        entry = self.current_entry()
        seed = self.seed_for_duplicate if world_seed is None else world_seed
        gallery, copy = self._gallery.duplicate(entry.id, seed)
        self._changed(gallery, copy.id, f"Duplicate style {entry.name}")
        return copy

    def rename(self, entry_id: int, name: str) -> None:
        old = self._gallery.get(entry_id).name
        gallery = self._gallery.rename(entry_id, name)
        self._changed(gallery, entry_id, f"Rename style {old} to {gallery.get(entry_id).name}")

    @Slot()
    def delete_selected(self) -> None:
        entry = self.current_entry()
        if entry.is_base:
            return
        self._changed(self._gallery.remove(entry.id), BASE_ID, f"Delete style {entry.name}")

    def apply_gallery(self, gallery: StyleGallery, select: int) -> None:
        """Show `gallery` with entry `select` selected, and say so with galleryChanged (a
        change, or its undo or redo)."""
        self._gallery = gallery
        self._fill(select)
        self.galleryChanged.emit(gallery)

    # Internals --------------------------------------------------------------------------

    def _changed(self, gallery: StyleGallery, select: int, text: str) -> None:
        """Show `gallery`, through an undoable command when the panel has an undo stack."""
        before = (self._gallery, self.current_entry().id)
        if self._undo_stack is None:
            self.apply_gallery(gallery, select)
        else:
            self._undo_stack.push(GalleryCommand(self, before, (gallery, select), text))

    def _fill(self, select: int | None = None) -> None:
        if select is None:
            item = self.list.currentItem()
            select = BASE_ID if item is None else int(item.data(ID_ROLE))
        self.list.blockSignals(True)
        self.list.clear()
        missing = []
        for entry in self._gallery.entries:
            item = QListWidgetItem(entry.name)
            item.setData(ID_ROLE, entry.id)
            item.setToolTip(entry.describe())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            pixmap = self._thumbs.get((entry.id, entry.style))
            if pixmap is None:
                missing.append(entry)
                pixmap = QPixmap(THUMB_SIZE)
                pixmap.fill(QColor(60, 62, 66))
            item.setIcon(QIcon(pixmap))
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.select(select if any(e.id == select for e in self._gallery.entries) else BASE_ID)
        self._update_buttons()
        if missing:
            self.thumbnailsWanted.emit(missing)

    def _item(self, entry_id: int) -> QListWidgetItem | None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(ID_ROLE) == entry_id:
                return item
        return None

    def _update_buttons(self) -> None:
        self.delete_button.setEnabled(not self.current_entry().is_base)

    @Slot()
    def _current_changed(self, *_args) -> None:
        self._update_buttons()
        self.selectionChanged.emit(self.current_entry().id)

    @Slot()
    def _start_rename(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.list.editItem(item)

    @Slot(QListWidgetItem)
    def _item_edited(self, item: QListWidgetItem) -> None:
        entry_id, name = int(item.data(ID_ROLE)), item.text()
        if name != self._gallery.get(entry_id).name:
            # Not from inside the item's own signal: renaming refills the list.
            QTimer.singleShot(0, lambda: self.rename(entry_id, name))


class GalleryCommand(QUndoCommand):
    """One change of the style gallery (add, duplicate, rename, delete) on the undo stack:
    each state is a whole (immutable) gallery and the entry selected in it."""

    def __init__(
        self,
        panel: StylePanel,
        before: tuple[StyleGallery, int],
        after: tuple[StyleGallery, int],
        text: str,
    ) -> None:
        super().__init__(text)
        self._panel, self._before, self._after = panel, before, after

    def redo(self) -> None:
        self._panel.apply_gallery(*self._after)

    def undo(self) -> None:
        self._panel.apply_gallery(*self._before)
