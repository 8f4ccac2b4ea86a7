"""Small dialogs. All are opened with `open()` (window-modal, non-blocking): a nested event
loop (`exec`) would stall the asyncio tasks that share Qt's loop through qasync."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QMessageBox,
    QWidget,
)

from app.viewport import MAX_ZOOM, MIN_ZOOM, zoom_label

COORDINATE_LIMIT = 1e12  # world pixels; far beyond anywhere one pans to


class GoToDialog(QDialog):
    """Asks for a world point (full-resolution px; y = 0 is the horizon band) and a zoom."""

    def __init__(self, x: float, y: float, zoom: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Go to Coordinates")
        form = QFormLayout(self)
        self.x_box = self._coordinate(x)
        self.y_box = self._coordinate(y)
        form.addRow("X (pixels)", self.x_box)
        form.addRow("Y (pixels)", self.y_box)
        self.zoom_box = QComboBox()
        zooms = sorted({2.0**k for k in range(-6, 5)} | {zoom})
        for z in zooms:
            if MIN_ZOOM <= z <= MAX_ZOOM:
                self.zoom_box.addItem(zoom_label(z), z)
        self.zoom_box.setCurrentIndex(max(0, self.zoom_box.findData(zoom)))
        form.addRow("Zoom", self.zoom_box)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    @staticmethod
    def _coordinate(value: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(-COORDINATE_LIMIT, COORDINATE_LIMIT)
        box.setDecimals(0)
        box.setValue(round(value))
        box.setMinimumWidth(140)
        return box

    def values(self) -> tuple[float, float, float]:
        return self.x_box.value(), self.y_box.value(), float(self.zoom_box.currentData())


def ask(
    parent: QWidget,
    title: str,
    text: str,
    buttons: Sequence[tuple[str, QMessageBox.ButtonRole, Callable[[], None] | None]],
    *,
    icon: QMessageBox.Icon = QMessageBox.Icon.Question,
    detail: str = "",
) -> QMessageBox:
    """Open a non-blocking message box; clicking a button calls its callback (if any).

    The first button is the default; a button with RejectRole is the escape button.
    """
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.NoButton, parent)
    if detail:
        box.setInformativeText(detail)
    actions = {}
    for i, (label, role, callback) in enumerate(buttons):
        button = box.addButton(label, role)
        actions[button] = callback
        if i == 0:
            box.setDefaultButton(button)
        if role == QMessageBox.ButtonRole.RejectRole:
            box.setEscapeButton(button)

    def clicked(button) -> None:
        callback = actions.get(button)
        if callback is not None:
            callback()

    box.buttonClicked.connect(clicked)
    box.finished.connect(box.deleteLater)
    box.open()
    return box


def inform(
    parent: QWidget,
    title: str,
    text: str,
    *,
    icon: QMessageBox.Icon = QMessageBox.Icon.Information,
    detail: str = "",
) -> QMessageBox:
    return ask(
        parent,
        title,
        text,
        [("OK", QMessageBox.ButtonRole.AcceptRole, None)],
        icon=icon,
        detail=detail,
    )


def choose_file(
    parent: QWidget, title: str, folder: str, name_filter: str, chosen: Callable[[Path], None]
) -> QFileDialog:
    """A file dialog for one existing file; `chosen(path)` runs when the user picks it.

    Returned before it is opened: the caller opens it (`open()`), maybe after a question.
    """
    dialog = QFileDialog(parent, title, folder, name_filter)
    dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    dialog.fileSelected.connect(lambda name: chosen(Path(name)))
    dialog.finished.connect(dialog.deleteLater)
    return dialog
