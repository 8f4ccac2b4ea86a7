"""The World dock: seed, new random world, model, device and cache size.

The panel only shows values and emits what the user asked for; the main window decides
(loading a model takes a while and can fail, so the picker is set back by the window).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.project import ModelRef
from engine.model import PRESETS

MAX_SEED = 2**31 - 1
OPEN_CHECKPOINT = "open"  # item data of the "Open checkpoint…" entry


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


class WorldPanel(QWidget):
    seedChosen = Signal(int)
    randomWorldRequested = Signal()
    modelChosen = Signal(object)  # ModelRef
    openCheckpointRequested = Signal()
    deviceChosen = Signal(str)
    cacheSizeChosen = Signal(int)  # MB

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, MAX_SEED)
        self.seed_box.setKeyboardTracking(False)  # valueChanged on Enter / focus out only
        self.seed_box.setToolTip("World seed: the same seed always gives the same landscape")
        self.seed_box.valueChanged.connect(self.seedChosen)
        self.random_button = QPushButton("New random world")
        self.random_button.setToolTip("Pick a random seed (edits are kept)")
        self.random_button.clicked.connect(self.randomWorldRequested)
        row = QHBoxLayout()
        row.addWidget(self.seed_box, 1)
        row.addWidget(self.random_button)
        form.addRow("Seed", row)

        self.model_box = QComboBox()
        self.model_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_box.setMinimumContentsLength(16)
        self.model_box.activated.connect(self._model_activated)
        form.addRow("Model", self.model_box)

        self.device_box = QComboBox()
        for name in available_devices():
            self.device_box.addItem(name, name)
        self.device_box.setToolTip("auto: CUDA, then MPS, then the CPU")
        self.device_box.activated.connect(
            lambda i: self.deviceChosen.emit(self.device_box.itemData(i))
        )
        form.addRow("Device", self.device_box)

        self.cache_box = QSpinBox()
        self.cache_box.setRange(16, 65536)
        self.cache_box.setSingleStep(64)
        self.cache_box.setSuffix(" MB")
        self.cache_box.setKeyboardTracking(False)
        self.cache_box.setToolTip("Memory for rendered tiles; more means fewer re-renders")
        self.cache_box.valueChanged.connect(self.cacheSizeChosen)
        form.addRow("Tile cache", self.cache_box)

        self._models: list[ModelRef] = []
        self._current: ModelRef | None = None

    # Showing values (no signals) --------------------------------------------------------

    def show_seed(self, seed: int) -> None:
        self.seed_box.blockSignals(True)
        self.seed_box.setValue(seed)
        self.seed_box.blockSignals(False)

    def show_device(self, name: str) -> None:
        index = self.device_box.findData(name)
        if index < 0:
            self.device_box.addItem(name, name)
            index = self.device_box.count() - 1
        self.device_box.setCurrentIndex(index)

    def show_cache_mb(self, mb: int) -> None:
        self.cache_box.blockSignals(True)
        self.cache_box.setValue(mb)
        self.cache_box.blockSignals(False)

    def show_models(self, current: ModelRef, files: list[Path], *, default_untrained: bool) -> None:
        """List the default, presets and checkpoint files; select `current`."""
        self._current = current
        refs: list[ModelRef] = [ModelRef.default()]
        refs += [ModelRef.of_preset(name) for name in PRESETS if name != "paper"]
        seen = set()
        for path in files:
            key = path.absolute()
            if key not in seen:
                seen.add(key)
                refs.append(ModelRef.of_file(path))
        if current.kind == "file" and not any(current.same_model(r) for r in refs):
            refs.append(current)
        self._models = refs
        box = self.model_box
        box.blockSignals(True)
        box.clear()
        for i, ref in enumerate(refs):
            text = ref.label()
            if ref.kind == "default" and default_untrained:
                text += " (untrained)"
            box.addItem(text)
            box.setItemData(i, str(ref.path) if ref.path else text, Qt.ItemDataRole.ToolTipRole)
        box.insertSeparator(box.count())
        box.addItem("Open checkpoint…", OPEN_CHECKPOINT)
        box.setCurrentIndex(self._index_of(current))
        box.blockSignals(False)

    def _index_of(self, ref: ModelRef) -> int:
        for i, candidate in enumerate(self._models):
            if candidate.same_model(ref):
                return i
        return 0

    @Slot(int)
    def _model_activated(self, index: int) -> None:
        if self.model_box.itemData(index) == OPEN_CHECKPOINT:
            self.model_box.setCurrentIndex(self._index_of(self._current or ModelRef.default()))
            self.openCheckpointRequested.emit()
        elif 0 <= index < len(self._models):
            ref = self._models[index]
            if self._current is None or not ref.same_model(self._current):
                self.modelChosen.emit(ref)
